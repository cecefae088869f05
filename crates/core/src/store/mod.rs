//! The FHIR R4 resource store inside the vault: resources kept as their JSON text, indexed
//! by type, id, version, last update, patient, codes and effective date.

mod access_log;
pub mod dangerous;
mod documents;
mod outbox;
mod query;
mod set_aside;
mod sync_state;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use documents::CachedDocument;
pub use outbox::{Outbox, OutboxEntry, PendingWrite, WriteMethod};
pub use query::{CodeFilter, ResourceQuery, TrendPoint, patient_reference};
pub use set_aside::{Resolution, SetAside, SetAsideKind};
pub use sync_state::{PageMark, SyncPatient};

use crate::{Error, Result};
use carekeep_fhir::{IndexedResource, References, id_from_full_url, index_resource};

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

/// Just the identity of a resource, read without building the rest.
#[derive(Deserialize)]
struct Identity<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<&'a str>,
    #[serde(borrow)]
    id: Option<&'a str>,
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
        self.ingest_with(bundle_json, |_| Ok(()))
    }

    /// As [`Store::ingest_bundle`], with `also` run in the same transaction: what a sync
    /// records about its progress lands together with the page, or not at all.
    pub(crate) fn ingest_with(
        &mut self,
        bundle_json: &str,
        also: impl FnOnce(&Transaction<'_>) -> Result<()>,
    ) -> Result<IngestSummary> {
        let bundle: BundleIn<'_> = serde_json::from_str(bundle_json).map_err(|_| {
            Error::invalid("Bundle", "not a JSON Bundle (an object with resourceType and an entry array)")
        })?;
        if bundle.resource_type != Some("Bundle") {
            return Err(Error::invalid("Bundle.resourceType", "expected \"Bundle\""));
        }
        // First pass, cheap: what each full URL stands for, so references can be resolved.
        let mut refs = References::default();
        let mut raws = Vec::with_capacity(bundle.entry.len());
        for (i, entry) in bundle.entry.iter().enumerate() {
            let raw = entry
                .resource
                .ok_or_else(|| Error::invalid(format!("entry[{i}].resource"), "missing"))?;
            let fallback = entry.full_url.and_then(id_from_full_url);
            if let Some(url) = entry.full_url
                && let Ok(identity) = serde_json::from_str::<Identity<'_>>(raw.get())
                && let (Some(rt), Some(id)) = (identity.resource_type, identity.id.or(fallback))
            {
                refs.insert(url, rt, id);
            }
            raws.push((raw.get(), fallback));
        }
        // Second pass, streaming: check, index and write each entry. An error drops the
        // transaction, which rolls back everything written so far.
        let bulk = raws.len() >= BULK_INGEST;
        if bulk {
            self.conn.execute_batch(BULK_CACHE_SIZE_PRAGMA)?;
        }
        let written = write_entries(self.conn, &raws, &refs, also);
        if bulk {
            // Back to the everyday cache, and its memory back to the system.
            let _ = self.conn.execute_batch(crate::vault::CACHE_SIZE_PRAGMA);
            let _ = self.conn.execute_batch("PRAGMA shrink_memory;");
        }
        written?;
        Ok(IngestSummary { stored: raws.len() })
    }

    /// Stores (inserts or replaces) one resource, which must carry its own `id`.
    pub fn put(&mut self, resource_json: &str) -> Result<StoredResource> {
        let tx = self.conn.transaction()?;
        let stored = put_in(&tx, resource_json)?;
        tx.commit()?;
        Ok(stored)
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
        let n = self
            .conn
            .execute("DELETE FROM resources WHERE type = ?1 AND id = ?2", params![resource_type, id])?;
        Ok(n > 0)
    }

    /// How many resources the store holds.
    pub fn count(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row("SELECT count(*) FROM resources", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every resource, in insertion order (export, tests).
    pub fn all(&self) -> Result<Vec<StoredResource>> {
        let mut stmt = self
            .conn
            .prepare("SELECT type, id, version_id, json FROM resources ORDER BY pk")?;
        let rows = stmt.query_map([], stored_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(Error::from)
    }

    /// The durable queue of writes waiting to be sent to the server.
    pub fn outbox(&mut self) -> Outbox<'_> {
        Outbox::new(self.conn)
    }
}

/// Resources per ingest from which the page cache grows for the transaction's length, so its
/// working set is not spilled mid-way (under SQLCipher, a spilled page is encrypted twice).
const BULK_INGEST: usize = 5_000;
const BULK_CACHE_SIZE_PRAGMA: &str = "PRAGMA cache_size = -131072;";

/// Writes checked entries in one transaction; nothing of it stays if any entry fails.
fn write_entries(
    conn: &mut Connection,
    raws: &[(&str, Option<&str>)],
    refs: &References,
    also: impl FnOnce(&Transaction<'_>) -> Result<()>,
) -> Result<()> {
    let tx = conn.transaction()?;
    for (i, (raw, fallback)) in raws.iter().enumerate() {
        let path = format!("entry[{i}].resource");
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|_| Error::invalid(&*path, "not valid JSON"))?;
        upsert(&tx, &index_resource(&value, raw, &path, *fallback, refs)?)?;
    }
    also(&tx)?;
    tx.commit()?;
    Ok(())
}

/// Stores one resource (which must carry its own `id`) inside `tx`.
fn put_in(tx: &Transaction<'_>, resource_json: &str) -> Result<StoredResource> {
    let value: serde_json::Value =
        serde_json::from_str(resource_json).map_err(|_| Error::invalid("resource", "not valid JSON"))?;
    let resource = index_resource(&value, resource_json, "resource", None, &References::default())?;
    upsert(tx, &resource)?;
    Ok(StoredResource {
        resource_type: resource.resource_type,
        id: resource.id,
        version_id: resource.version_id,
        json: resource.json.to_owned(),
    })
}

fn stored_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResource> {
    Ok(StoredResource { resource_type: row.get(0)?, id: row.get(1)?, version_id: row.get(2)?, json: row.get(3)? })
}

/// Inserts or replaces one resource and its codes. New resources (the bulk of a sync) take
/// the cheap path: one lookup, plain inserts, no statement journal and no `RETURNING` table.
fn upsert(tx: &Transaction<'_>, r: &IndexedResource<'_>) -> Result<()> {
    let existing: Option<i64> = tx
        .prepare_cached("SELECT pk FROM resources WHERE type = ?1 AND id = ?2")?
        .query_row(params![r.resource_type, r.id], |row| row.get(0))
        .optional()?;
    let columns =
        params![r.resource_type, r.id, r.version_id, r.last_updated, r.patient, r.effective, r.category, r.json];
    let pk = if let Some(pk) = existing {
        tx.prepare_cached(
            "UPDATE resources SET type = ?1, id = ?2, version_id = ?3, last_updated = ?4, patient = ?5,
                effective = ?6, category = ?7, json = ?8 WHERE pk = ?9",
        )?
        .execute(rusqlite::params_from_iter(columns.iter().copied().chain([&pk as &dyn rusqlite::ToSql])))?;
        tx.prepare_cached("DELETE FROM codes WHERE resource = ?1")?.execute([pk])?;
        pk
    } else {
        tx.prepare_cached(
            "INSERT INTO resources (type, id, version_id, last_updated, patient, effective, category, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(columns)?;
        tx.last_insert_rowid()
    };
    let mut insert = tx.prepare_cached(
        "INSERT INTO codes (resource, seq, system, code, patient, effective, value, unit)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (seq, c) in (0_i64..).zip(&r.codes) {
        insert.execute(params![pk, seq, c.system, c.code, r.patient, r.effective, c.value, c.unit])?;
    }
    Ok(())
}
