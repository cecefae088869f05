//! What the commands hand the UI: plain serializable views. Errors carry the core's message
//! (which never holds PHI) and a `next` step the UI can act on.

use carekeep_core::Error;
use carekeep_core::account::Status;
use serde::Serialize;

use crate::messages::{Role, SessionState};

/// The session as the UI needs it to pick a screen.
#[derive(Serialize)]
pub struct SessionView {
    /// Where the session is.
    pub state: SessionState,
    /// The role, once someone has signed in here.
    pub role: Option<Role>,
    /// The pinned server's address.
    pub server: String,
    /// When the last sync finished (Unix seconds).
    pub last_sync_unix: Option<i64>,
    /// Writes waiting for upload (while unlocked).
    pub pending_writes: Option<u64>,
    /// The idle limit in force, in seconds.
    pub idle_lock_secs: u64,
}

impl SessionView {
    /// The view of an account's status.
    pub fn of(status: &Status) -> Self {
        Self {
            state: status.state.into(),
            role: Some(status.role.into()),
            server: status.server.clone(),
            last_sync_unix: status.last_sync_unix,
            pending_writes: status.pending_writes,
            idle_lock_secs: status.idle_lock.as_secs(),
        }
    }

    /// No one is signed in on this device.
    pub fn signed_out(server: &str) -> Self {
        Self {
            state: SessionState::SignedOut,
            role: None,
            server: server.to_owned(),
            last_sync_unix: None,
            pending_writes: None,
            idle_lock_secs: 0,
        }
    }
}

/// A sync step, for the progress bar.
#[derive(Clone, Serialize)]
pub struct SyncProgressView {
    /// The step, in words.
    pub phase: &'static str,
    /// Items done in it.
    pub done: usize,
    /// Items in it.
    pub total: usize,
}

/// A failed command: what happened (no PHI, from the core) and what the UI should offer.
#[derive(Debug, Serialize)]
pub struct CommandError {
    /// `sign-in` (password and code), `password` (the password unlocks), `step-up` (a fresh
    /// sign-in first), `locked`, `offline` (try again later; the cache still works), `wiped`,
    /// or `fix` (the message says what to change).
    pub next: &'static str,
    /// The core's message, in words a person can act on.
    pub message: String,
}

impl From<Error> for CommandError {
    fn from(error: Error) -> Self {
        let next = match &error {
            Error::ReauthRequired | Error::SessionEnded | Error::OfflineGraceOver | Error::NoVault => "sign-in",
            Error::PasswordRequired
            | Error::PresenceUnavailable
            | Error::PresenceRefused
            | Error::DeviceKeyMissing
            | Error::KeychainUnavailable => "password",
            Error::StepUpRequired => "step-up",
            Error::Locked => "locked",
            Error::RemoteWipe | Error::DeviceRevoked | Error::WipedAfterFailedAttempts => "wiped",
            e if e.is_transient() => "offline",
            Error::DocumentNotDownloaded => "offline",
            _ => "fix",
        };
        Self { next, message: error.to_string() }
    }
}

/// A command's result.
pub type CommandResult<T> = Result<T, CommandError>;
