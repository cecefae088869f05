//! Bulk Data exports on PostgreSQL, as on the embedded store
//! ([`crate::records::export`]): one NDJSON file per type from one snapshot (a repeatable
//! read transaction), documents inline, each file sealed under its own key wrapped by the
//! documents key. Here the sealing also binds the list of patients a file holds — the
//! patients audited when it is fetched — so a row edited to name others does not open.

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::{Binding, PgRecords, db};
use crate::pg::tenant_tx;
use crate::records::RecordError;
use crate::records::documents;
use crate::records::export::{
    Export, Fetched, File, KEEP_SECS, Scope, Status, documents_inline, open_file, seal_file, wanted_types,
};

/// What file `n` of export `id` is bound to: tenant, export, number and its patients.
fn file_aad(tenant: &str, id: &str, n: i64, patients: &str) -> Vec<u8> {
    let mut aad = b"carekeep.pg.export\0".to_vec();
    for part in [tenant, id, &n.to_string(), patients] {
        aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

impl PgRecords {
    /// The records `scope` reaches, of `types`, changed since `since`: one file per type,
    /// from one snapshot; as [`crate::records::Records::export_files`].
    pub async fn export_files(
        &self,
        tenant: &str,
        scope: &Scope,
        types: &[String],
        since: Option<&str>,
    ) -> Result<Vec<File>, RecordError> {
        let (care_team, compartments_only) = scope.filter();
        let mut client = self.client().await?;
        // One snapshot for every file (deadpool's transaction: the key and document helpers
        // take it).
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        tx.execute("SELECT set_config('carekeep.tenant', $1, true)", &[&tenant])
            .await
            .map_err(db)?;
        let mut files = Vec::new();
        let mut key = None;
        for resource_type in wanted_types(scope, types) {
            let rows = tx
                .query(
                    "SELECT id, version, patient, body, written_by FROM resources r
                     WHERE tenant = $1 AND type = $2 AND ($3::text IS NULL OR last_updated > $3)
                       AND (NOT $4 OR patient IS NOT NULL)
                       AND ($5::text IS NULL OR patient IN (SELECT patient FROM patient_links
                                                            WHERE tenant = $1 AND user_id = $5 AND relation = 'care-team'))
                     ORDER BY id",
                    &[&tenant, &resource_type, &since, &compartments_only, &care_team],
                )
                .await
                .map_err(db)?;
            if rows.is_empty() {
                continue;
            }
            if key.is_none() {
                key = Some(self.data_key(&tx, tenant, None).await?);
            }
            let key = key.as_ref().ok_or_else(super::altered)?;
            let mut ndjson = Zeroizing::new(Vec::new());
            let mut patients = BTreeSet::new();
            for row in &rows {
                let (id, version, patient, written_by): (&str, i64, Option<String>, Option<&str>) =
                    (row.get(0), row.get(1), row.get(2), row.get(4));
                let binding = Binding { tenant, resource_type, id, version, patient: patient.as_deref(), written_by };
                let mut json = binding.open(key, row.get(3))?;
                if resource_type == "DocumentReference" {
                    let mut found = Vec::new();
                    for doc in documents::linked_ids(&serde_json::from_str(&json).unwrap_or_default()) {
                        found.push((doc.clone(), self.document_in(&tx, tenant, &doc).await?));
                    }
                    json = documents_inline(&json, |doc| {
                        Ok(found
                            .iter_mut()
                            .find(|(d, _)| d == doc)
                            .and_then(|(_, document)| document.take()))
                    })?;
                }
                ndjson.extend_from_slice(json.as_bytes());
                ndjson.push(b'\n');
                patients.extend(patient);
            }
            files.push(File {
                resource_type: resource_type.to_owned(),
                count: rows.len() as u64,
                patients: patients.into_iter().collect(),
                ndjson,
            });
        }
        tx.commit().await.map_err(db)?;
        Ok(files)
    }

    /// Whether `user_id` is a clinician or nurse of `tenant` (a Group for `$export`).
    pub async fn is_group(&self, tenant: &str, user_id: &str) -> bool {
        let Ok(mut client) = self.client().await else { return false };
        let Ok(tx) = tenant_tx(&mut client, tenant).await else { return false };
        tx.query_opt(
            "SELECT 1 FROM users WHERE tenant = $1 AND id = $2 AND role IN ('clinician', 'nurse')",
            &[&tenant, &user_id],
        )
        .await
        .is_ok_and(|row| row.is_some())
    }

    /// Records export `id` of `user_id`, running; removes the tenant's exports older than a
    /// day.
    pub async fn begin_export(
        &self,
        tenant: &str,
        id: &str,
        user_id: &str,
        request: &str,
        now: i64,
    ) -> Result<(), RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        tx.execute("DELETE FROM exports WHERE tenant = $1 AND created_at < $2", &[&tenant, &(now - KEEP_SECS)])
            .await
            .map_err(db)?;
        tx.execute(
            "INSERT INTO exports (id, tenant, user_id, request, status, created_at) VALUES ($1, $2, $3, $4, 'running', $5)",
            &[&id, &tenant, &user_id, &request, &now],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Stores an export's files, sealed, and marks it complete (or failed).
    pub async fn finish_export(
        &self,
        tenant: &str,
        id: &str,
        files: Option<Vec<File>>,
        transaction_time: &str,
    ) -> Result<(), RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let status = if files.is_some() { "complete" } else { "failed" };
        for (n, file) in files.into_iter().flatten().enumerate() {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            let patients = serde_json::to_string(&file.patients).unwrap_or_else(|_| "[]".into());
            let (wrapped, ciphertext) =
                seal_file(&self.keys.documents, &file_aad(tenant, id, n, &patients), &file.ndjson)?;
            let count = i64::try_from(file.count).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO export_files (tenant, export_id, n, type, count, patients, wrapped_key, ciphertext)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&tenant, &id, &n, &file.resource_type, &count, &patients, &wrapped, &ciphertext],
            )
            .await
            .map_err(db)?;
        }
        tx.execute(
            "UPDATE exports SET status = $1, finished_at = $2 WHERE id = $3 AND tenant = $4",
            &[&status, &transaction_time, &id, &tenant],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Export `id` of `tenant`, if it exists.
    pub async fn export(&self, tenant: &str, id: &str) -> Result<Option<Export>, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let Some(row) = tx
            .query_opt(
                "SELECT user_id, request, status, finished_at FROM exports WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let status = match row.get::<_, &str>(2) {
            "complete" => {
                let files = tx
                    .query(
                        "SELECT n, type, count FROM export_files WHERE tenant = $1 AND export_id = $2 ORDER BY n",
                        &[&tenant, &id],
                    )
                    .await
                    .map_err(db)?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), u64::try_from(r.get::<_, i64>(2)).unwrap_or(0)))
                    .collect();
                Status::Complete { transaction_time: row.get::<_, Option<String>>(3).unwrap_or_default(), files }
            }
            "running" => Status::Running,
            _ => Status::Failed,
        };
        tx.commit().await.map_err(db)?;
        Ok(Some(Export { id: id.to_owned(), user_id: row.get(0), request: row.get(1), status }))
    }

    /// File `n` of export `id`, opened, with the patients it holds.
    pub async fn export_file(&self, tenant: &str, id: &str, n: i64) -> Result<Option<Fetched>, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let row = tx
            .query_opt(
                "SELECT patients, wrapped_key, ciphertext FROM export_files WHERE tenant = $1 AND export_id = $2 AND n = $3",
                &[&tenant, &id, &n],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let patients: &str = row.get(0);
        let ndjson = open_file(&self.keys.documents, &file_aad(tenant, id, n, patients), row.get(1), row.get(2))?;
        Ok(Some(Fetched { ndjson, patients: serde_json::from_str(patients).unwrap_or_default() }))
    }

    /// Deletes export `id` and its files.
    pub async fn delete_export(&self, tenant: &str, id: &str) -> Result<bool, RecordError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(db)?;
        let deleted = tx
            .execute("DELETE FROM exports WHERE tenant = $1 AND id = $2", &[&tenant, &id])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(deleted > 0)
    }
}
