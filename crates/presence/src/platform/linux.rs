//! Linux: presence through polkit's `CheckAuthorization` over the system D-Bus, for the
//! `org.carekeep.Carekeep.unlock` action (`auth_self`: the desktop's authentication agent
//! asks for the user's password, or a fingerprint where fprintd is set up).

use std::collections::HashMap;
use std::time::Duration;

use dbus::arg::{RefArg, Variant};
use dbus::blocking::Connection;

use crate::{POLKIT_ACTION, PresenceError, PresenceVerifier};

/// polkit's `AllowUserInteraction` flag: the agent may show its dialog.
const ALLOW_USER_INTERACTION: u32 = 1;

/// How long the person has to answer the dialog.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// Asks polkit; see the module documentation.
pub(super) struct Polkit;

impl PresenceVerifier for Polkit {
    fn verify(&self, _reason: &str) -> Result<(), PresenceError> {
        // No system bus or no polkit daemon: there is no presence check on this machine.
        let conn = Connection::new_system().map_err(|_| PresenceError::Unavailable)?;
        let proxy =
            conn.with_proxy("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority", ANSWER_WITHIN);
        let subject = ("unix-process".to_owned(), this_process()?);
        let details: HashMap<String, String> = HashMap::new();
        let ((authorized, _challenge, _details),): ((bool, bool, HashMap<String, String>),) = proxy
            .method_call(
                "org.freedesktop.PolicyKit1.Authority",
                "CheckAuthorization",
                (subject, POLKIT_ACTION, details, ALLOW_USER_INTERACTION, String::new()),
            )
            .map_err(|e| match e.name() {
                Some("org.freedesktop.PolicyKit1.Error.Cancelled") => PresenceError::Refused,
                // The action is not installed, or polkit is not running.
                _ => PresenceError::Unavailable,
            })?;
        if authorized { Ok(()) } else { Err(PresenceError::Refused) }
    }
}

/// polkit's `unix-process` subject for this process: its pid and start time (so a recycled
/// pid cannot borrow the answer).
fn this_process() -> Result<HashMap<String, Variant<Box<dyn RefArg>>>, PresenceError> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|_| PresenceError::Unavailable)?;
    // Field 22 (start time), counted after the command name's closing parenthesis.
    let start_time: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .ok_or(PresenceError::Unavailable)?;
    let mut subject: HashMap<String, Variant<Box<dyn RefArg>>> = HashMap::new();
    subject.insert("pid".into(), Variant(Box::new(std::process::id())));
    subject.insert("start-time".into(), Variant(Box::new(start_time)));
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_processes_subject_has_its_pid_and_a_start_time() {
        let subject = this_process().unwrap();
        assert_eq!(subject["pid"].0.as_u64(), Some(u64::from(std::process::id())));
        assert!(subject["start-time"].0.as_u64().is_some_and(|t| t > 0));
    }
}
