//! FHIR resources in PostgreSQL, as PHI should be kept there: each body encrypted by the
//! server before it leaves (AES-256-GCM under the tenant's own data key, bound to tenant,
//! type, id and version, so a body moved to another row or tenant fails to open); the index
//! columns hold codes, dates and opaque ids only; a patient's name and a business
//! identifier's value are found through keyed blind indexes (HMACs under per-tenant keys),
//! never stored in the clear. A `pg_dump`, a replica or a stolen volume holds no name,
//! birth date, identifier or note.
//!
//! The same service as the embedded [`crate::records::Records`], on a database every node
//! shares: `write` (create, update, delete, import, with idempotency keys and the audit
//! record in the write's own transaction), `query` (read, search with paging, the access
//! table, deletions for sync, documents), `break_glass`, `export` and `ledger` (Bundles). Every statement runs in a transaction that first
//! sets `carekeep.tenant`: the policies of [`super::schema`] then show and accept that
//! tenant's rows only.

mod break_glass;
mod export;
mod ledger;
mod query;
mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::{Object, Pool, Transaction};
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use super::{failed, passing, pooled, tenant_tx};
use crate::ServerError;
use crate::keys::{self, Key, MasterKeys};
use crate::records::{Checked, RecordError, validate::Validator};

/// The records of every tenant in one PostgreSQL database, one tenant per transaction.
/// Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgRecords {
    pool: Pool,
    keys: Arc<RecordKeys>,
    validator: Arc<Validator>,
}

/// The purpose keys records need, and the tenants' data keys once unwrapped (a wrapped
/// key never changes: the schema refuses it).
struct RecordKeys {
    tenant_keys: Key,
    names: Key,
    documents: Key,
    /// MACs the rows that grant access (patient links, break-glass grants).
    grants: Key,
    audit: SigningKey,
    data_keys: Mutex<HashMap<String, Key>>,
}

impl PgRecords {
    /// Uses `pool` (connected as a member of [`super::schema::APP_ROLE`], see
    /// [`super::app_pool`]) with the purpose keys of the server's master key; `audit` signs
    /// the audit checkpoints that writes append.
    pub fn new(pool: Pool, master: &MasterKeys, audit: SigningKey) -> Self {
        let keys = RecordKeys {
            tenant_keys: master.tenant_keys.clone(),
            names: master.names.clone(),
            documents: master.documents.clone(),
            grants: Zeroizing::new(keys::mac(&master.tenant_keys, &[b"grant-mac"])),
            audit,
            data_keys: Mutex::new(HashMap::new()),
        };
        Self { pool, keys: Arc::new(keys), validator: Arc::new(Validator::default()) }
    }

    /// Checks a resource a client sent, as [`crate::records::Records::check`] does.
    pub fn check(&self, value: serde_json::Value, resource_type: &str) -> Result<Checked, RecordError> {
        crate::records::check(&self.validator, value, resource_type)
    }

    /// Adds `tenant` (its display `name`) with a new random data key, stored wrapped by the
    /// master key.
    pub async fn add_tenant(&self, tenant: &str, name: &str) -> Result<(), ServerError> {
        crate::admin::check_tenant_id(tenant)?;
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
        let wrapped = keys::seal(&self.keys.tenant_keys, &wrap_aad(tenant), key.as_slice())?;
        let mut client = pooled(&self.pool).await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(failed)?;
        tx.execute("INSERT INTO tenants (id, name, wrapped_key) VALUES ($1, $2, $3)", &[&tenant, &name, &wrapped])
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    /// A pooled connection, or [`RecordError::Unavailable`].
    async fn client(&self) -> Result<Object, RecordError> {
        pooled(&self.pool).await.map_err(|_| RecordError::Unavailable)
    }

    /// `tenant`'s data key: from memory, or unwrapped from `wrapped` (the row's), or read.
    async fn data_key(&self, tx: &Transaction<'_>, tenant: &str, wrapped: Option<&[u8]>) -> Result<Key, RecordError> {
        let cache = || self.keys.data_keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cache().get(tenant) {
            return Ok(key.clone());
        }
        let wrapped = match wrapped {
            Some(wrapped) => wrapped.to_vec(),
            None => tx
                .query_opt("SELECT wrapped_key FROM tenants WHERE id = $1", &[&tenant])
                .await
                .map_err(db)?
                .ok_or_else(|| no_tenant(tenant))?
                .get(0),
        };
        let key = keys::open(&self.keys.tenant_keys, &wrap_aad(tenant), &wrapped).ok_or_else(|| {
            RecordError::Store(ServerError::Store("a tenant's data key does not open with this master key".into()))
        })?;
        let key: [u8; 32] = key.as_slice().try_into().map_err(|_| altered())?;
        let key = Zeroizing::new(key);
        cache().insert(tenant.to_owned(), key.clone());
        Ok(key)
    }
}

/// A database error as a records error: a lost connection, a restart, a full disk or a
/// conflict to retry is [`RecordError::Unavailable`] (nothing was written); anything else
/// names the database's message only.
fn db(e: tokio_postgres::Error) -> RecordError {
    if passing(&e) {
        tracing::warn!(why = %failed_message(&e), "PostgreSQL out of reach during a records operation");
        RecordError::Unavailable
    } else {
        RecordError::Store(failed(e))
    }
}

fn failed_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

fn no_tenant(tenant: &str) -> RecordError {
    RecordError::Store(ServerError::Invalid(format!("no tenant {tenant}: add it first")))
}

fn altered() -> RecordError {
    RecordError::Store(ServerError::Store(
        "a stored record failed its integrity check: it was altered or moved; restore it".into(),
    ))
}

/// What a tenant's wrapped data key is bound to.
fn wrap_aad(tenant: &str) -> Vec<u8> {
    [b"carekeep.pg.tenant-key\0".as_slice(), tenant.as_bytes()].concat()
}

/// Where a body belongs, and the row columns access is decided on: all bound into its
/// sealing, so a body moved to another row, or a row given another patient or author (to
/// show it to someone else, or to let a patient change it), does not open.
#[derive(Clone, Copy)]
struct Binding<'a> {
    tenant: &'a str,
    resource_type: &'a str,
    id: &'a str,
    version: i64,
    patient: Option<&'a str>,
    written_by: Option<&'a str>,
}

impl Binding<'_> {
    /// The AAD: each part length-prefixed, an absent one apart from an empty one.
    fn aad(&self) -> Vec<u8> {
        let mut aad = b"carekeep.pg.body.v2\0".to_vec();
        let version = self.version.to_be_bytes();
        let parts = [
            Some(self.tenant.as_bytes()),
            Some(self.resource_type.as_bytes()),
            Some(self.id.as_bytes()),
            Some(version.as_slice()),
            self.patient.map(str::as_bytes),
            self.written_by.map(str::as_bytes),
        ];
        for part in parts {
            match part {
                None => aad.push(0),
                Some(part) => {
                    aad.push(1);
                    aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
                    aad.extend_from_slice(part);
                }
            }
        }
        aad
    }

    /// Opens a stored body; one that fails (altered, or moved from another row, tenant,
    /// patient or author) is an error, never data.
    fn open(&self, key: &Key, body: &[u8]) -> Result<String, RecordError> {
        let plain = keys::open(key, &self.aad(), body).ok_or_else(altered)?;
        String::from_utf8(plain.to_vec()).map_err(|_| altered())
    }
}

/// What a patient link's MAC covers: that the server wrote it (a row anyone else added
/// grants nothing).
fn link_parts<'a>(tenant: &'a str, user_id: &'a str, patient: &'a str, relation: &'a str) -> [&'a [u8]; 5] {
    [b"link", tenant.as_bytes(), user_id.as_bytes(), patient.as_bytes(), relation.as_bytes()]
}

/// What a break-glass grant's MAC covers: who may read whose record, from when until when.
struct GrantRow<'a> {
    id: &'a str,
    tenant: &'a str,
    user_id: &'a str,
    patient: &'a str,
    opened_at: i64,
    expires_at: i64,
}

impl GrantRow<'_> {
    /// Runs `f` over what the MAC covers.
    fn with_parts<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let (opened, expires) = (self.opened_at.to_be_bytes(), self.expires_at.to_be_bytes());
        f(&[
            b"break-glass",
            self.id.as_bytes(),
            self.tenant.as_bytes(),
            self.user_id.as_bytes(),
            self.patient.as_bytes(),
            &opened,
            &expires,
        ])
    }

    /// This grant's MAC under `grants`.
    fn mac(&self, grants: &Key) -> [u8; 32] {
        self.with_parts(|parts| keys::mac(grants, parts))
    }

    /// Whether `tag` is this grant's MAC under `grants`.
    fn verify(&self, grants: &Key, tag: &[u8]) -> bool {
        self.with_parts(|parts| keys::verify_mac(grants, parts, tag))
    }
}

/// A name token's blind form: HMAC under a key of the tenant's own, so one name in two
/// tenants gives two unrelated tokens.
fn blind_token(names: &Key, tenant: &str, token: &str) -> [u8; 32] {
    let tenant_key = keys::mac(names, &[tenant.as_bytes()]);
    keys::mac(&tenant_key, &[token.as_bytes()])
}

/// An identifier value's blind form, under another key of the tenant's own (so a name
/// token and an identifier with the same text do not match either).
fn blind_identifier(names: &Key, tenant: &str, value: &str) -> [u8; 32] {
    let tenant_key = keys::mac(names, &[b"identifiers\0", tenant.as_bytes()]);
    keys::mac(&tenant_key, &[value.as_bytes()])
}

/// The normalised tokens of a Patient's names (family, given, text); none for other types.
fn name_tokens(resource: &serde_json::Value) -> Vec<String> {
    if resource["resourceType"] != "Patient" {
        return Vec::new();
    }
    let mut tokens = Vec::new();
    for name in resource["name"].as_array().into_iter().flatten() {
        let parts = name["given"]
            .as_array()
            .into_iter()
            .flatten()
            .chain([&name["family"], &name["text"]]);
        for part in parts.filter_map(serde_json::Value::as_str) {
            tokens.extend(tokens_of(part));
        }
    }
    tokens.sort();
    tokens.dedup();
    tokens
}

/// Lower-cased words of letters and digits, accents folded for the common Latin letters.
fn tokens_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| word.chars().flat_map(char::to_lowercase).map(fold_accent).collect())
        .collect()
}

fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'ç' => 'c',
        'è' | 'é' | 'ê' | 'ë' => 'e',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        'ý' | 'ÿ' => 'y',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_tokenised_case_and_accents_aside() {
        let patient = serde_json::json!({"resourceType": "Patient", "name": [
            {"family": "Müller-Lüdenscheidt", "given": ["José", "Ana"]}, {"text": "ANA müller"}]});
        assert_eq!(name_tokens(&patient), ["ana", "jose", "ludenscheidt", "muller"]);
        assert!(name_tokens(&serde_json::json!({"resourceType": "Observation", "name": "x"})).is_empty());
    }

    #[test]
    fn blind_tokens_differ_by_tenant_and_kind_and_bodies_are_bound_to_their_row() {
        let names: Key = Zeroizing::new([3; 32]);
        assert_eq!(blind_token(&names, "a", "muller"), blind_token(&names, "a", "muller"));
        assert_ne!(blind_token(&names, "a", "muller"), blind_token(&names, "b", "muller"));
        assert_ne!(blind_identifier(&names, "a", "muller"), blind_token(&names, "a", "muller"));
        assert_ne!(blind_identifier(&names, "a", "MRN-1"), blind_identifier(&names, "b", "MRN-1"));
        let key: Key = Zeroizing::new([9; 32]);
        let row = Binding {
            tenant: "a",
            resource_type: "Observation",
            id: "o1",
            version: 1,
            patient: Some("p1"),
            written_by: Some("u1"),
        };
        let sealed = keys::seal(&key, &row.aad(), b"{}").unwrap();
        assert_eq!(row.open(&key, &sealed).unwrap(), "{}");
        for other in [
            Binding { tenant: "b", ..row },
            Binding { id: "o2", ..row },
            Binding { version: 2, ..row },
            Binding { patient: Some("p2"), ..row },
            Binding { patient: None, ..row },
            Binding { written_by: Some("u2"), ..row },
            Binding { written_by: None, ..row },
            Binding { patient: Some(""), written_by: None, ..row },
        ] {
            assert!(other.open(&key, &sealed).is_err());
        }
    }
}
