//! The OS keychain, through `keyring`: Secret Service on Linux, Keychain on macOS, Credential
//! Manager on Windows (the backend is chosen per target in `Cargo.toml`).
//!
//! Items are named `<device id>/<purpose>` under one service name, so a profile's items can be
//! found and removed together.

use zeroize::Zeroizing;

use crate::error::UnlockError;
use crate::keys::Key256;
use crate::{Error, Result};

/// A handle on the OS keychain under one service name.
#[derive(Debug, Clone)]
pub struct Keychain {
    service: String,
}

impl Default for Keychain {
    fn default() -> Self {
        Self::os()
    }
}

/// What a keychain item holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Item {
    /// The device key that wraps `K_db`.
    DeviceKey,
    /// The server's refresh token (access tokens are never stored).
    RefreshToken,
}

impl Item {
    fn name(self) -> &'static str {
        match self {
            Item::DeviceKey => "device-key",
            Item::RefreshToken => "refresh-token",
        }
    }

    const ALL: [Item; 2] = [Item::DeviceKey, Item::RefreshToken];
}

impl Keychain {
    /// The keychain as the app uses it (service `carekeep`).
    pub fn os() -> Self {
        Self::with_service("carekeep")
    }

    /// A keychain under another service name: for several installs side by side, and tests.
    pub fn with_service(service: impl Into<String>) -> Self {
        Self { service: service.into() }
    }

    /// The service name items are stored under.
    pub fn service(&self) -> &str {
        &self.service
    }

    fn entry(&self, device_id: &str, item: Item) -> Result<keyring::Entry> {
        keyring::Entry::new(&self.service, &format!("{device_id}/{}", item.name())).map_err(|e| map_error(&e))
    }

    pub(crate) fn store_key(&self, device_id: &str, item: Item, key: &Key256) -> Result<()> {
        self.entry(device_id, item)?.set_secret(key.expose()).map_err(|e| map_error(&e))
    }

    pub(crate) fn load_key(&self, device_id: &str, item: Item) -> Result<Key256> {
        let secret = Zeroizing::new(self.entry(device_id, item)?.get_secret().map_err(|e| map_error(&e))?);
        let bytes: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| Error::Unlock(UnlockError::DeviceKeyMissing))?;
        Ok(Key256::from_bytes(bytes))
    }

    pub(crate) fn store_secret(&self, device_id: &str, item: Item, secret: &str) -> Result<()> {
        self.entry(device_id, item)?.set_password(secret).map_err(|e| map_error(&e))
    }

    pub(crate) fn load_secret(&self, device_id: &str, item: Item) -> Result<Zeroizing<String>> {
        self.entry(device_id, item)?
            .get_password()
            .map(Zeroizing::new)
            .map_err(|e| map_error(&e))
    }

    /// Removes every item of a device. Items already gone are fine.
    pub(crate) fn delete_all(&self, device_id: &str) -> Result<()> {
        for item in Item::ALL {
            match self.entry(device_id, item)?.delete_credential() {
                Ok(()) | Err(keyring::Error::NoEntry) => {}
                Err(e) => return Err(map_error(&e)),
            }
        }
        Ok(())
    }
}

/// Maps keyring's errors to the two cases a user can act on: not reachable, or not there.
fn map_error(err: &keyring::Error) -> Error {
    match err {
        keyring::Error::NoEntry | keyring::Error::BadEncoding(_) | keyring::Error::Ambiguous(_) => {
            Error::Unlock(UnlockError::DeviceKeyMissing)
        }
        _ => Error::Unlock(UnlockError::KeychainUnavailable),
    }
}
