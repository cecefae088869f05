//! The FHIR R4 resource store inside the vault: resources kept as their JSON text, indexed
//! by type, id, version, last update, patient, codes and effective date.

pub mod dangerous;
mod outbox;
mod query;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use outbox::{Outbox, OutboxEntry, PendingWrite, WriteMethod};
pub use query::{CodeFilter, ResourceQuery, TrendPoint};

use crate::fhir::{IndexedResource, References, id_from_full_url, index_resource};
use crate::{Error, Result};

/// The records of an unlocked vault. Borrowed from [`crate::Vault::store`].
pub struct Store<'v> {
    conn: &'v mut Connection,
}

/// A resource as stored: its identity, version and the JSON exactly as it was ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    /// The resource type, e.g. `Observation`.
    pub resource_type: String,
    /// The logical id.
    pub id: String,
    /// `meta.versionId`, when the resource had one.
    pub version_id: Option<String>,
    /// The resource's JSON text, unchanged.
    pub json: String,
}

/// What a Bundle ingest stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestSummary {
    /// Resources inserted or replaced.
    pub stored: usize,
}

#[derive(Deserialize)]
struct BundleIn<'a> {
    #[serde(rename = "resourceType")]
    resource_type: Option<&'a str>,
    #[serde(default, borrow)]
    entry: Vec<EntryIn<'a>>,
}

#[derive(Deserialize)]
struct EntryIn<'a> {
    #[serde(rename = "fullUrl")]
    full_url: Option<&'a str>,
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
}

impl<'v> Store<'v> {
    pub(crate) fn new(conn: &'v mut Connection) -> Self {
        Self { conn }
    }

    /// Stores every resource of a FHIR Bundle in one transaction: all of them, or — when
    /// any entry is not a valid resource — none, with an error naming the entry's path.
    /// Resources are stored as their exact JSON text; entries without an `id` go by the UUID
    /// of their `urn:uuid:` full URL, and references to such URLs are resolved for indexing.
    pub fn ingest_bundle(&mut self, bundle_json: &str) -> Result<IngestSummary> {
        let bundle: BundleIn<'_> = serde_json::from_str(bundle_json).map_err(|_| {
            Error::invalid("Bundle", "not a JSON Bundle (an object with resourceType and an entry array)")
        })?;
        if bundle.resource_type != Some("Bundle") {
            return Err(Error::invalid("Bundle.resourceType", "expected \"Bundle\""));
        }
        let mut values = Vec::with_capacity(bundle.entry.len());
        let mut refs = References::default();
        for (i, entry) in bundle.entry.iter().enumerate() {
            let raw = entry.resource.ok_or_else(|| Error::invalid(format!("entry[{i}].resource"), "missing"))?;
            let value: serde_json::Value = serde_json::from_str(raw.get())
                .map_err(|_| Error::invalid(format!("entry[{i}].resource"), "not valid JSON"))?;
            let fallback = entry.full_url.and_then(id_from_full_url);
            if let (Some(url), Some(rt)) = (entry.full_url, value.get("resourceType").and_then(|t| t.as_str()))
                && let Some(id) = value.get("id").and_then(|v| v.as_str()).or(fallback)
            {
                refs.insert(url, rt, id);
            }
            values.push((value, raw.get(), fallback));
        }
        let indexed = values
            .iter()
            .enumerate()
            .map(|(i, (value, raw, fallback))| {
                index_resource(value, raw, &format!("entry[{i}].resource"), *fallback, &refs)
            })
            .collect::<Result<Vec<_>>>()?;
        let tx = self.conn.transaction()?;
        for resource in &indexed {
            upsert(&tx, resource)?;
        }
        tx.commit()?;
        Ok(IngestSummary { stored: indexed.len() })
    }

    /// Stores (inserts or replaces) one resource, which must carry its own `id`.
    pub fn put(&mut self, resource_json: &str) -> Result<StoredResource> {
        let value: serde_json::Value =
            serde_json::from_str(resource_json).map_err(|_| Error::invalid("resource", "not valid JSON"))?;
        let resource = index_resource(&value, resource_json, "resource", None, &References::default())?;
        let tx = self.conn.transaction()?;
        upsert(&tx, &resource)?;
        tx.commit()?;
        Ok(StoredResource {
            resource_type: resource.resource_type,
            id: resource.id,
            version_id: resource.version_id,
            json: resource.json,
        })
    }

    /// One resource by type and id.
    pub fn get(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>> {
        self.conn
            .query_row(
                "SELECT type, id, version_id, json FROM resources WHERE type = ?1 AND id = ?2",
                params![resource_type, id],
                stored_row,
            )
            .optional()
            .map_err(Error::from)
    }

    /// Removes a resource (deleted on the server, or access lost). `true` if it was there.
    pub fn delete(&mut self, resource_type: &str, id: &str) -> Result<bool> {
        let n = self.conn.execute("DELETE FROM resources WHERE type = ?1 AND id = ?2", params![resource_type, id])?;
        Ok(n > 0)
    }

    /// How many resources the store holds.
    pub fn count(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row("SELECT count(*) FROM resources", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every resource, in insertion order (export, tests).
    pub fn all(&self) -> Result<Vec<StoredResource>> {
        let mut stmt = self.conn.prepare("SELECT type, id, version_id, json FROM resources ORDER BY pk")?;
        let rows = stmt.query_map([], stored_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(Error::from)
    }

    /// The durable queue of writes waiting to be sent to the server.
    pub fn outbox(&mut self) -> Outbox<'_> {
        Outbox::new(self.conn)
    }
}

fn stored_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResource> {
    Ok(StoredResource { resource_type: row.get(0)?, id: row.get(1)?, version_id: row.get(2)?, json: row.get(3)? })
}

fn upsert(tx: &Transaction<'_>, r: &IndexedResource) -> Result<()> {
    let pk: i64 = tx.query_row(
        "INSERT INTO resources (type, id, version_id, last_updated, patient, effective, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (type, id) DO UPDATE SET
            version_id = excluded.version_id, last_updated = excluded.last_updated,
            patient = excluded.patient, effective = excluded.effective, json = excluded.json
         RETURNING pk",
        params![r.resource_type, r.id, r.version_id, r.last_updated, r.patient, r.effective, r.json],
        |row| row.get(0),
    )?;
    tx.execute("DELETE FROM codes WHERE resource = ?1", [pk])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO codes (resource, kind, system, code, patient, effective, value, unit)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for c in &r.codes {
        insert.execute(params![pk, c.kind, c.system, c.code, r.patient, r.effective, c.value, c.unit])?;
    }
    Ok(())
}
