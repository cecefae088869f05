//! iOS: no API keeps a window out of a screenshot. `carekeep-screen-guard` covers the app
//! while it is inactive (so the app switcher's snapshot shows the cover) and while the
//! screen is recorded, mirrored or shared. Leaving the app or locking the phone resigns
//! active (`Suspended`), which locks Carekeep.

use objc2::MainThreadMarker;
use tauri::Manager as _;

/// Screenshots cannot be blocked on iOS.
pub const CAN_BLOCK_CAPTURE: bool = false;

/// Locking the phone makes the app inactive, and that locks it.
pub const FOLLOWS_OS_LOCK: bool = true;

/// What the security screen says about this platform.
pub const NOTES: &[&str] = &[
    "iOS does not let an app keep its screen out of screenshots.",
    "While your screen is recorded, mirrored or shared, Carekeep covers itself.",
    "The app switcher shows a blank cover, and leaving Carekeep or locking your phone locks it.",
];

/// Starts covering the app whenever the screen is captured. (A renderer that dies is not
/// watched for yet.)
pub fn guard_window(window: &tauri::WebviewWindow, _on_renderer_lost: impl Fn() + Send + 'static) {
    on_main_thread(window.app_handle(), carekeep_screen_guard::watch_capture);
}

/// Covers the app as it resigns active (`background`), uncovers it on return.
pub fn cover_for_background(window: &tauri::Window, background: bool) {
    on_main_thread(window.app_handle(), move |mtm| carekeep_screen_guard::cover_while_inactive(mtm, background));
}

/// The lock screen arrives as `Suspended` (see `lifecycle.rs`); nothing else to watch.
pub fn watch_os_lock(_on_lock: impl Fn() + Send + Sync + 'static) {}

/// Runs `work` now if this is the main thread (window events are delivered there, and the
/// cover must be up before iOS takes its snapshot), else queues it there.
fn on_main_thread(app: &tauri::AppHandle, work: impl FnOnce(MainThreadMarker) + Send + 'static) {
    match MainThreadMarker::new() {
        Some(mtm) => work(mtm),
        None => {
            let _ = app.run_on_main_thread(move || {
                if let Some(mtm) = MainThreadMarker::new() {
                    work(mtm);
                }
            });
        }
    }
}
