//! Why the server refused a request, as the `error` field of its `{error, message}` answers
//! (everything outside `/fhir`, whose refusals are FHIR OperationOutcomes). One vocabulary
//! for both sides: the server answers with these codes and the app decides from them what
//! the person does next.

use serde::{Deserialize, Serialize};

/// The code of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Wrong username or password (never says which).
    BadCredentials,
    /// Wrong authenticator code.
    BadCode,
    /// A right authenticator code that was used already.
    CodeAlreadyUsed,
    /// The password step is too old or unknown: start again.
    ChallengeExpired,
    /// Too many failed sign-ins for this account from devices it does not know: wait
    /// `Retry-After` seconds (a device that signed in before keeps its own budget).
    Throttled,
    /// Too many requests from this network, or for the whole server: wait `Retry-After`.
    RateLimited,
    /// The access token expired: refresh it and retry.
    AccessExpired,
    /// The device's session ended (idle, signed out, token reused): sign in again.
    SessionEnded,
    /// The device must erase its copy of the records now.
    DeviceWipe,
    /// A person revoked the device: it erases its copy.
    DeviceRevoked,
    /// A high-risk action needs a full sign-in within the last few minutes.
    StepUpRequired,
    /// Confirming an authenticator that was never started.
    NoEnrollment,
    /// The body is not the JSON the route takes.
    InvalidRequest,
    /// The server is receiving more than it can hold right now: try again in a few seconds.
    Busy,
    /// The server failed: try again later.
    Internal,
    /// A code this version does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl Refusal {
    /// Every code the server sends (all but [`Refusal::Unknown`], which only a client makes),
    /// for documents and tests that must name each one.
    pub const SENT: [Refusal; 15] = [
        Refusal::BadCredentials,
        Refusal::BadCode,
        Refusal::CodeAlreadyUsed,
        Refusal::ChallengeExpired,
        Refusal::Throttled,
        Refusal::RateLimited,
        Refusal::AccessExpired,
        Refusal::SessionEnded,
        Refusal::DeviceWipe,
        Refusal::DeviceRevoked,
        Refusal::StepUpRequired,
        Refusal::NoEnrollment,
        Refusal::InvalidRequest,
        Refusal::Busy,
        Refusal::Internal,
    ];
}

/// A refusal as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalBody {
    /// What went wrong.
    pub error: Refusal,
    /// The same, in words a person can act on (never PHI).
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_unknown_ones_do_not_fail() {
        let body = RefusalBody { error: Refusal::CodeAlreadyUsed, message: "wait".into() };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"error":"code_already_used","message":"wait"}"#);
        let newer: RefusalBody = serde_json::from_str(r#"{"error":"something_new","message":"m"}"#).unwrap();
        assert_eq!(newer.error, Refusal::Unknown);
    }

    /// Where `refusal` sits in [`Refusal::SENT`]. A new code does not compile here until it is
    /// given a place: the next index, with the code added to `SENT` and its row to the document.
    fn place(refusal: Refusal) -> Option<usize> {
        match refusal {
            Refusal::BadCredentials => Some(0),
            Refusal::BadCode => Some(1),
            Refusal::CodeAlreadyUsed => Some(2),
            Refusal::ChallengeExpired => Some(3),
            Refusal::Throttled => Some(4),
            Refusal::RateLimited => Some(5),
            Refusal::AccessExpired => Some(6),
            Refusal::SessionEnded => Some(7),
            Refusal::DeviceWipe => Some(8),
            Refusal::DeviceRevoked => Some(9),
            Refusal::StepUpRequired => Some(10),
            Refusal::NoEnrollment => Some(11),
            Refusal::InvalidRequest => Some(12),
            Refusal::Busy => Some(13),
            Refusal::Internal => Some(14),
            Refusal::Unknown => None,
        }
    }

    #[test]
    fn every_code_sent_is_listed_and_documented() {
        let document = include_str!("../../../docs/server-api.md");
        for (index, refusal) in Refusal::SENT.iter().enumerate() {
            assert_eq!(place(*refusal), Some(index), "{refusal:?} out of place in SENT");
            let code = serde_json::to_value(refusal).unwrap();
            let row = format!("| `{}` |", code.as_str().unwrap());
            assert!(document.contains(&row), "docs/server-api.md's Refusals table has no row for {row}");
        }
    }
}
