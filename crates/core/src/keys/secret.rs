//! Secret values that wipe themselves and never print.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A 256-bit symmetric key. Zeroized on drop; `Debug` prints no key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub(crate) struct Key256([u8; 32]);

impl Key256 {
    /// A fresh random key.
    pub(crate) fn generate() -> crate::Result<Self> {
        let mut key = Self([0; 32]);
        super::random_bytes(&mut key.0)?;
        Ok(key)
    }

    /// Takes ownership of raw key bytes (the caller's copy should be zeroized).
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for the cipher that uses them.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as SQLCipher's raw-key literal `x'…'` (64 hex digits), zeroized on drop.
    pub(crate) fn sqlcipher_literal(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(67));
        out.push_str("x'");
        super::push_hex(&mut out, &self.0);
        out.push('\'');
        out
    }
}

impl fmt::Debug for Key256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key256(<redacted>)")
    }
}

/// A password typed by the user. Zeroized on drop; `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password; the `String` moves in and is wiped when the `Password` drops.
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The text, for sending to the server once over TLS.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_secret() {
        let key = Key256::from_bytes([0xAB; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert_eq!(shown, "Key256(<redacted>)");
        let password = Password::new("hunter2-sentinel");
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn sqlcipher_literal_is_hex_of_the_key() {
        let key = Key256::from_bytes([0x0f; 32]);
        let literal = key.sqlcipher_literal();
        assert_eq!(literal.len(), 67);
        assert!(literal.starts_with("x'0f0f"));
        assert!(literal.ends_with("0f'"));
    }
}
