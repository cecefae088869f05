//! FHIR records: search pages followed on this server only, queued writes pushed once,
//! one resource read back, and what changed or was removed since the last sync.

use carekeep_protocol::Secret;
use carekeep_protocol::sync::{RemovedPage, SyncStatus};

use super::{OpaqueId, Server, bearer_refusal, body_text, refusal};
use crate::error::ServerError;
use crate::store::{OutboxEntry, WriteMethod};
use crate::{Error, Result};

impl Server {
    /// One page of a FHIR search as its exact JSON text, and where the next page is. `path`
    /// is under `/fhir`; a next link is followed only by its opaque `_page` token, always on
    /// this server (a link naming another host is never followed).
    pub async fn fhir_page(&self, access_token: &Secret, page: &Page) -> Result<(String, Option<Page>)> {
        let mut url = self.url.join(&page.path);
        url.query_pairs_mut().extend_pairs(page.query.iter());
        let response = self.exchange(self.http.get(url).bearer_auth(access_token.expose())).await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let text = body_text(response).await?;
        // The links only: the entries are the store's to parse.
        let bundle: BundleLinks =
            serde_json::from_str(&text).map_err(|_| Error::Server(ServerError::ServerMalformed))?;
        if bundle.resource_type != "Bundle" {
            return Err(Error::Server(ServerError::ServerMalformed));
        }
        let next = bundle.link.iter().find(|l| l.relation == "next").and_then(|l| {
            let url = reqwest::Url::parse(&l.url).ok()?;
            let token = url.query_pairs().find(|(k, _)| k == "_page")?.1.into_owned();
            Some(Page { path: "/fhir".into(), query: vec![("_page".into(), token)] })
        });
        Ok((text, next))
    }

    /// Sends one queued write: `POST` for a create, `PUT` with `If-Match` for an update,
    /// each with its idempotency key, so a replay after a lost answer is applied once.
    pub async fn push(&self, access_token: &Secret, write: &OutboxEntry) -> Result<Pushed> {
        let resource_type = record_id(&write.resource_type)?;
        let request = match (write.method, &write.id) {
            (WriteMethod::Update, Some(id)) => {
                let url = self.url.join(&format!("/fhir/{resource_type}/{}", record_id(id)?));
                let version = write.if_match.as_deref().unwrap_or("0");
                self.http.put(url).header(reqwest::header::IF_MATCH, format!("W/\"{version}\""))
            }
            _ => self.http.post(self.url.join(&format!("/fhir/{resource_type}"))),
        };
        let request = request
            .bearer_auth(access_token.expose())
            .header("Idempotency-Key", &write.idempotency_key)
            .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
            .body(write.body.clone());
        let response = self.exchange(request).await?;
        let status = response.status().as_u16();
        match status {
            200 | 201 => {
                let text = body_text(response).await?;
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|_| Error::Server(ServerError::ServerMalformed))?;
                Ok(Pushed::Stored(text))
            }
            412 => Ok(Pushed::Conflict),
            400 | 403 | 404 | 409 | 410 | 422 | 428 => {
                let text = body_text(response).await?;
                let body: serde_json::Value =
                    serde_json::from_str(&text).map_err(|_| Error::Server(ServerError::ServerMalformed))?;
                if body["resourceType"] == "OperationOutcome" {
                    Ok(Pushed::Refused { status, reason: diagnostics(&body) })
                } else {
                    Err(bearer_refusal(status, &body, None))
                }
            }
            _ => Err(refusal(response).await),
        }
    }

    /// The server's current version of one resource (`None`: gone, or no longer visible).
    pub async fn read(&self, access_token: &Secret, resource_type: &str, id: &str) -> Result<Option<String>> {
        let url = self
            .url
            .join(&format!("/fhir/{}/{}", record_id(resource_type)?, record_id(id)?));
        let response = self.exchange(self.http.get(url).bearer_auth(access_token.expose())).await?;
        match response.status().as_u16() {
            200 => {
                let text = body_text(response).await?;
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|_| Error::Server(ServerError::ServerMalformed))?;
                Ok(Some(text))
            }
            404 | 410 => Ok(None),
            _ => Err(refusal(response).await),
        }
    }

    /// Whether anything changed: the patients the caller may keep, each with its latest
    /// change, and the newest deletion.
    pub async fn status(&self, access_token: &Secret) -> Result<SyncStatus> {
        self.send(self.http.get(self.url.join("/sync/status")).bearer_auth(access_token.expose()))
            .await
    }

    /// Deletions on the server after `after` that the caller could see.
    pub async fn removed(&self, access_token: &Secret, after: i64) -> Result<RemovedPage> {
        let mut url = self.url.join("/sync/removed");
        url.query_pairs_mut().append_pair("after", &after.to_string());
        self.send(self.http.get(url).bearer_auth(access_token.expose())).await
    }
}

/// A resource type or id as a path segment; the store only keeps valid ones, so a refusal
/// here is a bug upstream, reported rather than sent.
fn record_id(text: &str) -> Result<OpaqueId> {
    OpaqueId::parse(text).map_err(|_| Error::InvalidArgument { what: "record id", problem: "not a FHIR id" })
}

/// A Bundle's type and links, read without its entries.
#[derive(serde::Deserialize)]
struct BundleLinks {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(default)]
    link: Vec<BundleLink>,
}

#[derive(serde::Deserialize)]
struct BundleLink {
    relation: String,
    url: String,
}

/// How the server took one queued write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Stored: the resource as the server keeps it (id, version, time set).
    Stored(String),
    /// `412`: the record changed on the server since the version the write was based on.
    Conflict,
    /// Refused for a reason in the write itself; the server's words.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The OperationOutcome's diagnostics.
        reason: String,
    },
}

/// An OperationOutcome's diagnostics, joined: what the server said was wrong.
fn diagnostics(outcome: &serde_json::Value) -> String {
    let said: Vec<&str> = outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|issue| issue["diagnostics"].as_str())
        .collect();
    if said.is_empty() { "The server refused this change without giving a reason.".to_owned() } else { said.join(" ") }
}

/// A FHIR request: a path under the server and its query parameters (never PHI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// E.g. `/fhir/Patient`.
    pub path: String,
    /// E.g. `_count=100`.
    pub query: Vec<(String, String)>,
}
