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
//!
//! One job a module: `sign_in` (the two steps), `session` (tokens after them), `devices`
//! (standing, listing, revoking), `enrollment` (a new authenticator); what rows mean is
//! decided in `rules`, and the SQL lives in `store`, once per engine (the embedded store, or
//! PostgreSQL shared by several nodes: [`Accounts`]).

mod devices;
mod enrollment;
pub mod password;
pub mod qr;
mod rules;
pub mod secrets;
mod session;
mod sign_in;
pub mod store;
pub mod throttle;
pub mod totp;

use std::sync::Arc;

use carekeep_protocol::auth::Role;
use tokio::sync::Semaphore;

pub use store::{Accounts, PgAccounts};

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
    /// The server cannot reach its database right now.
    #[error("The server cannot reach its database. Try again in a minute.")]
    Unavailable,
    /// Something failed on the server's side.
    #[error("The server could not complete the sign-in. Try again later.")]
    Internal,
}

pub use carekeep_protocol::auth::{DeviceInfo, Enrollment};

/// The sign-in service.
pub struct Auth {
    accounts: Accounts,
    policy: AuthPolicy,
    kdf_permits: Semaphore,
    rotation_key: zeroize::Zeroizing<[u8; 32]>,
    throttle: Arc<throttle::Throttle>,
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
    /// A service over `accounts` (an `Arc<Store>` or a [`PgAccounts`]). At most
    /// `kdf_concurrency` password hashes run at once. On the embedded store without
    /// [`Auth::with_keys`], rotations are retryable and device cookies valid only until a
    /// restart; PostgreSQL accounts bring the deployment's keys.
    pub fn new(accounts: impl Into<Accounts>, policy: AuthPolicy, kdf_concurrency: usize) -> Self {
        let random = || {
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            // Without randomness the key is zeros: retries still work; tokens stay random.
            let _ = getrandom::fill(key.as_mut_slice());
            key
        };
        let accounts = accounts.into();
        // Nodes sharing a database must share these keys, or each would keep its own budgets
        // and refuse the others' rotations: PostgreSQL accounts carry the deployment's.
        let (rotation_key, throttle_key) = match &accounts {
            Accounts::Postgres(pg) => (pg.rotations.clone(), pg.sign_in.clone()),
            Accounts::Sqlcipher(_) => (random(), random()),
        };
        Self {
            accounts,
            policy,
            kdf_permits: Semaphore::new(kdf_concurrency.max(1)),
            rotation_key,
            throttle: Arc::new(throttle::Throttle::new(policy.throttle, throttle_key)),
        }
    }

    /// The sign-in names of `ids` (users of `tenant`; others are left out), for lists an
    /// admin reads.
    pub async fn usernames(
        &self,
        tenant: &str,
        ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>, AuthError> {
        self.accounts.usernames(tenant.to_owned(), ids).await
    }

    /// Uses the data directory's keys: rotated refresh tokens (so retries of a lost
    /// rotation keep working across restarts) and sign-in budgets and device cookies.
    #[must_use]
    pub fn with_keys(mut self, keys: &crate::keys::MasterKeys) -> Self {
        self.rotation_key = zeroize::Zeroizing::new(*keys.rotations);
        self.throttle = Arc::new(throttle::Throttle::new(self.policy.throttle, zeroize::Zeroizing::new(*keys.sign_in)));
        self
    }
}

impl Auth {
    /// Counts a failed password or code against `budget`.
    async fn fail(&self, budget: &throttle::Budget, now: i64) -> Result<(), AuthError> {
        self.accounts.failed(&self.throttle, budget, now).await.map(|_| ())
    }

    /// Counts an attempt at a route that checks a code outside sign-in (the authenticator
    /// change) against `client`'s network window, as an attempt from an unknown device.
    pub async fn admit(&self, client: std::net::IpAddr, now: i64) -> Result<(), AuthError> {
        self.accounts
            .admit(&self.throttle, client, &self.throttle.budget("", None), now)
            .await
    }
}
