//! The key hierarchy of DESIGN.md §2.
//!
//! `K_db` (random, 256 bits) opens the SQLCipher cache. It is stored only wrapped with
//! AES-256-GCM: once under the device key from the OS keychain, once under a key derived from
//! the password with Argon2id. Both wraps live in one versioned key file (`keyfile`).

use crate::error::CacheError;
mod kdf;
pub(crate) mod keyfile;
mod secret;
mod wrap;

pub use kdf::KdfParams;
pub(crate) use secret::Key256;
pub use secret::Password;
pub(crate) use wrap::WrappedKey;

/// Appends `bytes` to `out` as lowercase hex.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
}

/// A random 128-bit identifier as 32 hex digits (idempotency keys, nonces in URLs).
pub(crate) fn random_token() -> crate::Result<String> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes)?;
    let mut out = String::with_capacity(32);
    push_hex(&mut out, &bytes);
    Ok(out)
}

/// Fills `buf` from the operating system's random number generator.
pub(crate) fn random_bytes(buf: &mut [u8]) -> crate::Result<()> {
    getrandom::fill(buf).map_err(|_| crate::Error::Cache(CacheError::Randomness))
}
