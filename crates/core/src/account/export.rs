//! A patient's record to take away: the whole cached record as a FHIR `collection` Bundle,
//! the documents' bytes inside it (`attachment.data`), and a summary page a person reads
//! ([`super::summary`]). Export is a high-risk action: only with a full sign-in inside the
//! policy's step-up window
//! ([`ServerError::StepUpRequired`](crate::error::ServerError::StepUpRequired) otherwise),
//! and logged.

use base64::Engine as _;
use carekeep_protocol::sync::EXPORTED_FROM_CACHE;
use serde_json::Value;

use super::Account;
use super::reading::bare;
use crate::error::CacheError;
use crate::store::patient_reference;
use crate::{Error, Result};

/// One patient's record, ready to save.
#[derive(Debug, Clone)]
pub struct PatientExport {
    /// The FHIR R4 `collection` Bundle (JSON), documents inline.
    pub bundle: String,
    /// The summary page (HTML, no script, no remote asset).
    pub summary_html: String,
    /// Documents neither on this device nor reachable now: the Bundle keeps their link only.
    pub documents_missing: usize,
}

impl Account {
    /// Exports `patient`'s cached record. A document not yet on this device is downloaded
    /// (and kept in the cache) when the server can be reached; otherwise it is counted in
    /// [`PatientExport::documents_missing`], so the person can export again when online.
    pub async fn export_patient(&mut self, patient: &str) -> Result<PatientExport> {
        self.session.check_step_up()?;
        let reference = patient_reference(patient);
        let stored = self.store()?.patient_record(&reference)?;
        let mut resources = Vec::with_capacity(stored.len());
        for r in &stored {
            resources.push(serde_json::from_str::<Value>(&r.json).map_err(|_| Error::Cache(CacheError::CorruptCache))?);
        }
        let mut documents_missing = 0;
        for resource in resources.iter_mut().filter(|r| r["resourceType"] == "DocumentReference") {
            let id = resource["id"].as_str().unwrap_or_default().to_owned();
            let contents = resource.get_mut("content").and_then(Value::as_array_mut);
            for content in contents.into_iter().flatten() {
                let Some(attachment) = content.get_mut("attachment").and_then(Value::as_object_mut) else { continue };
                let Some(url) = attachment.get("url").and_then(Value::as_str).map(str::to_owned) else { continue };
                match self.document_bytes(&id, &url).await? {
                    Some(bytes) => {
                        attachment
                            .insert("data".into(), base64::engine::general_purpose::STANDARD.encode(&*bytes).into());
                        attachment.remove("url");
                    }
                    None => documents_missing += 1,
                }
            }
        }
        self.log_access(EXPORTED_FROM_CACHE, "Bundle", [Some(bare(&reference).to_owned())])?;
        let generated = time::OffsetDateTime::from_unix_timestamp(self.clock.now_unix())
            .map(|t| t.date().to_string())
            .unwrap_or_default();
        let summary_html = super::summary::summary_html(&resources, &generated);
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|resource| serde_json::json!({"resource": resource}))
            .collect();
        let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": entries}).to_string();
        Ok(PatientExport { bundle, summary_html, documents_missing })
    }

    /// A document's bytes: from the cache, else downloaded now (and kept); `None` when it is
    /// not here and the server cannot be reached.
    async fn document_bytes(&mut self, id: &str, url: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        if let Some(cached) = self.store()?.document(url)? {
            return Ok(Some(cached.bytes));
        }
        let owned = url.to_owned();
        let downloaded = self
            .request(|server, token| {
                let url = owned.clone();
                async move { server.document(&token, &url).await }
            })
            .await;
        match downloaded {
            Ok(document) => {
                let now = self.clock.now_unix();
                self.store()?.keep_document(id, url, &document, now)?;
                Ok(Some(document.bytes))
            }
            Err(e) if e.is_transient() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
