//! macOS: the general pasteboard. `clearContents` makes the app the pasteboard's owner and
//! returns its new change count; any later write by anyone changes the count, so the count
//! is the marker. The copy is also declared `org.nspasteboard.ConcealedType`, the
//! convention clipboard managers follow to keep a copy out of their history.
//! Type-checked for macOS here; not yet run on a Mac.
#![expect(unsafe_code, reason = "AppKit calls through objc2; each block says why it is sound")]

use objc2_app_kit::{NSPasteboard, NSPasteboardTypeString};
use objc2_foundation::NSString;

/// The pasteboard's change count once the copy was written.
#[derive(Debug)]
pub(crate) struct Marker(isize);

/// nspasteboard.org's marker for content a clipboard manager should not keep.
const CONCEALED: &str = "org.nspasteboard.ConcealedType";

pub(crate) fn place(text: &str) -> Result<Marker, crate::Unavailable> {
    let board = NSPasteboard::generalPasteboard();
    board.clearContents();
    // SAFETY: `NSPasteboardTypeString` is an immutable constant AppKit initialises when it
    // loads, before any code of this process runs.
    let string_type = unsafe { NSPasteboardTypeString };
    let written = board.setString_forType(&NSString::from_str(text), string_type)
        && board.setString_forType(&NSString::from_str(""), &NSString::from_str(CONCEALED));
    if !written {
        board.clearContents();
        return Err(crate::Unavailable);
    }
    Ok(Marker(board.changeCount()))
}

pub(crate) fn take_back(Marker(count): Marker) {
    let board = NSPasteboard::generalPasteboard();
    if board.changeCount() == count {
        board.clearContents();
    }
}
