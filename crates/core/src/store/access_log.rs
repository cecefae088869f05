//! The records read from this cache, as chained audit records, kept in the vault (they
//! name patients) until the server has them.

use carekeep_protocol::audit::AuditRecord;
use rusqlite::OptionalExtension;

use super::Store;
use crate::{Error, Result};

impl Store<'_> {
    /// Appends access records (already chained).
    pub fn log_access(&mut self, records: &[AuditRecord]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO access_log (record) VALUES (?1)")?;
            for record in records {
                insert.execute([
                    serde_json::to_string(record).map_err(|_| Error::invalid("audit record", "unwritable"))?
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` access records waiting for upload, oldest first, each with its row.
    pub fn access_log(&self, limit: usize) -> Result<Vec<(i64, AuditRecord)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, record FROM access_log ORDER BY seq LIMIT ?1")?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, json) = row?;
            if let Ok(record) = serde_json::from_str(&json) {
                out.push((seq, record));
            }
        }
        Ok(out)
    }

    /// The newest access record (kept or already uploaded): where the chain continues.
    pub fn last_access(&self) -> Result<Option<AuditRecord>> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT record FROM access_log ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
            .optional()?;
        if let Some(json) = json {
            return Ok(serde_json::from_str(&json).ok());
        }
        let tip: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'audit.access_tip'", [], |r| r.get(0))
            .optional()?;
        Ok(tip.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Drops access records up to row `through` (the server has them), keeping the newest
    /// one's record as the chain's tip so the next record still links to it.
    pub fn trim_access_log(&mut self, through: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        let tip: Option<String> = tx
            .query_row("SELECT record FROM access_log WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1", [through], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(tip) = tip {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('audit.access_tip', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [tip],
            )?;
        }
        tx.execute("DELETE FROM access_log WHERE seq <= ?1", [through])?;
        tx.commit()?;
        Ok(())
    }
}
