//! Documents (a DocumentReference's attachments) downloaded to this device. Their bytes
//! live in the vault like every record, so they are encrypted at rest with it, and each is
//! tied to its DocumentReference: when that leaves the cache (deleted on the server,
//! patient no longer kept, wipe) the bytes go with it.

use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use super::Store;
use crate::error::RecordsError;
use crate::{Error, Result};

/// A document's bytes and type, as downloaded. `Debug` shows the type and size only.
pub struct CachedDocument {
    /// Its MIME type, as the server sent it.
    pub content_type: String,
    /// Its bytes, wiped from memory when dropped.
    pub bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CachedDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDocument")
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Store<'_> {
    /// The document downloaded from `url` (the attachment's server path), if it is here.
    pub fn document(&self, url: &str) -> Result<Option<CachedDocument>> {
        let row = self
            .conn
            .query_row("SELECT content_type, bytes FROM documents WHERE url = ?1", [url], |r| {
                Ok(CachedDocument { content_type: r.get(0)?, bytes: Zeroizing::new(r.get(1)?) })
            })
            .optional()?;
        Ok(row)
    }

    /// Keeps a document downloaded from `url` for the cached DocumentReference `id`,
    /// replacing an earlier copy. The DocumentReference must be in the cache.
    pub fn keep_document(&mut self, id: &str, url: &str, document: &CachedDocument, now_unix: i64) -> Result<()> {
        let resource: Option<i64> = self
            .conn
            .query_row("SELECT pk FROM resources WHERE type = 'DocumentReference' AND id = ?1", [id], |r| r.get(0))
            .optional()?;
        let resource = resource.ok_or(Error::Records(RecordsError::DocumentUnavailable))?;
        self.conn.execute(
            "INSERT INTO documents (url, resource, content_type, bytes, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (url) DO UPDATE SET resource = excluded.resource, content_type = excluded.content_type,
                bytes = excluded.bytes, fetched_at = excluded.fetched_at",
            params![url, resource, document.content_type, document.bytes.as_slice(), now_unix],
        )?;
        Ok(())
    }

    /// How many documents this device keeps.
    pub fn document_count(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row("SELECT count(*) FROM documents", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
