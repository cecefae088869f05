//! One module per OS. Systems without one (the mobile ones come with their plugins) copy
//! nothing: a copy that cannot be taken back is not made.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{Marker, place, take_back};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(crate) use macos::{Marker, place, take_back};

#[cfg(target_os = "windows")]
mod windows;
#[cfg(target_os = "windows")]
pub(crate) use windows::{Marker, place, take_back};

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
mod other {
    /// Nothing is ever placed.
    #[derive(Debug)]
    pub(crate) enum Marker {}

    pub(crate) fn place(_text: &str) -> Result<Marker, crate::Unavailable> {
        Err(crate::Unavailable)
    }

    #[expect(clippy::needless_pass_by_value, reason = "the real platforms' signature")]
    pub(crate) fn take_back(marker: Marker) {
        match marker {}
    }
}
#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
pub(crate) use other::{Marker, place, take_back};
