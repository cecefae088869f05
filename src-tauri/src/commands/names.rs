//! The names of the app's commands, shared by `build.rs` (which generates one permission per
//! name) and the shell (a test checks that the capability grants exactly these).

/// Every command the UI may call (read by `build.rs` and the tests, not at run time).
#[cfg_attr(not(test), allow(dead_code, reason = "build.rs reads the list; in the app only the tests use it"))]
pub const ALL: &[&str] = &[
    "session",
    "sign_in",
    "unlock_with_password",
    "unlock_with_presence",
    "lock",
    "user_active",
    "watch_lock",
    "sync",
    "records",
    "lab_trend",
    "access_log",
    "record_reading",
    "request_appointment",
    "message_care_team",
    "pending",
    "resolve_write",
    "export_patient",
    "break_glass",
    "logout",
    "security",
    "set_lock_on_blur",
    "devices",
    "revoke_device",
    "sign_out_everywhere",
    "begin_authenticator_change",
    "confirm_authenticator",
    "copy_text",
    "server_access_log",
    "open_document",
];
