//! Writes on PostgreSQL: create, update, delete and import, each one transaction that holds
//! the tenant's lock (the audit chain's) from its first statement to its commit. Under it
//! the write is stamped from the database clock, kept strictly increasing per tenant
//! (`tenants.written_at`), so stamps and tombstone numbers follow commit order whichever
//! node wrote; an idempotency key is looked up and remembered with no race between nodes;
//! and the request's audit record joins the tenant's chain in the same commit — no write
//! without its record, none left in an outbox to move.

use deadpool_postgres::Transaction;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Binding, PgRecords, altered, blind_identifier, blind_token, db, name_tokens, no_tenant};
use crate::keys::{self, Key};
use crate::pg::audit::{append_in, lock_tenant};
use crate::records::bundle::plan::SOURCE_SYSTEM;
use crate::records::idempotency::{self, KEEP_SECS, Once};
use crate::records::{
    Checked, RecordError, Stored, Writer, documents, identifiers, index, patient_not_found, stamp as stamp_resource,
};

impl PgRecords {
    /// Stores `checked` as a new resource with a fresh opaque id, version 1, stamped with
    /// the time it is written and its author; as [`crate::records::Records::create`].
    pub async fn create(
        &self,
        tenant: &str,
        checked: Checked,
        writer: &Writer<'_>,
    ) -> Result<(Stored, bool), RecordError> {
        let request = idempotency::request_hash("create", "", 0, &checked.value);
        let mut client = self.client().await?;
        let (tx, key, stamp) = self.begin_write(&mut client, tenant).await?;
        let once = writer.once();
        if let Some(once) = once
            && let Some(earlier) = self
                .replayed(&tx, tenant, once, "create", &checked.resource_type, &request)
                .await?
        {
            return Ok((earlier, true));
        }
        let id = crate::ids::new_id("r")?.replacen("r-", "", 1);
        let stored = self
            .write_row(&tx, &key, tenant, checked, &id, 1, stamp, writer.user_id)
            .await?;
        self.finish(tx, tenant, writer, once.map(|once| (once, "create", request)), &stored, stamp)
            .await?;
        Ok((stored, false))
    }

    /// Replaces `resource_type/id` if its current version is `expected_version`; as
    /// [`crate::records::Records::update`]. Of two updates from one version, on any nodes,
    /// one is stored and the other is told the resource changed.
    pub async fn update(
        &self,
        tenant: &str,
        id: &str,
        checked: Checked,
        expected_version: i64,
        writer: &Writer<'_>,
    ) -> Result<(Stored, bool), RecordError> {
        let request = idempotency::request_hash("update", id, expected_version, &checked.value);
        let mut client = self.client().await?;
        let (tx, key, stamp) = self.begin_write(&mut client, tenant).await?;
        let once = writer.once();
        if let Some(once) = once
            && let Some(earlier) = self
                .replayed(&tx, tenant, once, "update", &checked.resource_type, &request)
                .await?
        {
            return Ok((earlier, true));
        }
        let current: Option<i64> = tx
            .query_opt(
                "SELECT version FROM resources WHERE tenant = $1 AND type = $2 AND id = $3",
                &[&tenant, &checked.resource_type, &id],
            )
            .await
            .map_err(db)?
            .map(|row| row.get(0));
        match current {
            None => return Err(RecordError::NotFound),
            Some(v) if v != expected_version => return Err(RecordError::VersionConflict),
            Some(_) => {}
        }
        let stored = self
            .write_row(&tx, &key, tenant, checked, id, expected_version + 1, stamp, writer.user_id)
            .await?;
        self.finish(tx, tenant, writer, once.map(|once| (once, "update", request)), &stored, stamp)
            .await?;
        Ok((stored, false))
    }

    /// Deletes `resource_type/id` if it is still at `expected_version`, leaving a tombstone
    /// and the writer's audit record in the same transaction; as
    /// [`crate::records::Records::delete`].
    pub async fn delete(
        &self,
        tenant: &str,
        resource_type: &str,
        id: &str,
        expected_version: i64,
        now_unix: i64,
        writer: &Writer<'_>,
    ) -> Result<Stored, RecordError> {
        if resource_type == "Patient" {
            return Err(crate::records::removed::patient_not_deleted());
        }
        let mut client = self.client().await?;
        let (tx, key, stamp) = self.begin_write(&mut client, tenant).await?;
        let stored = self
            .read_in(&tx, Some(&key), tenant, resource_type, id)
            .await?
            .ok_or(RecordError::NotFound)?;
        if stored.version != expected_version {
            return Err(RecordError::VersionConflict);
        }
        remove_row(&tx, tenant, &stored, now_unix).await?;
        self.finish(tx, tenant, writer, None, &stored, stamp).await?;
        Ok(stored)
    }

    /// Stores resources exactly as given (ids included), version 1, all or none, in one
    /// transaction: for seeding a tenant from Bundles, as
    /// [`crate::records::Records::import`].
    pub async fn import(&self, tenant: &str, resources: Vec<(Checked, String)>) -> Result<Vec<Stored>, RecordError> {
        let mut client = self.client().await?;
        let (tx, key, stamp) = self.begin_write(&mut client, tenant).await?;
        let mut stored = Vec::with_capacity(resources.len());
        for (checked, id) in resources {
            stored.push(self.write_row(&tx, &key, tenant, checked, &id, 1, stamp, None).await?);
        }
        commit(tx).await?;
        Ok(stored)
    }

    /// Opens a write in `tenant`: its lock taken, its stamp read, its data key at hand.
    pub(super) async fn begin_write<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
        tenant: &str,
    ) -> Result<(Transaction<'c>, Key, OffsetDateTime), RecordError> {
        let tx = crate::pg::tenant_tx(client, tenant).await.map_err(db)?;
        lock_tenant(&tx, tenant).await.map_err(db)?;
        let row = tx
            .query_opt(
                "UPDATE tenants SET written_at =
                     greatest(written_at + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
                 WHERE id = $1 RETURNING written_at, wrapped_key",
                &[&tenant],
            )
            .await
            .map_err(db)?
            .ok_or_else(|| no_tenant(tenant))?;
        let micros: i64 = row.get(0);
        let stamp = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).map_err(|_| altered())?;
        let key = self.data_key(&tx, tenant, Some(row.get::<_, &[u8]>(1))).await?;
        Ok((tx, key, stamp))
    }

    /// Remembers the idempotency key (if any), appends the audit record, and commits.
    async fn finish(
        &self,
        tx: Transaction<'_>,
        tenant: &str,
        writer: &Writer<'_>,
        once: Option<(Once<'_>, &str, [u8; 32])>,
        stored: &Stored,
        stamp: OffsetDateTime,
    ) -> Result<(), RecordError> {
        if let Some((once, method, request)) = once {
            let now = stamp.unix_timestamp();
            tx.execute("DELETE FROM idempotency WHERE tenant = $1 AND created_at < $2", &[&tenant, &(now - KEEP_SECS)])
                .await
                .map_err(db)?;
            tx.execute(
                "INSERT INTO idempotency (tenant, user_id, key_hash, method, type, id, request_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &tenant,
                    &once.user_id,
                    &key_hash(once),
                    &method,
                    &stored.resource_type,
                    &stored.id,
                    &request.as_slice(),
                    &now,
                ],
            )
            .await
            .map_err(db)?;
        }
        if let Some(event) = writer.event_for(stored) {
            append_in(&tx, &self.keys.audit, tenant, vec![event]).await?;
        }
        commit(tx).await
    }

    /// The write an earlier request with this key made, as it stands now; `None` for a new
    /// key; the key with another request is refused.
    async fn replayed(
        &self,
        tx: &Transaction<'_>,
        tenant: &str,
        once: Once<'_>,
        method: &str,
        resource_type: &str,
        request: &[u8; 32],
    ) -> Result<Option<Stored>, RecordError> {
        let Some(row) = tx
            .query_opt(
                "SELECT method, type, id, request_hash FROM idempotency
                 WHERE tenant = $1 AND user_id = $2 AND key_hash = $3",
                &[&tenant, &once.user_id, &key_hash(once)],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let (earlier_method, earlier_type, id, earlier_request): (&str, &str, String, &[u8]) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if earlier_method != method || earlier_type != resource_type || earlier_request != request.as_slice() {
            return Err(idempotency::reused());
        }
        self.read_in(tx, None, tenant, resource_type, &id)
            .await?
            .map(Some)
            .ok_or(RecordError::NotFound)
    }

    /// Writes one resource's row and its indexes (codes, name tokens, identifiers) and its
    /// attachments, as the embedded store's `write` does.
    #[expect(clippy::too_many_arguments, reason = "one private helper; its callers name each part")]
    pub(super) async fn write_row(
        &self,
        tx: &Transaction<'_>,
        key: &Key,
        tenant: &str,
        checked: Checked,
        id: &str,
        version: i64,
        stamp: OffsetDateTime,
        author: Option<&str>,
    ) -> Result<Stored, RecordError> {
        let Checked { mut value, attachments, resource_type, patient } = checked;
        if let Some(patient) = &patient {
            let known = tx
                .query_opt(
                    "SELECT 1 FROM resources WHERE tenant = $1 AND type = 'Patient' AND id = $2",
                    &[&tenant, patient],
                )
                .await
                .map_err(db)?;
            if known.is_none() {
                return Err(patient_not_found(&resource_type));
            }
        }
        let (sortable, json) = stamp_resource(&mut value, id, version, stamp);
        let indexed = index(&value, &json, &resource_type)?;
        let patient = if resource_type == "Patient" { Some(id.to_owned()) } else { patient };
        let binding = Binding {
            tenant,
            resource_type: &resource_type,
            id,
            version,
            patient: patient.as_deref(),
            written_by: author,
        };
        let body = keys::seal(key, &binding.aad(), json.as_bytes())?;
        tx.execute(
            "INSERT INTO resources (tenant, type, id, version, last_updated, patient, category, effective, body,
                                    written_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant, type, id) DO UPDATE SET version = excluded.version,
                 last_updated = excluded.last_updated, patient = excluded.patient, category = excluded.category,
                 effective = excluded.effective, body = excluded.body, written_by = excluded.written_by",
            &[
                &tenant,
                &resource_type,
                &id,
                &version,
                &sortable,
                &patient,
                &indexed.category,
                &indexed.effective,
                &body,
                &author,
            ],
        )
        .await
        .map_err(db)?;
        self.write_indexes(tx, tenant, &resource_type, id, &indexed.codes, &value)
            .await?;
        if let Some(patient) = &patient {
            for doc in &attachments {
                let aad = documents::bound_aad(tenant, &doc.id, patient, id);
                let (wrapped, ciphertext) = documents::seal_bound(&self.keys.documents, &aad, doc)?;
                tx.execute(
                    "INSERT INTO documents (tenant, id, patient, content_type, wrapped_key, ciphertext, resource_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&tenant, &doc.id, patient, &doc.content_type, &wrapped, &ciphertext, &id],
                )
                .await
                .map_err(db)?;
            }
        }
        if resource_type == "DocumentReference" {
            forget_unlinked(tx, tenant, id, &documents::linked_ids(&value)).await?;
        }
        Ok(Stored { resource_type, id: id.to_owned(), version, patient, json, written_by: author.map(str::to_owned) })
    }

    /// Replaces what finds a resource besides its columns: its codes, its name tokens and
    /// its identifiers (both keyed), as the embedded store's `write` does.
    async fn write_indexes(
        &self,
        tx: &Transaction<'_>,
        tenant: &str,
        resource_type: &str,
        id: &str,
        codes: &[carekeep_fhir::CodeEntry],
        value: &Value,
    ) -> Result<(), RecordError> {
        let (systems, codes): (Vec<Option<&str>>, Vec<&str>) =
            codes.iter().map(|c| (c.system.as_deref(), c.code.as_str())).unzip();
        let tokens: Vec<Vec<u8>> = name_tokens(value)
            .iter()
            .map(|t| blind_token(&self.keys.names, tenant, t).to_vec())
            .collect();
        let (id_systems, id_values): (Vec<&str>, Vec<Vec<u8>>) = identifiers::of(value)
            .into_iter()
            .map(|(system, text)| (system, blind_identifier(&self.keys.names, tenant, text).to_vec()))
            .unzip();
        for (statement, params) in [
            (
                "DELETE FROM resource_codes WHERE tenant = $1 AND type = $2 AND id = $3",
                &[&tenant as &(dyn tokio_postgres::types::ToSql + Sync), &resource_type, &id][..],
            ),
            (
                "INSERT INTO resource_codes (tenant, type, id, system, code)
                 SELECT $1, $2, $3, s, c FROM unnest($4::text[], $5::text[]) AS u (s, c)",
                &[&tenant, &resource_type, &id, &systems, &codes],
            ),
            ("DELETE FROM resource_names WHERE tenant = $1 AND type = $2 AND id = $3", &[&tenant, &resource_type, &id]),
            (
                "INSERT INTO resource_names (tenant, type, id, token)
                 SELECT $1, $2, $3, t FROM unnest($4::bytea[]) AS u (t)",
                &[&tenant, &resource_type, &id, &tokens],
            ),
            (
                "DELETE FROM resource_identifiers WHERE tenant = $1 AND type = $2 AND id = $3 AND system != $4",
                &[&tenant, &resource_type, &id, &SOURCE_SYSTEM],
            ),
            (
                "INSERT INTO resource_identifiers (tenant, type, id, system, value_key)
                 SELECT $1, $2, $3, s, v FROM unnest($4::text[], $5::bytea[]) AS u (s, v)",
                &[&tenant, &resource_type, &id, &id_systems, &id_values],
            ),
        ] {
            tx.execute(statement, params).await.map_err(db)?;
        }
        Ok(())
    }
}

/// Commits a write. Lost at the commit itself, the write may or may not have landed: the
/// caller is told so, and the same request with its idempotency key is answered once.
pub(super) async fn commit(tx: Transaction<'_>) -> Result<(), RecordError> {
    tx.commit().await.map_err(|e| match db(e) {
        RecordError::Unavailable => RecordError::OutcomeUnknown,
        other => other,
    })
}

/// Deletes `stored` on `tx` and leaves its tombstone, as the embedded store's `remove`:
/// codes and name tokens go with the row (foreign keys); where an import found it is kept
/// (the same files imported again must not bring back what the clinic deleted); a
/// DocumentReference takes its attachments with it.
pub(super) async fn remove_row(
    tx: &Transaction<'_>,
    tenant: &str,
    stored: &Stored,
    now_unix: i64,
) -> Result<(), RecordError> {
    let (resource_type, id) = (stored.resource_type.as_str(), stored.id.as_str());
    tx.execute("DELETE FROM resources WHERE tenant = $1 AND type = $2 AND id = $3", &[&tenant, &resource_type, &id])
        .await
        .map_err(db)?;
    tx.execute(
        "DELETE FROM resource_identifiers WHERE tenant = $1 AND type = $2 AND id = $3 AND system != $4",
        &[&tenant, &resource_type, &id, &SOURCE_SYSTEM],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "INSERT INTO removed (tenant, type, id, patient, removed_at) VALUES ($1, $2, $3, $4, $5)",
        &[&tenant, &resource_type, &id, &stored.patient, &now_unix],
    )
    .await
    .map_err(db)?;
    if resource_type == "DocumentReference" {
        forget_unlinked(tx, tenant, id, &[]).await?;
    }
    Ok(())
}

/// What an idempotency key is stored as: its SHA-256 (a client's key is opaque, but need
/// not be kept as sent).
fn key_hash(once: Once<'_>) -> Vec<u8> {
    Sha256::digest(once.key.as_bytes()).to_vec()
}

/// Deletes the bytes of DocumentReference `resource_id` other than those it still links.
async fn forget_unlinked(
    tx: &Transaction<'_>,
    tenant: &str,
    resource_id: &str,
    linked: &[String],
) -> Result<(), RecordError> {
    tx.execute(
        "DELETE FROM documents WHERE tenant = $1 AND resource_id = $2 AND NOT (id = ANY($3))",
        &[&tenant, &resource_id, &linked],
    )
    .await
    .map_err(db)?;
    Ok(())
}
