//! Keys derived from the master key, one per purpose, so no key ever does two jobs: the
//! document key-encryption key, the signed-URL key and the paging-token key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::ServerError;

/// A 256-bit key that is wiped when dropped.
pub type Key = Zeroizing<[u8; 32]>;

/// The purpose keys.
pub struct MasterKeys {
    /// Wraps each document's own key (AES-256-GCM).
    pub documents: Key,
    /// Signs download links (HMAC-SHA-256).
    pub links: Key,
    /// Seals paging tokens, so a next link reveals nothing of the search (AES-256-GCM).
    pub pages: Key,
    /// Derives the refresh token a rotation hands out (HMAC-SHA-256), so a device that
    /// lost the answer gets the same token again when it retries.
    pub rotations: Key,
    /// Keys sign-in budgets and signs device cookies (HMAC-SHA-256).
    pub sign_in: Key,
    /// Wraps each tenant's data key for PostgreSQL (AES-256-GCM).
    pub tenant_keys: Key,
    /// Keys the blind index of names in PostgreSQL (HMAC-SHA-256, per tenant).
    pub names: Key,
    /// Seals what PostgreSQL keeps of accounts — TOTP secrets, usernames, device names — and
    /// keys the username index there (AES-256-GCM, HMAC-SHA-256).
    pub accounts: Key,
}

impl MasterKeys {
    /// Derives the purpose keys: HMAC-SHA-256 of the master key over a purpose label.
    pub fn derive(master: &[u8]) -> Self {
        let derive = |label: &[u8]| -> Key {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes any key length");
            mac.update(b"carekeep.server.key.v1\0");
            mac.update(label);
            Zeroizing::new(mac.finalize().into_bytes().into())
        };
        Self {
            documents: derive(b"documents"),
            links: derive(b"links"),
            pages: derive(b"pages"),
            rotations: derive(b"refresh-rotations"),
            sign_in: derive(b"sign-in"),
            tenant_keys: derive(b"tenant-keys"),
            names: derive(b"names"),
            accounts: derive(b"accounts"),
        }
    }
}

/// Encrypts `plaintext` under `key` with a fresh random nonce, bound to `aad`:
/// the output is nonce ‖ ciphertext ‖ tag.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ServerError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    let cipher = Aes256Gcm::new(key.into());
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .map_err(|_| ServerError::KeyGeneration("encryption failed".into()))?;
    let mut out = Vec::with_capacity(12 + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Reverses [`seal`]; `None` if the bytes were altered, sealed under another key or for
/// another `aad`.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, body) = sealed.split_at_checked(12)?;
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .ok()
        .map(Zeroizing::new)
}

/// HMAC-SHA-256 of `parts` (each length-prefixed, so parts cannot run into each other).
pub fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    keyed(key, parts).finalize().into_bytes().into()
}

/// Checks `tag` against [`mac`] in constant time.
pub fn verify_mac(key: &[u8; 32], parts: &[&[u8]], tag: &[u8]) -> bool {
    keyed(key, parts).verify_slice(tag).is_ok()
}

fn keyed(key: &[u8; 32], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        mac.update(part);
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_different_keys_and_seal_round_trips() {
        let keys = MasterKeys::derive(&[7; 32]);
        assert_ne!(*keys.documents, *keys.links);
        assert_ne!(*keys.links, *keys.pages);
        let sealed = seal(&keys.pages, b"aad", b"secret").unwrap();
        assert_eq!(open(&keys.pages, b"aad", &sealed).unwrap().as_slice(), b"secret");
        assert!(open(&keys.pages, b"other", &sealed).is_none());
        assert!(open(&keys.documents, b"aad", &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(open(&keys.pages, b"aad", &flipped).is_none());
    }

    #[test]
    fn macs_are_length_prefixed_and_checked() {
        let key = [1; 32];
        let tag = mac(&key, &[b"ab", b"c"]);
        assert_ne!(tag, mac(&key, &[b"a", b"bc"]));
        assert!(verify_mac(&key, &[b"ab", b"c"], &tag));
        assert!(!verify_mac(&key, &[b"ab", b"d"], &tag));
    }
}
