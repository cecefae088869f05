//! AES-256-GCM key wrapping: a 256-bit key sealed under a key-encryption key, bound to its
//! context through the associated data.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use zeroize::Zeroize;

use super::Key256;
use crate::Result;
use crate::error::CacheError;

/// A wrapped 256-bit key: a random 96-bit nonce, the ciphertext and the GCM tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WrappedKey {
    pub(crate) nonce: [u8; 12],
    /// 32 bytes of ciphertext followed by the 16-byte tag.
    pub(crate) sealed: [u8; 48],
}

impl WrappedKey {
    /// Encoded length in a key file.
    pub(crate) const LEN: usize = 12 + 48;

    /// Seals `key` under `kek` with a fresh random nonce, binding `aad`.
    pub(crate) fn seal(kek: &Key256, key: &Key256, aad: &[u8]) -> Result<Self> {
        let mut nonce = [0u8; 12];
        super::random_bytes(&mut nonce)?;
        let cipher = Aes256Gcm::new(kek.expose().into());
        let mut sealed = [0u8; 48];
        sealed[..32].copy_from_slice(key.expose());
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut sealed[..32])
            .map_err(|_| crate::Error::Cache(CacheError::Randomness))?;
        sealed[32..].copy_from_slice(&tag);
        Ok(Self { nonce, sealed })
    }

    /// Opens the wrap; `None` when the key, nonce, ciphertext, tag or `aad` differ in any bit.
    pub(crate) fn open(&self, kek: &Key256, aad: &[u8]) -> Option<Key256> {
        let cipher = Aes256Gcm::new(kek.expose().into());
        let mut plain = [0u8; 32];
        plain.copy_from_slice(&self.sealed[..32]);
        let tag = Tag::from_slice(&self.sealed[32..]);
        if cipher
            .decrypt_in_place_detached(Nonce::from_slice(&self.nonce), aad, &mut plain, tag)
            .is_err()
        {
            plain.zeroize();
            return None;
        }
        Some(Key256::from_bytes(plain))
    }

    pub(crate) fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..12].copy_from_slice(&self.nonce);
        out[12..].copy_from_slice(&self.sealed);
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8; Self::LEN]) -> Self {
        let mut nonce = [0u8; 12];
        let mut sealed = [0u8; 48];
        nonce.copy_from_slice(&bytes[..12]);
        sealed.copy_from_slice(&bytes[12..]);
        Self { nonce, sealed }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keys(kek: [u8; 32], key: [u8; 32]) -> (Key256, Key256) {
        (Key256::from_bytes(kek), Key256::from_bytes(key))
    }

    proptest! {
        #[test]
        fn round_trip(kek in any::<[u8; 32]>(), key in any::<[u8; 32]>(), aad in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (kek, key) = keys(kek, key);
            let wrapped = WrappedKey::seal(&kek, &key, &aad).unwrap();
            prop_assert_eq!(wrapped.open(&kek, &aad), Some(key));
        }

        #[test]
        fn any_bit_flip_in_nonce_or_ciphertext_is_rejected(kek in any::<[u8; 32]>(), key in any::<[u8; 32]>(), bit in 0usize..(WrappedKey::LEN * 8)) {
            let (kek, key) = keys(kek, key);
            let wrapped = WrappedKey::seal(&kek, &key, b"aad").unwrap();
            let mut bytes = wrapped.to_bytes();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(WrappedKey::from_bytes(&bytes).open(&kek, b"aad"), None);
        }

        #[test]
        fn any_bit_flip_in_aad_is_rejected(kek in any::<[u8; 32]>(), key in any::<[u8; 32]>(), aad in proptest::collection::vec(any::<u8>(), 1..100), pick in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (kek, key) = keys(kek, key);
            let wrapped = WrappedKey::seal(&kek, &key, &aad).unwrap();
            let mut other = aad.clone();
            other[pick.index(aad.len())] ^= 1 << bit;
            prop_assert_eq!(wrapped.open(&kek, &other), None);
        }

        #[test]
        fn another_kek_is_rejected(kek in any::<[u8; 32]>(), other in any::<[u8; 32]>(), key in any::<[u8; 32]>()) {
            prop_assume!(kek != other);
            let (kek, key) = keys(kek, key);
            let wrapped = WrappedKey::seal(&kek, &key, b"").unwrap();
            prop_assert_eq!(wrapped.open(&Key256::from_bytes(other), b""), None);
        }
    }
}
