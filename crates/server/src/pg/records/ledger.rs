//! Bundles on PostgreSQL: the [`Lookup`] and [`Ledger`] a Bundle's rules
//! ([`crate::records::bundle`]) run over, so a transaction or batch applies exactly as on
//! the embedded store. The Bundle code is synchronous (it runs on a blocking thread); each
//! statement here runs to completion on the runtime. Its checks look up in one read
//! transaction; its writes run in one transaction holding the tenant's lock, stamped once,
//! with the request's audit records appended before the commit.

use carekeep_protocol::audit::AuditEvent;
use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use tokio::runtime::Handle;

use super::write::{commit, remove_row};
use super::{PgRecords, blind_identifier, db};
use crate::keys::Key;
use crate::pg::tenant_tx;
use crate::records::bundle::plan::{Identifier, Kind, Plan, SOURCE_SYSTEM};
use crate::records::bundle::{Gate, Ledger, Lookup, Outcome, refused_whole};
use crate::records::{Checked, RecordError, Records, Stored};

/// Reads in one transaction of the tenant.
struct Reading<'a> {
    pg: &'a PgRecords,
    runtime: &'a Handle,
    tx: &'a Transaction<'a>,
}

/// Writes in one transaction holding the tenant's lock.
struct Writing<'a> {
    reading: Reading<'a>,
    key: Key,
    stamp: OffsetDateTime,
}

impl PgRecords {
    /// Applies `plan` in `tenant` as `gate` decides; as
    /// [`crate::records::Records::apply_bundle`] (which `records` is, and calls this from a
    /// blocking thread).
    pub(crate) fn apply_bundle(
        &self,
        records: &Records,
        runtime: &Handle,
        tenant: &str,
        plan: Plan,
        gate: &dyn Gate,
        audit: Option<&AuditEvent>,
    ) -> Result<Outcome, RecordError> {
        let kind: Kind = plan.kind;
        let prepared = {
            let mut client = runtime.block_on(self.client())?;
            let tx = runtime.block_on(tenant_tx(&mut client, tenant)).map_err(db)?;
            let prepared = records.prepare(&mut Reading { pg: self, runtime, tx: &tx }, tenant, plan, gate)?;
            runtime.block_on(tx.commit()).map_err(db)?;
            prepared
        };
        if let Some(refused) = refused_whole(kind, &prepared) {
            return Ok(refused);
        }
        let mut client = runtime.block_on(self.client())?;
        let (tx, key, stamp) = runtime.block_on(self.begin_write(&mut client, tenant))?;
        let outcome = {
            let mut ledger = Writing { reading: Reading { pg: self, runtime, tx: &tx }, key, stamp };
            Records::apply(&mut ledger, tenant, kind, prepared, gate, audit)?
        };
        if matches!(outcome, Outcome::Applied { .. }) {
            runtime.block_on(commit(tx))?;
        }
        Ok(outcome)
    }
}

impl Lookup for Reading<'_> {
    fn find(&mut self, tenant: &str, resource_type: &str, wanted: &Identifier) -> Result<Vec<String>, RecordError> {
        let value = blind_identifier(&self.pg.keys.names, tenant, &wanted.value).to_vec();
        let rows = self
            .runtime
            .block_on(self.tx.query(
                "SELECT DISTINCT id FROM resource_identifiers
                 WHERE tenant = $1 AND type = $2 AND value_key = $3 AND ($4 = '' OR system = $4) LIMIT 8",
                &[&tenant, &resource_type, &value, &wanted.system],
            ))
            .map_err(db)?;
        let mut ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort();
        Ok(ids)
    }

    fn current(&mut self, tenant: &str, resource_type: &str, id: &str) -> Result<Option<Stored>, RecordError> {
        self.runtime.block_on(self.pg.read_in(self.tx, None, tenant, resource_type, id))
    }
}

impl Lookup for Writing<'_> {
    fn find(&mut self, tenant: &str, resource_type: &str, wanted: &Identifier) -> Result<Vec<String>, RecordError> {
        self.reading.find(tenant, resource_type, wanted)
    }

    fn current(&mut self, tenant: &str, resource_type: &str, id: &str) -> Result<Option<Stored>, RecordError> {
        let Reading { pg, runtime, tx } = &self.reading;
        runtime.block_on(pg.read_in(tx, Some(&self.key), tenant, resource_type, id))
    }
}

impl Ledger for Writing<'_> {
    fn write(
        &mut self,
        tenant: &str,
        checked: Checked,
        id: &str,
        version: i64,
        author: Option<&str>,
    ) -> Result<Stored, RecordError> {
        let Reading { pg, runtime, tx } = &self.reading;
        runtime.block_on(pg.write_row(tx, &self.key, tenant, checked, id, version, self.stamp, author))
    }

    fn remember(
        &mut self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        source: &Identifier,
    ) -> Result<(), RecordError> {
        let Reading { pg, runtime, tx } = &self.reading;
        let value = blind_identifier(&pg.keys.names, tenant, &source.value).to_vec();
        runtime
            .block_on(tx.execute(
                "INSERT INTO resource_identifiers (tenant, type, id, system, value_key) VALUES ($1, $2, $3, $4, $5)",
                &[&tenant, &resource_type, &id, &SOURCE_SYSTEM, &value],
            ))
            .map_err(db)?;
        Ok(())
    }

    fn remove(&mut self, tenant: &str, found: &Stored) -> Result<(), RecordError> {
        let Reading { runtime, tx, .. } = &self.reading;
        runtime.block_on(remove_row(tx, tenant, found, self.stamp.unix_timestamp()))
    }

    fn join_care_team(&mut self, tenant: &str, user: &str, patient: &str) -> Result<(), RecordError> {
        let Reading { pg, runtime, tx } = &self.reading;
        runtime.block_on(pg.link_in(tx, tenant, user, patient, "care-team"))
    }

    fn audit(&mut self, tenant: &str, event: &AuditEvent) -> Result<(), RecordError> {
        let Reading { pg, runtime, tx } = &self.reading;
        runtime.block_on(crate::pg::audit::append_in(tx, &pg.keys.audit, tenant, vec![event.clone()]))?;
        Ok(())
    }

    fn savepoint(&mut self, sql: &str) -> Result<(), RecordError> {
        let Reading { runtime, tx, .. } = &self.reading;
        runtime.block_on(tx.batch_execute(sql)).map_err(db)
    }
}
