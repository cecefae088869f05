//! Android: the activity's window is `FLAG_SECURE` (`carekeep-screen-guard`), so
//! screenshots, screen recording and the recent-apps screen show it blank. Leaving the app
//! or locking the phone pauses the activity (`Suspended`), which locks Carekeep.

use tauri::Manager as _;

/// `FLAG_SECURE` keeps the window out of captures.
pub const CAN_BLOCK_CAPTURE: bool = true;

/// Locking the phone pauses the app, and that locks it.
pub const FOLLOWS_OS_LOCK: bool = true;

/// What the security screen says about this platform.
pub const NOTES: &[&str] = &[
    "Screenshots, screen recordings and the recent-apps screen show Carekeep blank.",
    "Leaving Carekeep or locking your phone locks it.",
];

/// Marks the window secure. Should Android refuse, the app closes rather than show
/// records that a screenshot could take. (A renderer that dies is not watched for yet.)
pub fn guard_window(window: &tauri::WebviewWindow, _on_renderer_lost: impl Fn() + Send + 'static) {
    let app = window.app_handle().clone();
    carekeep_screen_guard::secure_window(window, move || app.exit(1));
}

/// `FLAG_SECURE` already keeps the app switcher's snapshot blank.
pub fn cover_for_background(_window: &tauri::Window, _background: bool) {}

/// The lock screen arrives as `Suspended` (see `lifecycle.rs`); nothing else to watch.
pub fn watch_os_lock(_on_lock: impl Fn() + Send + Sync + 'static) {}
