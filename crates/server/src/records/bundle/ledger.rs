//! What a Bundle needs of the store, on either engine: the lookups its checks make
//! ([`Lookup`]: records by id, by business identifier) and, inside the one transaction that
//! applies it, the writes ([`Ledger`]). The Bundle's rules — order, references, the gate,
//! all or nothing — are written once, over these; each engine supplies its statements.

use carekeep_protocol::audit::AuditEvent;
use rusqlite::{Connection, Transaction, params};
use time::OffsetDateTime;

use super::plan::Identifier;
use crate::records::{Checked, RecordError, Stored, current, identifiers};

/// The reads a Bundle's checks make.
pub trait Lookup {
    /// The ids of `resource_type` in `tenant` carrying `wanted` (a few at most).
    fn find(&mut self, tenant: &str, resource_type: &str, wanted: &Identifier) -> Result<Vec<String>, RecordError>;

    /// The current version of `resource_type/id` in `tenant`.
    fn current(&mut self, tenant: &str, resource_type: &str, id: &str) -> Result<Option<Stored>, RecordError>;
}

/// The writes of one Bundle, in one transaction that holds the tenant's writer.
pub trait Ledger: Lookup {
    /// Stores `checked` as `resource_type/id` at `version`, written by `author`, stamped
    /// with the transaction's time.
    fn write(
        &mut self,
        tenant: &str,
        checked: Checked,
        id: &str,
        version: i64,
        author: Option<&str>,
    ) -> Result<Stored, RecordError>;

    /// Remembers that `resource_type/id` is what an import stored for `source`.
    fn remember(&mut self, tenant: &str, resource_type: &str, id: &str, source: &Identifier)
    -> Result<(), RecordError>;

    /// Deletes `found`, leaving its tombstone.
    fn remove(&mut self, tenant: &str, found: &Stored) -> Result<(), RecordError>;

    /// Puts `user` on `patient`'s care team.
    fn join_care_team(&mut self, tenant: &str, user: &str, patient: &str) -> Result<(), RecordError>;

    /// Commits `event` (of `tenant`) with the Bundle's writes.
    fn audit(&mut self, tenant: &str, event: &AuditEvent) -> Result<(), RecordError>;

    /// Runs `sql` (a savepoint's `SAVEPOINT`, `RELEASE` or `ROLLBACK TO`) in the
    /// transaction: a batch's entries each stand alone.
    fn savepoint(&mut self, sql: &str) -> Result<(), RecordError>;
}

/// The embedded store's reads, on one of its connections.
impl Lookup for &Connection {
    fn find(&mut self, tenant: &str, resource_type: &str, wanted: &Identifier) -> Result<Vec<String>, RecordError> {
        Ok(identifiers::find(self, tenant, resource_type, wanted)?)
    }

    fn current(&mut self, tenant: &str, resource_type: &str, id: &str) -> Result<Option<Stored>, RecordError> {
        Ok(current(self, tenant, resource_type, id)?)
    }
}

/// The embedded store's writer transaction, and what a write there needs.
pub struct Embedded<'t> {
    /// The transaction, under the writer lock.
    pub tx: &'t Transaction<'t>,
    /// Wraps document keys.
    pub documents_key: &'t [u8; 32],
    /// The write time, read once the writer lock was held.
    pub now: OffsetDateTime,
}

impl Lookup for Embedded<'_> {
    fn find(&mut self, tenant: &str, resource_type: &str, wanted: &Identifier) -> Result<Vec<String>, RecordError> {
        Ok(identifiers::find(self.tx, tenant, resource_type, wanted)?)
    }

    fn current(&mut self, tenant: &str, resource_type: &str, id: &str) -> Result<Option<Stored>, RecordError> {
        Ok(current(self.tx, tenant, resource_type, id)?)
    }
}

impl Ledger for Embedded<'_> {
    fn write(
        &mut self,
        tenant: &str,
        checked: Checked,
        id: &str,
        version: i64,
        author: Option<&str>,
    ) -> Result<Stored, RecordError> {
        crate::records::write(self.tx, self.documents_key, tenant, checked, id, version, self.now, author)
    }

    fn remember(
        &mut self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        source: &Identifier,
    ) -> Result<(), RecordError> {
        Ok(identifiers::remember(self.tx, tenant, resource_type, id, source)?)
    }

    fn remove(&mut self, tenant: &str, found: &Stored) -> Result<(), RecordError> {
        crate::records::removed::remove(self.tx, tenant, found, self.now.unix_timestamp())
    }

    fn join_care_team(&mut self, tenant: &str, user: &str, patient: &str) -> Result<(), RecordError> {
        self.tx
            .prepare_cached(
                "INSERT INTO patient_links (tenant, user_id, patient, relation) VALUES (?1, ?2, ?3, 'care-team')
                 ON CONFLICT (user_id, patient) DO UPDATE SET relation = excluded.relation",
            )?
            .execute(params![tenant, user, patient])?;
        Ok(())
    }

    fn audit(&mut self, _tenant: &str, event: &AuditEvent) -> Result<(), RecordError> {
        Ok(crate::audit::push_to_outbox(self.tx, event)?)
    }

    fn savepoint(&mut self, sql: &str) -> Result<(), RecordError> {
        Ok(self.tx.execute_batch(sql)?)
    }
}
