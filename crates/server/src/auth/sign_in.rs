//! The two sign-in steps: the password, then a TOTP code, which registers the device and
//! hands out its first tokens. Both steps are throttled by the same budget ([`throttle`]).

use std::net::IpAddr;

use carekeep_protocol::Secret;
use carekeep_protocol::auth::{LoginRequest, LoginResponse, MfaRequest, TokenResponse};

use super::secrets::{new_token, token_hash};
use super::session::RefreshToken;
use super::store::{ChallengeRow, PassedSignIn};
use super::throttle::Budget;
use super::{Auth, AuthError, password, rules, totp};
use crate::ids::new_id;

impl Auth {
    /// Step one: the password, from `client`. Returns a short-lived challenge for step two.
    /// Known and unknown usernames take the same path: the same budget checks, the same
    /// KDF, the same failure counted.
    pub async fn login(&self, request: LoginRequest, client: IpAddr, now: i64) -> Result<LoginResponse, AuthError> {
        let budget = self
            .throttle
            .budget(&request.username, request.device_cookie.as_ref().map(Secret::expose));
        self.accounts.admit(&self.throttle, client, &budget, now).await?;
        // The hashing permit first: an attempt queued behind a login flood must not sit on
        // its budget's claim (which, shared between nodes, is a lease that runs out).
        let permit = self.kdf_permits.acquire().await.map_err(|_| AuthError::Internal)?;
        let checking = self.accounts.check_one(&self.throttle, &budget, now).await?;
        let answer = self.check_password(request, &budget, now).await;
        checking.release().await;
        drop(permit);
        answer
    }

    /// The password step, with its budget and a hashing permit held.
    async fn check_password(
        &self,
        request: LoginRequest,
        budget: &Budget,
        now: i64,
    ) -> Result<LoginResponse, AuthError> {
        let user = self.accounts.user_by_name(request.username.clone()).await?;
        if let Some(retry_after_secs) = self.accounts.waiting(budget, now).await? {
            return Err(AuthError::Throttled { retry_after_secs });
        }
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let password = request.password;
        let ok = tokio::task::spawn_blocking(move || password::verify(password.expose(), phc.as_deref()))
            .await
            .map_err(|_| AuthError::Internal)?;
        let Some(user) = user.filter(|u| ok && !u.disabled) else {
            self.fail(budget, now).await?;
            return Err(AuthError::BadCredentials);
        };
        let token = new_token().map_err(|_| AuthError::Internal)?;
        self.accounts
            .insert_challenge(token_hash(&token), user.tenant, user.id, now + self.policy.mfa_ttl_secs, budget)
            .await?;
        Ok(LoginResponse { mfa_token: Secret::new(token) })
    }

    /// Step two: the TOTP code, from `client`. Registers the device and returns its first
    /// tokens, with a device cookie for its next password step. The code's step is claimed
    /// in one conditional update together with the challenge: of two requests with the
    /// same code at the same instant, one wins.
    pub async fn verify_mfa(&self, request: MfaRequest, client: IpAddr, now: i64) -> Result<TokenResponse, AuthError> {
        let found = self.accounts.challenge(token_hash(request.mfa_token.expose())).await?;
        let Some(challenge) = found else {
            // A made-up challenge still costs its network an attempt.
            self.accounts
                .admit(&self.throttle, client, &self.throttle.budget("", None), now)
                .await?;
            return Err(AuthError::ChallengeExpired);
        };
        let budget = challenge
            .bucket
            .as_deref()
            .and_then(|b| Budget::from_stored(b, challenge.known_device))
            .unwrap_or_else(|| self.throttle.budget(&challenge.username, None));
        // A real challenge was paid for at the password step, on this network's window; its
        // code is throttled by the budget it carries. Counting it again would halve what a
        // clinic behind one address gets while the server is under attack.
        let checking = self.accounts.check_one(&self.throttle, &budget, now).await?;
        let answer = self.check_code(request, challenge, &budget, now).await;
        checking.release().await;
        answer
    }

    /// The code step, with its budget held.
    async fn check_code(
        &self,
        request: MfaRequest,
        challenge: ChallengeRow,
        budget: &Budget,
        now: i64,
    ) -> Result<TokenResponse, AuthError> {
        if let Some(retry_after_secs) = self.accounts.waiting(budget, now).await? {
            return Err(AuthError::Throttled { retry_after_secs });
        }
        if !rules::challenge_open(challenge.expires_at, challenge.user_disabled, now) {
            return Err(AuthError::ChallengeExpired);
        }
        let Some(step) =
            totp::matching_step(&challenge.totp_secret, request.code.expose(), u64::try_from(now).unwrap_or(0))
        else {
            self.fail(budget, now).await?;
            return Err(AuthError::BadCode);
        };
        let device_id = new_id("dev").map_err(|_| AuthError::Internal)?;
        let refresh = RefreshToken::New(new_token().map_err(|_| AuthError::Internal)?);
        let (mut tokens, issued) = self.new_tokens(challenge.tenant.clone(), device_id.clone(), now, refresh)?;
        self.accounts
            .pass_sign_in(
                PassedSignIn {
                    challenge_hash: token_hash(request.mfa_token.expose()),
                    tenant: challenge.tenant,
                    user_id: challenge.user_id.clone(),
                    step: i64::try_from(step).unwrap_or(i64::MAX),
                    totp_stored: challenge.totp_stored,
                    budget: budget.clone(),
                    device_id,
                    device_name: request.device_name,
                    now,
                },
                issued,
            )
            .await?;
        tokens.user_id = challenge.user_id;
        tokens.device_cookie =
            Some(Secret::new(self.throttle.new_cookie(&challenge.username).map_err(|_| AuthError::Internal)?));
        Ok(tokens)
    }
}
