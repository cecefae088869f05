//! Replacing a user's authenticator: a new TOTP secret kept pending until a code from it
//! confirms it, so a slip half-way leaves the old one working. Both steps need a recent
//! full sign-in (step-up), since whoever holds the authenticator holds the account.

use carekeep_protocol::Secret;

use super::{Auth, AuthError, Enrollment, Principal, qr, rules, totp};

impl Auth {
    /// Starts replacing the caller's authenticator: a new secret, pending until confirmed with
    /// a code from it. Needs a full sign-in within [`super::AuthPolicy::step_up_secs`].
    pub async fn begin_enrollment(&self, caller: &Principal, now: i64) -> Result<Enrollment, AuthError> {
        use base64::Engine as _;
        self.require_step_up(caller, now).await?;
        let secret = totp::new_secret().map_err(|_| AuthError::Internal)?;
        let username = self
            .accounts
            .begin_totp(caller.tenant.clone(), caller.user_id.clone(), secret.clone())
            .await?;
        let generator = totp::totp(&secret, &username).map_err(|_| AuthError::Internal)?;
        let uri = generator.to_url().map_err(|_| AuthError::Internal)?;
        let png = qr::png(&uri).map_err(|_| AuthError::Internal)?;
        Ok(Enrollment {
            qr_png_base64: Secret::new(base64::engine::general_purpose::STANDARD.encode(png)),
            otpauth_uri: Secret::new(uri),
        })
    }

    /// Confirms the pending authenticator with a code from it; from then on only it works.
    pub async fn confirm_enrollment(&self, caller: &Principal, code: &str, now: i64) -> Result<(), AuthError> {
        self.require_step_up(caller, now).await?;
        let (pending, stored) = self
            .accounts
            .pending_totp(caller.tenant.clone(), caller.user_id.clone())
            .await?
            .ok_or(AuthError::NoEnrollment)?;
        // A session holder who started the change holds the new secret: a wrong code here
        // is no guess at anyone's account (the route is limited per network all the same).
        let Some(step) = totp::matching_step(&pending, code, u64::try_from(now).unwrap_or(0)) else {
            return Err(AuthError::BadCode);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        self.accounts
            .confirm_totp(caller.tenant.clone(), caller.user_id.clone(), stored, step)
            .await
    }

    /// Refuses unless the caller's device made a full sign-in (password and code) within
    /// [`super::AuthPolicy::step_up_secs`]: what high-risk actions need (DESIGN.md §3).
    pub async fn require_step_up(&self, caller: &Principal, now: i64) -> Result<(), AuthError> {
        let full_auth_at = self
            .accounts
            .full_auth_at(caller.tenant.clone(), caller.device_id.clone())
            .await?;
        rules::step_up(full_auth_at, self.policy.step_up_secs, now)
    }
}
