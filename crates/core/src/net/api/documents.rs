//! Documents: an attachment fetched through a short-lived signed link, size-capped and
//! wiped from memory when dropped.

use carekeep_protocol::Secret;
use zeroize::Zeroizing;

use super::{OpaqueId, Server, body_text, refusal};
use crate::error::{ConnectionError, RecordsError, ServerError};
use crate::store::CachedDocument;
use crate::{Error, Result};

impl Server {
    /// Downloads the attachment at `attachment_url` (a DocumentReference's
    /// `/documents/<id>`): asks for a short-lived signed link, then fetches it, on this
    /// server only and with this user's token, up to [`DOCUMENT_LIMIT`] bytes.
    pub async fn document(&self, access_token: &Secret, attachment_url: &str) -> Result<CachedDocument> {
        let id = attachment_url
            .strip_prefix("/documents/")
            .and_then(|id| OpaqueId::parse(id).ok())
            .ok_or(Error::Records(RecordsError::DocumentUnavailable))?;
        let path = format!("/documents/{id}");
        let request = self
            .http
            .get(self.url.join(&format!("{path}/link")))
            .bearer_auth(access_token.expose());
        let response = self.exchange(request).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(Error::Records(RecordsError::DocumentUnavailable));
        }
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let link: serde_json::Value = serde_json::from_str(&body_text(response).await?)
            .map_err(|_| Error::Server(ServerError::ServerMalformed))?;
        // The link is a path on this server with its signature: anything else is not followed.
        let signed = link["url"]
            .as_str()
            .and_then(|l| reqwest::Url::parse(&format!("https://server.invalid{l}")).ok())
            .filter(|l| l.path() == path)
            .ok_or(Error::Server(ServerError::ServerMalformed))?;
        let mut url = self.url.join(&path);
        url.query_pairs_mut()
            .extend_pairs(signed.query_pairs().filter(|(k, _)| k == "expires" || k == "sig"));
        let response = self.exchange(self.http.get(url).bearer_auth(access_token.expose())).await?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(Error::Records(RecordsError::DocumentUnavailable)),
            _ => return Err(refusal(response).await),
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|t| t.to_str().ok())
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .ok_or(Error::Server(ServerError::ServerMalformed))?;
        Ok(CachedDocument { content_type, bytes: limited_body(response, DOCUMENT_LIMIT).await? })
    }
}

/// The largest document this app downloads (25 MiB): a bigger one would crowd the cache
/// and the memory of a phone.
pub const DOCUMENT_LIMIT: usize = 25 * 1024 * 1024;

/// A response body of at most `limit` bytes, wiped from memory when dropped (so are the
/// partial copies a growing buffer leaves behind: it is sized from `Content-Length` first).
async fn limited_body(mut response: reqwest::Response, limit: usize) -> Result<Zeroizing<Vec<u8>>> {
    let too_large = || Error::Records(RecordsError::DocumentTooLarge { limit_mib: (limit / (1024 * 1024)) as u64 });
    let announced = response.content_length().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    if announced > limit {
        return Err(too_large());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(announced));
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        if e.is_timeout() {
            Error::Connection(ConnectionError::ServerTimeout)
        } else {
            Error::Connection(ConnectionError::ServerUnreachable)
        }
    })? {
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        if bytes.capacity() < bytes.len() + chunk.len() {
            // Grow by hand so the old buffer is wiped, not just freed.
            let mut bigger = Zeroizing::new(Vec::with_capacity((bytes.len() + chunk.len()).max(bytes.capacity() * 2)));
            bigger.extend_from_slice(&bytes);
            bytes = bigger;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
