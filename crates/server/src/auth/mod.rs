//! Sign-in (DESIGN.md §6): password, then a TOTP code, then tokens bound to a device.
//!
//! - Passwords are Argon2id; unknown usernames cost the same as known ones, and are
//!   throttled alike. The KDF runs under a semaphore, so a login flood queues instead of
//!   starving other requests.
//! - A TOTP code is accepted once: the step it matched is claimed in one conditional update,
//!   so two requests with the same code at the same instant cannot both succeed.
//! - Wrong passwords and wrong codes slow the next attempt down ([`throttle`]): per account
//!   for unknown devices, per device for those that signed in before, per network and per
//!   server minute. Nothing locks an account: a stranger cannot shut its owner out.
//! - Access tokens live [`AuthPolicy::access_ttl_secs`]; refresh tokens rotate on every use,
//!   and presenting a used one revokes the whole device session (it was stolen, or copied).
//! - A device idle longer than its tenant's limit for the user's role (default
//!   [`AuthPolicy::idle_secs`]) must sign in again. Activity is recorded at most every
//!   [`LAST_SEEN_EVERY`] seconds, so a read costs no write.
//!
//! Time is a parameter (`now`, Unix seconds) so every rule is tested without sleeping.

mod devices;
pub mod password;
pub mod qr;
mod rules;
pub mod secrets;
mod store;
pub mod throttle;
pub mod totp;

use std::net::IpAddr;
use std::sync::Arc;

use carekeep_protocol::Secret;
use carekeep_protocol::auth::{
    LoginRequest, LoginResponse, LogoutRequest, MfaRequest, RefreshRequest, Role, TokenResponse,
};
use tokio::sync::Semaphore;

use crate::ids::new_id;
use crate::store::Store;
use secrets::{new_token, token_hash};

/// Activity is written to the device row at most this often (seconds): idle limits are
/// minutes long, and a write per request would serialise reads behind the writer.
pub const LAST_SEEN_EVERY: i64 = 30;

/// The sign-in rules. Defaults follow DESIGN.md §6.
#[derive(Debug, Clone, Copy)]
pub struct AuthPolicy {
    /// How failed sign-ins slow the next ones down.
    pub throttle: throttle::ThrottlePolicy,
    /// Access token lifetime.
    pub access_ttl_secs: i64,
    /// How long the second step may wait after the password.
    pub mfa_ttl_secs: i64,
    /// A device unused for this long must sign in again, unless the tenant set a limit for
    /// the user's role (`tenant idle`, table `idle_limits`).
    pub idle_secs: i64,
    /// High-risk actions (changing the authenticator) need a full sign-in this recent.
    pub step_up_secs: i64,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            throttle: throttle::ThrottlePolicy::default(),
            access_ttl_secs: 5 * 60,
            mfa_ttl_secs: 5 * 60,
            idle_secs: 15 * 60,
            step_up_secs: 5 * 60,
        }
    }
}

/// Why sign-in failed. The words are safe to show: they never say whether a username exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong username or password.
    #[error("The username or password is not correct.")]
    BadCredentials,
    /// Too many failures for this account from devices it does not know (or from this
    /// device): the next attempt must wait.
    #[error(
        "Too many failed sign-ins for this account: wait {retry_after_secs} seconds, then try again. A device you \
         signed in from before is not held back."
    )]
    Throttled {
        /// Seconds until the next attempt is taken.
        retry_after_secs: i64,
    },
    /// Too many attempts from this network, or for the whole server, this minute.
    #[error("Too many sign-in attempts from this network. Wait {retry_after_secs} seconds, then try again.")]
    RateLimited {
        /// Seconds until the window turns.
        retry_after_secs: i64,
    },
    /// The TOTP code is wrong.
    #[error("The authenticator code is not correct.")]
    BadCode,
    /// The TOTP code was valid but has been used already.
    #[error("That authenticator code was used already. Wait for the next one.")]
    CodeAlreadyUsed,
    /// A person (an admin, the user, or the account being disabled) revoked this device:
    /// its app erases its cache.
    #[error("This device was signed out by your organisation. Its copy of your records is being erased.")]
    DeviceRevoked,
    /// The password step is too old, or unknown.
    #[error("The sign-in took too long. Start again with your password.")]
    ChallengeExpired,
    /// The token is unknown, expired, used or revoked.
    #[error("Your session has ended. Sign in again.")]
    SessionEnded,
    /// The access token expired: refresh it.
    #[error("The access token expired. Refresh it and retry.")]
    AccessExpired,
    /// The device was flagged for remote wipe: the client must erase its cache now.
    #[error("This device was signed out and must erase its copy of the records.")]
    DeviceWipe,
    /// A high-risk action needs a fresh full sign-in first.
    #[error("For this, sign in again with your password and authenticator code first.")]
    StepUpRequired,
    /// Confirming an authenticator that was never started.
    #[error("Start the authenticator set-up first.")]
    NoEnrollment,
    /// Something failed on the server's side.
    #[error("The server could not complete the sign-in. Try again later.")]
    Internal,
}

pub use carekeep_protocol::auth::{DeviceInfo, Enrollment};

/// The sign-in service.
pub struct Auth {
    store: Arc<Store>,
    policy: AuthPolicy,
    kdf_permits: Semaphore,
    rotation_key: zeroize::Zeroizing<[u8; 32]>,
    throttle: Arc<throttle::Throttle>,
}

/// The refresh token an issue hands out.
enum RefreshToken {
    /// A new one, recorded now.
    New(String),
    /// One already recorded and never used, handed out again (a lost answer's retry).
    Reissue(String),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user_id: String,
    /// Their tenant: every query is filtered by it.
    pub tenant: String,
    /// Their role.
    pub role: Role,
    /// The device the request came from.
    pub device_id: String,
    /// How long this user's devices may stay unused (the tenant's limit for the role, or
    /// the server default): the signed policy's idle lock never exceeds it.
    pub idle_secs: i64,
}

impl From<throttle::Held> for AuthError {
    fn from(held: throttle::Held) -> Self {
        match held {
            throttle::Held::Throttled(retry_after_secs) => AuthError::Throttled { retry_after_secs },
            throttle::Held::RateLimited(retry_after_secs) => AuthError::RateLimited { retry_after_secs },
        }
    }
}

impl Auth {
    /// A service over `store`. At most `kdf_concurrency` password hashes run at once.
    /// Without [`Auth::with_keys`], rotations are retryable and device cookies valid only
    /// until a restart.
    pub fn new(store: Arc<Store>, policy: AuthPolicy, kdf_concurrency: usize) -> Self {
        let random = || {
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            // Without randomness the key is zeros: retries still work; tokens stay random.
            let _ = getrandom::fill(key.as_mut_slice());
            key
        };
        Self {
            store,
            policy,
            kdf_permits: Semaphore::new(kdf_concurrency.max(1)),
            rotation_key: random(),
            throttle: Arc::new(throttle::Throttle::new(policy.throttle, random())),
        }
    }

    /// Uses the data directory's keys: rotated refresh tokens (so retries of a lost
    /// rotation keep working across restarts) and sign-in budgets and device cookies.
    #[must_use]
    pub fn with_keys(mut self, keys: &crate::keys::MasterKeys) -> Self {
        self.rotation_key = zeroize::Zeroizing::new(*keys.rotations);
        self.throttle = Arc::new(throttle::Throttle::new(self.policy.throttle, zeroize::Zeroizing::new(*keys.sign_in)));
        self
    }

    /// The sign-in throttle (the routes that check codes outside sign-in share its
    /// per-network window).
    pub fn throttle(&self) -> &throttle::Throttle {
        &self.throttle
    }

    /// The refresh token a rotation of `spent_hash` with `rotation_id` hands out: derived,
    /// not random, so a device that lost the answer gets the same token when it retries.
    fn successor(&self, spent_hash: &[u8], rotation_id: &str) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(self.rotation_key.as_slice())
            .expect("HMAC takes any key length");
        mac.update(b"carekeep.refresh.rotation.v1\0");
        mac.update(spent_hash);
        mac.update(rotation_id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Step one: the password, from `client`. Returns a short-lived challenge for step two.
    /// Known and unknown usernames take the same path: the same budget checks, the same
    /// KDF, the same failure counted.
    pub async fn login(&self, request: LoginRequest, client: IpAddr, now: i64) -> Result<LoginResponse, AuthError> {
        let budget = self.throttle.budget(&request.username, request.device_cookie.as_ref().map(Secret::expose));
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
        let mut tokens =
            self.issue_tokens(device_id, now, RefreshToken::New(new_token().map_err(|_| AuthError::Internal)?)).await?;
        tokens.device_cookie =
            Some(Secret::new(self.throttle.new_cookie(&challenge.username).map_err(|_| AuthError::Internal)?));
        Ok(tokens)
    }

    /// Rotates a refresh token. Presenting one that was already used revokes the device.
    pub async fn refresh(&self, request: RefreshRequest, now: i64) -> Result<TokenResponse, AuthError> {
        let store = self.store.clone();
        let spent_hash = token_hash(request.refresh_token.expose());
        let hash = spent_hash.clone();
        let found = self.blocking(move || store::refresh_token(&store.lock(), &hash)).await?;
        let Some(row) = found else { return Err(AuthError::SessionEnded) };
        let idle_secs = rules::idle_secs(row.session.idle_limit, self.policy.idle_secs);
        let rotation_id = request.rotation_id.filter(|r| !r.is_empty() && r.len() <= 128);
        let device_id = row.session.device_id.clone();
        match rules::refresh(&row, &request.device_id, rotation_id.is_some(), idle_secs, now) {
            rules::Refresh::Refuse(refused) => Err(refused),
            rules::Refresh::CheckRetry => {
                // A rotated-out token came back. With the rotation id of the rotation that
                // spent it, and that rotation's token never used, it is the same device
                // retrying after losing the answer: it gets the same token again. Otherwise
                // someone holds a copy: the device session ends.
                let rotation_id = rotation_id.as_deref().unwrap_or_default();
                let successor = self.successor(&spent_hash, rotation_id);
                let (store, successor_hash, dev) = (self.store.clone(), token_hash(&successor), device_id.clone());
                let successor_used =
                    self.blocking(move || store::refresh_used(&store.lock(), &successor_hash, &dev)).await?;
                if rules::retry(successor_used, &row.session, idle_secs, now) {
                    return self.issue_tokens(device_id, now, RefreshToken::Reissue(successor)).await;
                }
                self.end_device(device_id).await?;
                Err(AuthError::SessionEnded)
            }
            rules::Refresh::EndSession => {
                self.end_device(device_id).await?;
                Err(AuthError::SessionEnded)
            }
            rules::Refresh::Rotate => {
                let (store, hash) = (self.store.clone(), spent_hash.clone());
                if !self.blocking(move || store::spend_refresh(&store.lock(), &hash)).await? {
                    // Another request rotated this same token a moment ago: two holders again.
                    self.end_device(device_id).await?;
                    return Err(AuthError::SessionEnded);
                }
                let next = match &rotation_id {
                    Some(id) => RefreshToken::New(self.successor(&spent_hash, id)),
                    None => RefreshToken::New(new_token().map_err(|_| AuthError::Internal)?),
                };
                self.issue_tokens(device_id, now, next).await
            }
        }
    }

    /// Who is calling, from an access token: checks expiry, revocation, remote wipe and idle
    /// time, and records the activity.
    pub async fn authenticate(&self, access_token: &str, now: i64) -> Result<Principal, AuthError> {
        let store = self.store.clone();
        let hash = token_hash(access_token);
        let found = self.blocking(move || store::access_token(&store.read(), &hash)).await?;
        let Some(row) = found else { return Err(AuthError::SessionEnded) };
        let idle_secs = rules::idle_secs(row.session.idle_limit, self.policy.idle_secs);
        let touch = match rules::access(&row, idle_secs, now) {
            rules::Access::Refuse(refused) => return Err(refused),
            rules::Access::EndSession => {
                self.end_device(row.session.device_id).await?;
                return Err(AuthError::SessionEnded);
            }
            rules::Access::Admit { touch } => touch,
        };
        let role = Role::parse(&row.role).ok_or(AuthError::Internal)?;
        let device_id = row.session.device_id;
        if touch {
            let (store, device) = (self.store.clone(), device_id.clone());
            self.blocking(move || store::touch_device(&store.lock(), &device, now)).await?;
        }
        Ok(Principal { user_id: row.user_id, tenant: row.tenant, role, device_id, idle_secs })
    }

    /// Ends the device session the refresh token belongs to. Unknown tokens are ignored.
    pub async fn logout(&self, request: LogoutRequest) -> Result<(), AuthError> {
        let store = self.store.clone();
        let hash = token_hash(request.refresh_token.expose());
        match self.blocking(move || store::refresh_device(&store.lock(), &hash)).await? {
            Some(device) => self.end_device(device).await,
            None => Ok(()),
        }
    }

    /// Hands `device_id` a new access token and `refresh`, and records its activity.
    async fn issue_tokens(
        &self,
        device_id: String,
        now: i64,
        refresh: RefreshToken,
    ) -> Result<TokenResponse, AuthError> {
        let access = new_token().map_err(|_| AuthError::Internal)?;
        let (refresh, is_new) = match refresh {
            RefreshToken::New(token) => (token, true),
            RefreshToken::Reissue(token) => (token, false),
        };
        let (store, access_hash, refresh_hash, dev) =
            (self.store.clone(), token_hash(&access), token_hash(&refresh), device_id.clone());
        let expires = now + self.policy.access_ttl_secs;
        let user_id = self
            .blocking(move || {
                let new_refresh = is_new.then_some(refresh_hash.as_slice());
                store::record_tokens(&mut store.lock(), &dev, &access_hash, expires, new_refresh, now)
            })
            .await?;
        Ok(TokenResponse {
            access_token: Secret::new(access),
            refresh_token: Secret::new(refresh),
            expires_in: u32::try_from(self.policy.access_ttl_secs).unwrap_or(u32::MAX),
            device_id,
            user_id,
            device_cookie: None,
        })
    }

    /// Starts replacing the caller's authenticator: a new secret, pending until confirmed with
    /// a code from it. Needs a full sign-in within [`AuthPolicy::step_up_secs`].
    pub async fn begin_enrollment(&self, caller: &Principal, now: i64) -> Result<Enrollment, AuthError> {
        use base64::Engine as _;
        self.require_step_up(caller, now).await?;
        let secret = totp::new_secret().map_err(|_| AuthError::Internal)?;
        let (store, user, pending) = (self.store.clone(), caller.user_id.clone(), secret.clone());
        let username = self
            .blocking(move || {
                let conn = store.lock();
                store::set_pending_totp(&conn, &user, &pending)?;
                store::username(&conn, &user)
            })
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
        let (store, user) = (self.store.clone(), caller.user_id.clone());
        let pending =
            self.blocking(move || store::pending_totp(&store.lock(), &user)).await?.ok_or(AuthError::NoEnrollment)?;
        // A session holder who started the change holds the new secret: a wrong code here
        // is no guess at anyone's account (the route is limited per network all the same).
        let Some(step) = totp::matching_step(&pending, code, u64::try_from(now).unwrap_or(0)) else {
            return Err(AuthError::BadCode);
        };
        let (store, user) = (self.store.clone(), caller.user_id.clone());
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        self.blocking(move || store::confirm_totp(&store.lock(), &user, step)).await
    }

    /// Refuses unless the caller's device made a full sign-in (password and code) within
    /// [`AuthPolicy::step_up_secs`]: what high-risk actions need (DESIGN.md §3).
    pub async fn require_step_up(&self, caller: &Principal, now: i64) -> Result<(), AuthError> {
        let (store, device) = (self.store.clone(), caller.device_id.clone());
        let full_auth_at = self.blocking(move || store::full_auth_at(&store.lock(), &device)).await?;
        rules::step_up(full_auth_at, self.policy.step_up_secs, now)
    }

    /// The caller's own devices, or — for an admin — every device in their tenant.
    pub async fn devices(&self, caller: &Principal) -> Result<Vec<DeviceInfo>, AuthError> {
        let (store, caller) = (self.store.clone(), caller.clone());
        self.blocking(move || {
            let rows = store::devices(&store.lock(), &caller.tenant, caller.role == Role::Admin, &caller.user_id)?;
            Ok(rows
                .into_iter()
                .map(|d| DeviceInfo {
                    current: d.id == caller.device_id,
                    id: d.id,
                    user_id: d.user_id,
                    name: d.name,
                    created_at: d.created_at,
                    last_seen: d.last_seen,
                    revoked: d.revoked,
                    wipe: d.wipe,
                })
                .collect())
        })
        .await
    }

    /// Revokes a device (and with `wipe`, flags it to erase its cache at its next contact).
    /// Users manage their own devices; admins any device in their tenant. A device of another
    /// tenant or user is reported as not found, exactly like one that does not exist.
    pub async fn revoke(&self, caller: &Principal, device_id: &str, wipe: bool) -> Result<bool, AuthError> {
        let (store, caller, device) = (self.store.clone(), caller.clone(), device_id.to_owned());
        let allowed = self
            .blocking(move || {
                store::device_in_reach(
                    &store.lock(),
                    &device,
                    &caller.tenant,
                    caller.role == Role::Admin,
                    &caller.user_id,
                )
            })
            .await?;
        if !allowed {
            return Ok(false);
        }
        let (store, device) = (self.store.clone(), device_id.to_owned());
        self.blocking(move || store::revoke_by_person(&store.lock(), &device, wipe)).await?;
        Ok(true)
    }

    /// Ends a device's session on the server's own account (idle, reuse, logout).
    async fn end_device(&self, device_id: String) -> Result<(), AuthError> {
        let store = self.store.clone();
        self.blocking(move || store::end_device(&store.lock(), &device_id)).await
    }
}

/// A store error during sign-in, logged without detail that could hold a name.
impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> Self {
        tracing::error!(code = ?e.sqlite_error_code(), "store error during sign-in");
        AuthError::Internal
    }
}

impl Auth {
    /// Counts a failed password or code against `budget`.
    async fn fail(&self, budget: &throttle::Budget, now: i64) -> Result<(), AuthError> {
        let (store, throttle, budget) = (self.store.clone(), self.throttle.clone(), budget.clone());
        self.blocking(move || throttle.failed(&store.lock(), &budget, now).map(|_| ())).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, AuthError> {
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::error!(code = ?e.sqlite_error_code(), "store error during sign-in");
                Err(AuthError::Internal)
            }
            Err(_) => Err(AuthError::Internal),
        }
    }
}
