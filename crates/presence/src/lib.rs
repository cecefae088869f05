//! carekeep-presence: "is the account's owner at this device?" — the platform's presence or
//! biometric check that stands in front of the keychain's device key (DESIGN.md §2, §5).
//!
//! One trait, one module per OS under `platform/`:
//!
//! - Linux asks polkit over the system D-Bus for the [`POLKIT_ACTION`] action (the way
//!   Bitwarden's desktop app does); the desktop's agent asks for the user's password, or a
//!   fingerprint where fprintd is set up. The action file is in `packaging/linux/`.
//! - macOS asks LocalAuthentication (`LAPolicyDeviceOwnerAuthentication`: Touch ID or the
//!   account password).
//! - Windows asks Windows Hello (`UserConsentVerifier`).
//!
//! Only the Linux module is built and run here; the macOS and Windows modules are
//! type-checked for their targets but have not run on those systems. Where no check exists
//! the answer is [`PresenceError::Unavailable`] and the app asks for the password instead;
//! nothing pretends.

mod platform;

/// Why the person could not be confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// This device has no presence check, or it is not set up: use the password.
    #[error("this device has no presence check set up")]
    Unavailable,
    /// The person cancelled the check, or did not pass it.
    #[error("the presence check was cancelled or failed")]
    Refused,
}

/// Confirms, through the operating system, that the person at the device is its user.
pub trait PresenceVerifier: Send + Sync {
    /// Asks now (this may show a system dialog and wait for the person); `reason` is shown
    /// where the system has room for one.
    fn verify(&self, reason: &str) -> Result<(), PresenceError>;
}

/// The polkit action Carekeep asks for on Linux.
pub const POLKIT_ACTION: &str = "org.carekeep.Carekeep.unlock";

/// This operating system's presence check.
pub fn for_this_os() -> Box<dyn PresenceVerifier> {
    platform::verifier()
}
