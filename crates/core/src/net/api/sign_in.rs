//! Signing in and what rides on it: the password and authenticator steps, token refresh,
//! signing out, the signed policy, and replacing the authenticator.

use base64::Engine as _;
use carekeep_protocol::Secret;
use carekeep_protocol::auth::{
    ConfirmEnrollmentRequest, Enrollment, LoginRequest, LoginResponse, LogoutRequest, MfaRequest, RefreshRequest,
    TokenResponse,
};
use carekeep_protocol::policy::{Policy, SignedPolicy};

use super::{Server, refusal};
use crate::error::ServerError;
use crate::{Error, Result};

/// The half-finished sign-in: the password was right, the authenticator code is owed.
#[derive(Debug)]
pub struct Challenge {
    mfa_token: Secret,
}

/// What a completed sign-in or refresh gives: the access token (keep in memory only), the
/// refresh token (keep in the keychain), and the server's id for this device.
pub type Tokens = TokenResponse;

impl Server {
    /// The password step. `device_cookie`: what this device was given at its last full
    /// sign-in as this user, so failed attempts elsewhere do not hold it back.
    pub async fn login(&self, username: &str, password: &str, device_cookie: Option<&Secret>) -> Result<Challenge> {
        let body = LoginRequest {
            username: username.to_owned(),
            password: Secret::new(password),
            device_cookie: device_cookie.cloned(),
        };
        let response: LoginResponse = self.send(self.http.post(self.url.join("/auth/login")).json(&body)).await?;
        Ok(Challenge { mfa_token: response.mfa_token })
    }

    /// The authenticator step: registers this device and returns its tokens.
    pub async fn verify_code(&self, challenge: Challenge, code: &str, device_name: &str) -> Result<Tokens> {
        let body =
            MfaRequest { mfa_token: challenge.mfa_token, code: Secret::new(code), device_name: device_name.to_owned() };
        self.send(self.http.post(self.url.join("/auth/mfa")).json(&body)).await
    }

    /// Rotates the refresh token: the one given is spent, whatever the outcome. Retrying
    /// with the same `rotation_id` after a lost answer gets the same new token.
    pub async fn refresh(&self, refresh_token: &Secret, device_id: &str, rotation_id: &str) -> Result<Tokens> {
        let body = RefreshRequest {
            refresh_token: refresh_token.clone(),
            device_id: device_id.to_owned(),
            rotation_id: Some(rotation_id.to_owned()),
        };
        self.send(self.http.post(self.url.join("/auth/refresh")).json(&body)).await
    }

    /// Ends this device's session on the server.
    pub async fn logout(&self, refresh_token: &Secret) -> Result<()> {
        let body = LogoutRequest { refresh_token: refresh_token.clone() };
        let response = self.exchange(self.http.post(self.url.join("/auth/logout")).json(&body)).await?;
        if response.status().is_success() { Ok(()) } else { Err(refusal(response).await) }
    }

    /// The tenant's policy for this user's role, verified against the server's signing key
    /// (which is trusted because it arrives over the pinned connection).
    pub async fn policy(&self, access_token: &Secret) -> Result<VerifiedPolicy> {
        let key: serde_json::Value = self.send(self.http.get(self.url.join("/policy/key"))).await?;
        let key = key["public_key"]
            .as_str()
            .ok_or(Error::Server(ServerError::PolicyInvalid))?
            .to_owned();
        let signed: SignedPolicy = self
            .send(self.http.get(self.url.join("/policy")).bearer_auth(access_token.expose()))
            .await?;
        VerifiedPolicy::verify(signed, key)
    }

    /// Starts replacing the user's authenticator: a new secret, pending until confirmed.
    /// Needs a recent full sign-in ([`ServerError::StepUpRequired`] otherwise).
    pub async fn begin_enrollment(&self, access_token: &Secret) -> Result<Enrollment> {
        self.send(
            self.http
                .post(self.url.join("/auth/mfa/enroll"))
                .bearer_auth(access_token.expose()),
        )
        .await
    }

    /// Makes the pending authenticator the only one, given a code from it.
    pub async fn confirm_enrollment(&self, access_token: &Secret, code: &str) -> Result<()> {
        let body = ConfirmEnrollmentRequest { code: Secret::new(code) };
        let request = self
            .http
            .post(self.url.join("/auth/mfa/confirm"))
            .bearer_auth(access_token.expose())
            .json(&body);
        let response = self.exchange(request).await?;
        if response.status().is_success() { Ok(()) } else { Err(refusal(response).await) }
    }
}

/// A policy whose signature held, kept with what proves it so it can be cached and checked
/// again offline.
#[derive(Debug, Clone)]
pub struct VerifiedPolicy {
    /// The policy as signed.
    pub signed: SignedPolicy,
    /// The server's Ed25519 public key (base64), as the pinned connection delivered it.
    pub key: String,
    /// The policy read from `signed`.
    pub policy: Policy,
}

impl VerifiedPolicy {
    /// Checks `signed` against `key` (base64 Ed25519).
    pub fn verify(signed: SignedPolicy, key: String) -> Result<Self> {
        let verifying = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
            .ok_or(Error::Server(ServerError::PolicyInvalid))?;
        let policy = signed
            .verify(&verifying)
            .map_err(|_| Error::Server(ServerError::PolicyInvalid))?;
        Ok(Self { signed, key, policy })
    }
}
