//! "Who viewed my record", from the organisation's side: the server's audit trail of every
//! access to the records this user may see as a patient (their own and those they are
//! proxy for). The device's own log ([`crate::store::Store::access_log`]) covers views made
//! offline; this covers everyone else's.

use serde_json::Value;

use super::Account;
use crate::error::ServerError;
use crate::net::Page;
use crate::{Error, Result};

/// One access to a record, as the server's audit trail has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerAccess {
    /// When the server recorded it (RFC 3339).
    pub at: String,
    /// Who acted: their user name, else their opaque user id.
    pub who: Option<String>,
    /// Their role (`clinician`, `nurse`, …).
    pub role: Option<String>,
    /// What was done, as the server logged it (method and route).
    pub action: String,
    /// Whose record (a bare patient id).
    pub patient: Option<String>,
    /// Whether it was an emergency ("break-glass") access outside the care team.
    pub break_glass: bool,
    /// Whether the access was refused.
    pub denied: bool,
}

/// How many of the newest accesses are fetched.
pub const ACCESS_HISTORY_COUNT: u32 = 100;

impl Account {
    /// The newest accesses to the records this user may see as a patient, newest first.
    /// The request names no patient (the server knows whose records are the caller's), so
    /// no patient id travels in a URL.
    pub async fn server_access_history(&mut self) -> Result<Vec<ServerAccess>> {
        let page =
            Page { path: "/fhir/AuditEvent".into(), query: vec![("_count".into(), ACCESS_HISTORY_COUNT.to_string())] };
        let (text, _) = self
            .request(|server, token| {
                let page = page.clone();
                async move { server.fhir_page(&token, &page).await }
            })
            .await?;
        let bundle: Value = serde_json::from_str(&text).map_err(|_| Error::Server(ServerError::ServerMalformed))?;
        Ok(bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| access(&e["resource"]))
            .collect())
    }
}

/// One FHIR AuditEvent as a [`ServerAccess`] (`None`: not an AuditEvent).
fn access(event: &Value) -> Option<ServerAccess> {
    if event["resourceType"] != "AuditEvent" {
        return None;
    }
    let agent = &event["agent"][0];
    let who = agent["who"]["display"]
        .as_str()
        .or_else(|| agent["who"]["identifier"]["value"].as_str());
    let patient = event["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|e| e["what"]["reference"].as_str()?.strip_prefix("Patient/"));
    let break_glass = event["purposeOfEvent"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["coding"].as_array().into_iter().flatten().any(|c| c["code"] == "BTG"));
    Some(ServerAccess {
        at: event["recorded"].as_str()?.to_owned(),
        who: who.map(str::to_owned),
        role: agent["type"]["coding"][0]["code"].as_str().map(str::to_owned),
        action: event["outcomeDesc"].as_str().unwrap_or_default().to_owned(),
        patient: patient.map(str::to_owned),
        break_glass,
        denied: event["outcome"] != "0",
    })
}
