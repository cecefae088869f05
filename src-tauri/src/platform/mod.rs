//! What differs per OS, behind one interface (DESIGN §5): whether the window can be kept
//! out of captures, whether the OS screen lock reaches the app, and a watcher for it.
//! One module per OS; no `cfg` elsewhere in the shell.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{CAN_BLOCK_CAPTURE, FOLLOWS_OS_LOCK, NOTES, watch_os_lock};

#[cfg(not(target_os = "linux"))]
mod desktop;
#[cfg(not(target_os = "linux"))]
pub use desktop::{CAN_BLOCK_CAPTURE, FOLLOWS_OS_LOCK, NOTES, watch_os_lock};
