//! Windows and macOS: the window is kept out of screenshots and screen sharing by Tauri's
//! content protection (`WDA_EXCLUDEFROMCAPTURE`, `NSWindowSharingNone`). Following the OS
//! screen lock is not built for them yet; losing focus still locks when chosen.

/// The window is excluded from captures.
pub const CAN_BLOCK_CAPTURE: bool = true;

/// The OS screen lock does not reach the app on these systems yet.
pub const FOLLOWS_OS_LOCK: bool = false;

/// What the security screen says about this platform.
pub const NOTES: &[&str] = &[
    "Screenshots and screen sharing show this window as blank.",
    "Locking your computer does not lock Carekeep by itself yet: it locks after the idle limit, or when it loses focus if you choose that.",
];

/// Tauri's content protection is all these systems need. A renderer that dies is not
/// watched for here yet (WKWebView's content-process and WebView2's process-failed events
/// would tell).
pub fn guard_window(_window: &tauri::WebviewWindow, _on_renderer_lost: impl Fn() + Send + 'static) {}

/// Nothing to watch here yet.
pub fn watch_os_lock(_on_lock: impl Fn() + Send + 'static) {}
