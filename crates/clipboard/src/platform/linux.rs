//! Linux: GTK's `CLIPBOARD` selection, served from our own buffer.
//!
//! Whether the copy is still ours is learned from GTK itself: the copy is offered with
//! `set_with_data`, whose data GTK drops the moment the selection is lost — another app
//! took it (the X server's `SelectionClear`) or the app copied again. The dropped data
//! marks the copy gone. `take_back` gives the selection up only while the copy is still
//! ours: GTK's own `clear` does not check that, and X lets any client clear the
//! selection, so calling it unguarded emptied another app's later copy.
//!
//! The text lives in a zeroizing buffer dropped (and wiped) with the data. A
//! `x-kde-passwordManagerHint: secret` target asks clipboard managers that honour it
//! (KDE's Klipper and others) to keep the copy out of their history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gtk::gdk::{Atom, SELECTION_CLIPBOARD};
use gtk::{Clipboard, TargetEntry, TargetFlags};
use zeroize::Zeroizing;

/// Set once GTK has dropped the copy: the selection is someone else's now.
#[derive(Debug)]
pub(crate) struct Marker(Arc<AtomicBool>);

/// The targets a paste can ask for: text in GTK's usual forms (`info` 0) and the
/// clipboard-manager hint (`info` 1).
const TEXT_TARGETS: [&str; 4] = ["UTF8_STRING", "text/plain;charset=utf-8", "STRING", "TEXT"];
const HINT_TARGET: &str = "x-kde-passwordManagerHint";
const HINT_INFO: u32 = 1;

/// The data GTK holds while the copy is on the clipboard; dropping it marks the copy gone.
struct Offer {
    text: Zeroizing<String>,
    gone: Arc<AtomicBool>,
}

impl Drop for Offer {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::SeqCst);
    }
}

pub(crate) fn place(text: &str) -> Result<Marker, crate::Unavailable> {
    if !gtk::is_initialized_main_thread() {
        return Err(crate::Unavailable);
    }
    let mut targets: Vec<TargetEntry> = TEXT_TARGETS
        .iter()
        .map(|target| TargetEntry::new(target, TargetFlags::empty(), 0))
        .collect();
    targets.push(TargetEntry::new(HINT_TARGET, TargetFlags::empty(), HINT_INFO));
    let gone = Arc::new(AtomicBool::new(false));
    let offer = Offer { text: Zeroizing::new(text.to_owned()), gone: Arc::clone(&gone) };
    let offered = Clipboard::get(&SELECTION_CLIPBOARD).set_with_data(&targets, move |_, selection, info| {
        if info == HINT_INFO {
            selection.set(&Atom::intern(HINT_TARGET), 8, b"secret");
        } else {
            selection.set_text(&offer.text);
        }
    });
    if offered { Ok(Marker(gone)) } else { Err(crate::Unavailable) }
}

pub(crate) fn take_back(Marker(gone): Marker) {
    if gtk::is_initialized_main_thread() && !gone.load(Ordering::SeqCst) {
        Clipboard::get(&SELECTION_CLIPBOARD).clear();
    }
}
