//! The encrypted offline vault: lifecycle of the keys and the SQLCipher cache (DESIGN.md §2).
//!
//! ```text
//! create ──► Unlocked ──lock──► Locked ──unlock (device key | password)──► Unlocked
//!                 │                 │
//!                 └──────wipe───────┴──► gone (files, wrapped keys, keychain items)
//! ```
//!
//! A locked [`Vault`] holds no key: unlocking is keychain (or Argon2id) → unwrap → open.

mod attempts;
mod db;
mod profile;
mod wipe;

use std::sync::Arc;

use rusqlite::Connection;

pub use attempts::UnlockPolicy;
pub(crate) use db::{CACHE_SIZE_PRAGMA, create_unencrypted};
pub use profile::{DeviceId, Profile, UserId};
pub use wipe::{WipeReport, wipe_profile};

use crate::error::{CacheError, UnlockError};
use crate::keychain::Item;
use crate::keys::keyfile::KeyFile;
use crate::keys::{KdfParams, Key256};
use crate::store::Store;
use crate::{Clock, Error, Keychain, Password, Result, SystemClock};
use attempts::Attempts;

/// One user's encrypted cache on this device, locked or unlocked.
///
/// Every operation on records goes through [`Vault::store`], which fails with
/// [`UnlockError::Locked`] while the vault is locked.
pub struct Vault {
    profile: Profile,
    keychain: Keychain,
    clock: Arc<dyn Clock>,
    policy: UnlockPolicy,
    user_id: UserId,
    device_id: DeviceId,
    open: Option<OpenVault>,
}

/// What exists only while unlocked: the connection and the key it was opened with.
struct OpenVault {
    conn: Connection,
    k_db: Key256,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("profile", &self.profile)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("unlocked", &self.is_unlocked())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Creates a vault in `profile` for `user` on `device`, protected by `password` and, where
    /// the keychain is reachable, a device key stored in it. Returns it unlocked.
    ///
    /// Without a keychain the vault is still created; only password unlock is then available
    /// ([`Vault::has_device_key`] is false) until [`Vault::enroll_device_key`] succeeds.
    pub fn create(
        profile: &Profile,
        keychain: Keychain,
        user: &UserId,
        device: &DeviceId,
        password: &Password,
    ) -> Result<Self> {
        if profile.has_vault() {
            return Err(Error::Cache(CacheError::VaultExists));
        }
        profile.create_dir()?;
        // Leftovers of an earlier create that died before its key file was written.
        wipe::remove_files(profile)?;

        let k_db = Key256::generate()?;
        let mut salt = [0u8; 16];
        crate::keys::random_bytes(&mut salt)?;
        let password_key = KdfParams::DEFAULT.derive(password, &salt)?;
        let device_key = Key256::generate()?;
        let device_key = match keychain.store_key(device.as_str(), Item::DeviceKey, &device_key) {
            Ok(()) => Some(device_key),
            Err(Error::Unlock(UnlockError::KeychainUnavailable)) => None,
            Err(e) => return Err(e),
        };
        let key_file = KeyFile::seal(
            user.as_str(),
            device.as_str(),
            KdfParams::DEFAULT,
            salt,
            &k_db,
            &password_key,
            device_key.as_ref(),
        )?;

        // The database first, the key file last: the key file's rename is the commit point.
        let created = db::create(&profile.db(), &k_db)
            .and_then(|conn| profile.write_atomically(&profile.key_file(), &key_file.encode()).map(|()| conn));
        let conn = match created {
            Ok(conn) => conn,
            Err(e) => {
                let _ = wipe::remove_files(profile);
                let _ = keychain.delete_all(device.as_str());
                return Err(e);
            }
        };
        Attempts::reset(profile)?;
        Ok(Self {
            profile: profile.clone(),
            keychain,
            clock: Arc::new(SystemClock),
            policy: UnlockPolicy::default(),
            user_id: user.clone(),
            device_id: device.clone(),
            open: Some(OpenVault { conn, k_db }),
        })
    }

    /// Opens the vault in `profile`, locked.
    pub fn open(profile: &Profile, keychain: Keychain) -> Result<Self> {
        let key_file = profile.read_key_file()?;
        Ok(Self {
            profile: profile.clone(),
            keychain,
            clock: Arc::new(SystemClock),
            policy: UnlockPolicy::default(),
            user_id: UserId::new(key_file.user_id).map_err(|_| Error::Cache(CacheError::KeyFileInvalid))?,
            device_id: DeviceId::new(key_file.device_id).map_err(|_| Error::Cache(CacheError::KeyFileInvalid))?,
            open: None,
        })
    }

    /// Uses `clock` for the unlock back-off instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Applies the failed-unlock policy (from the server's signed policy).
    #[must_use]
    pub fn with_policy(mut self, policy: UnlockPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The account this vault belongs to.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The device this vault is bound to.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// Whether the vault is open.
    pub fn is_unlocked(&self) -> bool {
        self.open.is_some()
    }

    /// Whether the key file holds a device-key wrap (unlock without the password possible).
    pub fn has_device_key(&self) -> Result<bool> {
        Ok(self.read_key_file()?.has_device_slot())
    }

    /// Failed password attempts counted so far.
    pub fn failed_attempts(&self) -> Result<u32> {
        Ok(Attempts::load(&self.profile)?.failures)
    }

    /// Unlocks with the device key from the OS keychain (after the platform's presence check,
    /// which is the caller's). No-op when already unlocked.
    ///
    /// [`UnlockError::KeychainUnavailable`] and [`UnlockError::DeviceKeyMissing`] both mean:
    /// use the password instead.
    pub fn unlock_with_device_key(&mut self) -> Result<()> {
        if self.is_unlocked() {
            return Ok(());
        }
        if !self.read_key_file()?.has_device_slot() {
            return Err(Error::Unlock(UnlockError::DeviceKeyMissing));
        }
        let device_key = self.keychain.load_key(self.device_id.as_str(), Item::DeviceKey)?;
        if self.unlock_with(|file| file.open_with_device_key(&device_key))? {
            Attempts::reset(&self.profile)
        } else {
            // The keychain holds a key that is not this vault's (re-enrolled elsewhere).
            Err(Error::Unlock(UnlockError::DeviceKeyMissing))
        }
    }

    /// Unlocks with the password. Each wrong password is counted on disk before it is
    /// checked; from [`UnlockPolicy::backoff_from`] failures on, attempts must wait, and at
    /// [`UnlockPolicy::wipe_after`] the vault is wiped. No-op when already unlocked.
    pub fn unlock_with_password(&mut self, password: &Password) -> Result<()> {
        if self.is_unlocked() {
            return Ok(());
        }
        let key_file = self.read_key_file()?;
        let (before, counted) = self.begin_password_attempt()?;
        let password_key = key_file.kdf.derive(password, &key_file.salt)?;
        match self.unlock_with(|file| file.open_with_password_key(&password_key)) {
            Ok(true) => Attempts::reset(&self.profile),
            Ok(false) => Err(self.fail_password_attempt(counted)),
            // The password did unwrap the key (a damaged cache, say): it was no wrong guess.
            Err(e) => {
                before.save(&self.profile)?;
                Err(e)
            }
        }
    }

    /// Locks: closes the database and zeroizes `K_db`. Idempotent.
    pub fn lock(&mut self) {
        if let Some(OpenVault { conn, k_db }) = self.open.take() {
            let _ = conn.close();
            drop(k_db);
        }
    }

    /// The record store. [`UnlockError::Locked`] while locked.
    pub fn store(&mut self) -> Result<Store<'_>> {
        self.open
            .as_mut()
            .map(|open| Store::new(&mut open.conn))
            .ok_or(Error::Unlock(UnlockError::Locked))
    }

    /// Checks every page of the cache: SQLCipher's per-page HMACs, then SQLite's own
    /// structural check. [`CacheError::CorruptCache`] on any damage. Reads the whole file, so it
    /// belongs in the background, not on the unlock path.
    pub fn verify_integrity(&mut self) -> Result<()> {
        let open = self.open.as_mut().ok_or(Error::Unlock(UnlockError::Locked))?;
        db::verify_integrity(&open.conn)
    }

    /// Changes the password: re-wraps `K_db` under a key from `new` with a fresh salt. The
    /// database is untouched. `current` is checked (and counted) like an unlock.
    pub fn change_password(&mut self, current: &Password, new: &Password) -> Result<()> {
        let k_db = self.verify_password(current)?;
        let mut salt = [0u8; 16];
        crate::keys::random_bytes(&mut salt)?;
        let new_key = KdfParams::DEFAULT.derive(new, &salt)?;
        let file = self.read_key_file()?.with_password(&k_db, KdfParams::DEFAULT, salt, &new_key)?;
        self.profile.write_atomically(&self.profile.key_file(), &file.encode())
    }

    /// Replaces `K_db` with a new random key and re-encrypts every page (`PRAGMA rekey`).
    /// Needs the password (to re-wrap) and, if the vault has one, the keychain's device key.
    ///
    /// Crash-safe: the new key file is written aside first, and unlocking after an
    /// interrupted rotation finds whichever key the database was left under.
    pub fn rotate_database_key(&mut self, password: &Password) -> Result<()> {
        self.verify_password(password)?;
        let current = self.read_key_file()?;
        let device_key = if current.has_device_slot() {
            Some(self.keychain.load_key(self.device_id.as_str(), Item::DeviceKey)?)
        } else {
            None
        };
        let password_key = current.kdf.derive(password, &current.salt)?;
        let new_k_db = Key256::generate()?;
        let next = KeyFile::seal(
            self.user_id.as_str(),
            self.device_id.as_str(),
            current.kdf,
            current.salt,
            &new_k_db,
            &password_key,
            device_key.as_ref(),
        )?;
        self.profile.write_atomically(&self.profile.next_key_file(), &next.encode())?;
        let open = self.open.as_mut().ok_or(Error::Unlock(UnlockError::Locked))?;
        if let Err(e) = db::rekey(&open.conn, &new_k_db) {
            let _ = std::fs::remove_file(self.profile.next_key_file());
            return Err(e);
        }
        open.k_db = new_k_db;
        self.promote_next_key_file()
    }

    /// Stores a new device key in the keychain and wraps `K_db` under it: after
    /// [`UnlockError::DeviceKeyMissing`] and a password unlock, this restores unlock by presence.
    pub fn enroll_device_key(&mut self) -> Result<()> {
        let open = self.open.as_ref().ok_or(Error::Unlock(UnlockError::Locked))?;
        let device_key = Key256::generate()?;
        self.keychain.store_key(self.device_id.as_str(), Item::DeviceKey, &device_key)?;
        let file = self.read_key_file()?.with_device_key(&open.k_db, Some(&device_key))?;
        self.profile.write_atomically(&self.profile.key_file(), &file.encode())
    }

    /// Erases the vault: locks, then removes the database and its journals, the key files and
    /// counter, and the keychain items. Afterwards nothing of the profile is readable.
    pub fn wipe(&mut self) -> Result<WipeReport> {
        self.lock();
        wipe::wipe_profile(&self.profile, &self.keychain)
    }

    fn read_key_file(&self) -> Result<KeyFile> {
        self.profile.read_key_file()
    }

    /// Opens the database with the key `open_slot` unwraps. `Ok(false)`: the credential did
    /// not open the key file. Finishes a rotation that was cut off after the rekey.
    fn unlock_with(&mut self, open_slot: impl Fn(&KeyFile) -> Result<Option<Key256>>) -> Result<bool> {
        let Some(k_db) = open_slot(&self.read_key_file()?)? else { return Ok(false) };
        match db::open(&self.profile.db(), &k_db) {
            Ok(conn) => {
                // A rotation that died before its rekey leaves an unused next key file.
                let _ = std::fs::remove_file(self.profile.next_key_file());
                self.open = Some(OpenVault { conn, k_db });
                Ok(true)
            }
            Err(Error::Cache(CacheError::NotAVault)) => {
                let next = self.profile.read_next_key_file();
                let Ok(next) = next else { return Err(Error::Cache(CacheError::NotAVault)) };
                let Some(next_k_db) = open_slot(&next)? else { return Err(Error::Cache(CacheError::NotAVault)) };
                let conn = db::open(&self.profile.db(), &next_k_db)?;
                self.open = Some(OpenVault { conn, k_db: next_k_db });
                self.promote_next_key_file()?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    fn promote_next_key_file(&self) -> Result<()> {
        std::fs::rename(self.profile.next_key_file(), self.profile.key_file()).map_err(|e| Error::io("write", &e))?;
        crate::platform::sync_dir(self.profile.dir()).map_err(|e| Error::io("write", &e))
    }

    /// Checks the back-off and counts the attempt on disk *before* the password is tried,
    /// so killing the app mid-check does not hand out a free guess. Returns the counter as
    /// it was and as it now stands.
    fn begin_password_attempt(&mut self) -> Result<(Attempts, Attempts)> {
        let mut before = Attempts::load(&self.profile)?;
        if before.failures >= self.policy.wipe_after {
            let _report = self.wipe()?;
            return Err(Error::Unlock(UnlockError::WipedAfterFailedAttempts));
        }
        before.check_wait(&self.policy, self.clock.as_ref(), &self.profile)?;
        let counted = Attempts { failures: before.failures.saturating_add(1), last_failure: self.clock.now_unix() };
        counted.save(&self.profile)?;
        Ok((before, counted))
    }

    /// The error for a wrong password; wipes the vault when the limit is reached.
    fn fail_password_attempt(&mut self, counted: Attempts) -> Error {
        if counted.failures >= self.policy.wipe_after {
            return match self.wipe() {
                Ok(_) => Error::Unlock(UnlockError::WipedAfterFailedAttempts),
                Err(e) => e,
            };
        }
        Error::Unlock(UnlockError::WrongPassword { attempts_left: self.policy.wipe_after - counted.failures })
    }

    /// Checks `password` against the key file while unlocked (for sensitive changes),
    /// counting failures like an unlock. Returns `K_db`.
    fn verify_password(&mut self, password: &Password) -> Result<Key256> {
        let k_db = self.open.as_ref().ok_or(Error::Unlock(UnlockError::Locked))?.k_db.clone();
        let key_file = self.read_key_file()?;
        let (before, counted) = self.begin_password_attempt()?;
        let password_key = key_file.kdf.derive(password, &key_file.salt)?;
        match key_file.open_with_password_key(&password_key) {
            Ok(Some(unwrapped)) if unwrapped == k_db => {
                Attempts::reset(&self.profile)?;
                Ok(k_db)
            }
            Ok(None) => Err(self.fail_password_attempt(counted)),
            Ok(Some(_)) | Err(_) => {
                before.save(&self.profile)?;
                Err(Error::Cache(CacheError::KeyFileInvalid))
            }
        }
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        self.lock();
    }
}
