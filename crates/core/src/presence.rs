//! "Is the account's owner at this device?" — the platform's presence or biometric check
//! that stands in front of the keychain's device key (DESIGN.md §2, §5).
//!
//! One trait, one implementation per OS in `platform/`: Linux asks polkit over D-Bus (the
//! way Bitwarden's desktop app does), which shows the desktop's own authentication dialog —
//! the user's password, or a fingerprint where fprintd is set up. Where no check exists
//! the answer is [`crate::Error::PresenceUnavailable`] and the app asks for the password instead;
//! nothing pretends.

use crate::Result;

/// Confirms, through the operating system, that the person at the device is its user.
pub trait PresenceVerifier: Send + Sync {
    /// Asks now; `reason` is shown in the system's dialog where it has room for one.
    /// [`crate::Error::PresenceUnavailable`]: no check on this device (use the password);
    /// [`crate::Error::PresenceRefused`]: the person cancelled or failed it.
    fn verify(&self, reason: &str) -> Result<()>;
}

/// This operating system's presence check. Linux: polkit (action
/// [`POLKIT_ACTION`], installed from `packaging/linux/`). macOS (LocalAuthentication) and
/// Windows (Windows Hello) are not written yet: there, the answer is "unavailable" and the
/// password unlocks.
pub fn for_this_os() -> Box<dyn PresenceVerifier> {
    #[cfg(target_os = "linux")]
    return Box::new(crate::platform::linux::Polkit);
    #[cfg(not(target_os = "linux"))]
    return Box::new(NotWrittenYet);
}

/// The polkit action Carekeep asks for on Linux.
pub const POLKIT_ACTION: &str = "org.carekeep.Carekeep.unlock";

/// The platforms whose check is not written yet.
#[cfg(not(target_os = "linux"))]
struct NotWrittenYet;

#[cfg(not(target_os = "linux"))]
impl PresenceVerifier for NotWrittenYet {
    fn verify(&self, _reason: &str) -> Result<()> {
        Err(crate::Error::PresenceUnavailable)
    }
}
