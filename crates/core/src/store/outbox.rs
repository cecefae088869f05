//! The outbox: writes made on this device, kept durably in order until the server has them.

use rusqlite::{Connection, params};

use crate::{Error, Result};
use carekeep_fhir::{References, index_resource};

/// How a pending write reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMethod {
    /// `POST /fhir/<type>`: the server assigns the id.
    Create,
    /// `PUT /fhir/<type>/<id>` with `If-Match` on the version it was based on.
    Update,
}

impl WriteMethod {
    /// `create` or `update`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMethod::Create => "create",
            WriteMethod::Update => "update",
        }
    }

    pub(super) fn parse(s: &str) -> rusqlite::Result<Self> {
        match s {
            "create" => Ok(WriteMethod::Create),
            "update" => Ok(WriteMethod::Update),
            _ => Err(rusqlite::Error::InvalidColumnType(0, "method".into(), rusqlite::types::Type::Text)),
        }
    }
}

/// A write to queue.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    /// Create or update.
    pub method: WriteMethod,
    /// The resource's JSON.
    pub body: String,
    /// For updates: the `versionId` the change was based on (sent as `If-Match`).
    pub if_match: Option<String>,
}

/// A queued write, with the idempotency key the server uses to apply it exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the queue; replay in ascending order.
    pub seq: i64,
    /// Random, unique per write; resent unchanged on every retry.
    pub idempotency_key: String,
    /// Create or update.
    pub method: WriteMethod,
    /// The resource type.
    pub resource_type: String,
    /// The resource id (updates; creates that carry a client id).
    pub id: Option<String>,
    /// The version the write expects to replace.
    pub if_match: Option<String>,
    /// The resource's JSON.
    pub body: String,
    /// When it was queued (Unix seconds).
    pub created_at: i64,
}

/// The outbox of an unlocked vault. Borrowed from [`super::Store::outbox`].
pub struct Outbox<'s> {
    conn: &'s mut Connection,
}

impl<'s> Outbox<'s> {
    pub(crate) fn new(conn: &'s mut Connection) -> Self {
        Self { conn }
    }

    /// Queues a write after checking it is a valid resource (an update must carry its id).
    pub fn enqueue(&mut self, write: &PendingWrite, now_unix: i64) -> Result<OutboxEntry> {
        let value: serde_json::Value =
            serde_json::from_str(&write.body).map_err(|_| Error::invalid("resource", "not valid JSON"))?;
        // A create may leave the id to the server: check it as if it had one.
        let fallback = (write.method == WriteMethod::Create).then_some("new");
        let indexed = index_resource(&value, &write.body, "resource", fallback, &References::default())?;
        let id = value.get("id").and_then(|v| v.as_str()).map(str::to_owned);
        let idempotency_key = crate::keys::random_token()?;
        let seq = self.conn.query_row(
            "INSERT INTO outbox (idempotency_key, method, type, id, if_match, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING seq",
            params![
                idempotency_key,
                write.method.as_str(),
                indexed.resource_type,
                id,
                write.if_match,
                write.body,
                now_unix
            ],
            |row| row.get(0),
        )?;
        Ok(OutboxEntry {
            seq,
            idempotency_key,
            method: write.method,
            resource_type: indexed.resource_type,
            id,
            if_match: write.if_match.clone(),
            body: write.body.clone(),
            created_at: now_unix,
        })
    }

    /// Up to `limit` writes, oldest first, without removing them.
    pub fn peek(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, idempotency_key, method, type, id, if_match, body, created_at FROM outbox ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok(OutboxEntry {
                seq: row.get(0)?,
                idempotency_key: row.get(1)?,
                method: WriteMethod::parse(&row.get::<_, String>(2)?)?,
                resource_type: row.get(3)?,
                id: row.get(4)?,
                if_match: row.get(5)?,
                body: row.get(6)?,
                created_at: row.get(7)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(Error::from)
    }

    /// Removes a write the server has confirmed. `false` if it was already gone.
    pub fn ack(&mut self, seq: i64) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM outbox WHERE seq = ?1", [seq])? > 0)
    }

    /// Settles a write the server accepted: its answer (the resource as stored, with id and
    /// version) goes into the cache and the write leaves the queue, together — a crash
    /// leaves either both undone (the replay is recognised by its key) or both done.
    pub fn settle(&mut self, seq: i64, stored_json: &str) -> Result<super::StoredResource> {
        let tx = self.conn.transaction()?;
        let stored = super::put_in(&tx, stored_json)?;
        tx.execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
        tx.commit()?;
        Ok(stored)
    }

    /// How many writes wait.
    pub fn len(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}
