//! Linux: GTK's `CLIPBOARD` selection. While the app owns the selection GTK serves the text
//! to whoever pastes, and `clear` gives the selection up.
//!
//! Known defect: GTK's idea of whether the app still owns the selection can be stale. In
//! the end-to-end test, a copy made by another app (xclip) after the app's copy was still
//! emptied at the next lock, and GDK reported the app as the owner. Until the owner is
//! asked of the X server directly, a lock can empty another app's later copy on Linux.

use gtk::Clipboard;
use gtk::gdk::SELECTION_CLIPBOARD;

/// GTK keeps the ownership; nothing to remember.
#[derive(Debug)]
pub(crate) struct Marker;

pub(crate) fn place(text: &str) -> Result<Marker, crate::Unavailable> {
    if !gtk::is_initialized_main_thread() {
        return Err(crate::Unavailable);
    }
    Clipboard::get(&SELECTION_CLIPBOARD).set_text(text);
    Ok(Marker)
}

pub(crate) fn take_back(_marker: Marker) {
    if gtk::is_initialized_main_thread() {
        Clipboard::get(&SELECTION_CLIPBOARD).clear();
    }
}
