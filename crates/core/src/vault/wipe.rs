//! Wiping a profile: crypto-shredding plus deletion.
//!
//! The database is encrypted under `K_db`, which exists only wrapped in the key file and
//! (transiently) in memory. Wiping overwrites and deletes the key files, deletes the database
//! and its journals, and removes the keychain items. A copy of the database taken before the
//! wipe is then unreadable, because no wrap of its key remains.

use std::io::Write;

use super::Profile;
use crate::keys::keyfile::KeyFile;
use crate::{Error, Keychain, Result};

/// What a wipe could and could not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct WipeReport {
    /// Whether the keychain items were removed (false when the keychain was unreachable;
    /// the device key left behind wraps nothing any more, since the key file is gone).
    pub keychain_cleared: bool,
}

/// Wipes the vault in `profile`, even one whose key file is damaged.
pub fn wipe_profile(profile: &Profile, keychain: &Keychain) -> Result<WipeReport> {
    let device_id = std::fs::read(profile.key_file())
        .ok()
        .and_then(|bytes| KeyFile::peek_device_id(&bytes));
    for key_file in [profile.key_file(), profile.next_key_file()] {
        overwrite(&key_file)?;
    }
    remove_files(profile)?;
    // Leave the directory if the user keeps other things in it.
    let _ = std::fs::remove_dir(profile.dir());
    let keychain_cleared = match device_id {
        Some(id) => keychain.delete_all(&id).is_ok(),
        None => true,
    };
    Ok(WipeReport { keychain_cleared })
}

/// Removes every file the vault owns; files already gone are fine.
pub(crate) fn remove_files(profile: &Profile) -> Result<()> {
    for path in profile.owned_files() {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("erase", &e)),
        }
    }
    Ok(())
}

/// Overwrites a small file with random bytes and syncs it, so the wrapped keys do not
/// linger in the file's old blocks where the file system overwrites in place.
fn overwrite(path: &std::path::Path) -> Result<()> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => usize::try_from(meta.len()).unwrap_or(0).min(1 << 16),
        Err(_) => return Ok(()),
    };
    let mut noise = vec![0u8; len];
    crate::keys::random_bytes(&mut noise)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("erase", &e))?;
    file.write_all(&noise)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("erase", &e))
}
