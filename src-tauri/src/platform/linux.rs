//! Linux: no X11 or Wayland compositor lets an app keep its window out of screenshots, so
//! the app says so and offers lock-on-blur instead (on by default). The OS screen lock
//! reaches the app over D-Bus: logind's `Session.Lock` on the system bus, and the
//! freedesktop screensaver's `ActiveChanged(true)` on the session bus. The clipboard is
//! GTK's (the webview's toolkit), used from the main thread.

use std::time::Duration;

use dbus::blocking::Connection;
use dbus::message::MatchRule;

/// No compositor offers capture exclusion.
pub const CAN_BLOCK_CAPTURE: bool = false;

/// The OS screen lock locks the app.
pub const FOLLOWS_OS_LOCK: bool = true;

/// What the security screen says about this platform.
pub const NOTES: &[&str] = &[
    "Linux cannot keep this window out of screenshots or screen sharing. Carekeep locks when it loses focus instead (you can turn that off below).",
    "Locking your screen locks Carekeep at once.",
    "Minimising Carekeep locks it.",
];

/// Calls `on_lock` whenever the OS locks the screen, from a thread of its own. Where a bus
/// is missing (a minimal session), the idle lock and lock-on-blur still apply.
pub fn watch_os_lock(on_lock: impl Fn() + Send + Sync + 'static) {
    let on_lock = std::sync::Arc::new(on_lock);
    for (bus, rule) in [
        (Bus::System, MatchRule::new_signal("org.freedesktop.login1.Session", "Lock")),
        (Bus::Session, MatchRule::new_signal("org.freedesktop.ScreenSaver", "ActiveChanged")),
    ] {
        let on_lock = on_lock.clone();
        let connection = match bus {
            Bus::System => Connection::new_system(),
            Bus::Session => Connection::new_session(),
        };
        let Ok(connection) = connection else { continue };
        let subscribed = connection.add_match(rule, move |(): (), _, message| {
            // ActiveChanged carries whether the screensaver is now on; Lock carries nothing.
            if message.read1::<bool>().unwrap_or(true) {
                on_lock();
            }
            true
        });
        if subscribed.is_err() {
            continue;
        }
        std::thread::spawn(move || while connection.process(Duration::from_secs(3600)).is_ok() {});
    }
}

enum Bus {
    System,
    Session,
}

/// The system clipboard through GTK, on the main thread (GTK is not thread-safe).
pub mod clipboard {
    use tauri::AppHandle;

    /// Why a copy could not be made.
    pub const UNAVAILABLE: &str = "Copying is not available right now. Try again.";

    /// Makes `text` the clipboard's content (the app owns the clipboard from then on).
    pub fn set(app: &AppHandle, text: String) -> Result<(), &'static str> {
        app.run_on_main_thread(move || {
            let text = zeroize::Zeroizing::new(text);
            gtk::Clipboard::get(&gtk::gdk::SELECTION_CLIPBOARD).set_text(&text);
        })
        .map_err(|_| UNAVAILABLE)
    }

    /// Empties the clipboard if this app still owns it (GTK does nothing once another
    /// app has taken it over).
    pub fn clear_ours(app: &AppHandle) {
        let _ = app.run_on_main_thread(|| gtk::Clipboard::get(&gtk::gdk::SELECTION_CLIPBOARD).clear());
    }
}
