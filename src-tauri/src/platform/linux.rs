//! Linux: no X11 or Wayland compositor lets an app keep its window out of screenshots, so
//! the app says so and offers lock-on-blur instead (on by default). The OS screen lock
//! reaches the app over D-Bus: logind's `Session.Lock` on the system bus, and the
//! freedesktop screensaver's `ActiveChanged(true)` on the session bus.

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

/// Trims WebKitGTK's caches, and watches the web process. The app shows one bundled page
/// and fetches nothing over the web, so WebKit's memory cache would only keep decoded
/// record images after a lock has dropped them from the page: the document-viewer cache
/// model turns it off. Should the web process die, the page shows nothing and answers
/// nothing: `on_renderer_lost` runs (the shell locks and loads the UI again).
///
/// Accelerated compositing stays on: turning it off (the hardware-acceleration policy
/// `Never`, or `WEBKIT_DISABLE_COMPOSITING_MODE=1`) saves about 70 MiB of idle memory
/// under Xvfb, but the page then stops responding after pdf.js has drawn a PDF (seen in the
/// patient end-to-end test, 2026-11-23).
pub fn guard_window(window: &tauri::WebviewWindow, on_renderer_lost: impl Fn() + Send + 'static) {
    use webkit2gtk::{CacheModel, WebContextExt as _, WebViewExt as _};
    let _ = window.with_webview(move |webview| {
        let view = webview.inner();
        if let Some(context) = view.context() {
            context.set_cache_model(CacheModel::DocumentViewer);
        }
        view.connect_web_process_terminated(move |_, _reason| on_renderer_lost());
    });
}
