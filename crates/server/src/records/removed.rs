//! Deletions, and the tombstones they leave so that devices remove their cached copies at
//! their next sync (minimum necessary applies offline too). A deleted DocumentReference's
//! attachments are deleted with it.

use rusqlite::params;
use rusqlite::types::Value as SqlValue;

use super::access::{Access, Data, PatientFilter, SERVED_TYPES};
use super::{Engine, RecordError, Records, Stored, Writer};

/// A resource deleted on the server, in deletion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Position in the tenant's deletions; devices ask for those after the last they saw.
    pub seq: i64,
    /// FHIR type.
    pub resource_type: String,
    /// Opaque id.
    pub id: String,
    /// The patient whose compartment held it.
    pub patient: Option<String>,
}

impl Records {
    /// Deletes `resource_type/id` in `tenant` if it is still at `expected_version` (the one
    /// whose author and patient the caller's right to delete was checked against: a version
    /// written meanwhile is a conflict, never deleted unseen), leaving a tombstone, with the
    /// writer's audit record in the same transaction. Patients themselves are not deleted
    /// (their records would be orphaned); that is refused as invalid.
    pub fn delete(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        expected_version: i64,
        now_unix: i64,
        writer: &Writer<'_>,
    ) -> Result<Stored, RecordError> {
        if resource_type == "Patient" {
            return Err(patient_not_deleted());
        }
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => {
                return runtime.block_on(pg.delete(tenant, resource_type, id, expected_version, now_unix, writer));
            }
        };
        let mut conn = store.lock();
        let tx = conn.transaction()?;
        let stored = super::current(&tx, tenant, resource_type, id)?.ok_or(RecordError::NotFound)?;
        if stored.version != expected_version {
            return Err(RecordError::VersionConflict);
        }
        remove(&tx, tenant, &stored, now_unix)?;
        writer.record(&tx, &stored)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Each patient `filter` reaches in `tenant`, by id, with the latest change in their
    /// compartment (sortable UTC); and the newest deletion within `scope`: what `GET
    /// /sync/status` answers. Not the tenant's newest — polling that would count everyone's
    /// deletions.
    pub fn sync_status(
        &self,
        tenant: &str,
        filter: &PatientFilter,
        scope: &DeletionScope,
    ) -> Result<(Vec<(String, String)>, i64), RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.sync_status(tenant, filter, scope)),
        };
        let conn = store.read();
        let mut patients = Vec::new();
        match filter {
            PatientFilter::Nothing => {}
            PatientFilter::Only(ids) => {
                // The Patient resource itself is in its own compartment: no row, no patient.
                let mut latest =
                    conn.prepare_cached("SELECT max(last_updated) FROM resources WHERE tenant = ?1 AND patient = ?2")?;
                for id in ids {
                    if let Some(changed) = latest.query_row(params![tenant, id], |r| r.get::<_, Option<String>>(0))? {
                        patients.push((id.clone(), changed));
                    }
                }
            }
            PatientFilter::Any => {
                let mut all = conn.prepare_cached(
                    "SELECT patient, max(last_updated) FROM resources WHERE tenant = ?1 AND patient IS NOT NULL
                     GROUP BY patient HAVING max(type = 'Patient') = 1 ORDER BY patient",
                )?;
                let rows = all.query_map([tenant], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    patients.push(row?);
                }
            }
        }
        let (clause, values) = scope.sql();
        let mut newest = conn.prepare(&format!("{REMOVED} WHERE tenant = ?1 AND ({clause}) ORDER BY seq DESC"))?;
        let mut rows = newest
            .query(rusqlite::params_from_iter(std::iter::once(SqlValue::from(tenant.to_owned())).chain(values)))?;
        let removed_through = match rows.next()? {
            Some(row) => row.get(0)?,
            None => 0,
        };
        Ok((patients, removed_through))
    }

    /// Up to `limit` deletions in `tenant` after `after`, oldest first, within `scope`.
    /// Deletions outside it are not even scanned, so a page's end (`after`, `more`) says
    /// nothing about them.
    pub fn removed_after(
        &self,
        tenant: &str,
        scope: &DeletionScope,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Removed>, RecordError> {
        let store = match &self.engine {
            Engine::Sqlcipher(store) => store,
            Engine::Postgres(pg, runtime) => return runtime.block_on(pg.removed_after(tenant, scope, after, limit)),
        };
        let conn = store.read();
        let (clause, values) = scope.sql();
        let n = values.len();
        let mut stmt = conn.prepare(&format!(
            "{REMOVED} WHERE tenant = ?1 AND ({clause}) AND seq > ?{} ORDER BY seq LIMIT ?{}",
            n + 2,
            n + 3
        ))?;
        let values = std::iter::once(SqlValue::from(tenant.to_owned()))
            .chain(values)
            .chain([SqlValue::Integer(after), SqlValue::Integer(i64::from(limit))]);
        let rows = stmt.query_map(rusqlite::params_from_iter(values), removed_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// The refusal of a Patient's deletion: their records would be orphaned.
pub(crate) fn patient_not_deleted() -> RecordError {
    super::invalid(
        "Patient",
        "business-rule",
        "Patient: a patient's record is not deleted; remove them from the care team instead",
    )
}

/// A deletion's columns, as [`removed_row`] reads them.
const REMOVED: &str = "SELECT seq, type, id, patient FROM removed";

/// The deletions a caller may learn of: for each kind of data they read, its resource types
/// and the patients whose compartments they reach (everyone's, and what is in none, for a
/// tenant-wide reach). Exactly what [`Access::decide`] lets them read, so that nothing
/// outside it — another patient's record, billing's clinical data — moves their counters.
#[derive(Debug, Clone, Default)]
pub struct DeletionScope(Vec<(Vec<&'static str>, PatientFilter)>);

impl DeletionScope {
    /// What `access` reads, kind by kind.
    pub fn of(access: &Access) -> Self {
        let mut kinds = Vec::new();
        for data in Data::ALL {
            let types: Vec<&'static str> = SERVED_TYPES.iter().copied().filter(|t| Data::of(t) == Some(data)).collect();
            match access.read_filter(data) {
                PatientFilter::Nothing => {}
                filter if !types.is_empty() => kinds.push((types, filter)),
                _ => {}
            }
        }
        Self(kinds)
    }

    /// Each kind of data the caller reads: its resource types, and whose compartments.
    pub(crate) fn kinds(&self) -> &[(Vec<&'static str>, PatientFilter)] {
        &self.0
    }

    /// The SQL condition (parameters from `?2`) and its values.
    fn sql(&self) -> (String, Vec<SqlValue>) {
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        for (types, filter) in &self.0 {
            let types_at = values.len() + 2;
            values.push(json_list(types));
            let of_type = format!("type IN (SELECT value FROM json_each(?{types_at}))");
            match filter {
                PatientFilter::Any => clauses.push(of_type),
                PatientFilter::Only(ids) => {
                    let ids_at = values.len() + 2;
                    values.push(json_list(ids));
                    clauses.push(format!("({of_type} AND patient IN (SELECT value FROM json_each(?{ids_at})))"));
                }
                PatientFilter::Nothing => {}
            }
        }
        if clauses.is_empty() {
            clauses.push("0".into());
        }
        (clauses.join(" OR "), values)
    }
}

/// A list as the JSON text `json_each` reads.
fn json_list<T: serde::Serialize>(items: &[T]) -> SqlValue {
    SqlValue::Text(serde_json::to_string(items).unwrap_or_else(|_| "[]".into()))
}

fn removed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Removed> {
    Ok(Removed { seq: r.get(0)?, resource_type: r.get(1)?, id: r.get(2)?, patient: r.get(3)? })
}

/// Deletes `stored` on `tx` and leaves its tombstone, so devices drop their copies at their
/// next sync; a DocumentReference takes its attachments with it (their links stop working
/// now).
pub(super) fn remove(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    stored: &Stored,
    now_unix: i64,
) -> Result<(), RecordError> {
    let (resource_type, id) = (stored.resource_type.as_str(), stored.id.as_str());
    for table in ["resource_codes", "resources"] {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE tenant = ?1 AND type = ?2 AND id = ?3"))?
            .execute(params![tenant, resource_type, id])?;
    }
    // Where an import found it is kept: the same files imported again must not bring back
    // what the clinic deleted since.
    tx.prepare_cached("DELETE FROM resource_identifiers WHERE tenant = ?1 AND type = ?2 AND id = ?3 AND system != ?4")?
        .execute(params![tenant, resource_type, id, super::bundle::plan::SOURCE_SYSTEM])?;
    tx.prepare_cached("INSERT INTO removed (tenant, type, id, patient, removed_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![tenant, resource_type, id, stored.patient, now_unix])?;
    if resource_type == "DocumentReference" {
        super::documents::forget_unlinked(tx, tenant, id, None)?;
    }
    Ok(())
}
