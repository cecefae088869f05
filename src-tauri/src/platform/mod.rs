//! What differs per OS, behind one interface (DESIGN §5): whether the window can be kept
//! out of captures, whether the OS screen lock reaches the app, a watcher for it, and the
//! webview's settings. (The clipboard is `carekeep-clipboard`'s.)
//! One module per OS; no `cfg` elsewhere in the shell.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{CAN_BLOCK_CAPTURE, FOLLOWS_OS_LOCK, NOTES, configure_webview, watch_os_lock};

#[cfg(not(target_os = "linux"))]
mod desktop;
#[cfg(not(target_os = "linux"))]
pub use desktop::{CAN_BLOCK_CAPTURE, FOLLOWS_OS_LOCK, NOTES, configure_webview, watch_os_lock};

/// Writes a new file (its folder created if missing) readable only by this user where the
/// OS has such permissions: an export holds a whole record in clear.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
