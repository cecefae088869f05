//! The one error type of the core.
//!
//! Every variant says what happened and what the person can do next, in words fit for the
//! screen. None carries a value from a record: paths name JSON fields and indices, never
//! their contents, so an error can be logged or shown without leaking PHI.
//!
//! [`Error`] groups the variants by cause, as rustls does: unlocking ([`UnlockError`]),
//! this device's files ([`CacheError`]), the connection ([`ConnectionError`]), the
//! server's answer ([`ServerError`]) and records ([`RecordsError`]). A caller can match a
//! whole cause at once, and each group's message is shown as it is. What the person does
//! next is [`Error::next_step`], one answer for the app and the CLI alike.

use std::time::Duration;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a core operation failed, grouped by cause; the message is the group's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Unlocking failed, or the records are locked.
    #[error(transparent)]
    Unlock(#[from] UnlockError),

    /// This device's vault files cannot be used.
    #[error(transparent)]
    Cache(#[from] CacheError),

    /// The server could not be reached safely.
    #[error(transparent)]
    Connection(#[from] ConnectionError),

    /// The server refused, or answered what this app cannot use.
    #[error(transparent)]
    Server(#[from] ServerError),

    /// A record or document could not be stored or shown.
    #[error(transparent)]
    Records(#[from] RecordsError),

    /// A caller passed an argument the core cannot use (a malformed id, an empty password).
    #[error("Invalid {what}: {problem}.")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Why the records could not be unlocked, or stay locked: the password, the attempt
/// limit, the keychain, the presence check and the re-authentication rules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnlockError {
    /// The password did not unwrap the vault key. The attempt has been counted.
    #[error(
        "The password is not correct. {attempts_left} more wrong attempts will erase this device's copy of your records."
    )]
    WrongPassword {
        /// Wrong attempts still allowed before the local cache is erased.
        attempts_left: u32,
    },

    /// Too many recent unlock attempts: the next must wait. An attempt counts from the moment
    /// it starts, so one cut short (the app killed during the password check) counts too —
    /// hence "attempts", not "wrong passwords".
    #[error("Too many unlock attempts. Wait {} seconds, then try again.", retry_after.as_secs().max(1))]
    UnlockBackoff {
        /// How long until the next attempt is accepted.
        retry_after: Duration,
    },

    /// The failed-attempt limit was reached and the local cache has been erased.
    #[error(
        "Too many unlock attempts: this device's copy of your records was erased to protect it. Sign in again with your password and authenticator code to download them again."
    )]
    WipedAfterFailedAttempts,

    /// No Secret Service / keychain could be reached.
    #[error(
        "The system keychain is not available (is your desktop session unlocked?). Unlock with your password instead."
    )]
    KeychainUnavailable,

    /// The keychain is reachable but holds no device key for this profile.
    #[error(
        "This device's key is no longer in the system keychain. Sign in with your password and authenticator code."
    )]
    DeviceKeyMissing,

    /// An operation needed the unlocked vault.
    #[error("The vault is locked. Unlock it first.")]
    Locked,

    /// Only a full sign-in can unlock now (the last one is too old, or the device key or
    /// biometrics changed).
    #[error("For your security, sign in again with your password and authenticator code.")]
    ReauthRequired,

    /// This device has no presence check (or it is not set up): use the password.
    #[error("This device cannot confirm it is you without your password. Unlock with your password.")]
    PresenceUnavailable,

    /// The presence check was cancelled or failed.
    #[error("The check that it is you was cancelled or did not succeed. Try again, or unlock with your password.")]
    PresenceRefused,

    /// The app was locked by hand: the password, not the device key, unlocks it.
    #[error("Carekeep was locked. Unlock it with your password.")]
    PasswordRequired,

    /// Offline, the password alone unlocks only for a while after the last full sign-in.
    #[error(
        "It has been too long since your last full sign-in to unlock offline. Connect to the network and sign in with your password and authenticator code."
    )]
    OfflineGraceOver,
}

/// Why this device's vault files could not be used: the cache and its key file, the disk,
/// the profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The database file does not belong to this profile's key, or is not a Carekeep vault.
    #[error(
        "This device's record cache cannot be opened with its key: it is not a Carekeep vault or belongs to another profile. Erase the cache and sign in again to download your records."
    )]
    NotAVault,

    /// The database file is truncated or damaged.
    #[error(
        "The record cache on this device is damaged. Erase it and sign in again: your records are safe on the server and will be downloaded again."
    )]
    CorruptCache,

    /// The key file is damaged or was modified.
    #[error(
        "The vault key file on this device is damaged or was modified. Erase the cache and sign in again to set this device up afresh."
    )]
    KeyFileInvalid,

    /// The key file was written by a newer Carekeep.
    #[error("The vault on this device was written by a newer Carekeep (key file format {0}). Update the app.")]
    KeyFileUnsupportedVersion(u16),

    /// The cache's schema was written by a newer Carekeep.
    #[error("The record cache on this device was written by a newer Carekeep (schema {0}). Update the app.")]
    CacheSchemaTooNew(i64),

    /// No vault exists in the profile directory.
    #[error("There is no Carekeep vault on this device yet. Sign in to create one.")]
    NoVault,

    /// A vault already exists where a new one was to be created.
    #[error("A Carekeep vault already exists on this device. Unlock it, or erase it first.")]
    VaultExists,

    /// The disk filled up; the change was rolled back.
    #[error(
        "The disk is full, so the last change was not saved. Free some space and try again; nothing saved before was lost."
    )]
    DiskFull,

    /// The operating system's random number generator failed.
    #[error("The system's random number generator failed. Restart the device and try again.")]
    Randomness,

    /// A file operation failed for a reason other than a full disk.
    #[error("Could not {action} the vault files ({kind}). Check the disk and its permissions, then try again.")]
    Io {
        /// What the vault was doing, e.g. "write".
        action: &'static str,
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
    },

    /// The profile holds another person's records.
    #[error("This device holds another account's records. Erase them (wipe) before signing in as someone else.")]
    OtherAccount,

    /// The database failed for another reason.
    #[error(
        "The record cache reported an internal error (SQLite code {code}). Try again; if it persists, erase the cache and sign in again."
    )]
    Database {
        /// The SQLite extended result code; never the message, which could quote data.
        code: i32,
    },
}

/// Why the server could not be reached safely: the address, the pins, TLS, or no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// A server address that is not `https://`: refused before any connection is made.
    #[error("Carekeep talks to servers over HTTPS only: the address must start with https://.")]
    InsecureUrl,

    /// The server's certificate carries none of the pinned keys.
    #[error(
        "The server's certificate does not match the keys this device trusts, so the connection may be intercepted. Nothing was sent. Do not continue on this network; contact your IT team."
    )]
    PinMismatch,

    /// The server's certificate is for another address.
    #[error("The server's certificate is for another address. Check the server address, or contact your IT team.")]
    CertificateNameMismatch,

    /// The server's certificate has expired.
    #[error("The server's certificate has expired, so the connection is not safe. Contact your IT team.")]
    CertificateExpired,

    /// The server offers no secure connection this app accepts (TLS 1.2 or newer).
    #[error("The server did not offer a secure connection this app accepts (TLS 1.2 or newer). Contact your IT team.")]
    TlsRefused,

    /// No answer from the server.
    #[error("The server cannot be reached. Check your network; the records on this device stay available.")]
    ServerUnreachable,

    /// The server did not answer in time.
    #[error("The server is taking too long to answer. Try again later; the records on this device stay available.")]
    ServerTimeout,
}

/// What the server answered instead of what was asked: a refusal of the sign-in or the
/// session, or an answer this app cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Wrong username or password (the server never says which).
    #[error("The username or password is not correct.")]
    BadCredentials,

    /// Wrong authenticator code.
    #[error("The authenticator code is not correct. Check the time on your phone and try the current code.")]
    BadCode,

    /// The authenticator code was used already.
    #[error("That authenticator code was used already. Wait for the next one.")]
    CodeAlreadyUsed,

    /// The password step is too old.
    #[error("The sign-in took too long. Start again with your password.")]
    ChallengeExpired,

    /// Too many failed sign-ins for this account from devices it does not know (nothing is
    /// locked: a device that signed in before is not held back).
    #[error(
        "Too many failed sign-ins for this account: wait {retry_after_secs} seconds, then try again. A device you \
         signed in from before is not held back."
    )]
    SignInThrottled {
        /// Seconds until the server takes the next attempt.
        retry_after_secs: u64,
    },

    /// Too many sign-in requests from this network.
    #[error("Too many sign-in requests from this network. Wait {retry_after_secs} seconds, then try again.")]
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },

    /// The server ended this device's session (idle, signed out elsewhere, or revoked).
    #[error("Your session has ended. Sign in again with your password and authenticator code.")]
    SessionEnded,

    /// The access token expired (the account refreshes it and tries again).
    #[error("Your access expired. Try again; if it persists, sign in again.")]
    AccessExpired,

    /// The organisation revoked this device (or disabled the account): its copy is erased.
    #[error(
        "Your organisation signed this device out, so its copy of your records was erased. Sign in again to continue."
    )]
    DeviceRevoked,

    /// The server asked this device to erase its records.
    #[error("Your organisation has asked this device to erase its copy of your records. Sign in again to continue.")]
    RemoteWipe,

    /// The action needs a recent full sign-in.
    #[error("This action needs you to confirm it is you: sign in again with your password and authenticator code.")]
    StepUpRequired,

    /// A code was confirmed for a new authenticator that was never started (or was
    /// replaced by a later start).
    #[error("There is no new authenticator waiting for a code. Start setting it up again.")]
    NoPendingAuthenticator,

    /// The server's signed policy did not verify.
    #[error("The security policy from the server could not be verified. Contact your IT team.")]
    PolicyInvalid,

    /// The server refused the request for another reason.
    #[error("The server could not complete the request (HTTP {status}). Try again later.")]
    ServerRefused {
        /// The HTTP status (0: an answer that could not be read).
        status: u16,
    },

    /// The server's answer could not be read (not the JSON it should be).
    #[error(
        "The server sent an answer this app cannot read. Try again later; nothing on this device was changed by it."
    )]
    ServerMalformed,

    /// The server sent a page of results it had already sent: following it would never end.
    #[error(
        "The server repeated a page of results, so the sync stopped. Try again later; what was already synced is kept."
    )]
    PagingLoop,
}

/// Why a record or document could not be stored or shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// A resource or bundle is not valid FHIR R4 JSON.
    #[error("Not a valid FHIR resource at {path}: {problem}. Nothing was stored.")]
    InvalidResource {
        /// Where in the JSON, e.g. `entry[3].resource.resourceType` (field names only).
        path: String,
        /// What is wrong, in words that never quote the data.
        problem: &'static str,
    },

    /// The document is not on the server (removed), or not for this user any more.
    #[error(
        "This document is not available: it may have been removed, or you may no longer see it. Sync, then try again."
    )]
    DocumentUnavailable,

    /// The document was never downloaded and the server cannot be reached.
    #[error("This document is not on this device yet. Connect to the network and open it again to download it.")]
    DocumentNotDownloaded,

    /// The document is bigger than the app downloads.
    #[error(
        "This document is larger than {limit_mib} MiB, more than this app downloads. Ask your care team for a copy another way."
    )]
    DocumentTooLarge {
        /// The limit, in MiB.
        limit_mib: u64,
    },
}

/// What the person does next about an [`Error`]: the one answer the app's screens, the CLI's
/// exit codes and its password fallback all act on, so they cannot drift apart. Each is an
/// action the error's message already asks for; the message says it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(tag = "step", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NextStep {
    /// A full sign-in: password and authenticator code.
    SignIn,
    /// Type the password or code again, or start the sign-in again: what was typed was not
    /// accepted, the screen stays where it is.
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
        /// How long, when known (the message says what to wait for otherwise).
        #[cfg_attr(feature = "typescript", ts(type = "number | null"))]
        retry_after_secs: Option<u64>,
    },
    /// Connect to the network; what is on this device stays available meanwhile.
    Reconnect,
    /// The server is slow, failing or garbled: try again later; the cache still works.
    TryAgainLater,
    /// Try the same thing again (after the small step the message names, if any).
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

impl From<carekeep_presence::PresenceError> for Error {
    fn from(e: carekeep_presence::PresenceError) -> Self {
        match e {
            carekeep_presence::PresenceError::Unavailable => UnlockError::PresenceUnavailable.into(),
            carekeep_presence::PresenceError::Refused => UnlockError::PresenceRefused.into(),
        }
    }
}

impl Error {
    /// Worth trying again after a pause: the server was unreachable, slow, failing (5xx) or
    /// garbled; nothing about the request itself was wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connection(ConnectionError::ServerUnreachable | ConnectionError::ServerTimeout)
            | Error::Server(ServerError::ServerMalformed) => true,
            Error::Server(ServerError::ServerRefused { status }) => *status >= 500 || *status == 0,
            _ => false,
        }
    }

    /// What the person does next: see [`NextStep`].
    pub fn next_step(&self) -> NextStep {
        match self {
            Error::Unlock(e) => e.next_step(),
            Error::Cache(e) => e.next_step(),
            Error::Connection(e) => e.next_step(),
            Error::Server(e) => e.next_step(),
            Error::Records(e) => e.next_step(),
            Error::InvalidArgument { .. } => NextStep::CorrectInput,
        }
    }

    /// Wraps an I/O error, keeping only its kind (messages can carry paths).
    pub(crate) fn io(action: &'static str, err: &std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::StorageFull {
            CacheError::DiskFull.into()
        } else {
            CacheError::Io { action, kind: err.kind() }.into()
        }
    }

    /// A shorthand for [`RecordsError::InvalidResource`].
    pub(crate) fn invalid(path: impl Into<String>, problem: &'static str) -> Self {
        RecordsError::InvalidResource { path: path.into(), problem }.into()
    }
}

impl UnlockError {
    /// What the person does next: see [`NextStep`].
    pub fn next_step(&self) -> NextStep {
        match self {
            UnlockError::WrongPassword { .. } => NextStep::ReenterCredentials,
            UnlockError::UnlockBackoff { retry_after } => {
                NextStep::Wait { retry_after_secs: Some(retry_after.as_secs().max(1)) }
            }
            UnlockError::WipedAfterFailedAttempts => NextStep::SignInAfterWipe,
            UnlockError::KeychainUnavailable
            | UnlockError::DeviceKeyMissing
            | UnlockError::PasswordRequired
            | UnlockError::PresenceUnavailable
            | UnlockError::PresenceRefused => NextStep::UnlockWithPassword,
            UnlockError::Locked => NextStep::Unlock,
            UnlockError::ReauthRequired | UnlockError::OfflineGraceOver => NextStep::SignIn,
        }
    }
}

impl CacheError {
    /// What the person does next: see [`NextStep`].
    pub fn next_step(&self) -> NextStep {
        match self {
            CacheError::NotAVault
            | CacheError::CorruptCache
            | CacheError::KeyFileInvalid
            | CacheError::VaultExists
            | CacheError::OtherAccount => NextStep::EraseAndSignIn,
            CacheError::KeyFileUnsupportedVersion(_) | CacheError::CacheSchemaTooNew(_) => NextStep::UpdateApp,
            CacheError::NoVault => NextStep::SignIn,
            CacheError::DiskFull => NextStep::FreeSpace,
            CacheError::Io { .. } | CacheError::Database { .. } | CacheError::Randomness => NextStep::TryAgain,
        }
    }
}

impl ConnectionError {
    /// What the person does next: see [`NextStep`].
    pub fn next_step(&self) -> NextStep {
        match self {
            ConnectionError::InsecureUrl => NextStep::CorrectInput,
            ConnectionError::PinMismatch
            | ConnectionError::CertificateNameMismatch
            | ConnectionError::CertificateExpired
            | ConnectionError::TlsRefused => NextStep::ContactIt,
            ConnectionError::ServerUnreachable => NextStep::Reconnect,
            ConnectionError::ServerTimeout => NextStep::TryAgainLater,
        }
    }

    /// The connection itself is not to be trusted (pins, TLS, `http://`), as opposed to
    /// no answer at all.
    pub fn is_untrusted(&self) -> bool {
        !matches!(self, ConnectionError::ServerUnreachable | ConnectionError::ServerTimeout)
    }
}

impl ServerError {
    /// What the person does next: see [`NextStep`].
    pub fn next_step(&self) -> NextStep {
        match self {
            ServerError::BadCredentials | ServerError::BadCode | ServerError::ChallengeExpired => {
                NextStep::ReenterCredentials
            }
            ServerError::CodeAlreadyUsed => NextStep::Wait { retry_after_secs: None },
            ServerError::SignInThrottled { retry_after_secs } | ServerError::RateLimited { retry_after_secs } => {
                NextStep::Wait { retry_after_secs: Some(*retry_after_secs) }
            }
            ServerError::SessionEnded => NextStep::SignIn,
            ServerError::DeviceRevoked | ServerError::RemoteWipe => NextStep::SignInAfterWipe,
            ServerError::StepUpRequired => NextStep::ConfirmIdentity,
            ServerError::PolicyInvalid => NextStep::ContactIt,
            ServerError::ServerMalformed => NextStep::TryAgainLater,
            ServerError::ServerRefused { status } if *status >= 500 || *status == 0 => NextStep::TryAgainLater,
            ServerError::AccessExpired
            | ServerError::NoPendingAuthenticator
            | ServerError::ServerRefused { .. }
            | ServerError::PagingLoop => NextStep::TryAgain,
        }
    }
}

impl RecordsError {
    /// What the person does next: see [`NextStep`].
    pub fn next_step(&self) -> NextStep {
        match self {
            RecordsError::InvalidResource { .. } => NextStep::CorrectInput,
            RecordsError::DocumentUnavailable => NextStep::TryAgain,
            RecordsError::DocumentNotDownloaded => NextStep::Reconnect,
            RecordsError::DocumentTooLarge { .. } => NextStep::AskCareTeam,
        }
    }
}

impl From<carekeep_fhir::Invalid> for Error {
    fn from(err: carekeep_fhir::Invalid) -> Self {
        RecordsError::InvalidResource { path: err.path, problem: err.problem }.into()
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        let cache = match err.sqlite_error() {
            Some(e) => match e.code {
                ErrorCode::DiskFull => CacheError::DiskFull,
                ErrorCode::DatabaseCorrupt => CacheError::CorruptCache,
                ErrorCode::NotADatabase => CacheError::NotAVault,
                _ => CacheError::Database { code: e.extended_code },
            },
            None => CacheError::Database { code: -1 },
        };
        cache.into()
    }
}

#[cfg(test)]
mod tests {
    use super::{CacheError, ConnectionError, Error, NextStep, RecordsError, ServerError, UnlockError};
    use std::time::Duration;

    /// Every variant and the step it asks for (the values that change the step, each), so a
    /// step changed by mistake fails here. A new variant cannot be left without a step: the
    /// match in `next_step` has no catch-all.
    fn every_variant() -> Vec<(Error, NextStep)> {
        use NextStep::*;
        let invalid = |what| Error::InvalidArgument { what, problem: "test" };
        vec![
            (Error::Unlock(UnlockError::WrongPassword { attempts_left: 3 }), ReenterCredentials),
            (
                Error::Unlock(UnlockError::UnlockBackoff { retry_after: Duration::from_millis(1500) }),
                Wait { retry_after_secs: Some(1) },
            ),
            (
                Error::Unlock(UnlockError::UnlockBackoff { retry_after: Duration::ZERO }),
                Wait { retry_after_secs: Some(1) },
            ),
            (Error::Unlock(UnlockError::WipedAfterFailedAttempts), SignInAfterWipe),
            (Error::Cache(CacheError::NotAVault), EraseAndSignIn),
            (Error::Cache(CacheError::CorruptCache), EraseAndSignIn),
            (Error::Cache(CacheError::KeyFileInvalid), EraseAndSignIn),
            (Error::Cache(CacheError::KeyFileUnsupportedVersion(9)), UpdateApp),
            (Error::Cache(CacheError::CacheSchemaTooNew(9)), UpdateApp),
            (Error::Unlock(UnlockError::KeychainUnavailable), UnlockWithPassword),
            (Error::Unlock(UnlockError::DeviceKeyMissing), UnlockWithPassword),
            (Error::Unlock(UnlockError::Locked), Unlock),
            (Error::Cache(CacheError::NoVault), SignIn),
            (Error::Cache(CacheError::VaultExists), EraseAndSignIn),
            (Error::Cache(CacheError::DiskFull), FreeSpace),
            (Error::invalid("id", "test"), CorrectInput),
            (invalid("pins"), CorrectInput),
            (Error::Cache(CacheError::Randomness), TryAgain),
            (Error::Cache(CacheError::Io { action: "write", kind: std::io::ErrorKind::PermissionDenied }), TryAgain),
            (Error::Connection(ConnectionError::InsecureUrl), CorrectInput),
            (Error::Connection(ConnectionError::PinMismatch), ContactIt),
            (Error::Connection(ConnectionError::CertificateNameMismatch), ContactIt),
            (Error::Connection(ConnectionError::CertificateExpired), ContactIt),
            (Error::Connection(ConnectionError::TlsRefused), ContactIt),
            (Error::Connection(ConnectionError::ServerUnreachable), Reconnect),
            (Error::Server(ServerError::BadCredentials), ReenterCredentials),
            (Error::Server(ServerError::BadCode), ReenterCredentials),
            (Error::Server(ServerError::CodeAlreadyUsed), Wait { retry_after_secs: None }),
            (Error::Server(ServerError::ChallengeExpired), ReenterCredentials),
            (Error::Server(ServerError::SignInThrottled { retry_after_secs: 30 }), Wait { retry_after_secs: Some(30) }),
            (Error::Server(ServerError::RateLimited { retry_after_secs: 60 }), Wait { retry_after_secs: Some(60) }),
            (Error::Server(ServerError::SessionEnded), SignIn),
            (Error::Server(ServerError::AccessExpired), TryAgain),
            (Error::Server(ServerError::DeviceRevoked), SignInAfterWipe),
            (Error::Server(ServerError::RemoteWipe), SignInAfterWipe),
            (Error::Server(ServerError::StepUpRequired), ConfirmIdentity),
            (Error::Server(ServerError::NoPendingAuthenticator), TryAgain),
            (Error::Records(RecordsError::DocumentUnavailable), TryAgain),
            (Error::Records(RecordsError::DocumentNotDownloaded), Reconnect),
            (Error::Records(RecordsError::DocumentTooLarge { limit_mib: 25 }), AskCareTeam),
            (Error::Unlock(UnlockError::ReauthRequired), SignIn),
            (Error::Unlock(UnlockError::PresenceUnavailable), UnlockWithPassword),
            (Error::Unlock(UnlockError::PresenceRefused), UnlockWithPassword),
            (Error::Cache(CacheError::OtherAccount), EraseAndSignIn),
            (Error::Unlock(UnlockError::PasswordRequired), UnlockWithPassword),
            (Error::Unlock(UnlockError::OfflineGraceOver), SignIn),
            (Error::Server(ServerError::PolicyInvalid), ContactIt),
            (Error::Server(ServerError::ServerRefused { status: 503 }), TryAgainLater),
            (Error::Server(ServerError::ServerRefused { status: 0 }), TryAgainLater),
            (Error::Server(ServerError::ServerRefused { status: 400 }), TryAgain),
            (Error::Connection(ConnectionError::ServerTimeout), TryAgainLater),
            (Error::Server(ServerError::ServerMalformed), TryAgainLater),
            (Error::Server(ServerError::PagingLoop), TryAgain),
            (Error::Cache(CacheError::Database { code: 1 }), TryAgain),
        ]
    }

    #[test]
    fn every_variant_has_its_next_step() {
        for (error, step) in every_variant() {
            assert_eq!(error.next_step(), step, "{error:?}");
        }
    }

    #[test]
    fn next_steps_reach_the_ui_tagged_in_kebab_case() {
        let json = |step| serde_json::to_value(step).unwrap();
        assert_eq!(json(NextStep::SignInAfterWipe), serde_json::json!({"step": "sign-in-after-wipe"}));
        assert_eq!(
            json(NextStep::Wait { retry_after_secs: Some(30) }),
            serde_json::json!({"step": "wait", "retry_after_secs": 30})
        );
    }
}
