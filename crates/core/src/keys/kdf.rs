//! The password key: Argon2id over the user's password and a per-user salt.

use argon2::{Algorithm, Argon2, Params, Version};

use super::Key256;
use crate::error::CacheError;
use crate::{Error, Password, Result};

/// Argon2id cost parameters, stored in the key file so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The floor DESIGN.md §2 sets (m = 64 MiB, t = 3, p = 1). A key file asking for less
    /// is refused, so an attacker cannot downgrade the work factor by editing it.
    pub const MINIMUM: Self = Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };

    /// What new vaults use.
    pub const DEFAULT: Self = Self::MINIMUM;

    /// Whether these parameters meet [`KdfParams::MINIMUM`] and stay within sane bounds.
    pub fn is_acceptable(self) -> bool {
        self.memory_kib >= Self::MINIMUM.memory_kib
            && self.memory_kib <= 4 * 1024 * 1024
            && self.iterations >= Self::MINIMUM.iterations
            && self.iterations <= 64
            && self.parallelism == 1
    }

    /// Derives the 256-bit password key.
    pub(crate) fn derive(self, password: &Password, salt: &[u8; 16]) -> Result<Key256> {
        if !self.is_acceptable() {
            return Err(Error::Cache(CacheError::KeyFileInvalid));
        }
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|_| Error::Cache(CacheError::KeyFileInvalid))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password.as_bytes(), salt, &mut out)
            .map_err(|_| Error::InvalidArgument { what: "password", problem: "it is too long" })?;
        Ok(Key256::from_bytes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_input_same_key_other_salt_other_key() {
        let p = Password::new("correct horse");
        let a = KdfParams::DEFAULT.derive(&p, &[1; 16]).unwrap();
        let b = KdfParams::DEFAULT.derive(&p, &[1; 16]).unwrap();
        let c = KdfParams::DEFAULT.derive(&p, &[2; 16]).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn weak_parameters_are_refused() {
        let weak = KdfParams { memory_kib: 8 * 1024, ..KdfParams::DEFAULT };
        assert!(!weak.is_acceptable());
        assert!(matches!(weak.derive(&Password::new("x"), &[0; 16]), Err(Error::Cache(CacheError::KeyFileInvalid))));
    }
}
