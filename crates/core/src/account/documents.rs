//! Opening documents (a DocumentReference's attachments): from this device when they were
//! downloaded before, else through the server's short-lived signed link, then kept in the
//! encrypted cache so they open offline too.

use carekeep_protocol::sync::READ_FROM_CACHE;
use serde_json::Value;

use super::Account;
use super::reading::patient_of;
use crate::error::{CacheError, RecordsError};
use crate::store::CachedDocument;
use crate::{Error, Result};

impl Account {
    /// Attachment `index` of the cached DocumentReference `id`, while unlocked. The address
    /// comes from the cached resource, never from the caller, so nothing but the server's
    /// own documents can be fetched. Read from the cache, it is logged as viewed (the
    /// server logs a download itself). Offline and never downloaded:
    /// [`RecordsError::DocumentNotDownloaded`].
    pub async fn open_document(&mut self, id: &str, index: usize) -> Result<CachedDocument> {
        let resource = self
            .store()?
            .get("DocumentReference", id)?
            .ok_or(Error::Records(RecordsError::DocumentUnavailable))?;
        let value: Value = serde_json::from_str(&resource.json).map_err(|_| Error::Cache(CacheError::CorruptCache))?;
        let url = value["content"][index]["attachment"]["url"]
            .as_str()
            .ok_or(Error::Records(RecordsError::DocumentUnavailable))?
            .to_owned();
        if let Some(document) = self.store()?.document(&url)? {
            self.log_access(READ_FROM_CACHE, "DocumentReference", [patient_of(&resource)])?;
            return Ok(document);
        }
        let downloaded = self
            .request(|server, token| {
                let url = url.clone();
                async move { server.document(&token, &url).await }
            })
            .await
            .map_err(|e| if e.is_transient() { Error::Records(RecordsError::DocumentNotDownloaded) } else { e })?;
        let now = self.clock.now_unix();
        self.store()?.keep_document(id, &url, &downloaded, now)?;
        Ok(downloaded)
    }
}
