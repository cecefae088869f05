//! The words the shell sends the UI from a fixed set — why the account locked, where the
//! session is, whose it is, how a write stands, which screen a failed command calls for —
//! as serde enums, once. The UI's types for
//! them (`ui/src/generated/shell.ts`) are generated from these by a test here, which fails
//! while the committed file differs, so the two sides cannot drift: a reason the shell
//! sends is a reason the UI's type checker makes it handle.
//!
//! The core's [`carekeep_core::NextStep`] (what a command error asks of the person) goes to
//! the UI as it is; its TypeScript is derived in the core itself (its `typescript` feature,
//! which only this crate's tests turn on), so there is no copy to drift.
//!
//! To regenerate after changing a type: `CAREKEEP_UPDATE_GENERATED=1 cargo test -p
//! carekeep-app messages`.

use serde::Serialize;

/// Why the account locked. The UI wipes its views for every one, and tells the person why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum LockReason {
    /// No input for the idle limit.
    Idle,
    /// The window was minimised or the app went to the background.
    Background,
    /// The operating system's screen lock.
    OsLocked,
    /// The window lost focus, where the person chose lock-on-blur.
    FocusLost,
    /// The person locked by hand.
    Manual,
    /// The display process (the webview's renderer) stopped: the page was reloaded on the
    /// lock screen, and nothing it showed survived.
    RendererLost,
}

/// Sent when the account locks: the UI removes every view of records before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LockNotice {
    /// Why it locked.
    pub reason: LockReason,
}

/// Where the session is: picks the UI's screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    /// No one is signed in on this device.
    SignedOut,
    /// Records may be shown.
    Unlocked,
    /// Views are wiped and keys dropped; presence or the password unlocks.
    Locked,
    /// Only a full sign-in (password and code) unlocks.
    ReauthRequired,
    /// The server revoked the device or asked for a wipe: the cache is gone.
    Wiped,
}

impl From<carekeep_core::session::State> for SessionState {
    fn from(state: carekeep_core::session::State) -> Self {
        use carekeep_core::session::State;
        match state {
            State::SignedOut => Self::SignedOut,
            State::Unlocked => Self::Unlocked,
            State::Locked => Self::Locked,
            State::ReauthRequired => Self::ReauthRequired,
            State::Wiped => Self::Wiped,
        }
    }
}

/// The signed-in person's role: what the UI offers (the server decides what is allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Their own records and those they are proxy for.
    Patient,
    /// Patients on their care team; break-glass with a reason.
    Clinician,
    /// Patients on their care team.
    Nurse,
    /// Demographics and encounters, no clinical content.
    Billing,
    /// Manages users; reads no record.
    Admin,
}

impl From<carekeep_protocol::auth::Role> for Role {
    fn from(role: carekeep_protocol::auth::Role) -> Self {
        use carekeep_protocol::auth::Role as Wire;
        match role {
            Wire::Patient => Self::Patient,
            Wire::Clinician => Self::Clinician,
            Wire::Nurse => Self::Nurse,
            Wire::Billing => Self::Billing,
            Wire::Admin => Self::Admin,
        }
    }
}

/// How a write made on this device stands with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum WriteStatus {
    /// Waiting for upload.
    Pending,
    /// The server's version changed meanwhile: the person chooses which stands.
    Conflict,
    /// The server refused it (its reason is shown).
    Rejected,
}

/// The screen the UI turns to after a failed command (`CommandError.next`): one for each
/// kind of the core's `NextStep`, which travels beside it (`CommandError.step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum ErrorScreen {
    /// A full sign-in: password and authenticator code.
    SignIn,
    /// The password unlocks.
    Password,
    /// A fresh sign-in before this action (step-up).
    StepUp,
    /// The lock screen.
    Locked,
    /// Try again later; what is on this device still works.
    Offline,
    /// This device's copy was erased: sign in to start again.
    Wiped,
    /// The message says what to change.
    Fix,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ts_rs::{Config, TS};

    use super::*;

    /// The committed TypeScript: what the UI imports.
    fn committed_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ui/src/generated/shell.ts")
    }

    /// One type's exported declaration, its doc comment above it.
    fn declaration<T: TS>(cfg: &Config) -> String {
        format!("{}export {}\n", T::docs().unwrap_or_default(), T::decl(cfg))
    }

    /// The whole generated file, in a fixed order.
    fn generated() -> String {
        let cfg = Config::new();
        let mut out = String::from(
            "// Generated from src-tauri/src/messages.rs by its tests: do not edit. After changing\n\
             // a type there, run `CAREKEEP_UPDATE_GENERATED=1 cargo test -p carekeep-app messages`.\n\n",
        );
        let declarations = [
            declaration::<LockReason>(&cfg),
            declaration::<LockNotice>(&cfg),
            declaration::<SessionState>(&cfg),
            declaration::<Role>(&cfg),
            declaration::<WriteStatus>(&cfg),
            declaration::<ErrorScreen>(&cfg),
            declaration::<carekeep_core::NextStep>(&cfg),
        ];
        out.push_str(&declarations.join("\n"));
        out
    }

    #[test]
    fn the_uis_types_are_the_ones_generated_from_these() {
        let want = generated();
        let path = committed_path();
        if std::env::var_os("CAREKEEP_UPDATE_GENERATED").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is not what src-tauri/src/messages.rs generates: run `CAREKEEP_UPDATE_GENERATED=1 cargo test -p carekeep-app messages` and commit it",
            path.display()
        );
    }

    #[test]
    fn every_lock_reason_is_sent_by_its_kebab_case_name() {
        let names: Vec<_> = [
            LockReason::Idle,
            LockReason::Background,
            LockReason::OsLocked,
            LockReason::FocusLost,
            LockReason::Manual,
            LockReason::RendererLost,
        ]
        .into_iter()
        .map(|reason| serde_json::to_value(LockNotice { reason }).unwrap()["reason"].clone())
        .collect();
        assert_eq!(names, ["idle", "background", "os-locked", "focus-lost", "manual", "renderer-lost"]);
        // And the generated type holds exactly these.
        let ts = LockReason::inline(&Config::new());
        for name in names {
            assert!(ts.contains(&format!("\"{}\"", name.as_str().unwrap())), "{name} missing from {ts}");
        }
    }

    #[test]
    fn session_states_keep_the_cores_names() {
        use carekeep_core::session::State;
        for state in [State::SignedOut, State::Unlocked, State::Locked, State::ReauthRequired, State::Wiped] {
            assert_eq!(serde_json::to_value(SessionState::from(state)).unwrap(), state.as_str());
        }
    }

    #[test]
    fn roles_keep_their_wire_names() {
        for role in carekeep_protocol::auth::Role::ALL {
            assert_eq!(serde_json::to_value(Role::from(role)).unwrap(), role.as_str());
        }
    }
}
