//! Writes the server would not take as they were: a version conflict (someone changed the
//! record first) or a refusal (the server said why). They leave the outbox so later writes
//! can go, and wait here — never silently dropped or overwritten — until the person decides.

use rusqlite::{OptionalExtension, params};

use super::outbox::{OutboxEntry, WriteMethod};
use super::{Store, put_in};
use crate::{Error, Result};

/// Why a write was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAsideKind {
    /// `412`: the record changed on the server since this device's version.
    Conflict,
    /// The server refused the write (e.g. `422` with an OperationOutcome).
    Rejected,
}

impl SetAsideKind {
    fn as_str(self) -> &'static str {
        match self {
            SetAsideKind::Conflict => "conflict",
            SetAsideKind::Rejected => "rejected",
        }
    }
}

/// A write set aside, with both sides of the story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Its number here.
    pub seq: i64,
    /// Conflict or refusal.
    pub kind: SetAsideKind,
    /// The write as this device made it.
    pub write: OutboxEntry,
    /// For a conflict: the server's current version (JSON).
    pub server_version: Option<String>,
    /// The server's reason, in its words (OperationOutcome diagnostics).
    pub reason: String,
}

/// What the person decided about a set-aside write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Drop this device's change; the server's version stands.
    Discard,
    /// Send this device's change again, now based on the server's current version.
    KeepMine,
}

impl Store<'_> {
    /// Moves `entry` out of the outbox into the set-aside list (and, for a conflict, the
    /// server's current version into the cache), in one transaction.
    pub fn set_aside(
        &mut self,
        entry: &OutboxEntry,
        kind: SetAsideKind,
        server_version: Option<&str>,
        reason: &str,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO set_aside (kind, idempotency_key, method, type, id, if_match, body, created_at,
                server_version, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                kind.as_str(),
                entry.idempotency_key,
                entry.method.as_str(),
                entry.resource_type,
                entry.id,
                entry.if_match,
                entry.body,
                entry.created_at,
                server_version,
                reason
            ],
        )?;
        if let Some(current) = server_version {
            put_in(&tx, current)?;
        }
        tx.execute("DELETE FROM outbox WHERE seq = ?1", [entry.seq])?;
        tx.commit()?;
        Ok(())
    }

    /// Every write set aside, oldest first.
    pub fn set_aside_writes(&self) -> Result<Vec<SetAside>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, idempotency_key, method, type, id, if_match, body, created_at, server_version, reason
             FROM set_aside ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            let kind =
                if r.get::<_, String>(1)? == "conflict" { SetAsideKind::Conflict } else { SetAsideKind::Rejected };
            Ok(SetAside {
                seq: r.get(0)?,
                kind,
                write: OutboxEntry {
                    seq: 0,
                    idempotency_key: r.get(2)?,
                    method: WriteMethod::parse(&r.get::<_, String>(3)?)?,
                    resource_type: r.get(4)?,
                    id: r.get(5)?,
                    if_match: r.get(6)?,
                    body: r.get(7)?,
                    created_at: r.get(8)?,
                },
                server_version: r.get(9)?,
                reason: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Settles set-aside write `seq` as the person decided. Keeping a change that conflicted
    /// queues it again with `If-Match` on the server's current version; a refused write can
    /// only be discarded (sending it unchanged would be refused again).
    pub fn resolve(&mut self, seq: i64, resolution: Resolution, now_unix: i64) -> Result<()> {
        let found = self.set_aside_writes()?.into_iter().find(|s| s.seq == seq);
        let set_aside =
            found.ok_or(Error::InvalidArgument { what: "set-aside write", problem: "there is no such write" })?;
        let tx = self.conn.transaction()?;
        if resolution == Resolution::KeepMine {
            let current = set_aside
                .server_version
                .as_deref()
                .filter(|_| set_aside.kind == SetAsideKind::Conflict)
                .ok_or(Error::InvalidArgument {
                    what: "set-aside write",
                    problem: "a refused write cannot be sent again unchanged; discard it",
                })?;
            let version: Option<String> = serde_json::from_str::<serde_json::Value>(current)
                .ok()
                .and_then(|v| v["meta"]["versionId"].as_str().map(str::to_owned));
            let key = crate::keys::random_token()?;
            tx.execute(
                "INSERT INTO outbox (idempotency_key, method, type, id, if_match, body, created_at)
                 VALUES (?1, 'update', ?2, ?3, ?4, ?5, ?6)",
                params![
                    key,
                    set_aside.write.resource_type,
                    set_aside.write.id,
                    version,
                    set_aside.write.body,
                    now_unix
                ],
            )?;
        }
        let gone: Option<i64> = tx
            .query_row("DELETE FROM set_aside WHERE seq = ?1 RETURNING seq", [seq], |r| r.get(0))
            .optional()?;
        debug_assert!(gone.is_some());
        tx.commit()?;
        Ok(())
    }
}
