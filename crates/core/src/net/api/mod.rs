//! The server's API: thin typed calls whose failures are the core's [`Error`]s, worded for
//! the person at the screen. One file per concern; every id that reaches a URL path is an
//! [`OpaqueId`].

mod audit;
mod break_glass;
mod devices;
mod documents;
mod opaque_id;
mod records;
mod sign_in;

use serde::de::DeserializeOwned;

pub use documents::DOCUMENT_LIMIT;
pub use opaque_id::{InvalidId, OpaqueId};
pub use records::{Page, Pushed};
pub use sign_in::{Challenge, Tokens, VerifiedPolicy};

use super::{Roots, ServerUrl, classify, client};
use crate::error::{ConnectionError, ServerError};
use crate::{Error, Result};
use carekeep_protocol::pins::PinSet;

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

    /// Sets how long one request may take before it fails with [`ConnectionError::ServerTimeout`].
    pub fn set_request_timeout(&mut self, timeout: std::time::Duration) {
        self.request_timeout = timeout;
    }

    /// Sends `request`, noting the server's clock from the answer.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request.timeout(self.request_timeout).send().await.map_err(|e| classify(&e))?;
        if let Some(time) = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| http_date(d.to_str().ok()?))
        {
            self.clock_seen.fetch_max(time, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(response)
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
        serde_json::from_str(&text).map_err(|_| Error::Server(ServerError::ServerMalformed))
    }
}

/// A response body as text; a connection dropped mid-body is a timeout or unreachable.
async fn body_text(response: reqwest::Response) -> Result<String> {
    response.text().await.map_err(|e| {
        if e.is_timeout() {
            Error::Connection(ConnectionError::ServerTimeout)
        } else {
            Error::Connection(ConnectionError::ServerUnreachable)
        }
    })
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
        return Error::Server(ServerError::ServerRefused { status });
    };
    match refusal {
        Refusal::BadCredentials => Error::Server(ServerError::BadCredentials),
        Refusal::BadCode => Error::Server(ServerError::BadCode),
        Refusal::CodeAlreadyUsed => Error::Server(ServerError::CodeAlreadyUsed),
        Refusal::ChallengeExpired => Error::Server(ServerError::ChallengeExpired),
        Refusal::Throttled => Error::Server(ServerError::SignInThrottled { retry_after_secs: retry_after }),
        Refusal::RateLimited => Error::Server(ServerError::RateLimited { retry_after_secs: retry_after }),
        Refusal::AccessExpired => Error::Server(ServerError::AccessExpired),
        Refusal::SessionEnded => Error::Server(ServerError::SessionEnded),
        Refusal::DeviceWipe => Error::Server(ServerError::RemoteWipe),
        Refusal::DeviceRevoked => Error::Server(ServerError::DeviceRevoked),
        Refusal::StepUpRequired => Error::Server(ServerError::StepUpRequired),
        Refusal::NoEnrollment => Error::Server(ServerError::NoPendingAuthenticator),
        Refusal::InvalidRequest | Refusal::Busy | Refusal::Internal | Refusal::Unknown => {
            Error::Server(ServerError::ServerRefused { status })
        }
    }
}

/// An HTTP `Date` (IMF-fixdate, RFC 9110: `Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
fn http_date(text: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text, format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
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
