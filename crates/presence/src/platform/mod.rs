//! One module per OS; `verifier` picks this one's. Other systems get "unavailable".

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "windows")]
mod windows;

use crate::PresenceVerifier;

#[cfg(target_os = "linux")]
pub(crate) fn verifier() -> Box<dyn PresenceVerifier> {
    Box::new(linux::Polkit)
}

#[cfg(target_os = "macos")]
pub(crate) fn verifier() -> Box<dyn PresenceVerifier> {
    Box::new(macos::LocalAuthentication)
}

#[cfg(target_os = "windows")]
pub(crate) fn verifier() -> Box<dyn PresenceVerifier> {
    Box::new(windows::WindowsHello)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
pub(crate) fn verifier() -> Box<dyn PresenceVerifier> {
    Box::new(Unavailable)
}

/// Systems without a presence module yet (the mobile ones come with their plugins).
#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
struct Unavailable;

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
impl PresenceVerifier for Unavailable {
    fn verify(&self, _reason: &str) -> Result<(), crate::PresenceError> {
        Err(crate::PresenceError::Unavailable)
    }
}
