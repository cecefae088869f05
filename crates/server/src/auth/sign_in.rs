//! The two sign-in steps: the password, then a TOTP code, which registers the device and
//! hands out its first tokens. Both steps are throttled by the same budget ([`throttle`]).

use std::net::IpAddr;

use carekeep_protocol::Secret;
use carekeep_protocol::auth::{LoginRequest, LoginResponse, MfaRequest, TokenResponse};

use super::secrets::{new_token, token_hash};
use super::session::RefreshToken;
use super::{Auth, AuthError, password, rules, store, throttle, totp};
use crate::ids::new_id;

impl Auth {
    /// Step one: the password, from `client`. Returns a short-lived challenge for step two.
    /// Known and unknown usernames take the same path: the same budget checks, the same
    /// KDF, the same failure counted.
    pub async fn login(&self, request: LoginRequest, client: IpAddr, now: i64) -> Result<LoginResponse, AuthError> {
        let budget = self
            .throttle
            .budget(&request.username, request.device_cookie.as_ref().map(Secret::expose));
        self.throttle.admit(client, &budget, now)?;
        let _checking = throttle::Throttle::one_at_a_time(&self.throttle, &budget)?;
        let (store, throttle) = (self.store.clone(), self.throttle.clone());
        let (username, held) = (request.username.clone(), budget.clone());
        let (user, waiting) = self
            .blocking(move || {
                let conn = store.lock();
                let user = store::user_by_name(&conn, &username)?;
                Ok((user, throttle.waiting(&conn, &held, now)?))
            })
            .await?;
        if let Some(retry_after_secs) = waiting {
            return Err(AuthError::Throttled { retry_after_secs });
        }
        let permit = self.kdf_permits.acquire().await.map_err(|_| AuthError::Internal)?;
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let password = request.password;
        let ok = tokio::task::spawn_blocking(move || password::verify(password.expose(), phc.as_deref()))
            .await
            .map_err(|_| AuthError::Internal)?;
        drop(permit);
        let Some(user) = user.filter(|u| ok && !u.disabled) else {
            self.fail(&budget, now).await?;
            return Err(AuthError::BadCredentials);
        };
        let token = new_token().map_err(|_| AuthError::Internal)?;
        let (store, hash, expires) = (self.store.clone(), token_hash(&token), now + self.policy.mfa_ttl_secs);
        let (bucket, known_device) = budget.to_stored();
        self.blocking(move || store::insert_challenge(&store.lock(), &hash, &user.id, expires, &bucket, known_device))
            .await?;
        Ok(LoginResponse { mfa_token: Secret::new(token) })
    }

    /// Step two: the TOTP code, from `client`. Registers the device and returns its first
    /// tokens, with a device cookie for its next password step. The code's step is claimed
    /// in one conditional update together with the challenge: of two requests with the
    /// same code at the same instant, one wins.
    pub async fn verify_mfa(&self, request: MfaRequest, client: IpAddr, now: i64) -> Result<TokenResponse, AuthError> {
        let store = self.store.clone();
        let hash = token_hash(request.mfa_token.expose());
        let found = self.blocking(move || store::challenge(&store.lock(), &hash)).await?;
        let Some(challenge) = found else {
            // A made-up challenge still costs its network an attempt.
            self.throttle.admit(client, &self.throttle.budget("", None), now)?;
            return Err(AuthError::ChallengeExpired);
        };
        let budget = challenge
            .bucket
            .and_then(|b| throttle::Budget::from_stored(&b, challenge.known_device))
            .unwrap_or_else(|| self.throttle.budget(&challenge.username, None));
        // A real challenge was paid for at the password step, on this network's window; its
        // code is throttled by the budget it carries. Counting it again would halve what a
        // clinic behind one address gets while the server is under attack.
        let _checking = throttle::Throttle::one_at_a_time(&self.throttle, &budget)?;
        let (store, throttle, held) = (self.store.clone(), self.throttle.clone(), budget.clone());
        if let Some(retry_after_secs) = self.blocking(move || throttle.waiting(&store.lock(), &held, now)).await? {
            return Err(AuthError::Throttled { retry_after_secs });
        }
        if !rules::challenge_open(challenge.expires_at, challenge.user_disabled, now) {
            return Err(AuthError::ChallengeExpired);
        }
        let Some(step) =
            totp::matching_step(&challenge.totp_secret, request.code.expose(), u64::try_from(now).unwrap_or(0))
        else {
            self.fail(&budget, now).await?;
            return Err(AuthError::BadCode);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let device_id = new_id("dev").map_err(|_| AuthError::Internal)?;
        let (store, hash, name, dev, claimed, user_id) = (
            self.store.clone(),
            token_hash(request.mfa_token.expose()),
            request.device_name,
            device_id.clone(),
            budget.clone(),
            challenge.user_id,
        );
        let outcome = self
            .blocking(move || {
                let mut conn = store.lock();
                let tx = conn.transaction()?;
                if !store::take_challenge(&tx, &hash)? {
                    return Ok(Err(AuthError::ChallengeExpired));
                }
                // The step is taken only if no request took it (or a later one) first. A code
                // used already is no guess: it does not count as a failure (after the
                // server's clock went back, every fresh code looks used).
                if !store::claim_step(&tx, &user_id, step)? {
                    return Ok(Err(AuthError::CodeAlreadyUsed));
                }
                throttle::Throttle::succeeded(&tx, &claimed)?;
                store::insert_device(&tx, &dev, &user_id, &name, now)?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?;
        outcome?;
        let mut tokens = self
            .issue_tokens(device_id, now, RefreshToken::New(new_token().map_err(|_| AuthError::Internal)?))
            .await?;
        tokens.device_cookie =
            Some(Secret::new(self.throttle.new_cookie(&challenge.username).map_err(|_| AuthError::Internal)?));
        Ok(tokens)
    }
}
