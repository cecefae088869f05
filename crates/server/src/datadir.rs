//! The server's data directory: its secrets and how they are laid out.
//!
//! ```text
//! DIR/                     0700
//!   master.key             0600  32 random bytes: every key of the store, audit and documents
//!                                is derived from it.
//!                                $CAREKEEP_MASTER_KEY_FILE moves it to a secret store.
//!   signing.key            0600  Ed25519 seed: signs the policy and audit checkpoints
//!   store.db (+ -wal, -shm)      SQLCipher, keyed from the master key: tenants, users, tokens,
//!                                records, documents
//!   audit.db (+ -wal, -shm)      SQLCipher, its own key from the master key: the audit chain
//!   tls/cert.pem                 the live certificate (self-signed, pinned by clients)
//!   tls/key.pem            0600  its private key
//!   tls/backup-key.pem     0600  the backup key: not in any certificate; its pin ships with
//!                                every pin set so a rotation never strands clients.
//!                                Move it offline after `init`.
//!   audit-archive/         0700  sealed, signed months of the audit trail (`audit archive`)
//!   backup-recipient             the public half of the key backups are sealed to (its
//!                                private half is offline; `backup key` makes both)
//!   deployment                   `postgres` once the directory serves a PostgreSQL
//!                                deployment: its own store is then refused
//! ```

use std::path::{Path, PathBuf};

use carekeep_protocol::pins::Pin;
use ed25519_dalek::SigningKey;
use rcgen::KeyPair;
use zeroize::Zeroizing;

use crate::{ServerError, tls};

/// The file that marks a PostgreSQL deployment's copy of the directory.
const DEPLOYMENT_FILE: &str = "deployment";

/// Environment variable naming the master key file, for deployments that mount secrets.
pub const MASTER_KEY_ENV: &str = "CAREKEEP_MASTER_KEY_FILE";

/// An initialised data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// The pins clients must hold, live key first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPins {
    /// The key in the served certificate.
    pub live: Pin,
    /// The offline backup key.
    pub backup: Pin,
}

impl DataDir {
    /// Creates a data directory for a server reachable as `hostname` (plus `localhost` and
    /// `127.0.0.1`). Refuses a directory that already holds one.
    pub fn init(root: &Path, hostname: &str) -> Result<(Self, ServerPins), ServerError> {
        let dir = Self { root: root.to_path_buf() };
        if dir.signing_key_path().exists() || dir.cert_path().exists() {
            return Err(ServerError::AlreadyInitialised(root.to_path_buf()));
        }
        create_private_dir(root)?;
        create_private_dir(&root.join("tls"))?;

        let mut master = Zeroizing::new([0u8; 32]);
        random(master.as_mut_slice())?;
        write_private(&dir.master_key_path(), master.as_slice())?;
        let mut seed = Zeroizing::new([0u8; 32]);
        random(seed.as_mut_slice())?;
        write_private(&dir.signing_key_path(), seed.as_slice())?;

        let live = tls::generate_key()?;
        let generated = tls::self_signed(&live, hostname)?;
        let backup = tls::generate_key()?;
        write_private(&dir.key_path(), generated.key_pem.as_bytes())?;
        write_private(&dir.backup_key_path(), backup.serialize_pem().as_bytes())?;
        dir.open_store()?;
        // The certificate last: its presence marks the directory as initialised.
        write_private(&dir.cert_path(), generated.cert_pem.as_bytes())?;
        Ok((dir, ServerPins { live: tls::pin_of(&live), backup: tls::pin_of(&backup) }))
    }

    /// Opens an initialised data directory.
    pub fn open(root: &Path) -> Result<Self, ServerError> {
        let dir = Self { root: root.to_path_buf() };
        if !dir.cert_path().exists() {
            return Err(ServerError::NotInitialised(root.to_path_buf()));
        }
        Ok(dir)
    }

    /// The pins of the live and the backup key.
    pub fn pins(&self) -> Result<ServerPins, ServerError> {
        Ok(ServerPins {
            live: tls::pin_of(&load_key(&self.key_path())?),
            backup: tls::pin_of(&load_key(&self.backup_key_path())?),
        })
    }

    /// Rotates the TLS key: the backup key becomes the live one, in a new self-signed
    /// certificate for `hostname`, and a new backup key is made. Clients that pinned the old
    /// pair keep connecting (they pinned this backup); the new pair reaches them with the
    /// signed policy. Restart `serve` afterwards.
    pub fn rotate_tls(&self, hostname: &str) -> Result<ServerPins, ServerError> {
        let backup_path = self.backup_key_path();
        if !backup_path.exists() {
            return Err(ServerError::Invalid(
                "the backup key is not in tls/backup-key.pem: bring it back from offline storage first".into(),
            ));
        }
        let promoted = load_key(&backup_path)?;
        let generated = tls::self_signed(&promoted, hostname)?;
        let next_backup = tls::generate_key()?;
        // Key, then certificate, then the new backup: interrupted, the server refuses to
        // start (key and certificate differ) and running the rotation again completes it.
        replace_private(&self.key_path(), generated.key_pem.as_bytes())?;
        replace_private(&self.cert_path(), generated.cert_pem.as_bytes())?;
        replace_private(&backup_path, next_backup.serialize_pem().as_bytes())?;
        Ok(ServerPins { live: tls::pin_of(&promoted), backup: tls::pin_of(&next_backup) })
    }

    /// The rustls configuration serving the live certificate.
    pub fn tls_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, ServerError> {
        let cert = read(&self.cert_path())?;
        let key = Zeroizing::new(read(&self.key_path())?);
        tls::server_config(&cert, &key)
    }

    /// Opens the encrypted store with the master key. A store from before the audit trail's
    /// head was kept gets its head now, from the trail as it stands.
    pub fn open_store(&self) -> Result<crate::store::Store, ServerError> {
        if self.is_postgres() {
            return Err(ServerError::Invalid(format!(
                "{} belongs to a PostgreSQL deployment: its records, accounts and audit trail are in the database, \
                 not here. Pass --database (or set CAREKEEP_DATABASE) where the command takes it; for a backup, \
                 use pg_dump",
                self.root.display()
            )));
        }
        let store = crate::store::Store::open(&self.store_path(), &self.audit_path(), &self.master_key()?)?;
        if store.upgraded_across(crate::store::AUDIT_HEAD_SINCE) {
            crate::audit::adopt(&store, &self.signing_key()?)?;
        }
        Ok(store)
    }

    /// Marks this directory as a copy of a PostgreSQL deployment's: from then on its own
    /// (empty) store is refused, so no command answers from it as if it were the
    /// deployment's — an audit query that finds nobody, a verify of zero records.
    pub fn mark_postgres(&self) -> Result<(), ServerError> {
        let path = self.root.join(DEPLOYMENT_FILE);
        if self.is_postgres() {
            return Ok(());
        }
        std::fs::write(&path, "postgres\n").map_err(|source| ServerError::Io { action: "write", path, source })
    }

    /// Whether this directory is a PostgreSQL deployment's copy ([`DataDir::mark_postgres`]).
    pub fn is_postgres(&self) -> bool {
        std::fs::read_to_string(self.root.join(DEPLOYMENT_FILE)).is_ok_and(|text| text.trim() == "postgres")
    }

    pub(crate) fn master_key(&self) -> Result<Zeroizing<Vec<u8>>, ServerError> {
        let path = self.master_key_path();
        let master = Zeroizing::new(read(&path)?);
        if master.len() != 32 {
            return Err(ServerError::BadKeyMaterial(path));
        }
        Ok(master)
    }

    /// The purpose keys derived from the master key (documents, links, paging).
    pub fn master_keys(&self) -> Result<crate::keys::MasterKeys, ServerError> {
        Ok(crate::keys::MasterKeys::derive(&self.master_key()?))
    }

    /// The key that signs policies and audit checkpoints.
    pub fn signing_key(&self) -> Result<SigningKey, ServerError> {
        let path = self.signing_key_path();
        let bytes = Zeroizing::new(read(&path)?);
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| ServerError::BadKeyMaterial(path))?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// Where the master key lives: `$CAREKEEP_MASTER_KEY_FILE`, else `DIR/master.key`.
    pub fn master_key_path(&self) -> PathBuf {
        std::env::var_os(MASTER_KEY_ENV).map_or_else(|| self.root.join("master.key"), PathBuf::from)
    }

    /// The records file.
    pub(crate) fn store_path(&self) -> PathBuf {
        self.root.join("store.db")
    }

    /// The audit trail's file.
    pub(crate) fn audit_path(&self) -> PathBuf {
        self.root.join("audit.db")
    }

    /// The sealed monthly archives of the audit trail.
    pub fn archive_path(&self) -> PathBuf {
        self.root.join("audit-archive")
    }

    /// The public half of the backup key, which backups are sealed to.
    pub(crate) fn backup_recipient_path(&self) -> PathBuf {
        self.root.join("backup-recipient")
    }

    /// The live certificate (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.root.join("tls").join("cert.pem")
    }

    pub(crate) fn key_path(&self) -> PathBuf {
        self.root.join("tls").join("key.pem")
    }

    pub(crate) fn backup_key_path(&self) -> PathBuf {
        self.root.join("tls").join("backup-key.pem")
    }

    pub(crate) fn signing_key_path(&self) -> PathBuf {
        self.root.join("signing.key")
    }
}

fn load_key(path: &Path) -> Result<KeyPair, ServerError> {
    let pem = Zeroizing::new(String::from_utf8(read(path)?).map_err(|_| ServerError::BadKeyMaterial(path.into()))?);
    KeyPair::from_pem(&pem).map_err(|_| ServerError::BadKeyMaterial(path.into()))
}

fn random(buf: &mut [u8]) -> Result<(), ServerError> {
    getrandom::fill(buf).map_err(|e| ServerError::KeyGeneration(e.to_string()))
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(ServerError::io("read", path))
}

fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    carekeep_private_files::create_dir(path).map_err(ServerError::io("create", path))
}

/// Replaces `path` atomically: written aside (owner-only), synced, renamed over.
fn replace_private(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    carekeep_private_files::replace(path, bytes).map_err(ServerError::io("replace", path))
}

/// Writes a new file readable only by the server's user; never overwrites.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    carekeep_private_files::write_new(path, bytes).map_err(ServerError::io("write", path))
}
