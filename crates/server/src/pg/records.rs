//! FHIR resources in PostgreSQL, as PHI should be kept there: each body encrypted by the
//! server before it leaves (AES-256-GCM under the tenant's own data key, bound to tenant,
//! type, id and version, so a body moved to another row or tenant fails to open); the index
//! columns hold codes, dates and opaque ids only; a patient's name is found through a keyed
//! blind index (HMAC of each normalised name token under a per-tenant key), never stored in
//! the clear. A `pg_dump`, a replica or a stolen volume holds no name, birth date or note.
//!
//! Every statement runs in a transaction that first sets `carekeep.tenant`: the policies of
//! [`super::schema`] then show and accept that tenant's rows only.

use serde_json::Value;
use tokio_postgres::{Client, Transaction};
use zeroize::Zeroizing;

use super::failed;
use crate::ServerError;
use crate::keys::{self, Key, MasterKeys};

/// A connection to the records of every tenant, one tenant per transaction.
pub struct PgRecords {
    client: Client,
    tenant_keys: Key,
    names: Key,
}

/// Opens a transaction in which only `tenant`'s rows exist.
async fn for_tenant<'a>(client: &'a mut Client, tenant: &str) -> Result<Transaction<'a>, ServerError> {
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT set_config('carekeep.tenant', $1, true)", &[&tenant])
        .await
        .map_err(failed)?;
    Ok(tx)
}

impl PgRecords {
    /// Uses `client` (connected as a member of [`super::schema::APP_ROLE`]) with the purpose
    /// keys of the server's master key.
    pub fn new(client: Client, master: &MasterKeys) -> Self {
        Self { client, tenant_keys: master.tenant_keys.clone(), names: master.names.clone() }
    }

    /// Adds `tenant` (its display `name`) with a new random data key, stored wrapped by the
    /// master key.
    pub async fn add_tenant(&mut self, tenant: &str, name: &str) -> Result<(), ServerError> {
        crate::admin::check_tenant_id(tenant)?;
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
        let wrapped = keys::seal(&self.tenant_keys, &wrap_aad(tenant), key.as_slice())?;
        let tx = for_tenant(&mut self.client, tenant).await?;
        tx.execute("INSERT INTO tenants (id, name, wrapped_key) VALUES ($1, $2, $3)", &[&tenant, &name, &wrapped])
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    /// Stores `resource` (a FHIR R4 resource with its `id`) as the next version in `tenant`;
    /// returns that version.
    pub async fn put(&mut self, tenant: &str, resource: &Value) -> Result<i64, ServerError> {
        let raw = resource.to_string();
        let indexed =
            carekeep_fhir::index_resource(resource, &raw, "resource", None, &carekeep_fhir::References::default())
                .map_err(|e| ServerError::Invalid(e.to_string()))?;
        let tokens = name_tokens(resource);
        let names = self.names.clone();
        let tx = for_tenant(&mut self.client, tenant).await?;
        let key = data_key(&tx, &self.tenant_keys, tenant).await?;
        let version: i64 = tx
            .query_opt(
                "SELECT version FROM resources WHERE tenant = $1 AND type = $2 AND id = $3 FOR UPDATE",
                &[&tenant, &indexed.resource_type, &indexed.id],
            )
            .await
            .map_err(failed)?
            .map_or(1, |row| row.get::<_, i64>(0) + 1);
        let body = keys::seal(&key, &body_aad(tenant, &indexed.resource_type, &indexed.id, version), raw.as_bytes())?;
        let last_updated = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        tx.execute(
            "INSERT INTO resources (tenant, type, id, version, last_updated, patient, category, effective, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant, type, id) DO UPDATE SET version = excluded.version,
                 last_updated = excluded.last_updated, patient = excluded.patient, category = excluded.category,
                 effective = excluded.effective, body = excluded.body",
            &[
                &tenant,
                &indexed.resource_type,
                &indexed.id,
                &version,
                &last_updated,
                &indexed.patient,
                &indexed.category,
                &indexed.effective,
                &body,
            ],
        )
        .await
        .map_err(failed)?;
        tx.execute(
            "DELETE FROM resource_names WHERE tenant = $1 AND type = $2 AND id = $3",
            &[&tenant, &indexed.resource_type, &indexed.id],
        )
        .await
        .map_err(failed)?;
        for token in tokens {
            let blind = blind_token(&names, tenant, &token).to_vec();
            tx.execute(
                "INSERT INTO resource_names (tenant, type, id, token) VALUES ($1, $2, $3, $4)",
                &[&tenant, &indexed.resource_type, &indexed.id, &blind],
            )
            .await
            .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)?;
        Ok(version)
    }

    /// `tenant`'s resource `resource_type/id`, decrypted; `None` if there is none. A body that
    /// fails to open (altered, or moved from another row or tenant) is an error, never data.
    pub async fn get(&mut self, tenant: &str, resource_type: &str, id: &str) -> Result<Option<Value>, ServerError> {
        let tx = for_tenant(&mut self.client, tenant).await?;
        let Some(row) = tx
            .query_opt(
                "SELECT version, body FROM resources WHERE tenant = $1 AND type = $2 AND id = $3",
                &[&tenant, &resource_type, &id],
            )
            .await
            .map_err(failed)?
        else {
            return Ok(None);
        };
        let key = data_key(&tx, &self.tenant_keys, tenant).await?;
        let (version, body): (i64, Vec<u8>) = (row.get(0), row.get(1));
        let plain = keys::open(&key, &body_aad(tenant, resource_type, id, version), &body).ok_or_else(altered)?;
        tx.commit().await.map_err(failed)?;
        serde_json::from_slice(&plain).map(Some).map_err(|_| altered())
    }

    /// The ids of `tenant`'s patients one of whose names holds every token of `name`
    /// (case and accents aside), through the blind index.
    pub async fn patients_named(&mut self, tenant: &str, name: &str) -> Result<Vec<String>, ServerError> {
        let tokens: Vec<Vec<u8>> = tokens_of(name)
            .iter()
            .map(|t| blind_token(&self.names, tenant, t).to_vec())
            .collect();
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let count = i64::try_from(tokens.len()).unwrap_or(i64::MAX);
        let tx = for_tenant(&mut self.client, tenant).await?;
        let rows = tx
            .query(
                "SELECT id FROM resource_names WHERE tenant = $1 AND type = 'Patient' AND token = ANY($2)
                 GROUP BY id HAVING count(DISTINCT token) = $3 ORDER BY id",
                &[&tenant, &tokens, &count],
            )
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

fn altered() -> ServerError {
    ServerError::Store("a stored record failed its integrity check: it was altered or moved; restore it".into())
}

/// The tenant's data key, unwrapped.
async fn data_key(tx: &Transaction<'_>, kek: &Key, tenant: &str) -> Result<Key, ServerError> {
    let wrapped: Vec<u8> = tx
        .query_opt("SELECT wrapped_key FROM tenants WHERE id = $1", &[&tenant])
        .await
        .map_err(failed)?
        .ok_or_else(|| ServerError::Invalid(format!("no tenant {tenant}: add it first")))?
        .get(0);
    let key = keys::open(kek, &wrap_aad(tenant), &wrapped)
        .ok_or_else(|| ServerError::Store("a tenant's data key does not open with this master key".into()))?;
    let key: [u8; 32] = key.as_slice().try_into().map_err(|_| altered())?;
    Ok(Zeroizing::new(key))
}

/// What a tenant's wrapped data key is bound to.
fn wrap_aad(tenant: &str) -> Vec<u8> {
    [b"carekeep.pg.tenant-key\0".as_slice(), tenant.as_bytes()].concat()
}

/// What a body is bound to: tenant, type, id and version, each length-prefixed.
fn body_aad(tenant: &str, resource_type: &str, id: &str, version: i64) -> Vec<u8> {
    let mut aad = b"carekeep.pg.body\0".to_vec();
    for part in [tenant.as_bytes(), resource_type.as_bytes(), id.as_bytes(), &version.to_be_bytes()] {
        aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

/// A name token's blind form: HMAC under a key of the tenant's own, so one name in two
/// tenants gives two unrelated tokens.
fn blind_token(names: &Key, tenant: &str, token: &str) -> [u8; 32] {
    let tenant_key = keys::mac(names, &[tenant.as_bytes()]);
    keys::mac(&tenant_key, &[token.as_bytes()])
}

/// The normalised tokens of a Patient's names (family, given, text); none for other types.
fn name_tokens(resource: &Value) -> Vec<String> {
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
        for part in parts.filter_map(Value::as_str) {
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
    fn blind_tokens_differ_by_tenant_and_bodies_are_bound_to_their_row() {
        let names: Key = Zeroizing::new([3; 32]);
        assert_eq!(blind_token(&names, "a", "muller"), blind_token(&names, "a", "muller"));
        assert_ne!(blind_token(&names, "a", "muller"), blind_token(&names, "b", "muller"));
        let key = [9; 32];
        let sealed = keys::seal(&key, &body_aad("a", "Patient", "p1", 1), b"{}").unwrap();
        assert!(keys::open(&key, &body_aad("a", "Patient", "p1", 1), &sealed).is_some());
        for other in
            [body_aad("b", "Patient", "p1", 1), body_aad("a", "Patient", "p2", 1), body_aad("a", "Patient", "p1", 2)]
        {
            assert!(keys::open(&key, &other, &sealed).is_none());
        }
    }
}
