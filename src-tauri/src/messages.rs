//! The words the shell sends the UI from a fixed set — why the account locked, where the
//! session is, whose it is, how a write stands, which screen a failed command calls for —
//! as serde enums, once. The UI's types for
//! them (`ui/src/generated/shell.ts`) are generated from these by a test here, which fails
//! while the committed file differs, so the two sides cannot drift: a reason the shell
//! sends is a reason the UI's type checker makes it handle.
//!
//! The core's [`carekeep_core::NextStep`] (what a command error asks of the person) goes to
//! the UI as it is; its TypeScript comes from a test-only copy here, which a contract test
//! holds to the core's variants and their JSON.
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

    // A copy of the core's `carekeep_core::NextStep`, for its TypeScript only (the core has
    // no ts-rs): the same serde attributes, and `next_step_mirror_is_the_cores` holds it to
    // the core's variants and their JSON.
    /// What the person does next about a failed command (`CommandError.step`): the core's
    /// one answer, which `CommandError.next` turns into a screen.
    #[derive(Debug, Clone, Copy, Serialize, TS)]
    #[serde(tag = "step", rename_all = "kebab-case")]
    enum NextStep {
        /// A full sign-in: password and authenticator code.
        SignIn,
        /// Type the password or code again: what was typed was not accepted.
        ReenterCredentials,
        /// Unlock with the password: the device key or presence check cannot do it now.
        UnlockWithPassword,
        /// Unlock first: the records are locked.
        Unlock,
        /// Confirm it is you with a fresh full sign-in before this action (step-up).
        ConfirmIdentity,
        /// This device's copy was erased (wiped or revoked): sign in again to get it back.
        SignInAfterWipe,
        /// This device's cache is unusable or someone else's: erase it, then sign in.
        EraseAndSignIn,
        /// Wait, then try again.
        Wait {
            /// How long, when known.
            #[ts(type = "number | null")]
            retry_after_secs: Option<u64>,
        },
        /// Connect to the network; what is on this device stays available meanwhile.
        Reconnect,
        /// The server is slow, failing or garbled: try again later; the cache still works.
        TryAgainLater,
        /// Try the same thing again.
        TryAgain,
        /// Update the app: a newer Carekeep wrote this device's files.
        UpdateApp,
        /// Free some disk space.
        FreeSpace,
        /// Stop and contact the IT team: the connection or the server's policy is not safe.
        ContactIt,
        /// Ask the care team for it another way: this app cannot deliver it.
        AskCareTeam,
        /// Correct what was entered (an address, an argument, a record).
        CorrectInput,
    }

    impl NextStep {
        /// Every variant (`Wait` with and without a time, as both are sent).
        const ALL: [NextStep; 17] = [
            NextStep::SignIn,
            NextStep::ReenterCredentials,
            NextStep::UnlockWithPassword,
            NextStep::Unlock,
            NextStep::ConfirmIdentity,
            NextStep::SignInAfterWipe,
            NextStep::EraseAndSignIn,
            NextStep::Wait { retry_after_secs: Some(30) },
            NextStep::Wait { retry_after_secs: None },
            NextStep::Reconnect,
            NextStep::TryAgainLater,
            NextStep::TryAgain,
            NextStep::UpdateApp,
            NextStep::FreeSpace,
            NextStep::ContactIt,
            NextStep::AskCareTeam,
            NextStep::CorrectInput,
        ];

        /// The core's value this copies (exhaustive: a variant added here needs its match).
        fn core(self) -> carekeep_core::NextStep {
            use carekeep_core::NextStep as Core;
            match self {
                NextStep::SignIn => Core::SignIn,
                NextStep::ReenterCredentials => Core::ReenterCredentials,
                NextStep::UnlockWithPassword => Core::UnlockWithPassword,
                NextStep::Unlock => Core::Unlock,
                NextStep::ConfirmIdentity => Core::ConfirmIdentity,
                NextStep::SignInAfterWipe => Core::SignInAfterWipe,
                NextStep::EraseAndSignIn => Core::EraseAndSignIn,
                NextStep::Wait { retry_after_secs } => Core::Wait { retry_after_secs },
                NextStep::Reconnect => Core::Reconnect,
                NextStep::TryAgainLater => Core::TryAgainLater,
                NextStep::TryAgain => Core::TryAgain,
                NextStep::UpdateApp => Core::UpdateApp,
                NextStep::FreeSpace => Core::FreeSpace,
                NextStep::ContactIt => Core::ContactIt,
                NextStep::AskCareTeam => Core::AskCareTeam,
                NextStep::CorrectInput => Core::CorrectInput,
            }
        }
    }

    /// The variant names of `pub enum NAME` in a Rust source: the lines inside it indented
    /// one level and starting with a capital.
    fn variants_in_source(source: &str, name: &str) -> Vec<String> {
        let start = source.find(&format!("pub enum {name} {{")).unwrap_or_else(|| panic!("no `pub enum {name}`"));
        let body = &source[start..];
        let end = body.find("\n}").expect("the enum's closing brace");
        body[..end]
            .lines()
            .skip(1)
            .filter_map(|line| line.strip_prefix("    "))
            .filter(|line| line.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|line| line.chars().take_while(char::is_ascii_alphanumeric).collect())
            .collect()
    }

    #[test]
    fn variants_are_read_from_source_with_their_fields_left_out() {
        let source = "/// Doc.\n#[derive(Debug)]\npub enum Step {\n    /// One.\n    One,\n    Two {\n        secs: Option<u64>,\n    },\n    #[serde(skip)]\n    Three,\n}\n\npub enum Other {\n    Four,\n}\n";
        assert_eq!(variants_in_source(source, "Step"), ["One", "Two", "Three"]);
    }

    #[test]
    fn next_step_mirror_is_the_cores() {
        // Every core variant has a copy here (the core's enum is `non_exhaustive`, so no
        // match in this crate can tell; its source can).
        let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/core/src/error.rs"))
            .expect("crates/core/src/error.rs, where NextStep is declared");
        let mut core = variants_in_source(&source, "NextStep");
        let mut mirrored: Vec<String> = NextStep::ALL
            .iter()
            .map(|step| format!("{step:?}").chars().take_while(char::is_ascii_alphanumeric).collect())
            .collect();
        core.sort();
        mirrored.sort();
        mirrored.dedup();
        assert_eq!(mirrored, core, "NextStep in src-tauri/src/messages.rs must list the core's variants");
        // And each copy is sent exactly as the core's value is.
        for step in NextStep::ALL {
            assert_eq!(serde_json::to_value(step).unwrap(), serde_json::to_value(step.core()).unwrap());
        }
    }

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
            declaration::<NextStep>(&cfg),
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
