//! Errors of the server's administration commands, phrased for the operator.

use std::path::PathBuf;

/// What went wrong while setting up or starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `init` found an existing data directory.
    #[error("{} already holds a Carekeep server; use it, or choose an empty directory", .0.display())]
    AlreadyInitialised(PathBuf),
    /// The data directory has not been initialised.
    #[error("{} is not a Carekeep server data directory; run `carekeep-server init --data DIR` first", .0.display())]
    NotInitialised(PathBuf),
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key or certificate file is damaged.
    #[error("{} is damaged or not the expected kind of file; restore it from your backup", .0.display())]
    BadKeyMaterial(PathBuf),
    /// Generating keys or certificates failed.
    #[error("could not generate keys: {0}")]
    KeyGeneration(String),
    /// The store could not be opened or used.
    #[error("store: {0}")]
    Store(String),
    /// An administration command was given something it cannot use.
    #[error("{0}")]
    Invalid(String),
    /// `audit verify` found the trail altered.
    #[error("the audit trail is not intact: {0}")]
    AuditBroken(String),
    /// A backup could not be made, checked or restored.
    #[error("backup: {0}")]
    Backup(#[from] crate::backup::BackupError),
    /// The TLS configuration was refused.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        ServerError::Store(e.to_string())
    }
}

impl ServerError {
    pub(crate) fn io<'a>(action: &'static str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| ServerError::Io { action, path: path.to_path_buf(), source }
    }
}
