//! Opaque ids for rows and resources (users, devices, records, exports, documents). They are
//! not secrets, so they live apart from the sign-in tokens in [`crate::auth::secrets`].

use crate::ServerError;

/// An opaque id: a prefix and 128 random bits in hex (never derived from names or PHI).
pub fn new_id(prefix: &str) -> Result<String, ServerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    let mut id = format!("{prefix}-");
    push_hex(&mut id, &bytes);
    Ok(id)
}

/// Appends `bytes` as lowercase hex.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_128_bits_of_hex() {
        let id = new_id("dev").unwrap();
        let hex = id.strip_prefix("dev-").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(id, new_id("dev").unwrap());
    }

    #[test]
    fn hex_is_lowercase_and_zero_padded() {
        let mut out = String::from("x");
        push_hex(&mut out, &[0x00, 0x0a, 0xff]);
        assert_eq!(out, "x000aff");
    }
}
