//! TOTP per RFC 6238: SHA-1, 6 digits, 30-second steps, one step of skew either way.

use totp_rs::{Algorithm, Builder, Totp};

use crate::ServerError;

/// A new 160-bit TOTP secret (RFC 4226 recommends 160 bits).
pub fn new_secret() -> Result<Vec<u8>, ServerError> {
    let mut secret = vec![0u8; 20];
    getrandom::fill(&mut secret).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    Ok(secret)
}

/// The TOTP generator for a secret; `account` names it in authenticator apps.
pub fn totp(secret: &[u8], account: &str) -> Result<Totp, ServerError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .with_issuer(Some("Carekeep"))
        .with_account_name(account)
        .build()
        .map_err(|e| ServerError::KeyGeneration(e.to_string()))
}

/// The step a code matches at `now` (±1 step), if any.
pub fn matching_step(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let totp = totp(secret, "check").ok()?;
    totp.check(code, now)
}
