//! Where sign-in keeps its state — accounts, pending second steps, devices, tokens, and the
//! throttle's budgets and windows — behind one interface with two engines:
//!
//! - [`Accounts::Sqlcipher`], the embedded default: the tables in the server's SQLCipher
//!   file (`sqlcipher`); the throttle's per-minute windows and its "one attempt at a
//!   time" claims stay in this one process's memory.
//! - [`Accounts::Postgres`], for several stateless nodes on one database (`postgres`):
//!   everything, windows and claims included, lives in the database, so a request may land
//!   on any node and the limits are the deployment's, not each node's. Each node keeps its
//!   own windows and claims in memory as well, as a floor: someone who can reset the
//!   database's counters still meets every node's own limit.
//!
//! A closed enum rather than a trait object: there are exactly two engines, the dispatch
//! stays static, and each arm's SQL sits in its own module. Each read returns a row struct
//! with named fields; what a row means is decided in `auth::rules`, never in a query.

pub(crate) mod postgres;
pub(crate) mod sqlcipher;

use std::net::IpAddr;
use std::sync::Arc;

use super::AuthError;
use super::throttle::{self, Budget, Throttle};
use crate::store::Store;

pub use postgres::PgAccounts;

/// The sign-in state of a server: the embedded store, or a database shared by every node.
pub enum Accounts {
    /// The server's own SQLCipher file: one process.
    Sqlcipher(Arc<Store>),
    /// PostgreSQL: any number of nodes.
    Postgres(PgAccounts),
}

impl From<Arc<Store>> for Accounts {
    fn from(store: Arc<Store>) -> Self {
        Accounts::Sqlcipher(store)
    }
}

impl From<PgAccounts> for Accounts {
    fn from(pg: PgAccounts) -> Self {
        Accounts::Postgres(pg)
    }
}

/// A user, as the password step needs them.
pub(crate) struct UserRow {
    pub id: String,
    pub tenant: String,
    pub password_hash: String,
    pub disabled: bool,
}

/// A pending second step and what checking its code needs.
pub(crate) struct ChallengeRow {
    pub user_id: String,
    pub tenant: String,
    pub expires_at: i64,
    pub totp_secret: Vec<u8>,
    /// The secret as stored (sealed, on PostgreSQL): the second step is written only if it
    /// is still the one the code was checked against (no authenticator reset in between).
    pub totp_stored: Vec<u8>,
    pub user_disabled: bool,
    /// The throttle budget the password step drew on (see `throttle::Budget::to_stored`).
    pub bucket: Option<Vec<u8>>,
    pub known_device: bool,
    pub username: String,
}

/// A device's own flags; its standing is decided from them and its user's `disabled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeviceFlags {
    pub revoked: bool,
    /// Revoked by a person (an admin, the user, disabling the account), not by the server.
    pub revoked_by_person: bool,
    pub wipe: bool,
}

/// A device session as a token finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRow {
    pub device_id: String,
    /// The tenant of the device's user: every later statement about it runs in it.
    pub tenant: String,
    pub flags: DeviceFlags,
    pub user_disabled: bool,
    pub last_seen: i64,
    /// The tenant's idle limit for the user's role, if it set one.
    pub idle_limit: Option<i64>,
}

/// A refresh token and its device session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefreshRow {
    pub used: bool,
    pub session: SessionRow,
}

/// An access token, its device session and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccessRow {
    pub expires_at: i64,
    pub session: SessionRow,
    pub user_id: String,
    pub role: String,
}

/// A device as listed to its owner or an admin.
pub(crate) struct DeviceRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub revoked: bool,
    pub wipe: bool,
}

/// A second step that was passed: what is written together, or not at all.
pub(crate) struct PassedSignIn {
    /// The challenge's token hash, taken so it cannot be passed twice.
    pub challenge_hash: Vec<u8>,
    pub tenant: String,
    pub user_id: String,
    /// The TOTP step the code matched, claimed so it cannot be used twice.
    pub step: i64,
    /// The stored secret the code was checked against ([`ChallengeRow::totp_stored`]).
    pub totp_stored: Vec<u8>,
    /// The budget the attempt drew on, which starts afresh.
    pub budget: Budget,
    /// The device registered by this sign-in.
    pub device_id: String,
    pub device_name: String,
    pub now: i64,
}

/// The tokens one issue records for a device.
pub(crate) struct IssuedTokens {
    pub tenant: String,
    pub device_id: String,
    pub access_hash: Vec<u8>,
    pub expires_at: i64,
    /// A new refresh token's hash; `None` when one already recorded is handed out again.
    pub new_refresh_hash: Option<Vec<u8>>,
    pub now: i64,
}

/// A budget claimed by one attempt's check; free again once [`Checking::release`]d (or,
/// should the request be dropped half-way, when this is dropped).
pub(crate) enum Checking {
    /// This process's claim.
    Here(throttle::Checking),
    /// A lease in the shared database, which also expires on its own should its node die,
    /// beside this process's own claim (a floor no edit of the database lifts).
    Shared(throttle::Checking, postgres::Lease),
}

impl Checking {
    /// Frees the budget for the next attempt.
    pub(crate) async fn release(self) {
        match self {
            Checking::Here(claim) => drop(claim),
            Checking::Shared(claim, lease) => {
                lease.release().await;
                drop(claim);
            }
        }
    }
}

/// Runs `work` on the SQLCipher store's writer, off the async threads.
async fn on_store<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, AuthError> {
    let store = store.clone();
    off_thread(move || work(&mut store.lock())).await
}

/// Runs a read on one of the SQLCipher store's readers.
async fn on_reader<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, AuthError> {
    let store = store.clone();
    off_thread(move || work(&store.read())).await
}

/// Runs blocking store work on tokio's blocking threads; a store error is logged by its
/// code only (never a detail that could hold a name).
async fn off_thread<T: Send + 'static>(
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

impl Accounts {
    /// The user signing in as `username`, if there is one.
    pub(crate) async fn user_by_name(&self, username: String) -> Result<Option<UserRow>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::user_by_name(c, &username)).await,
            Accounts::Postgres(pg) => pg.user_by_name(&username).await,
        }
    }

    /// Records a pending second step for `user_id`, drawing on `budget`.
    pub(crate) async fn insert_challenge(
        &self,
        hash: Vec<u8>,
        tenant: String,
        user_id: String,
        expires_at: i64,
        budget: &Budget,
    ) -> Result<(), AuthError> {
        let (bucket, known_device) = budget.to_stored();
        match self {
            Accounts::Sqlcipher(store) => {
                on_store(store, move |c| {
                    sqlcipher::insert_challenge(c, &hash, &user_id, expires_at, &bucket, known_device)
                })
                .await
            }
            Accounts::Postgres(pg) => {
                pg.insert_challenge(&hash, &tenant, &user_id, expires_at, &bucket, known_device)
                    .await
            }
        }
    }

    /// The pending second step a challenge token names.
    pub(crate) async fn challenge(&self, hash: Vec<u8>) -> Result<Option<ChallengeRow>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::challenge(c, &hash)).await,
            Accounts::Postgres(pg) => pg.challenge(&hash).await,
        }
    }

    /// Writes a passed second step in one transaction: takes the challenge, claims the code's
    /// step, clears the budget, registers the device and records its first tokens. Of two
    /// requests with one challenge or one code, on any nodes, one wins; the other is told
    /// why; a failure half-way leaves nothing taken.
    pub(crate) async fn pass_sign_in(&self, passed: PassedSignIn, issued: IssuedTokens) -> Result<(), AuthError> {
        match self {
            Accounts::Sqlcipher(store) => {
                on_store(store, move |c| sqlcipher::pass_sign_in(c, &passed, &issued)).await?
            }
            Accounts::Postgres(pg) => pg.pass_sign_in(&passed, &issued).await,
        }
    }

    /// A refresh token and its device session.
    pub(crate) async fn refresh_token(&self, hash: Vec<u8>) -> Result<Option<RefreshRow>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::refresh_token(c, &hash)).await,
            Accounts::Postgres(pg) => pg.refresh_token(&hash).await,
        }
    }

    /// Whether a device's refresh token was used; `None` if it has no such token.
    pub(crate) async fn refresh_used(
        &self,
        tenant: String,
        hash: Vec<u8>,
        device_id: String,
    ) -> Result<Option<bool>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::refresh_used(c, &hash, &device_id)).await,
            Accounts::Postgres(pg) => pg.refresh_used(&tenant, &hash, &device_id).await,
        }
    }

    /// Rotates a refresh token in one transaction: marks `spent_hash` used and records the
    /// tokens that replace it; returns the device's user. `None` if the token was used
    /// already (by a concurrent rotation, on any node), and then nothing is written.
    pub(crate) async fn rotate(&self, spent_hash: Vec<u8>, issued: IssuedTokens) -> Result<Option<String>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::rotate(c, &spent_hash, &issued)).await,
            Accounts::Postgres(pg) => pg.rotate(&spent_hash, &issued).await,
        }
    }

    /// The tenant and device a refresh token belongs to.
    pub(crate) async fn refresh_device(&self, hash: Vec<u8>) -> Result<Option<(String, String)>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::refresh_device(c, &hash)).await,
            Accounts::Postgres(pg) => pg.refresh_device(&hash).await,
        }
    }

    /// An access token, its device session and whose it is.
    pub(crate) async fn access_token(&self, hash: Vec<u8>) -> Result<Option<AccessRow>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_reader(store, move |c| sqlcipher::access_token(c, &hash)).await,
            Accounts::Postgres(pg) => pg.access_token(&hash).await,
        }
    }

    /// Records a device's activity.
    pub(crate) async fn touch_device(&self, tenant: String, device_id: String, now: i64) -> Result<(), AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::touch_device(c, &device_id, now)).await,
            Accounts::Postgres(pg) => pg.touch_device(&tenant, &device_id, now).await,
        }
    }

    /// Records the tokens of one issue and the device's activity, together. Returns the
    /// device's user.
    pub(crate) async fn record_tokens(&self, issued: IssuedTokens) -> Result<String, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::record_tokens(c, &issued)).await,
            Accounts::Postgres(pg) => pg.record_tokens(&issued).await,
        }
    }

    /// When the device last made a full sign-in (password and code).
    pub(crate) async fn full_auth_at(&self, tenant: String, device_id: String) -> Result<i64, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::full_auth_at(c, &device_id)).await,
            Accounts::Postgres(pg) => pg.full_auth_at(&tenant, &device_id).await,
        }
    }

    /// Keeps a new TOTP secret beside the current one until it is confirmed; returns the
    /// username, which the authenticator shows beside its codes.
    pub(crate) async fn begin_totp(
        &self,
        tenant: String,
        user_id: String,
        secret: Vec<u8>,
    ) -> Result<String, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => {
                on_store(store, move |c| {
                    sqlcipher::set_pending_totp(c, &user_id, &secret)?;
                    sqlcipher::username(c, &user_id)
                })
                .await
            }
            Accounts::Postgres(pg) => pg.begin_totp(&tenant, &user_id, &secret).await,
        }
    }

    /// The TOTP secret waiting for its confirming code, if any: the secret, and the secret
    /// as stored (what [`Accounts::confirm_totp`] confirms).
    pub(crate) async fn pending_totp(
        &self,
        tenant: String,
        user_id: String,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => {
                let pending = on_store(store, move |c| sqlcipher::pending_totp(c, &user_id)).await?;
                Ok(pending.map(|secret| (secret.clone(), secret)))
            }
            Accounts::Postgres(pg) => pg.pending_totp(&tenant, &user_id).await,
        }
    }

    /// Makes the pending secret the user's, with `step` (the confirming code's) used — if
    /// it is still `stored`, the one the code was checked against; otherwise another set-up
    /// replaced it meanwhile and the person must start again.
    pub(crate) async fn confirm_totp(
        &self,
        tenant: String,
        user_id: String,
        stored: Vec<u8>,
        step: i64,
    ) -> Result<(), AuthError> {
        let confirmed = match self {
            Accounts::Sqlcipher(store) => {
                on_store(store, move |c| sqlcipher::confirm_totp(c, &user_id, &stored, step)).await?
            }
            Accounts::Postgres(pg) => pg.confirm_totp(&tenant, &user_id, &stored, step).await?,
        };
        if confirmed { Ok(()) } else { Err(AuthError::NoEnrollment) }
    }

    /// A tenant's devices, oldest first: every one with `all_users`, else only `user_id`'s.
    pub(crate) async fn devices(
        &self,
        tenant: String,
        all_users: bool,
        user_id: String,
    ) -> Result<Vec<DeviceRow>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => {
                on_store(store, move |c| sqlcipher::devices(c, &tenant, all_users, &user_id)).await
            }
            Accounts::Postgres(pg) => pg.devices(&tenant, all_users, &user_id).await,
        }
    }

    /// Whether the device is in `tenant` and (unless `all_users`) is `user_id`'s.
    pub(crate) async fn device_in_reach(
        &self,
        tenant: String,
        device_id: String,
        all_users: bool,
        user_id: String,
    ) -> Result<bool, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => {
                on_store(store, move |c| sqlcipher::device_in_reach(c, &device_id, &tenant, all_users, &user_id)).await
            }
            Accounts::Postgres(pg) => pg.device_in_reach(&tenant, &device_id, all_users, &user_id).await,
        }
    }

    /// The sign-in names of `ids` (users of `tenant`): for lists an admin reads.
    pub(crate) async fn usernames(
        &self,
        tenant: String,
        ids: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>, AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_reader(store, move |c| sqlcipher::usernames(c, &tenant, &ids)).await,
            Accounts::Postgres(pg) => pg.usernames(&tenant, &ids).await,
        }
    }

    /// A person signs a device out (and with `wipe`, flags it to erase its cache).
    pub(crate) async fn revoke_by_person(
        &self,
        tenant: String,
        device_id: String,
        wipe: bool,
    ) -> Result<(), AuthError> {
        match self {
            Accounts::Sqlcipher(store) => {
                on_store(store, move |c| sqlcipher::revoke_by_person(c, &device_id, wipe)).await
            }
            Accounts::Postgres(pg) => pg.revoke_by_person(&tenant, &device_id, wipe).await,
        }
    }

    /// The server ends a device's session (idle, a reused token, logout).
    pub(crate) async fn end_device(&self, tenant: String, device_id: String) -> Result<(), AuthError> {
        match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::end_device(c, &device_id)).await,
            Accounts::Postgres(pg) => pg.end_device(&tenant, &device_id).await,
        }
    }

    /// Counts an attempt from `client` against its network's window for this minute (attempts
    /// from a known device are not counted) and refuses it when the network is over its limit.
    pub(crate) async fn admit(
        &self,
        throttle: &Throttle,
        client: IpAddr,
        budget: &Budget,
        now: i64,
    ) -> Result<(), AuthError> {
        if budget.known_device() {
            return Ok(());
        }
        // This process's window first: on the embedded store it is the limit; shared between
        // nodes it is a floor that no edit of the database's counters lifts.
        throttle.admit(client, budget, now).map_err(AuthError::from)?;
        match self {
            Accounts::Sqlcipher(_) => Ok(()),
            Accounts::Postgres(pg) => pg.admit(throttle, client, now).await,
        }
    }

    /// Claims `budget` for one attempt's check, or refuses with a one-second wait while
    /// another attempt (on any node) holds it.
    pub(crate) async fn check_one(
        &self,
        throttle: &Arc<Throttle>,
        budget: &Budget,
        now: i64,
    ) -> Result<Checking, AuthError> {
        let here = Throttle::one_at_a_time(throttle, budget)?;
        match self {
            Accounts::Sqlcipher(_) => Ok(Checking::Here(here)),
            Accounts::Postgres(pg) => Ok(Checking::Shared(here, pg.lease(budget, now).await?)),
        }
    }

    /// How long `budget` must still wait, if at all.
    pub(crate) async fn waiting(&self, budget: &Budget, now: i64) -> Result<Option<i64>, AuthError> {
        let key = budget.stored_key();
        let until = match self {
            Accounts::Sqlcipher(store) => on_store(store, move |c| sqlcipher::blocked_until(c, &key)).await?,
            Accounts::Postgres(pg) => pg.blocked_until(&key).await?,
        };
        Ok(until.filter(|until| *until > now).map(|until| until - now))
    }

    /// Counts a failure against `budget` (and, from an unknown device, the server's
    /// minute); returns the wait it now imposes.
    pub(crate) async fn failed(&self, throttle: &Throttle, budget: &Budget, now: i64) -> Result<i64, AuthError> {
        let key = budget.stored_key();
        let forget_before = now - throttle::FORGET_AFTER_SECS;
        let delay_after = |failures| throttle.policy().delay_after(failures);
        // This process's minute counts every failure it saw from an unknown device (the
        // floor of the per-network limit, as in `admit`).
        if !budget.known_device() {
            throttle.count_server_failure(now);
        }
        match self {
            Accounts::Sqlcipher(store) => {
                let policy = *throttle.policy();
                on_store(store, move |c| {
                    let failures = sqlcipher::count_failure(c, &key, now, forget_before)?;
                    let delay = policy.delay_after(failures);
                    if delay > 0 {
                        sqlcipher::block_until(c, &key, now + delay)?;
                    }
                    Ok(delay)
                })
                .await
            }
            Accounts::Postgres(pg) => pg.failed(&key, !budget.known_device(), now, forget_before, delay_after).await,
        }
    }
}
