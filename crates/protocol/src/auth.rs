//! Sign-in: password, then TOTP, then tokens bound to a device (DESIGN.md §6).

use serde::{Deserialize, Serialize};

use crate::Secret;

/// What a user may do is decided by role (and, on the server, care team and tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees their own records and those they are proxy for.
    Patient,
    /// Sees patients on their care team; break-glass with a reason.
    Clinician,
    /// Sees patients on their care team.
    Nurse,
    /// Demographics and encounters, no clinical content.
    Billing,
    /// Manages users; reads no record.
    Admin,
}

impl Role {
    /// Every role, for tables and tests.
    pub const ALL: [Role; 5] = [Role::Patient, Role::Clinician, Role::Nurse, Role::Billing, Role::Admin];

    /// The role with this wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The role's name on the wire and in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::Billing => "billing",
            Role::Admin => "admin",
        }
    }
}

/// `POST /auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The account name.
    pub username: String,
    /// The password (sent once over TLS, never stored by the client).
    pub password: Secret,
    /// The device cookie this device was given at its last full sign-in as this user, if
    /// any: failed sign-ins from a known device count against its own budget, so strangers
    /// guessing the password cannot hold the owner back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_cookie: Option<Secret>,
}

/// Answer to a correct password: the second factor is still owed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Short-lived, single-use token naming the half-finished sign-in.
    pub mfa_token: Secret,
}

/// `POST /auth/mfa`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaRequest {
    /// From [`LoginResponse`].
    pub mfa_token: Secret,
    /// The 6-digit TOTP code.
    pub code: Secret,
    /// A name the user will recognise in their device list (no PHI).
    pub device_name: String,
}

/// Tokens after a full sign-in or a refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Bearer token for API calls; short-lived, kept in memory only.
    pub access_token: Secret,
    /// Rotates on every use; bound to the device; kept in the OS keychain.
    pub refresh_token: Secret,
    /// Seconds until the access token expires.
    pub expires_in: u32,
    /// The server's id for this device registration.
    pub device_id: String,
    /// The signed-in user's opaque id (it names their vault and their audit records).
    pub user_id: String,
    /// After a full sign-in: this device's cookie for this user, to send with the next
    /// password step ([`LoginRequest::device_cookie`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_cookie: Option<Secret>,
}

/// `POST /auth/refresh`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// The current refresh token (reusing an old one revokes the device session).
    pub refresh_token: Secret,
    /// The device the token is bound to.
    pub device_id: String,
    /// A random id the device keeps until it has stored the new refresh token: a retry with
    /// the same token and id (the answer was lost) gets the same new token, instead of
    /// looking like a stolen copy.
    #[serde(default)]
    pub rotation_id: Option<String>,
}

/// `POST /auth/logout`: revokes the device session on the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogoutRequest {
    /// The current refresh token.
    pub refresh_token: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_cross_the_wire_but_never_print() {
        let login =
            LoginRequest { username: "amy".into(), password: Secret::new("s3cret-sentinel"), device_cookie: None };
        let json = serde_json::to_string(&login).unwrap();
        assert_eq!(json, r#"{"username":"amy","password":"s3cret-sentinel"}"#);
        let back: LoginRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.password.expose(), "s3cret-sentinel");
        assert!(!format!("{back:?}").contains("sentinel"));
        let tokens = TokenResponse {
            access_token: Secret::new("at-sentinel"),
            refresh_token: Secret::new("rt-sentinel"),
            expires_in: 300,
            device_id: "d1".into(),
            user_id: "u1".into(),
            device_cookie: Some(Secret::new("dc-sentinel")),
        };
        assert!(!format!("{tokens:?}").contains("sentinel"));
    }

    #[test]
    fn roles_have_stable_wire_names() {
        for role in Role::ALL {
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{}\"", role.as_str()));
        }
    }
}

/// A device as its owner (or their admin) sees it in `GET /devices`: opaque ids and the
/// name given at sign-in, no PHI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device id.
    pub id: String,
    /// Whose device it is.
    pub user_id: String,
    /// The name given at sign-in.
    pub name: String,
    /// When it signed in (Unix seconds).
    pub created_at: i64,
    /// Last activity (Unix seconds).
    pub last_seen: i64,
    /// Signed out by the server.
    pub revoked: bool,
    /// Flagged to erase its cache.
    pub wipe: bool,
    /// Whether it is the device making the request.
    pub current: bool,
}

/// Answer to `POST /auth/mfa/enroll`: a new authenticator secret, pending until a code from
/// it is confirmed. It is a secret: show it to the user once and keep it nowhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    /// `otpauth://` URI for the authenticator app (holds the secret).
    pub otpauth_uri: Secret,
    /// The same as a QR code, PNG, base64.
    pub qr_png_base64: Secret,
}

/// `POST /auth/mfa/confirm`: a code from the new authenticator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmEnrollmentRequest {
    /// The 6-digit TOTP code.
    pub code: Secret,
}
