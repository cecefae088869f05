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

pub mod password;
pub mod qr;
pub mod secrets;
pub mod throttle;
pub mod totp;

use std::sync::Arc;

use carekeep_protocol::Secret;
use carekeep_protocol::auth::{
    LoginRequest, LoginResponse, LogoutRequest, MfaRequest, RefreshRequest, Role, TokenResponse,
};
use std::net::IpAddr;

use rusqlite::{OptionalExtension, params};
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
enum Refresh {
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

struct AccessRow {
    expires_at: i64,
    device_id: String,
    /// What the device may still do, decided in SQL from its flags and its user's: the
    /// first of `wipe`, `revoked` (by a person), `ended` (idle, reuse, disabled user), or
    /// `active`.
    standing: String,
    last_seen: i64,
    idle_limit: Option<i64>,
    user_id: String,
    tenant: String,
    role: String,
}

struct UserRow {
    id: String,
    password_hash: String,
    disabled: bool,
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

    /// The refresh token a rotation of `spent_hash` with `rotation_id` hands out.
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
                let user = conn
                    .prepare_cached("SELECT id, password_hash, disabled FROM users WHERE username = ?1")?
                    .query_row([&username], |r| {
                        Ok(UserRow { id: r.get(0)?, password_hash: r.get(1)?, disabled: r.get(2)? })
                    })
                    .optional()?;
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
        self.blocking(move || {
            store.lock().execute(
                "INSERT INTO mfa_challenges (token_hash, user_id, expires_at, bucket, known_device)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, user.id, expires, bucket, known_device],
            )
        })
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
        let found = self
            .blocking(move || {
                store
                    .lock()
                    .query_row(
                        "SELECT c.user_id, c.expires_at, u.totp_secret, u.disabled, c.bucket, c.known_device, u.username
                         FROM mfa_challenges c JOIN users u ON u.id = c.user_id WHERE c.token_hash = ?1",
                        [hash],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, Vec<u8>>(2)?,
                                r.get::<_, bool>(3)?,
                                r.get::<_, Option<Vec<u8>>>(4)?,
                                r.get::<_, bool>(5)?,
                                r.get::<_, String>(6)?,
                            ))
                        },
                    )
                    .optional()
            })
            .await?;
        let Some((user_id, expires_at, secret, disabled, bucket, known_device, username)) = found else {
            // A made-up challenge still costs its network an attempt.
            self.throttle.admit(client, &self.throttle.budget("", None), now)?;
            return Err(AuthError::ChallengeExpired);
        };
        let budget = bucket
            .and_then(|b| throttle::Budget::from_stored(&b, known_device))
            .unwrap_or_else(|| self.throttle.budget(&username, None));
        // A real challenge was paid for at the password step, on this network's window; its
        // code is throttled by the budget it carries. Counting it again would halve what a
        // clinic behind one address gets while the server is under attack.
        let _checking = throttle::Throttle::one_at_a_time(&self.throttle, &budget)?;
        let (store, throttle, held) = (self.store.clone(), self.throttle.clone(), budget.clone());
        if let Some(retry_after_secs) = self.blocking(move || throttle.waiting(&store.lock(), &held, now)).await? {
            return Err(AuthError::Throttled { retry_after_secs });
        }
        if expires_at <= now || disabled {
            return Err(AuthError::ChallengeExpired);
        }
        let Some(step) = totp::matching_step(&secret, request.code.expose(), u64::try_from(now).unwrap_or(0)) else {
            self.fail(&budget, now).await?;
            return Err(AuthError::BadCode);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let device_id = new_id("dev").map_err(|_| AuthError::Internal)?;
        let (store, hash, name, dev, claimed) = (
            self.store.clone(),
            token_hash(request.mfa_token.expose()),
            request.device_name,
            device_id.clone(),
            budget.clone(),
        );
        let outcome = self
            .blocking(move || {
                let mut conn = store.lock();
                let tx = conn.transaction()?;
                if tx.execute("DELETE FROM mfa_challenges WHERE token_hash = ?1", [hash])? == 0 {
                    return Ok(Err(AuthError::ChallengeExpired));
                }
                // The step is taken only if no request took it (or a later one) first. A code
                // used already is no guess: it does not count as a failure (after the
                // server's clock went back, every fresh code looks used).
                let claimed_step = tx.execute(
                    "UPDATE users SET totp_last_step = ?2 WHERE id = ?1 AND totp_last_step < ?2",
                    params![user_id, step],
                )?;
                if claimed_step == 0 {
                    return Ok(Err(AuthError::CodeAlreadyUsed));
                }
                throttle::Throttle::succeeded(&tx, &claimed)?;
                tx.execute(
                    "INSERT INTO devices (id, user_id, name, created_at, last_seen, full_auth_at) VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
                    params![dev, user_id, name, now],
                )?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?;
        outcome?;
        let mut tokens =
            self.issue_tokens(device_id, now, Refresh::New(new_token().map_err(|_| AuthError::Internal)?)).await?;
        tokens.device_cookie = Some(Secret::new(self.throttle.new_cookie(&username).map_err(|_| AuthError::Internal)?));
        Ok(tokens)
    }

    /// Rotates a refresh token. Presenting one that was already used revokes the device.
    pub async fn refresh(&self, request: RefreshRequest, now: i64) -> Result<TokenResponse, AuthError> {
        let store = self.store.clone();
        let hash = token_hash(request.refresh_token.expose());
        let found = self
            .blocking(move || {
                store
                    .lock()
                    .query_row(
                        "SELECT t.device_id, t.used, d.revoked, d.last_seen, u.disabled, d.wipe, l.idle_secs,
                                d.revoked_by_person
                         FROM refresh_tokens t JOIN devices d ON d.id = t.device_id JOIN users u ON u.id = d.user_id
                         LEFT JOIN idle_limits l ON l.tenant = u.tenant AND l.role = u.role
                         WHERE t.token_hash = ?1",
                        [hash],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, bool>(1)?,
                                r.get::<_, bool>(2)?,
                                r.get::<_, i64>(3)?,
                                r.get::<_, bool>(4)?,
                                r.get::<_, bool>(5)?,
                                r.get::<_, Option<i64>>(6)?,
                                r.get::<_, bool>(7)?,
                            ))
                        },
                    )
                    .optional()
            })
            .await?;
        let Some((device_id, used, revoked, last_seen, disabled, wipe, idle_limit, revoked_by_person)) = found else {
            return Err(AuthError::SessionEnded);
        };
        if device_id != request.device_id {
            return Err(AuthError::SessionEnded);
        }
        if wipe {
            return Err(AuthError::DeviceWipe);
        }
        if revoked && revoked_by_person {
            return Err(AuthError::DeviceRevoked);
        }
        if revoked || disabled {
            return Err(AuthError::SessionEnded);
        }
        let rotation_id = request.rotation_id.filter(|r| !r.is_empty() && r.len() <= 128);
        if used {
            // A rotated-out token came back. With the rotation id of the rotation that spent
            // it, and that rotation's token never used, it is the same device retrying after
            // losing the answer: it gets the same token again. Otherwise someone holds a
            // copy: the device session ends.
            if let Some(rotation_id) = &rotation_id {
                let successor = self.successor(&token_hash(request.refresh_token.expose()), rotation_id);
                let (store, successor_hash, dev) = (self.store.clone(), token_hash(&successor), device_id.clone());
                let pending: Option<bool> = self
                    .blocking(move || {
                        store
                            .lock()
                            .query_row(
                                "SELECT used FROM refresh_tokens WHERE token_hash = ?1 AND device_id = ?2",
                                params![successor_hash, dev],
                                |r| r.get(0),
                            )
                            .optional()
                    })
                    .await?;
                if pending == Some(false) && last_seen + idle_limit.unwrap_or(self.policy.idle_secs) >= now {
                    return self.issue_tokens(device_id, now, Refresh::Reissue(successor)).await;
                }
            }
            self.revoke_device(device_id).await?;
            return Err(AuthError::SessionEnded);
        }
        if last_seen + idle_limit.unwrap_or(self.policy.idle_secs) < now {
            self.revoke_device(device_id).await?;
            return Err(AuthError::SessionEnded);
        }
        let (store, hash) = (self.store.clone(), token_hash(request.refresh_token.expose()));
        let rotated = self
            .blocking(move || {
                store.lock().execute("UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?1 AND used = 0", [hash])
            })
            .await?;
        if rotated == 0 {
            // Another request rotated this same token a moment ago: two holders again.
            self.revoke_device(device_id).await?;
            return Err(AuthError::SessionEnded);
        }
        let next = match &rotation_id {
            Some(id) => Refresh::New(self.successor(&token_hash(request.refresh_token.expose()), id)),
            None => Refresh::New(new_token().map_err(|_| AuthError::Internal)?),
        };
        self.issue_tokens(device_id, now, next).await
    }

    /// Who is calling, from an access token: checks expiry, revocation, remote wipe and idle
    /// time, and records the activity.
    pub async fn authenticate(&self, access_token: &str, now: i64) -> Result<Principal, AuthError> {
        let store = self.store.clone();
        let hash = token_hash(access_token);
        let found = self
            .blocking(move || {
                store
                    .read()
                    .prepare_cached(
                        "SELECT a.expires_at, d.id,
                                CASE WHEN d.wipe THEN 'wipe'
                                     WHEN d.revoked AND d.revoked_by_person THEN 'revoked'
                                     WHEN d.revoked OR u.disabled THEN 'ended'
                                     ELSE 'active' END,
                                d.last_seen, u.id, u.tenant, u.role, l.idle_secs
                         FROM access_tokens a JOIN devices d ON d.id = a.device_id JOIN users u ON u.id = d.user_id
                         LEFT JOIN idle_limits l ON l.tenant = u.tenant AND l.role = u.role
                         WHERE a.token_hash = ?1",
                    )?
                    .query_row([hash], |r| {
                        Ok(AccessRow {
                            expires_at: r.get(0)?,
                            device_id: r.get(1)?,
                            standing: r.get(2)?,
                            last_seen: r.get(3)?,
                            user_id: r.get(4)?,
                            tenant: r.get(5)?,
                            role: r.get(6)?,
                            idle_limit: r.get(7)?,
                        })
                    })
                    .optional()
            })
            .await?;
        let Some(row) = found else { return Err(AuthError::SessionEnded) };
        match row.standing.as_str() {
            "active" => {}
            "wipe" => return Err(AuthError::DeviceWipe),
            "revoked" => return Err(AuthError::DeviceRevoked),
            _ => return Err(AuthError::SessionEnded),
        }
        if row.last_seen + row.idle_limit.unwrap_or(self.policy.idle_secs) < now {
            self.revoke_device(row.device_id).await?;
            return Err(AuthError::SessionEnded);
        }
        if row.expires_at <= now {
            return Err(AuthError::AccessExpired);
        }
        let role = Role::parse(&row.role).ok_or(AuthError::Internal)?;
        if now - row.last_seen >= LAST_SEEN_EVERY {
            let (store, device) = (self.store.clone(), row.device_id.clone());
            self.blocking(move || {
                store.lock().execute("UPDATE devices SET last_seen = ?2 WHERE id = ?1", params![device, now])
            })
            .await?;
        }
        let idle_secs = row.idle_limit.unwrap_or(self.policy.idle_secs);
        Ok(Principal { user_id: row.user_id, tenant: row.tenant, role, device_id: row.device_id, idle_secs })
    }

    /// Ends the device session the refresh token belongs to. Unknown tokens are ignored.
    pub async fn logout(&self, request: LogoutRequest) -> Result<(), AuthError> {
        let store = self.store.clone();
        let hash = token_hash(request.refresh_token.expose());
        let device = self
            .blocking(move || {
                store
                    .lock()
                    .query_row("SELECT device_id FROM refresh_tokens WHERE token_hash = ?1", [hash], |r| {
                        r.get::<_, String>(0)
                    })
                    .optional()
            })
            .await?;
        match device {
            Some(device) => self.revoke_device(device).await,
            None => Ok(()),
        }
    }

    async fn issue_tokens(&self, device_id: String, now: i64, refresh: Refresh) -> Result<TokenResponse, AuthError> {
        let access = new_token().map_err(|_| AuthError::Internal)?;
        let (refresh, is_new) = match refresh {
            Refresh::New(token) => (token, true),
            Refresh::Reissue(token) => (token, false),
        };
        let (store, access_hash, refresh_hash, dev) =
            (self.store.clone(), token_hash(&access), token_hash(&refresh), device_id.clone());
        let expires = now + self.policy.access_ttl_secs;
        let user_id = self
            .blocking(move || {
                let mut conn = store.lock();
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO access_tokens (token_hash, device_id, expires_at, last_used) VALUES (?1, ?2, ?3, ?4)",
                    params![access_hash, dev, expires, now],
                )?;
                if is_new {
                    tx.execute(
                        "INSERT INTO refresh_tokens (token_hash, device_id, issued_at) VALUES (?1, ?2, ?3)",
                        params![refresh_hash, dev, now],
                    )?;
                }
                let user_id: String = tx.query_row(
                    "UPDATE devices SET last_seen = ?2 WHERE id = ?1 RETURNING user_id",
                    params![dev, now],
                    |r| r.get(0),
                )?;
                tx.commit()?;
                Ok(user_id)
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
                conn.execute("UPDATE users SET totp_pending = ?2 WHERE id = ?1", params![user, pending])?;
                conn.query_row("SELECT username FROM users WHERE id = ?1", [&user], |r| r.get::<_, String>(0))
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
        let pending = self
            .blocking(move || {
                store.lock().query_row("SELECT totp_pending FROM users WHERE id = ?1", [user], |r| {
                    r.get::<_, Option<Vec<u8>>>(0)
                })
            })
            .await?
            .ok_or(AuthError::NoEnrollment)?;
        // A session holder who started the change holds the new secret: a wrong code here
        // is no guess at anyone's account (the route is limited per network all the same).
        let Some(step) = totp::matching_step(&pending, code, u64::try_from(now).unwrap_or(0)) else {
            return Err(AuthError::BadCode);
        };
        let (store, user) = (self.store.clone(), caller.user_id.clone());
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        self.blocking(move || {
            store.lock().execute(
                "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = ?2 WHERE id = ?1",
                params![user, step],
            )
        })
        .await
        .map(|_| ())
    }

    /// Refuses unless the caller's device made a full sign-in (password and code) within
    /// [`AuthPolicy::step_up_secs`]: what high-risk actions need (DESIGN.md §3).
    pub async fn require_step_up(&self, caller: &Principal, now: i64) -> Result<(), AuthError> {
        let (store, device) = (self.store.clone(), caller.device_id.clone());
        let full_auth_at = self
            .blocking(move || {
                store
                    .lock()
                    .query_row("SELECT full_auth_at FROM devices WHERE id = ?1", [device], |r| r.get::<_, i64>(0))
            })
            .await?;
        if now - full_auth_at > self.policy.step_up_secs { Err(AuthError::StepUpRequired) } else { Ok(()) }
    }

    /// The caller's own devices, or — for an admin — every device in their tenant.
    pub async fn devices(&self, caller: &Principal) -> Result<Vec<DeviceInfo>, AuthError> {
        let (store, caller) = (self.store.clone(), caller.clone());
        self.blocking(move || {
            let conn = store.lock();
            let mut stmt = conn.prepare(
                "SELECT d.id, d.user_id, d.name, d.created_at, d.last_seen, d.revoked, d.wipe
                 FROM devices d JOIN users u ON u.id = d.user_id
                 WHERE u.tenant = ?1 AND (?2 OR d.user_id = ?3) ORDER BY d.created_at",
            )?;
            let rows = stmt.query_map(params![caller.tenant, caller.role == Role::Admin, caller.user_id], |r| {
                let id: String = r.get(0)?;
                Ok(DeviceInfo {
                    current: id == caller.device_id,
                    id,
                    user_id: r.get(1)?,
                    name: r.get(2)?,
                    created_at: r.get(3)?,
                    last_seen: r.get(4)?,
                    revoked: r.get(5)?,
                    wipe: r.get(6)?,
                })
            })?;
            rows.collect()
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
                store
                    .lock()
                    .query_row(
                        "SELECT count(*) FROM devices d JOIN users u ON u.id = d.user_id
                         WHERE d.id = ?1 AND u.tenant = ?2 AND (?3 OR d.user_id = ?4)",
                        params![device, caller.tenant, caller.role == Role::Admin, caller.user_id],
                        |r| r.get::<_, i64>(0),
                    )
                    .map(|n| n > 0)
            })
            .await?;
        if !allowed {
            return Ok(false);
        }
        let (store, device) = (self.store.clone(), device_id.to_owned());
        self.blocking(move || {
            store.lock().execute(
                "UPDATE devices SET revoked = 1, revoked_by_person = 1, wipe = (wipe OR ?2) WHERE id = ?1",
                params![device, wipe],
            )
        })
        .await?;
        Ok(true)
    }

    /// Marks a device revoked. Its tokens stay on record (as hashes) but stop working through
    /// the device checks, so the device is still recognised at its next contact — which is how
    /// a remote wipe reaches it.
    async fn revoke_device(&self, device_id: String) -> Result<(), AuthError> {
        let store = self.store.clone();
        self.blocking(move || store.lock().execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [device_id]))
            .await
            .map(|_| ())
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
