//! carekeep-screen-guard: keeps record screens out of screenshots, screen recording and
//! the app switcher's snapshot on phones (DESIGN.md §5), where Tauri's window content
//! protection (Windows, macOS) does not reach.
//!
//! - Android: `secure_window` marks the activity's window `FLAG_SECURE`: screenshots and
//!   recordings show it black and the recents screen shows no snapshot. If Android refuses,
//!   the caller hears of it and can fail closed.
//! - iOS: no API keeps a window out of a screenshot. `cover_while_inactive` puts an opaque
//!   cover over the app's windows when it resigns active (before iOS takes the app
//!   switcher's snapshot), and `watch_capture` keeps it there while the screen is being
//!   recorded, mirrored or shared.
//!
//! Desktop builds compile nothing from here. Neither module has run: this machine has no
//! Android NDK or iOS SDK, so `cargo xtask test` type-checks (clippy) both for their
//! targets, and no more.

#[cfg(target_os = "android")]
mod android;
#[cfg(target_os = "android")]
pub use android::secure_window;

#[cfg(target_os = "ios")]
mod ios;
#[cfg(target_os = "ios")]
pub use ios::{cover_while_inactive, watch_capture};
