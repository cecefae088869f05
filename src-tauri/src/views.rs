//! What the commands hand the UI: plain serializable views. Errors carry the core's message
//! (which never holds PHI) and a `next` step the UI can act on.

use carekeep_core::account::Status;
use carekeep_core::{Error, NextStep};
use serde::Serialize;

use crate::messages::{ErrorScreen, Role, SessionState};

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
    /// The screen the UI has for the core's [`NextStep`].
    pub next: ErrorScreen,
    /// The core's step itself, for a screen that wants more than `next` (how long to wait);
    /// `None` for a failure the shell found itself.
    pub step: Option<NextStep>,
    /// The core's message, in words a person can act on.
    pub message: String,
}

impl From<Error> for CommandError {
    fn from(error: Error) -> Self {
        let step = error.next_step();
        let next = match step {
            NextStep::SignIn => ErrorScreen::SignIn,
            NextStep::UnlockWithPassword => ErrorScreen::Password,
            NextStep::ConfirmIdentity => ErrorScreen::StepUp,
            NextStep::Unlock => ErrorScreen::Locked,
            NextStep::SignInAfterWipe => ErrorScreen::Wiped,
            NextStep::Reconnect | NextStep::TryAgainLater => ErrorScreen::Offline,
            _ => ErrorScreen::Fix,
        };
        Self { next, step: Some(step), message: error.to_string() }
    }
}

/// A command's result.
pub type CommandResult<T> = Result<T, CommandError>;

#[cfg(test)]
mod tests {
    use super::CommandError;
    use carekeep_core::Error;
    use carekeep_core::error::{CacheError, ConnectionError, RecordsError, ServerError, UnlockError};

    /// The UI's `next` for each kind of step, as it was before the core said the step: a
    /// screen must not change because the decision moved.
    #[test]
    fn each_error_keeps_its_screen() {
        let cases = [
            (Error::Unlock(UnlockError::ReauthRequired), "sign-in"),
            (Error::Server(ServerError::SessionEnded), "sign-in"),
            (Error::Unlock(UnlockError::OfflineGraceOver), "sign-in"),
            (Error::Cache(CacheError::NoVault), "sign-in"),
            (Error::Unlock(UnlockError::PasswordRequired), "password"),
            (Error::Unlock(UnlockError::PresenceUnavailable), "password"),
            (Error::Unlock(UnlockError::PresenceRefused), "password"),
            (Error::Unlock(UnlockError::DeviceKeyMissing), "password"),
            (Error::Unlock(UnlockError::KeychainUnavailable), "password"),
            (Error::Server(ServerError::StepUpRequired), "step-up"),
            (Error::Unlock(UnlockError::Locked), "locked"),
            (Error::Server(ServerError::RemoteWipe), "wiped"),
            (Error::Server(ServerError::DeviceRevoked), "wiped"),
            (Error::Unlock(UnlockError::WipedAfterFailedAttempts), "wiped"),
            (Error::Connection(ConnectionError::ServerUnreachable), "offline"),
            (Error::Connection(ConnectionError::ServerTimeout), "offline"),
            (Error::Server(ServerError::ServerMalformed), "offline"),
            (Error::Server(ServerError::ServerRefused { status: 502 }), "offline"),
            (Error::Server(ServerError::ServerRefused { status: 0 }), "offline"),
            (Error::Records(RecordsError::DocumentNotDownloaded), "offline"),
            (Error::Server(ServerError::ServerRefused { status: 400 }), "fix"),
            (Error::Server(ServerError::PagingLoop), "fix"),
            (Error::Server(ServerError::BadCredentials), "fix"),
            (Error::Server(ServerError::ChallengeExpired), "fix"),
            (Error::Cache(CacheError::OtherAccount), "fix"),
            (Error::Connection(ConnectionError::PinMismatch), "fix"),
            (Error::Cache(CacheError::DiskFull), "fix"),
            (Error::Server(ServerError::RateLimited { retry_after_secs: 5 }), "fix"),
        ];
        for (error, next) in cases {
            let label = format!("{error:?}");
            assert_eq!(serde_json::to_value(CommandError::from(error).next).unwrap(), next, "{label}");
        }
    }
}
