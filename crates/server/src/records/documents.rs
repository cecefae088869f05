//! Document bytes (a DocumentReference's attachments), kept out of the resource and
//! encrypted at rest: each object has its own random AES-256-GCM key, wrapped by the
//! documents key derived from the master key, both bound to the tenant and object id.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;
use zeroize::Zeroizing;

use super::{Problem, RecordError, Records};
use crate::keys;

/// Attachment bytes taken out of a resource, waiting to be stored with it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub(crate) id: String,
    pub(crate) content_type: String,
    bytes: Zeroizing<Vec<u8>>,
}

/// A stored document, decrypted.
pub struct Document {
    /// The patient whose record it is in.
    pub patient: String,
    /// Its MIME type.
    pub content_type: String,
    /// Its bytes.
    pub bytes: Zeroizing<Vec<u8>>,
}

/// Moves every `content[i].attachment.data` of a DocumentReference out of the resource,
/// leaving `url` (where to ask for a download link) and `size` in its place.
pub fn take_attachments(value: &mut Value) -> Result<Vec<Pending>, Vec<Problem>> {
    let mut pending = Vec::new();
    let mut problems = Vec::new();
    let contents = value.get_mut("content").and_then(Value::as_array_mut);
    for (i, content) in contents.into_iter().flatten().enumerate() {
        let path = format!("DocumentReference.content[{i}].attachment");
        let Some(attachment) = content.get_mut("attachment").and_then(Value::as_object_mut) else { continue };
        let Some(data) = attachment.remove("data") else { continue };
        let Some(bytes) = data.as_str().and_then(|d| STANDARD.decode(d).ok()) else {
            problems.push(Problem {
                path: format!("{path}.data"),
                code: "value",
                message: format!("{path}.data: not base64"),
            });
            continue;
        };
        let Some(content_type) = attachment.get("contentType").and_then(Value::as_str).map(str::to_owned) else {
            problems.push(Problem {
                path: format!("{path}.contentType"),
                code: "required",
                message: format!("{path}.contentType: required when the attachment has data"),
            });
            continue;
        };
        let Ok(id) = crate::ids::new_id("doc") else {
            problems.push(Problem { path, code: "exception", message: "could not store the attachment".into() });
            continue;
        };
        attachment.insert("url".into(), Value::String(format!("/documents/{id}")));
        attachment.insert("size".into(), Value::from(bytes.len()));
        pending.push(Pending { id, content_type, bytes: Zeroizing::new(bytes) });
    }
    if problems.is_empty() { Ok(pending) } else { Err(problems) }
}

fn aad(tenant: &str, id: &str) -> Vec<u8> {
    let mut aad = b"carekeep.document.v1\0".to_vec();
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// Encrypts and stores `pending` for `patient`, as the attachments of DocumentReference
/// `resource_id`, inside the resource's own transaction.
pub(super) fn store(
    tx: &Transaction<'_>,
    kek: &[u8; 32],
    tenant: &str,
    patient: &str,
    resource_id: &str,
    pending: &[Pending],
) -> Result<(), RecordError> {
    for doc in pending {
        let (wrapped, ciphertext) = seal(kek, tenant, doc)?;
        tx.execute(
            "INSERT INTO documents (tenant, id, patient, content_type, wrapped_key, ciphertext, resource_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![tenant, doc.id, patient, doc.content_type, wrapped, ciphertext, resource_id],
        )?;
    }
    Ok(())
}

/// `doc`'s bytes under a fresh key of their own, and that key wrapped by `kek`, both bound
/// to the tenant and the document's id: (wrapped key, ciphertext).
pub(crate) fn seal(kek: &[u8; 32], tenant: &str, doc: &Pending) -> Result<(Vec<u8>, Vec<u8>), RecordError> {
    seal_bound(kek, &aad(tenant, &doc.id), doc)
}

/// [`seal`], bound to `aad` (see [`bound_aad`]).
pub(crate) fn seal_bound(kek: &[u8; 32], aad: &[u8], doc: &Pending) -> Result<(Vec<u8>, Vec<u8>), RecordError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut_slice()).map_err(|e| crate::ServerError::KeyGeneration(e.to_string()))?;
    let ciphertext = keys::seal(&key, aad, &doc.bytes)?;
    let wrapped = keys::seal(kek, aad, key.as_slice())?;
    Ok((wrapped, ciphertext))
}

/// What a document kept in a shared database is bound to: its tenant and id, and the
/// patient and DocumentReference it belongs to — so a row refiled under another patient
/// (to hand it to someone who may read that one), or kept for another reference, does not
/// open. Each part length-prefixed.
pub(crate) fn bound_aad(tenant: &str, id: &str, patient: &str, resource_id: &str) -> Vec<u8> {
    let mut aad = b"carekeep.document.v2\0".to_vec();
    for part in [tenant, id, patient, resource_id] {
        aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Opens what [`seal`] made for document `id` of `tenant`; an altered or moved one is an
/// error, never bytes.
pub(crate) fn open(
    kek: &[u8; 32],
    tenant: &str,
    id: &str,
    wrapped: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecordError> {
    open_bound(kek, &aad(tenant, id), wrapped, ciphertext)
}

/// [`open`], for what [`seal_bound`] sealed under `aad`.
pub(crate) fn open_bound(
    kek: &[u8; 32],
    aad: &[u8],
    wrapped: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecordError> {
    let broken =
        || RecordError::Store(crate::ServerError::Store("a stored document failed its integrity check".into()));
    let key = keys::open(kek, aad, wrapped).ok_or_else(broken)?;
    let key: [u8; 32] = key.as_slice().try_into().map_err(|_| broken())?;
    keys::open(&Zeroizing::new(key), aad, ciphertext).ok_or_else(broken)
}

/// The document ids a DocumentReference's `json` links to (`/documents/<id>` urls).
pub(crate) fn linked_ids(json: &Value) -> Vec<String> {
    json.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/attachment/url").and_then(Value::as_str))
        .filter_map(|url| url.strip_prefix("/documents/"))
        .map(str::to_owned)
        .collect()
}

/// Deletes the bytes of DocumentReference `resource_id` that its version `json` no longer
/// links to (all of them when `json` is `None`: the reference was deleted), in the write's
/// own transaction: from then on no signed link, old or new, reaches them.
pub(super) fn forget_unlinked(
    tx: &Transaction<'_>,
    tenant: &str,
    resource_id: &str,
    json: Option<&str>,
) -> Result<(), RecordError> {
    tx.prepare_cached(
        "DELETE FROM documents WHERE tenant = ?1 AND resource_id = ?2 AND ('/documents/' || id) NOT IN
             (SELECT coalesce(json_extract(c.value, '$.attachment.url'), '') FROM json_each(coalesce(?3, '{}'), '$.content') c)",
    )?
    .execute(params![tenant, resource_id, json])?;
    Ok(())
}

impl Records {
    /// The document `id` of `tenant`, decrypted; `None` if there is none.
    pub fn document(&self, tenant: &str, id: &str) -> Result<Option<Document>, RecordError> {
        match &self.engine {
            super::Engine::Sqlcipher(store) => read_document(&store.read(), &self.documents_key, tenant, id),
            super::Engine::Postgres(pg, runtime) => runtime.block_on(pg.document(tenant, id)),
        }
    }

    /// The patient a document belongs to (without decrypting it).
    pub fn document_patient(&self, tenant: &str, id: &str) -> Result<Option<String>, RecordError> {
        let store = match &self.engine {
            super::Engine::Sqlcipher(store) => store,
            super::Engine::Postgres(pg, runtime) => return runtime.block_on(pg.document_patient(tenant, id)),
        };
        Ok(store
            .read()
            .query_row("SELECT patient FROM documents WHERE tenant = ?1 AND id = ?2", params![tenant, id], |r| r.get(0))
            .optional()?)
    }
}

/// The document `id` of `tenant`, read on `conn` and decrypted with `kek`.
pub(super) fn read_document(
    conn: &rusqlite::Connection,
    kek: &[u8; 32],
    tenant: &str,
    id: &str,
) -> Result<Option<Document>, RecordError> {
    let row: Option<(String, String, Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT patient, content_type, wrapped_key, ciphertext FROM documents WHERE tenant = ?1 AND id = ?2",
            params![tenant, id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((patient, content_type, wrapped, ciphertext)) = row else { return Ok(None) };
    let bytes = open(kek, tenant, id, &wrapped, &ciphertext)?;
    Ok(Some(Document { patient, content_type, bytes }))
}
