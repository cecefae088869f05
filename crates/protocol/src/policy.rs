//! The policy a tenant sets per role (DESIGN.md §3), signed by the server with Ed25519 so the
//! app can cache it and trust it offline.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::pins::PinSet;

/// Domain separation: a policy signature can never be mistaken for another signed thing.
const CONTEXT: &[u8] = b"carekeep.policy.v1\0";

/// What the app enforces for one role of one tenant. Durations in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The tenant (clinic) it applies to.
    pub tenant: String,
    /// The role it applies to.
    pub role: Role,
    /// Lock after this long without input.
    pub idle_lock_secs: u32,
    /// Grace after backgrounding before locking (0: at once; at most 30).
    pub background_grace_secs: u32,
    /// Biometric/presence unlock only while the last full sign-in is younger than this.
    pub absolute_reauth_secs: u32,
    /// High-risk actions need a full sign-in at most this old.
    pub step_up_secs: u32,
    /// Offline, the password alone unlocks for this long after the last full sign-in.
    pub offline_grace_secs: u32,
    /// Failed local unlocks from which attempts wait.
    pub unlock_backoff_from: u32,
    /// Failed local unlocks at which the cache is wiped.
    pub wipe_after_failures: u32,
    /// Shared workstation: wipe the cache at logout too.
    pub wipe_on_logout: bool,
    /// The server certificate pins the app must enforce.
    pub pins: PinSet,
    /// When the server issued it (RFC 3339).
    pub issued_at: String,
    /// Most patients a device keeps in its cache (a clinician's care team beyond this is
    /// fetched on demand): bounds what a lost device holds.
    #[serde(default = "default_max_synced_patients")]
    pub max_synced_patients: u32,
}

fn default_max_synced_patients() -> u32 {
    DEFAULT_MAX_SYNCED_PATIENTS
}

/// The default [`Policy::max_synced_patients`].
/// (2 500: a family doctor's whole list, the largest care team expected.)
pub const DEFAULT_MAX_SYNCED_PATIENTS: u32 = 2_500;

impl Policy {
    /// DESIGN.md §3's defaults for `role`: idle 15 min (patients 5), lock on background at
    /// once, 12 h re-auth (NIST 800-63B AAL2), 5 min step-up, 72 h offline grace, back-off
    /// from the 3rd failure, wipe at the 10th.
    pub fn defaults(tenant: impl Into<String>, role: Role, pins: PinSet, issued_at: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            role,
            idle_lock_secs: if role == Role::Patient { 5 * 60 } else { 15 * 60 },
            background_grace_secs: 0,
            absolute_reauth_secs: 12 * 3600,
            step_up_secs: 5 * 60,
            offline_grace_secs: 72 * 3600,
            unlock_backoff_from: 3,
            wipe_after_failures: 10,
            wipe_on_logout: false,
            pins,
            issued_at: issued_at.into(),
            max_synced_patients: DEFAULT_MAX_SYNCED_PATIENTS,
        }
    }
}

/// Why a signed policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The signature does not verify under the server's key: forged or altered.
    #[error("the policy's signature is not valid: it was altered or did not come from your server")]
    BadSignature,
    /// Signed, but not a policy this app understands.
    #[error("the signed policy could not be read; update the app")]
    Unreadable,
}

/// A policy as sent: the exact JSON text that was signed, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPolicy {
    /// The policy's JSON, byte for byte as signed (no re-serialisation before checking).
    pub policy: String,
    /// Which server key signed it.
    pub key_id: String,
    /// Ed25519 signature (base64) over the context string and `policy`.
    pub signature: String,
}

impl SignedPolicy {
    /// Signs `policy` with the server's key.
    pub fn sign(policy: &Policy, key: &SigningKey, key_id: impl Into<String>) -> Self {
        let text = serde_json::to_string(policy).expect("a policy always serializes");
        let signature = key.sign(&message(&text));
        Self { policy: text, key_id: key_id.into(), signature: STANDARD.encode(signature.to_bytes()) }
    }

    /// Checks the signature, then reads the policy.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Policy, PolicyError> {
        let bytes = STANDARD.decode(&self.signature).map_err(|_| PolicyError::BadSignature)?;
        let signature = Signature::from_slice(&bytes).map_err(|_| PolicyError::BadSignature)?;
        key.verify(&message(&self.policy), &signature)
            .map_err(|_| PolicyError::BadSignature)?;
        serde_json::from_str(&self.policy).map_err(|_| PolicyError::Unreadable)
    }
}

fn message(policy_json: &str) -> Vec<u8> {
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(policy_json.as_bytes());
    message
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;
    use crate::pins::Pin;

    fn policy() -> Policy {
        let pins = PinSet::new(vec![Pin::from_spki_der(b"live"), Pin::from_spki_der(b"backup")], date!(2027 - 01 - 01))
            .unwrap();
        Policy::defaults("clinic-1", Role::Clinician, pins, "2026-11-22T10:00:00Z")
    }

    #[test]
    fn defaults_follow_the_design() {
        let p = policy();
        assert_eq!((p.idle_lock_secs, p.absolute_reauth_secs, p.offline_grace_secs), (900, 43_200, 259_200));
        let patient = Policy::defaults("c", Role::Patient, p.pins.clone(), "t");
        assert_eq!(patient.idle_lock_secs, 300);
    }

    #[test]
    fn signed_policy_verifies_and_any_change_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let signed = SignedPolicy::sign(&policy(), &key, "k1");
        assert_eq!(signed.verify(&key.verifying_key()).unwrap(), policy());

        let mut longer_idle = signed.clone();
        longer_idle.policy = longer_idle.policy.replace("\"idle_lock_secs\":900", "\"idle_lock_secs\":90000");
        assert_ne!(longer_idle.policy, signed.policy);
        assert_eq!(longer_idle.verify(&key.verifying_key()), Err(PolicyError::BadSignature));

        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(signed.verify(&other.verifying_key()), Err(PolicyError::BadSignature));
        let mut garbage = signed.clone();
        garbage.signature = "AAAA".into();
        assert_eq!(garbage.verify(&key.verifying_key()), Err(PolicyError::BadSignature));
    }
}
