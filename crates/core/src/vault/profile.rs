//! Where a vault lives on disk, and the identifiers it is bound to.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::CacheError;
use crate::keys::keyfile::KeyFile;
use crate::{Error, Result, platform};

/// A profile directory: one user's vault on one device.
///
/// Files: `vault.db` (+ `-wal`, `-shm`) the SQLCipher cache; `vault.keys` the key file;
/// `vault.keys.next` a key file being rotated in; `unlock-attempts` the failure counter.
#[derive(Debug, Clone)]
pub struct Profile {
    dir: PathBuf,
}

impl Profile {
    /// A profile rooted at `dir` (created with the vault, owner-only where the OS allows).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The profile directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a vault has been created here.
    pub fn has_vault(&self) -> bool {
        self.key_file().exists()
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.dir.join("vault.db")
    }

    pub(crate) fn key_file(&self) -> PathBuf {
        self.dir.join("vault.keys")
    }

    pub(crate) fn next_key_file(&self) -> PathBuf {
        self.dir.join("vault.keys.next")
    }

    pub(crate) fn attempts_file(&self) -> PathBuf {
        self.dir.join("unlock-attempts")
    }

    /// The session's audit records waiting for upload (no PHI): see `account`. Not one of
    /// the vault's files: it survives a wipe, to be uploaded.
    pub(crate) fn audit_queue(&self) -> PathBuf {
        self.dir.join("audit-queue.jsonl")
    }

    /// The signed-in account's session facts (no PHI, no secret): see `account`.
    pub(crate) fn session_file(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    /// The server's device cookie for the last user who signed in here: sent with the next
    /// password step, so failures elsewhere do not slow this device down. It outlives
    /// logout (that is its use) and goes with a wipe.
    pub(crate) fn device_cookie_file(&self) -> PathBuf {
        self.dir.join("device-cookie")
    }

    /// Every file a vault may leave in its directory, for wiping.
    pub(crate) fn owned_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.db()];
        for suffix in ["-wal", "-shm", "-journal"] {
            files.push(self.dir.join(format!("vault.db{suffix}")));
        }
        files.extend([
            self.key_file(),
            self.next_key_file(),
            self.attempts_file(),
            self.session_file(),
            self.device_cookie_file(),
        ]);
        for name in
            ["vault.keys.tmp", "vault.keys.next.tmp", "unlock-attempts.tmp", "session.json.tmp", "device-cookie.tmp"]
        {
            files.push(self.dir.join(name));
        }
        files
    }

    pub(crate) fn create_dir(&self) -> Result<()> {
        platform::create_private_dir(&self.dir).map_err(|e| Error::io("create", &e))
    }

    /// The key file in force.
    pub(crate) fn read_key_file(&self) -> Result<KeyFile> {
        Self::read_key_file_at(&self.key_file())
    }

    /// The key file of a rotation in progress, if any.
    pub(crate) fn read_next_key_file(&self) -> Result<KeyFile> {
        Self::read_key_file_at(&self.next_key_file())
    }

    fn read_key_file_at(path: &Path) -> Result<KeyFile> {
        match std::fs::read(path) {
            Ok(bytes) => KeyFile::decode(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Cache(CacheError::NoVault)),
            Err(e) => Err(Error::io("read", &e)),
        }
    }

    /// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
    pub(crate) fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut file = platform::create_private_file(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            platform::sync_dir(&self.dir)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("write", &e)
        })
    }
}

/// Checks an identifier: 1–128 characters of `A–Z a–z 0–9 . _ @ -`, so it is safe in file
/// headers, keychain item names and logs.
fn check_id(value: &str, what: &'static str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument { what, problem: "use 1 to 128 letters, digits, '.', '_', '@' or '-'" })
    }
}

/// Declares a validated identifier type (see [`check_id`] for what is accepted).
macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps the id.
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                check_id(&value, $what)?;
                Ok(Self(value))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

opaque_id!(
    /// The account a vault belongs to (the server's opaque user id, never a patient's name).
    UserId,
    "user id"
);
opaque_id!(
    /// This installation's device id (assigned by the server at sign-in).
    DeviceId,
    "device id"
);
