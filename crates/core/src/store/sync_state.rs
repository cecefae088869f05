//! Where sync stands, kept in the vault beside the records it describes, so that progress
//! and data are written in one transaction: a sync killed at any point resumes from what is
//! really stored.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{IngestSummary, Store};
use crate::Result;

/// One patient this device keeps: how far their records have been pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPatient {
    /// The patient's opaque id (bare, without `Patient/`).
    pub patient: String,
    /// The server time the last complete pull reached; `None` before the first one.
    pub since: Option<String>,
    /// The next page of an unfinished pull (an opaque server token).
    pub cursor: Option<String>,
}

/// What a stored page means for its patient's pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageMark {
    /// More pages follow; resume at this one.
    More {
        /// The next page's opaque token.
        cursor: String,
    },
    /// The pull is complete up to this server time.
    Complete {
        /// The next pull asks for changes since this instant.
        since: String,
    },
}

const REMOVED_AFTER: &str = "sync.removed_after";

impl Store<'_> {
    /// The patients this device keeps, with their pull state.
    pub fn sync_patients(&self) -> Result<Vec<SyncPatient>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT patient, since, cursor FROM sync_patients ORDER BY patient")?;
        let rows =
            stmt.query_map([], |r| Ok(SyncPatient { patient: r.get(0)?, since: r.get(1)?, cursor: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Starts keeping `patient` (no-op if already kept).
    pub fn keep_patient(&mut self, patient: &str) -> Result<()> {
        self.keep_patients(&[patient])
    }

    /// Starts keeping each of `patients` (those already kept stay as they are), in one
    /// transaction.
    pub fn keep_patients(&mut self, patients: &[&str]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO sync_patients (patient) VALUES (?1)")?;
            for patient in patients {
                insert.execute([patient])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores one page of `patient`'s records and what it means for their pull, together.
    ///
    /// The page commits without waiting for the disk (`synchronous = NORMAL`, still atomic
    /// and consistent in WAL mode): a power cut may lose the newest pages, which the next
    /// sync fetches again since their position was lost with them. Writes a person made
    /// (the outbox) keep full durability, and their commit flushes these pages too.
    pub fn ingest_sync_page(&mut self, bundle_json: &str, patient: &str, mark: &PageMark) -> Result<IngestSummary> {
        self.conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        let stored = self.ingest_with(bundle_json, |tx| mark_patient(tx, patient, mark));
        self.conn.execute_batch("PRAGMA synchronous = FULL;")?;
        stored
    }

    /// One kept patient's pull state.
    pub fn sync_patient(&self, patient: &str) -> Result<Option<SyncPatient>> {
        Ok(self
            .conn
            .prepare_cached("SELECT patient, since, cursor FROM sync_patients WHERE patient = ?1")?
            .query_row([patient], |r| Ok(SyncPatient { patient: r.get(0)?, since: r.get(1)?, cursor: r.get(2)? }))
            .optional()?)
    }

    /// Forgets an unfinished pull's next page (the server no longer honours it): the pull
    /// starts again from the patient's `since`.
    pub fn restart_pull(&mut self, patient: &str) -> Result<()> {
        self.conn
            .execute("UPDATE sync_patients SET cursor = NULL WHERE patient = ?1", [patient])?;
        Ok(())
    }

    /// Removes a patient this device may no longer keep (off the care team, access ended),
    /// with every resource in their compartment. Returns the resources removed.
    pub fn forget_patient(&mut self, patient: &str) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let reference = format!("Patient/{patient}");
        let mut n = tx.execute("DELETE FROM resources WHERE patient = ?1", [&reference])?;
        n += tx.execute("DELETE FROM resources WHERE type = 'Patient' AND id = ?1", [patient])?;
        tx.execute("DELETE FROM sync_patients WHERE patient = ?1", [patient])?;
        tx.commit()?;
        Ok(n)
    }

    /// The last server deletion this cache has applied.
    pub fn removed_after(&self) -> Result<i64> {
        let value: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [REMOVED_AFTER], |r| r.get(0))
            .optional()?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Removes resources deleted on the server and records how far the deletions reach,
    /// together. Returns how many were here.
    pub fn apply_removed<'a>(
        &mut self,
        removed: impl IntoIterator<Item = (&'a str, &'a str)>,
        after: i64,
    ) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        {
            let mut delete = tx.prepare_cached("DELETE FROM resources WHERE type = ?1 AND id = ?2")?;
            for (resource_type, id) in removed {
                n += delete.execute(params![resource_type, id])?;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![REMOVED_AFTER, after.to_string()],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

fn mark_patient(tx: &Transaction<'_>, patient: &str, mark: &PageMark) -> Result<()> {
    match mark {
        PageMark::More { cursor } => tx.execute(
            "INSERT INTO sync_patients (patient, cursor) VALUES (?1, ?2)
             ON CONFLICT (patient) DO UPDATE SET cursor = excluded.cursor",
            params![patient, cursor],
        )?,
        PageMark::Complete { since } => tx.execute(
            "INSERT INTO sync_patients (patient, since) VALUES (?1, ?2)
             ON CONFLICT (patient) DO UPDATE SET since = excluded.since, cursor = NULL",
            params![patient, since],
        )?,
    };
    Ok(())
}
