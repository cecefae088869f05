//! FHIR Bulk Data export (`$export`): a tenant's records — all of them, every patient's, or
//! one care team's — as one NDJSON file per type, read from one snapshot of the store. A
//! clinic can take its records elsewhere (no lock-in): what `carekeep-server import` reads.
//! Documents travel inside their DocumentReference (`attachment.data`), so an export is
//! whole without the server. Files are kept encrypted, each under its own key wrapped by the
//! documents key, as documents are; they are fetched through signed, expiring links.

use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use zeroize::Zeroizing;

use super::access::{Data, SERVED_TYPES};
use super::{RecordError, Records, documents};
use crate::keys;

/// Whose records an export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole tenant: every patient's records and the directory (`GET /fhir/$export`).
    System,
    /// Every patient's compartment (`GET /fhir/Patient/$export`).
    Patients,
    /// The compartments of the patients on one clinician's or nurse's care team
    /// (`GET /fhir/Group/{user-id}/$export`: the care team is the group).
    CareTeam(String),
}

/// One file of an export.
#[derive(Debug, Clone)]
pub struct File {
    /// The resource type it holds.
    pub resource_type: String,
    /// How many resources (lines).
    pub count: u64,
    /// The patients whose records it holds (audited when it is fetched).
    pub patients: Vec<String>,
    /// The NDJSON text.
    pub ndjson: Zeroizing<Vec<u8>>,
}

/// An export's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Still being written.
    Running,
    /// Done: the time of its snapshot, and each file's number, type and count.
    Complete {
        /// When the snapshot was read (RFC 3339).
        transaction_time: String,
        /// Each file: its number, type and count.
        files: Vec<(i64, String, u64)>,
    },
    /// Failed; try again.
    Failed,
}

/// An export someone asked for.
#[derive(Debug, Clone)]
pub struct Export {
    /// Its id.
    pub id: String,
    /// Who asked (only they may see it).
    pub user_id: String,
    /// The request as asked (kick-off URL path and query).
    pub request: String,
    /// Where it stands.
    pub status: Status,
}

/// One export file as fetched: its text and the patients whose records it holds.
#[derive(Debug)]
pub struct Fetched {
    /// The NDJSON text.
    pub ndjson: Zeroizing<Vec<u8>>,
    /// The patients it holds (each is audited).
    pub patients: Vec<String>,
}

/// How long an export's files are kept.
pub const KEEP_SECS: i64 = 24 * 3600;

fn aad(tenant: &str, export: &str, n: i64) -> Vec<u8> {
    let mut aad = b"carekeep.export.v1\0".to_vec();
    for part in [tenant, export, &n.to_string()] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad
}

impl Records {
    /// The records `scope` reaches in `tenant`, of `types` (all served types when empty)
    /// changed since `since` (sortable UTC), one file per type, from one snapshot.
    pub fn export_files(
        &self,
        tenant: &str,
        scope: &Scope,
        types: &[String],
        since: Option<&str>,
    ) -> Result<Vec<File>, RecordError> {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => {
                return runtime.block_on(pg.export_files(tenant, scope, types, since));
            }
        };
        let conn = store.read();
        // One read transaction: every file from the same moment.
        conn.execute_batch("BEGIN")?;
        let files = self.read_files(&conn, tenant, scope, types, since);
        conn.execute_batch("COMMIT")?;
        files
    }

    fn read_files(
        &self,
        conn: &Connection,
        tenant: &str,
        scope: &Scope,
        types: &[String],
        since: Option<&str>,
    ) -> Result<Vec<File>, RecordError> {
        let (care_team, compartments_only) = scope.filter();
        let mut files = Vec::new();
        let wanted = wanted_types(scope, types);
        let mut stmt = conn.prepare_cached(
            "SELECT id, patient, json FROM resources r
             WHERE tenant = ?1 AND type = ?2 AND (?3 IS NULL OR last_updated > ?3)
               AND (?4 = 0 OR patient IS NOT NULL)
               AND (?5 IS NULL OR patient IN (SELECT patient FROM patient_links
                                              WHERE user_id = ?5 AND relation = 'care-team'))
             ORDER BY id",
        )?;
        for resource_type in wanted {
            let mut ndjson = Zeroizing::new(Vec::new());
            let mut patients = std::collections::BTreeSet::new();
            let mut count = 0;
            let rows = stmt.query_map(params![tenant, resource_type, since, compartments_only, care_team], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, String>(2)?))
            })?;
            for row in rows {
                let (_, patient, json) = row?;
                let line = if resource_type == "DocumentReference" {
                    self.with_documents_inline(conn, tenant, &json)?
                } else {
                    json
                };
                ndjson.extend_from_slice(line.as_bytes());
                ndjson.push(b'\n');
                patients.extend(patient);
                count += 1;
            }
            if count > 0 {
                files.push(File {
                    resource_type: (*resource_type).to_owned(),
                    count,
                    patients: patients.into_iter().collect(),
                    ndjson,
                });
            }
        }
        Ok(files)
    }

    /// A DocumentReference with its attachments' bytes inline (`data`), as the file that
    /// leaves the server must carry them.
    fn with_documents_inline(&self, conn: &Connection, tenant: &str, json: &str) -> Result<String, RecordError> {
        documents_inline(json, |id| documents::read_document(conn, &self.documents_key, tenant, id))
    }

    /// Whether `user_id` names a Group of `tenant` for `$export`: a clinician's or nurse's
    /// care team.
    pub fn is_group(&self, tenant: &str, user_id: &str) -> bool {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => return runtime.block_on(pg.is_group(tenant, user_id)),
        };
        store
            .read()
            .query_row(
                "SELECT 1 FROM users WHERE tenant = ?1 AND id = ?2 AND role IN ('clinician', 'nurse')",
                [tenant, user_id],
                |_| Ok(()),
            )
            .is_ok()
    }

    /// Starts an export for `user_id`: its id. Exports older than a day are removed now.
    pub fn begin_export(&self, tenant: &str, user_id: &str, request: &str, now: i64) -> Result<String, RecordError> {
        let id = crate::ids::new_id("export")?;
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => {
                return runtime
                    .block_on(pg.begin_export(tenant, &id, user_id, request, now))
                    .map(|()| id);
            }
        };
        let conn = store.lock();
        conn.execute("DELETE FROM exports WHERE created_at < ?1", [now - KEEP_SECS])?;
        conn.execute(
            "INSERT INTO exports (id, tenant, user_id, request, status, created_at) VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
            params![id, tenant, user_id, request, now],
        )?;
        Ok(id)
    }

    /// Stores an export's files, encrypted, and marks it complete (or failed, with no files).
    pub fn finish_export(
        &self,
        tenant: &str,
        id: &str,
        files: Option<Vec<File>>,
        transaction_time: &str,
    ) -> Result<(), RecordError> {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => {
                return runtime.block_on(pg.finish_export(tenant, id, files, transaction_time));
            }
        };
        let mut conn = store.lock();
        let tx = conn.transaction()?;
        let status = if files.is_some() { "complete" } else { "failed" };
        for (n, file) in files.into_iter().flatten().enumerate() {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            let (wrapped, ciphertext) = seal_file(&self.documents_key, &aad(tenant, id, n), &file.ndjson)?;
            let patients = serde_json::to_string(&file.patients).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT INTO export_files (export_id, n, type, count, patients, wrapped_key, ciphertext)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    n,
                    file.resource_type,
                    i64::try_from(file.count).unwrap_or(i64::MAX),
                    patients,
                    wrapped,
                    ciphertext
                ],
            )?;
        }
        tx.execute(
            "UPDATE exports SET status = ?1, finished_at = ?2 WHERE id = ?3 AND tenant = ?4",
            params![status, transaction_time, id, tenant],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Export `id` of `tenant`, if it exists.
    pub fn export(&self, tenant: &str, id: &str) -> Result<Option<Export>, RecordError> {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => return runtime.block_on(pg.export(tenant, id)),
        };
        let conn = store.read();
        let row: Option<(String, String, String, Option<String>)> = conn
            .query_row(
                "SELECT user_id, request, status, finished_at FROM exports WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((user_id, request, status, finished_at)) = row else { return Ok(None) };
        let status = match status.as_str() {
            "complete" => {
                let mut stmt =
                    conn.prepare_cached("SELECT n, type, count FROM export_files WHERE export_id = ?1 ORDER BY n")?;
                let files = stmt
                    .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0))))?
                    .collect::<rusqlite::Result<_>>()?;
                Status::Complete { transaction_time: finished_at.unwrap_or_default(), files }
            }
            "running" => Status::Running,
            _ => Status::Failed,
        };
        Ok(Some(Export { id: id.to_owned(), user_id, request, status }))
    }

    /// File `n` of export `id`, decrypted, with the patients it holds.
    pub fn export_file(&self, tenant: &str, id: &str, n: i64) -> Result<Option<Fetched>, RecordError> {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => return runtime.block_on(pg.export_file(tenant, id, n)),
        };
        let row: Option<(String, Vec<u8>, Vec<u8>)> = store
            .read()
            .query_row(
                "SELECT f.patients, f.wrapped_key, f.ciphertext FROM export_files f JOIN exports e ON e.id = f.export_id
                 WHERE e.tenant = ?1 AND f.export_id = ?2 AND f.n = ?3",
                params![tenant, id, n],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((patients, wrapped, ciphertext)) = row else { return Ok(None) };
        let bytes = open_file(&self.documents_key, &aad(tenant, id, n), &wrapped, &ciphertext)?;
        Ok(Some(Fetched { ndjson: bytes, patients: serde_json::from_str(&patients).unwrap_or_default() }))
    }

    /// Deletes export `id` and its files.
    pub fn delete_export(&self, tenant: &str, id: &str) -> Result<bool, RecordError> {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => return runtime.block_on(pg.delete_export(tenant, id)),
        };
        let conn = store.lock();
        conn.execute(
            "DELETE FROM export_files WHERE export_id = (SELECT id FROM exports WHERE tenant = ?1 AND id = ?2)",
            params![tenant, id],
        )?;
        Ok(conn.execute("DELETE FROM exports WHERE tenant = ?1 AND id = ?2", params![tenant, id])? > 0)
    }
}

impl Scope {
    /// The care team it is limited to, if any, and whether it holds patients' compartments
    /// only (no directory).
    pub(crate) fn filter(&self) -> (Option<&str>, bool) {
        match self {
            Scope::CareTeam(user) => (Some(user.as_str()), true),
            Scope::Patients => (None, true),
            Scope::System => (None, false),
        }
    }
}

/// The types an export of `scope` holds: those asked for (all served ones when none), but
/// never the audit trail, and the directory only for the whole tenant.
pub(crate) fn wanted_types(scope: &Scope, types: &[String]) -> Vec<&'static str> {
    let (_, compartments_only) = scope.filter();
    SERVED_TYPES
        .iter()
        .copied()
        .filter(|t| {
            Data::of(t).is_some_and(|d| d != Data::AuditTrail && !(compartments_only && d == Data::Directory))
                && (types.is_empty() || types.iter().any(|w| w == *t))
        })
        .collect()
}

/// A DocumentReference's JSON with the bytes of each attachment `read` finds put inline
/// (`data`, in place of the download `url`).
pub(crate) fn documents_inline(
    json: &str,
    mut read: impl FnMut(&str) -> Result<Option<documents::Document>, RecordError>,
) -> Result<String, RecordError> {
    let mut value: Value = serde_json::from_str(json).map_err(|_| broken())?;
    for content in value.get_mut("content").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(attachment) = content.get_mut("attachment").and_then(Value::as_object_mut) else { continue };
        let Some(id) = attachment
            .get("url")
            .and_then(Value::as_str)
            .and_then(|u| u.strip_prefix("/documents/"))
        else {
            continue;
        };
        let Some(document) = read(id)? else { continue };
        attachment.remove("url");
        attachment
            .insert("data".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(&*document.bytes)));
    }
    Ok(value.to_string())
}

/// An export file's bytes under a fresh key, and that key wrapped by `kek`, both bound to
/// `aad`: (wrapped key, ciphertext).
pub(crate) fn seal_file(kek: &[u8; 32], aad: &[u8], ndjson: &[u8]) -> Result<(Vec<u8>, Vec<u8>), RecordError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut_slice()).map_err(|e| crate::ServerError::KeyGeneration(e.to_string()))?;
    let ciphertext = keys::seal(&key, aad, ndjson)?;
    let wrapped = keys::seal(kek, aad, key.as_slice())?;
    Ok((wrapped, ciphertext))
}

/// Opens what [`seal_file`] sealed; an altered or moved file is an error.
pub(crate) fn open_file(
    kek: &[u8; 32],
    aad: &[u8],
    wrapped: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecordError> {
    let key = keys::open(kek, aad, wrapped).ok_or_else(broken)?;
    let key: [u8; 32] = key.as_slice().try_into().map_err(|_| broken())?;
    keys::open(&Zeroizing::new(key), aad, ciphertext).ok_or_else(broken)
}

fn broken() -> RecordError {
    RecordError::Store(crate::ServerError::Store("a stored export failed its integrity check".into()))
}
