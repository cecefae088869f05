//! Deletions, and the tombstones they leave so that devices remove their cached copies at
//! their next sync (minimum necessary applies offline too). A deleted DocumentReference's
//! attachments are deleted with it.

use rusqlite::{named_params, params};

use super::access::PatientFilter;
use super::{RecordError, Records, Stored, Writer};

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
            return Err(super::invalid(
                "Patient",
                "business-rule",
                "Patient: a patient's record is not deleted; remove them from the care team instead",
            ));
        }
        let mut conn = self.store.lock();
        let tx = conn.transaction()?;
        let stored = super::current(&tx, tenant, resource_type, id)?.ok_or(RecordError::NotFound)?;
        if stored.version != expected_version {
            return Err(RecordError::VersionConflict);
        }
        tx.prepare_cached("DELETE FROM resource_codes WHERE tenant = ?1 AND type = ?2 AND id = ?3")?
            .execute(params![tenant, resource_type, id])?;
        tx.prepare_cached("DELETE FROM resources WHERE tenant = ?1 AND type = ?2 AND id = ?3")?.execute(params![
            tenant,
            resource_type,
            id
        ])?;
        tx.prepare_cached("INSERT INTO removed (tenant, type, id, patient, removed_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![tenant, resource_type, id, stored.patient, now_unix])?;
        // A deleted reference takes its attachments with it: their links stop working now.
        if resource_type == "DocumentReference" {
            super::documents::forget_unlinked(&tx, tenant, id, None)?;
        }
        writer.record(&tx, &stored)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Each patient `filter` reaches in `tenant`, by id, with the latest change in their
    /// compartment (sortable UTC); and the newest deletion the caller sees (`visible`,
    /// among the compartments `filter` reaches): what `GET /sync/status` answers. Not the
    /// tenant's newest — polling that would count everyone's deletions.
    pub fn sync_status(
        &self,
        tenant: &str,
        filter: &PatientFilter,
        visible: impl Fn(&Removed) -> bool,
    ) -> Result<(Vec<(String, String)>, i64), RecordError> {
        let conn = self.store.read();
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
        let (any, ids) = reach(filter);
        let mut newest = conn.prepare_cached(&format!("{REMOVED} WHERE {IN_REACH} ORDER BY seq DESC"))?;
        let mut rows = newest.query(named_params! {":tenant": tenant, ":any": any, ":ids": ids})?;
        let mut removed_through = 0;
        while let Some(row) = rows.next()? {
            let removed = removed_row(row)?;
            if visible(&removed) {
                removed_through = removed.seq;
                break;
            }
        }
        Ok((patients, removed_through))
    }

    /// Up to `limit` deletions in `tenant` after `after`, oldest first, in the compartments
    /// `filter` reaches (and in none: the directory); the caller still decides each. Other
    /// patients' deletions are not even scanned, so a page's end says nothing about them.
    pub fn removed_after(
        &self,
        tenant: &str,
        filter: &PatientFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Removed>, RecordError> {
        let conn = self.store.read();
        let (any, ids) = reach(filter);
        let mut stmt =
            conn.prepare_cached(&format!("{REMOVED} WHERE {IN_REACH} AND seq > :after ORDER BY seq LIMIT :limit"))?;
        let rows = stmt.query_map(
            named_params! {":tenant": tenant, ":any": any, ":ids": ids, ":after": after, ":limit": limit},
            removed_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

/// A deletion's columns, as [`removed_row`] reads them.
const REMOVED: &str = "SELECT seq, type, id, patient FROM removed";

/// Deletions in `:tenant` in the compartments a filter reaches: all (`:any`), or those of
/// the patients in the JSON array `:ids`; and those in no compartment.
const IN_REACH: &str =
    "tenant = :tenant AND (:any OR patient IS NULL OR patient IN (SELECT value FROM json_each(:ids)))";

/// A filter as SQL parameters: whether it reaches everyone, and the ids it reaches.
fn reach(filter: &PatientFilter) -> (bool, String) {
    match filter {
        PatientFilter::Any => (true, "[]".into()),
        PatientFilter::Only(ids) => (false, serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())),
        PatientFilter::Nothing => (false, "[]".into()),
    }
}

fn removed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Removed> {
    Ok(Removed { seq: r.get(0)?, resource_type: r.get(1)?, id: r.get(2)?, patient: r.get(3)? })
}
