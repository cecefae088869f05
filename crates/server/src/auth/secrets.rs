//! Random identifiers and tokens. Tokens are stored only as SHA-256 hashes, so a copy of the
//! store does not hand out sessions.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::ServerError;

/// A 256-bit random bearer token, base64url.
pub fn new_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

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

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
