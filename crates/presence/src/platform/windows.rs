//! Windows: Windows Hello through `UserConsentVerifier` (face, fingerprint or PIN).
//! Type-checked for Windows here; not yet run on Windows.

use windows::Security::Credentials::UI::{
    UserConsentVerificationResult, UserConsentVerifier, UserConsentVerifierAvailability,
};
use windows::core::HSTRING;

use crate::{PresenceError, PresenceVerifier};

/// Asks Windows Hello.
pub(super) struct WindowsHello;

impl PresenceVerifier for WindowsHello {
    fn verify(&self, reason: &str) -> Result<(), PresenceError> {
        let availability = UserConsentVerifier::CheckAvailabilityAsync()
            .and_then(|operation| operation.join())
            .map_err(|_| PresenceError::Unavailable)?;
        if availability != UserConsentVerifierAvailability::Available {
            return Err(PresenceError::Unavailable);
        }
        let result = UserConsentVerifier::RequestVerificationAsync(&HSTRING::from(reason))
            .and_then(|operation| operation.join())
            .map_err(|_| PresenceError::Unavailable)?;
        if result == UserConsentVerificationResult::Verified { Ok(()) } else { Err(PresenceError::Refused) }
    }
}
