//! Signed download links: a URL that works for 15 minutes, for one user and one object.
//! The signature is HMAC-SHA-256 over (user, tenant, object, expiry) with a key derived from
//! the master key; the download also needs that user's bearer token, so a leaked link is
//! useless to anyone else and worthless after it expires.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::keys;

/// How long a download link works.
pub const LINK_SECS: i64 = 15 * 60;

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Signed, but too late.
    #[error("This download link has expired; ask for a new one.")]
    Expired,
    /// Not signed by this server for this user and object.
    #[error("This download link is not valid for you; ask for a new one.")]
    Invalid,
}

/// The signature for a link to `object` for `user` in `tenant`, valid until `expires`.
pub fn sign(key: &[u8; 32], user: &str, tenant: &str, object: &str, expires: i64) -> String {
    let expires = expires.to_string();
    URL_SAFE_NO_PAD.encode(keys::mac(key, &[user.as_bytes(), tenant.as_bytes(), object.as_bytes(), expires.as_bytes()]))
}

/// Checks a link's signature and expiry.
pub fn verify(
    key: &[u8; 32],
    user: &str,
    tenant: &str,
    object: &str,
    expires: i64,
    signature: &str,
    now: i64,
) -> Result<(), LinkError> {
    let tag = URL_SAFE_NO_PAD.decode(signature).map_err(|_| LinkError::Invalid)?;
    let expires_text = expires.to_string();
    let parts: [&[u8]; 4] = [user.as_bytes(), tenant.as_bytes(), object.as_bytes(), expires_text.as_bytes()];
    if !keys::verify_mac(key, &parts, &tag) {
        return Err(LinkError::Invalid);
    }
    if expires <= now {
        return Err(LinkError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_bind_user_tenant_object_and_time() {
        let key = [3; 32];
        let sig = sign(&key, "u1", "t1", "d1", 1000);
        assert_eq!(verify(&key, "u1", "t1", "d1", 1000, &sig, 999), Ok(()));
        assert_eq!(verify(&key, "u1", "t1", "d1", 1000, &sig, 1000), Err(LinkError::Expired));
        assert_eq!(verify(&key, "u2", "t1", "d1", 1000, &sig, 999), Err(LinkError::Invalid));
        assert_eq!(verify(&key, "u1", "t2", "d1", 1000, &sig, 999), Err(LinkError::Invalid));
        assert_eq!(verify(&key, "u1", "t1", "d2", 1000, &sig, 999), Err(LinkError::Invalid));
        assert_eq!(verify(&key, "u1", "t1", "d1", 2000, &sig, 999), Err(LinkError::Invalid));
        assert_eq!(verify(&key, "u1", "t1", "d1", 1000, "not base64!", 999), Err(LinkError::Invalid));
    }
}
