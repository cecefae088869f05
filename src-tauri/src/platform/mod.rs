//! What differs per OS, behind one interface (DESIGN §5): whether the window can be kept
//! out of captures, whether the OS screen lock reaches the app, a watcher for it, and the
//! window's own protections beyond Tauri's content protection ([`guard_window`]). Phones
//! add a cover for the app switcher (`cover_for_background`). (The clipboard is
//! `carekeep-clipboard`'s.) One module per OS; no `cfg` elsewhere in the shell but for
//! Tauri's desktop-only and mobile-only APIs.
//!
//! The Android and iOS modules have never been compiled: this machine has no Android NDK
//! or iOS SDK (their native calls, in `carekeep-screen-guard`, are type-checked).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{CAN_BLOCK_CAPTURE, FOLLOWS_OS_LOCK, NOTES, guard_window, watch_os_lock};

#[cfg(any(target_os = "macos", target_os = "windows"))]
mod desktop;
#[cfg(any(target_os = "macos", target_os = "windows"))]
pub use desktop::{CAN_BLOCK_CAPTURE, FOLLOWS_OS_LOCK, NOTES, guard_window, watch_os_lock};

#[cfg(target_os = "android")]
mod android;
#[cfg(target_os = "android")]
pub use android::{CAN_BLOCK_CAPTURE, FOLLOWS_OS_LOCK, NOTES, cover_for_background, guard_window, watch_os_lock};

#[cfg(target_os = "ios")]
mod ios;
#[cfg(target_os = "ios")]
pub use ios::{CAN_BLOCK_CAPTURE, FOLLOWS_OS_LOCK, NOTES, cover_for_background, guard_window, watch_os_lock};

/// Writes a new file (its folder created if missing) readable only by this user where the
/// OS has such permissions: an export holds a whole record in clear.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    carekeep_private_files::write_new(path, bytes)
}
