//! carekeep-clipboard: a copy of record text that the app can take back (DESIGN.md §5).
//!
//! [`place`] puts text on the system clipboard and returns a [`Placed`] copy; [`take_back`]
//! empties the clipboard only if it still holds that copy, so that whatever the person
//! copied since, in Carekeep or another app, is left alone. Where the OS has a way to keep
//! a copy out of clipboard history and clipboard managers, the copy is marked so.
//!
//! One module per OS under `platform/`:
//!
//! - Linux: GTK's clipboard (the webview's toolkit), served from the crate's own zeroizing
//!   buffer, which GTK drops when the selection passes to someone else — that is how the
//!   crate knows the copy is gone. Marked `x-kde-passwordManagerHint: secret` for
//!   clipboard managers that honour it.
//! - macOS: the general `NSPasteboard`, marked `org.nspasteboard.ConcealedType` for
//!   clipboard managers; the pasteboard's change count tells whether the copy is still
//!   there.
//! - Windows: the Win32 clipboard, with the formats that keep it out of Windows' clipboard
//!   history and cloud clipboard; the clipboard's sequence number tells whether the copy
//!   is still there.
//!
//! Only the Linux module runs here (`tests/x11.rs`, against Xvfb and xclip); the macOS and
//! Windows modules are type-checked for their targets (`cargo xtask test`) but have not run
//! on those systems. Every call must come from the app's main thread (GTK and AppKit
//! require it).

mod platform;

/// The clipboard could not be written: nothing was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system clipboard is not available right now")]
pub struct Unavailable;

/// A copy this app put on the clipboard, to be taken back with [`take_back`].
#[derive(Debug)]
#[must_use = "a copy that is never taken back stays on the clipboard"]
pub struct Placed(platform::Marker);

/// Puts `text` on the system clipboard (on the main thread).
pub fn place(text: &str) -> Result<Placed, Unavailable> {
    platform::place(text).map(Placed)
}

/// Empties the clipboard if it still holds `placed` (on the main thread); otherwise leaves
/// it as it is.
pub fn take_back(placed: Placed) {
    platform::take_back(placed.0);
}
