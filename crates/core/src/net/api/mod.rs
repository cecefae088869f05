//! The server's sign-in API (`/auth/*`, `/policy`): thin typed calls whose failures are the
//! core's [`Error`]s, worded for the person at the screen.

use base64::Engine as _;
use carekeep_protocol::Secret;
use carekeep_protocol::auth::{
    ConfirmEnrollmentRequest, DeviceInfo, Enrollment, LoginRequest, LoginResponse, LogoutRequest, MfaRequest,
    RefreshRequest, TokenResponse,
};
use carekeep_protocol::pins::PinSet;
use carekeep_protocol::policy::{Policy, SignedPolicy};
use serde::de::DeserializeOwned;

use carekeep_protocol::sync::{DeviceAuditReceipt, DeviceAuditUpload, RemovedPage, SyncStatus};

use super::{Roots, ServerUrl, classify, client};
use crate::store::{CachedDocument, OutboxEntry, WriteMethod};
use crate::{Error, Result};
use zeroize::Zeroizing;

/// The half-finished sign-in: the password was right, the authenticator code is owed.
#[derive(Debug)]
pub struct Challenge {
    mfa_token: Secret,
}

/// What a completed sign-in or refresh gives: the access token (keep in memory only), the
/// refresh token (keep in the keychain), and the server's id for this device.
pub type Tokens = TokenResponse;

/// One server, reached only through its pins.
#[derive(Debug, Clone)]
pub struct Server {
    url: ServerUrl,
    http: reqwest::Client,
    /// The server's clock at its latest answer (Unix seconds, from `Date`; 0: none yet).
    clock_seen: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// How long one request may take, answer included.
    request_timeout: std::time::Duration,
}

/// How long one request may take unless [`Server::set_request_timeout`] says otherwise.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Server {
    /// A server whose chain may lead to the system's roots or be self-signed, and must
    /// carry one of `pins` either way.
    pub fn connect(url: ServerUrl, pins: PinSet) -> Result<Self> {
        Self::with_roots(url, pins, Roots::System)
    }

    /// As [`Server::connect`], with the certificate authorities given (an enterprise CA).
    pub fn with_roots(url: ServerUrl, pins: PinSet, roots: Roots) -> Result<Self> {
        Ok(Self {
            http: client(pins, roots)?,
            url,
            clock_seen: std::sync::Arc::default(),
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    /// The server's clock at its latest answer, if it has answered: a time the device's
    /// own clock cannot set back.
    pub fn last_server_time(&self) -> Option<i64> {
        Some(self.clock_seen.load(std::sync::atomic::Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// Sets how long one request may take before it fails with [`Error::ServerTimeout`].
    pub fn set_request_timeout(&mut self, timeout: std::time::Duration) {
        self.request_timeout = timeout;
    }

    /// Sends `request`, noting the server's clock from the answer.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request.timeout(self.request_timeout).send().await.map_err(|e| classify(&e))?;
        if let Some(time) = response.headers().get(reqwest::header::DATE).and_then(|d| http_date(d.to_str().ok()?)) {
            self.clock_seen.fetch_max(time, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(response)
    }

    /// The password step. `device_cookie`: what this device was given at its last full
    /// sign-in as this user, so failed attempts elsewhere do not hold it back.
    pub async fn login(&self, username: &str, password: &str, device_cookie: Option<&Secret>) -> Result<Challenge> {
        let body = LoginRequest {
            username: username.to_owned(),
            password: Secret::new(password),
            device_cookie: device_cookie.cloned(),
        };
        let response: LoginResponse = self.send(self.http.post(self.url.join("/auth/login")).json(&body)).await?;
        Ok(Challenge { mfa_token: response.mfa_token })
    }

    /// The authenticator step: registers this device and returns its tokens.
    pub async fn verify_code(&self, challenge: Challenge, code: &str, device_name: &str) -> Result<Tokens> {
        let body =
            MfaRequest { mfa_token: challenge.mfa_token, code: Secret::new(code), device_name: device_name.to_owned() };
        self.send(self.http.post(self.url.join("/auth/mfa")).json(&body)).await
    }

    /// Rotates the refresh token: the one given is spent, whatever the outcome. Retrying
    /// with the same `rotation_id` after a lost answer gets the same new token.
    pub async fn refresh(&self, refresh_token: &Secret, device_id: &str, rotation_id: &str) -> Result<Tokens> {
        let body = RefreshRequest {
            refresh_token: refresh_token.clone(),
            device_id: device_id.to_owned(),
            rotation_id: Some(rotation_id.to_owned()),
        };
        self.send(self.http.post(self.url.join("/auth/refresh")).json(&body)).await
    }

    /// Ends this device's session on the server.
    pub async fn logout(&self, refresh_token: &Secret) -> Result<()> {
        let body = LogoutRequest { refresh_token: refresh_token.clone() };
        let response = self.exchange(self.http.post(self.url.join("/auth/logout")).json(&body)).await?;
        if response.status().is_success() { Ok(()) } else { Err(refusal(response).await) }
    }

    /// The tenant's policy for this user's role, verified against the server's signing key
    /// (which is trusted because it arrives over the pinned connection).
    pub async fn policy(&self, access_token: &Secret) -> Result<VerifiedPolicy> {
        let key: serde_json::Value = self.send(self.http.get(self.url.join("/policy/key"))).await?;
        let key = key["public_key"].as_str().ok_or(Error::PolicyInvalid)?.to_owned();
        let signed: SignedPolicy =
            self.send(self.http.get(self.url.join("/policy")).bearer_auth(access_token.expose())).await?;
        VerifiedPolicy::verify(signed, key)
    }

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
        let bundle: BundleLinks = serde_json::from_str(&text).map_err(|_| Error::ServerMalformed)?;
        if bundle.resource_type != "Bundle" {
            return Err(Error::ServerMalformed);
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
        let request = match (write.method, &write.id) {
            (WriteMethod::Update, Some(id)) => {
                let url = self.url.join(&format!("/fhir/{}/{}", write.resource_type, id));
                let version = write.if_match.as_deref().unwrap_or("0");
                self.http.put(url).header(reqwest::header::IF_MATCH, format!("W/\"{version}\""))
            }
            _ => self.http.post(self.url.join(&format!("/fhir/{}", write.resource_type))),
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
                serde_json::from_str::<serde_json::Value>(&text).map_err(|_| Error::ServerMalformed)?;
                Ok(Pushed::Stored(text))
            }
            412 => Ok(Pushed::Conflict),
            400 | 403 | 404 | 409 | 410 | 422 | 428 => {
                let text = body_text(response).await?;
                let body: serde_json::Value = serde_json::from_str(&text).map_err(|_| Error::ServerMalformed)?;
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
        let url = self.url.join(&format!("/fhir/{resource_type}/{id}"));
        let response = self.exchange(self.http.get(url).bearer_auth(access_token.expose())).await?;
        match response.status().as_u16() {
            200 => {
                let text = body_text(response).await?;
                serde_json::from_str::<serde_json::Value>(&text).map_err(|_| Error::ServerMalformed)?;
                Ok(Some(text))
            }
            404 | 410 => Ok(None),
            _ => Err(refusal(response).await),
        }
    }

    /// Whether anything changed: the patients the caller may keep, each with its latest
    /// change, and the newest deletion.
    pub async fn status(&self, access_token: &Secret) -> Result<SyncStatus> {
        self.send(self.http.get(self.url.join("/sync/status")).bearer_auth(access_token.expose())).await
    }

    /// Opens `patient`'s record outside the caller's care team for a while (break-glass),
    /// with the clinician's reason, kept for review.
    pub async fn break_glass(&self, access_token: &Secret, patient: &str, reason: &str) -> Result<()> {
        let body = serde_json::json!({"patient": patient, "reason": reason});
        let request = self.http.post(self.url.join("/break-glass")).bearer_auth(access_token.expose()).json(&body);
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(Error::InvalidArgument { what: "patient", problem: "there is no such patient" }),
            _ => Err(refusal(response).await),
        }
    }

    /// Deletions on the server after `after` that the caller could see.
    pub async fn removed(&self, access_token: &Secret, after: i64) -> Result<RemovedPage> {
        let mut url = self.url.join("/sync/removed");
        url.query_pairs_mut().append_pair("after", &after.to_string());
        self.send(self.http.get(url).bearer_auth(access_token.expose())).await
    }

    /// The caller's devices (signed in, or signed out by the server), this one marked.
    pub async fn devices(&self, access_token: &Secret) -> Result<Vec<DeviceInfo>> {
        self.send(self.http.get(self.url.join("/devices")).bearer_auth(access_token.expose())).await
    }

    /// Signs one of the caller's devices out (it erases its cache at its next contact).
    pub async fn revoke_device(&self, access_token: &Secret, device_id: &str) -> Result<()> {
        // An id is the server's opaque token: nothing in it may change the path.
        if device_id.is_empty() || !device_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::InvalidArgument { what: "device", problem: "not a device id" });
        }
        let path = format!("/devices/{device_id}/revoke");
        let request = self.http.post(self.url.join(&path)).bearer_auth(access_token.expose());
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(Error::InvalidArgument { what: "device", problem: "there is no such device of yours" }),
            _ => Err(refusal(response).await),
        }
    }

    /// Starts replacing the user's authenticator: a new secret, pending until confirmed.
    /// Needs a recent full sign-in ([`Error::StepUpRequired`] otherwise).
    pub async fn begin_enrollment(&self, access_token: &Secret) -> Result<Enrollment> {
        self.send(self.http.post(self.url.join("/auth/mfa/enroll")).bearer_auth(access_token.expose())).await
    }

    /// Makes the pending authenticator the only one, given a code from it.
    pub async fn confirm_enrollment(&self, access_token: &Secret, code: &str) -> Result<()> {
        let body = ConfirmEnrollmentRequest { code: Secret::new(code) };
        let request = self.http.post(self.url.join("/auth/mfa/confirm")).bearer_auth(access_token.expose()).json(&body);
        let response = self.exchange(request).await?;
        if response.status().is_success() { Ok(()) } else { Err(refusal(response).await) }
    }

    /// Downloads the attachment at `attachment_url` (a DocumentReference's
    /// `/documents/<id>`): asks for a short-lived signed link, then fetches it, on this
    /// server only and with this user's token, up to [`DOCUMENT_LIMIT`] bytes.
    pub async fn document(&self, access_token: &Secret, attachment_url: &str) -> Result<CachedDocument> {
        // The id is the server's opaque token: nothing in it may change the path.
        let id = attachment_url.strip_prefix("/documents/").unwrap_or_default();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::DocumentUnavailable);
        }
        let request =
            self.http.get(self.url.join(&format!("{attachment_url}/link"))).bearer_auth(access_token.expose());
        let response = self.exchange(request).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(Error::DocumentUnavailable);
        }
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let link: serde_json::Value =
            serde_json::from_str(&body_text(response).await?).map_err(|_| Error::ServerMalformed)?;
        // The link is a path on this server with its signature: anything else is not followed.
        let signed = link["url"]
            .as_str()
            .and_then(|l| reqwest::Url::parse(&format!("https://server.invalid{l}")).ok())
            .filter(|l| l.path() == attachment_url)
            .ok_or(Error::ServerMalformed)?;
        let mut url = self.url.join(attachment_url);
        url.query_pairs_mut().extend_pairs(signed.query_pairs().filter(|(k, _)| k == "expires" || k == "sig"));
        let response = self.exchange(self.http.get(url).bearer_auth(access_token.expose())).await?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(Error::DocumentUnavailable),
            _ => return Err(refusal(response).await),
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|t| t.to_str().ok())
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .ok_or(Error::ServerMalformed)?;
        Ok(CachedDocument { content_type, bytes: limited_body(response, DOCUMENT_LIMIT).await? })
    }

    /// Uploads a batch of this device's audit records.
    pub async fn upload_audit(&self, access_token: &Secret, upload: &DeviceAuditUpload) -> Result<DeviceAuditReceipt> {
        self.send(self.http.post(self.url.join("/audit/device")).bearer_auth(access_token.expose()).json(upload)).await
    }

    /// The address this client reaches.
    pub fn url(&self) -> &ServerUrl {
        &self.url
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let response = self.exchange(request).await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        let text = body_text(response).await?;
        serde_json::from_str(&text).map_err(|_| Error::ServerMalformed)
    }
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

/// The largest document this app downloads (25 MiB): a bigger one would crowd the cache
/// and the memory of a phone.
pub const DOCUMENT_LIMIT: usize = 25 * 1024 * 1024;

/// A response body of at most `limit` bytes, wiped from memory when dropped (so are the
/// partial copies a growing buffer leaves behind: it is sized from `Content-Length` first).
async fn limited_body(mut response: reqwest::Response, limit: usize) -> Result<Zeroizing<Vec<u8>>> {
    let too_large = || Error::DocumentTooLarge { limit_mib: (limit / (1024 * 1024)) as u64 };
    let announced = response.content_length().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    if announced > limit {
        return Err(too_large());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(announced));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| if e.is_timeout() { Error::ServerTimeout } else { Error::ServerUnreachable })?
    {
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

/// A response body as text; a connection dropped mid-body is a timeout or unreachable.
async fn body_text(response: reqwest::Response) -> Result<String> {
    response.text().await.map_err(|e| if e.is_timeout() { Error::ServerTimeout } else { Error::ServerUnreachable })
}

/// An OperationOutcome's diagnostics, joined: what the server said was wrong.
fn diagnostics(outcome: &serde_json::Value) -> String {
    let said: Vec<&str> =
        outcome["issue"].as_array().into_iter().flatten().filter_map(|issue| issue["diagnostics"].as_str()).collect();
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

/// A policy whose signature held, kept with what proves it so it can be cached and checked
/// again offline.
#[derive(Debug, Clone)]
pub struct VerifiedPolicy {
    /// The policy as signed.
    pub signed: SignedPolicy,
    /// The server's Ed25519 public key (base64), as the pinned connection delivered it.
    pub key: String,
    /// The policy read from `signed`.
    pub policy: Policy,
}

impl VerifiedPolicy {
    /// Checks `signed` against `key` (base64 Ed25519).
    pub fn verify(signed: SignedPolicy, key: String) -> Result<Self> {
        let verifying = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
            .ok_or(Error::PolicyInvalid)?;
        let policy = signed.verify(&verifying).map_err(|_| Error::PolicyInvalid)?;
        Ok(Self { signed, key, policy })
    }
}

/// The server's `{error, message}` answer as the core's error.
async fn refusal(response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    bearer_refusal(status, &body, Some(retry_after))
}

/// A `{error, message}` body as the core's error.
fn bearer_refusal(status: u16, body: &serde_json::Value, retry_after: Option<u64>) -> Error {
    use carekeep_protocol::refusal::Refusal;
    let retry_after = retry_after.unwrap_or(60);
    let Ok(refusal) = serde_json::from_value::<Refusal>(body["error"].clone()) else {
        return Error::ServerRefused { status };
    };
    match refusal {
        Refusal::BadCredentials => Error::BadCredentials,
        Refusal::BadCode => Error::BadCode,
        Refusal::CodeAlreadyUsed => Error::CodeAlreadyUsed,
        Refusal::ChallengeExpired => Error::ChallengeExpired,
        Refusal::Throttled => Error::SignInThrottled { retry_after_secs: retry_after },
        Refusal::RateLimited => Error::RateLimited { retry_after_secs: retry_after },
        Refusal::AccessExpired => Error::AccessExpired,
        Refusal::SessionEnded => Error::SessionEnded,
        Refusal::DeviceWipe => Error::RemoteWipe,
        Refusal::DeviceRevoked => Error::DeviceRevoked,
        Refusal::StepUpRequired => Error::StepUpRequired,
        Refusal::NoEnrollment => Error::NoPendingAuthenticator,
        Refusal::InvalidRequest | Refusal::Busy | Refusal::Internal | Refusal::Unknown => {
            Error::ServerRefused { status }
        }
    }
}

/// An HTTP `Date` (IMF-fixdate, RFC 9110: `Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
fn http_date(text: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text, format).ok().map(|t| t.assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_parse_and_other_forms_do_not() {
        assert_eq!(super::http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(super::http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(super::http_date("1994-11-06T08:49:37Z"), None);
    }
}
