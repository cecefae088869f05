//! Password hashes: Argon2id in PHC string form (parameters travel with each hash).

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::ServerError;

fn argon2() -> Argon2<'static> {
    // m = 64 MiB, t = 3, p = 1, as the app's own password key (DESIGN.md §2).
    let params = Params::new(64 * 1024, 3, 1, None).expect("constant parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a new password with a fresh random salt.
pub fn hash(password: &str) -> Result<String, ServerError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServerError::KeyGeneration(e.to_string()))
}

/// Whether `password` matches `phc`. With `None` (no such user) a dummy hash is checked, so
/// unknown and known usernames take the same time.
pub fn verify(password: &str, phc: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("carekeep dummy password").unwrap_or_default());
    let known = phc.is_some();
    let Ok(parsed) = PasswordHash::new(phc.unwrap_or(dummy)) else { return false };
    argon2().verify_password(password.as_bytes(), &parsed).is_ok() && known
}
