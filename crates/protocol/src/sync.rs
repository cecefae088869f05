//! What a device and the server exchange when syncing, besides FHIR itself: the deletions a
//! device must apply to its cache, and the audit records it kept while offline.

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;

/// `GET /sync/status`: in one round trip, what a device needs to know whether anything
/// changed — so a sync with nothing new is one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Every patient the caller may keep, by id, with the latest change in their
    /// compartment.
    pub patients: Vec<PatientChanges>,
    /// The tenant's newest deletion (`GET /sync/removed?after=` has more when a device's
    /// last applied one is older).
    pub removed_through: i64,
}

/// One patient the caller may keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientChanges {
    /// Opaque id.
    pub id: String,
    /// The latest `lastUpdated` in their compartment, as a sortable UTC instant
    /// (`2026-11-23T08:00:00.000000Z`).
    pub changed_at: String,
}

/// `GET /sync/removed?after=N`: resources deleted on the server that the caller could read,
/// oldest first. Devices remove them from their cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedPage {
    /// The deletions.
    pub removed: Vec<RemovedResource>,
    /// Where the next request continues (`after=`): the last deletion looked at.
    pub after: i64,
    /// More deletions wait after `after`.
    pub more: bool,
}

/// One deleted resource: type and opaque id, never content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedResource {
    /// FHIR type.
    #[serde(rename = "resourceType")]
    pub resource_type: String,
    /// Opaque id.
    pub id: String,
}

/// Which of a device's audit chains a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStream {
    /// Session transitions (sign-in, lock, unlock, wipe): PHI-free, kept outside the vault
    /// so they outlive a wipe.
    Session,
    /// Records read from the device's cache (patient ids): kept inside the encrypted vault.
    Access,
}

impl DeviceStream {
    /// The stream's name in audit actions.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStream::Session => "session",
            DeviceStream::Access => "access",
        }
    }
}

/// `POST /audit/device`: a device's chained records, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceAuditUpload {
    /// The chain they belong to.
    pub stream: DeviceStream,
    /// The records, as the device chained them.
    pub records: Vec<AuditRecord>,
}

/// The server's answer: the batch is in its trail (records it already had are skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAuditReceipt {
    /// Records appended now.
    pub appended: usize,
    /// The batch continued the chain the server had seen from this user's devices; `false`
    /// means a gap, flagged in the trail for review.
    pub continued: bool,
    /// Records about a patient this account could not read when they say it happened (or
    /// claiming a break-glass grant the server never gave): each appended as a refused
    /// record without the patient, for review, instead of in that patient's history.
    #[serde(default)]
    pub refused: usize,
}

/// The states a device's session records name (`session <state> (<reason>)`).
pub const SESSION_STATES: &[&str] = &["signed-out", "unlocked", "locked", "reauth-required", "wiped"];

/// The reasons a device's session records name.
pub const SESSION_REASONS: &[&str] = &[
    "full-sign-in",
    "idle",
    "backgrounded",
    "os-locked",
    "presence",
    "offline-password",
    "window-passed",
    "biometrics-changed",
    "device-key-gone",
    "manual",
    "logout",
    "revoked",
    "remote-wipe",
    "pin-mismatch",
];

/// The action of an access record: records of a patient were shown from the device's cache.
pub const READ_FROM_CACHE: &str = "read from the device cache";

/// The action of an export: a patient's cached record was saved to a file (after step-up).
pub const EXPORTED_FROM_CACHE: &str = "exported from the device cache";

/// The action of a refused connection (the server's key was not one the device pinned).
pub const CONNECTION_REFUSED: &str = "connection refused (pin-mismatch)";

/// Whether `action` is one a device records. The server appends nothing else from a
/// device: an action is never free text, so it can never carry PHI into the trail.
pub fn is_device_action(action: &str) -> bool {
    if [READ_FROM_CACHE, EXPORTED_FROM_CACHE, CONNECTION_REFUSED].contains(&action) {
        return true;
    }
    let Some(rest) = action.strip_prefix("session ") else { return false };
    let Some((state, reason)) = rest.split_once(" (") else { return false };
    let Some(reason) = reason.strip_suffix(')') else { return false };
    SESSION_STATES.contains(&state) && SESSION_REASONS.contains(&reason)
}

/// Most records in one upload.
pub const MAX_DEVICE_AUDIT_BATCH: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_device_vocabulary_is_an_action() {
        assert!(is_device_action("session locked (idle)"));
        assert!(is_device_action(READ_FROM_CACHE));
        assert!(is_device_action(CONNECTION_REFUSED));
        for free_text in
            ["session locked (Jane Doe)", "session dancing (idle)", "read Jane's chart", "", "session locked"]
        {
            assert!(!is_device_action(free_text), "{free_text}");
        }
    }
}
