//! The sign-in tables' SQL on PostgreSQL, shared by every node of a deployment: accounts,
//! challenges, devices, tokens, and the throttle's budgets, per-minute windows and "one
//! attempt at a time" leases, so a limit or a revocation holds whichever node a request
//! lands on.
//!
//! Every statement about an account runs in a transaction bound to its tenant (the row-level
//! policies of [`crate::pg::schema`]). A username, a challenge or a token arrives before its
//! tenant is known: the schema's `tenant_of_…` functions name the tenant of exactly that key
//! first. What a dump of these tables would show is opaque: usernames are found by a keyed
//! hash and kept sealed, TOTP secrets and device names are sealed (AES-256-GCM under the
//! accounts key, bound to the row's id), tokens and budgets are hashes.
//!
//! What a row grants is authenticated, so a holder of the nodes' database credential (who
//! can set any tenant in their own session) cannot grant themselves anything: token hashes
//! are keyed by the master key (a row inserted under a hash of one's choosing matches no
//! token), and each user, device, challenge and token row carries a MAC under it over what
//! it binds — a user to its tenant and role, a device to its user, a token to its device
//! and expiry — checked at every use. The nodes' role may not delete account rows, and the
//! schema's triggers (which it cannot drop) refuse a change to what a row binds and a step
//! back of a one-way flag (revoked, wiped, spent, disabled, a used TOTP step).

use std::net::IpAddr;

use carekeep_protocol::auth::Role;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{
    AccessRow, ChallengeRow, DeviceFlags, DeviceRow, IssuedTokens, PassedSignIn, RefreshRow, SessionRow, UserRow,
};
use crate::ServerError;
use crate::admin::NewUser;
use crate::auth::AuthError;
use crate::auth::throttle::{Budget, Throttle};
use crate::keys::{self, Key, MasterKeys};
use crate::pg::{Pool, tenant_tx};

/// How long an attempt may hold its budget before another node may take it: far longer than
/// a password check (whose hashing permit is taken before the lease), short enough that a
/// node killed mid-check blocks no one for long. Leases run on the database's clock, so a
/// node whose clock is off cannot take another's.
const LEASE_SECS: f64 = 30.0;

/// Sign-in state in PostgreSQL, through a pool shared by a node's requests.
pub struct PgAccounts {
    pool: Pool,
    /// Seals usernames, password hashes, TOTP secrets and device names.
    seal_key: Key,
    /// Keys the username index.
    index_key: Key,
    /// Authenticates what account rows bind (see the module's doc).
    row_key: Key,
    /// Keys token hashes before they are stored or looked up.
    token_key: Key,
    /// The keys every node must share for the rules to hold across them: rotated refresh
    /// tokens (a retry on another node gets the same token) and the throttle's budgets,
    /// windows and device cookies (one budget, not one per node).
    pub(crate) rotations: Key,
    pub(crate) sign_in: Key,
}

/// Statement parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

/// A database failure during sign-in: logged with the database's message only (never its
/// detail, which may quote a row), answered as "try again" when the database is out of
/// reach and as a server error otherwise.
#[expect(clippy::needless_pass_by_value, reason = "map_err hands the error over by value")]
fn failed(e: tokio_postgres::Error) -> AuthError {
    if crate::pg::passing(&e) {
        tracing::error!("PostgreSQL out of reach during sign-in");
        return AuthError::Unavailable;
    }
    if let Some(db) = e.as_db_error() {
        tracing::error!(code = db.code().code(), message = db.message(), "PostgreSQL error during sign-in");
    } else {
        tracing::error!("PostgreSQL answered sign-in with something unexpected");
    }
    AuthError::Internal
}

/// A session row from the columns `d.id, d.revoked, d.revoked_by_person, d.wipe,
/// u.disabled, d.last_seen, l.idle_secs, u.tenant`, the first at `first`.
fn session(r: &Row, first: usize) -> SessionRow {
    SessionRow {
        device_id: r.get(first),
        flags: DeviceFlags { revoked: r.get(first + 1), revoked_by_person: r.get(first + 2), wipe: r.get(first + 3) },
        user_disabled: r.get(first + 4),
        last_seen: r.get(first + 5),
        idle_limit: r.get(first + 6),
        tenant: r.get(first + 7),
    }
}

const SESSION_COLUMNS: &str =
    "d.id, d.revoked, d.revoked_by_person, d.wipe, u.disabled, d.last_seen, l.idle_secs, u.tenant";
/// What a token's session rests on, each with its MAC: the token, its device, its user.
const CHAIN_COLUMNS: &str = "t.token_hash, t.tenant, t.device_id, t.mac, d.id, d.tenant, d.user_id, d.mac,
     u.id, u.tenant, u.role, u.username_key, u.mac";
const SESSION_JOINS: &str = "JOIN devices d ON d.id = t.device_id JOIN users u ON u.id = d.user_id
     LEFT JOIN idle_limits l ON l.tenant = u.tenant AND l.role = u.role";

impl PgAccounts {
    /// Connects a node (or a command) to the database at `url` through at most `size`
    /// connections, as a role the tenant policies bind ([`crate::pg::app_pool`]), with the
    /// server's master key — which must be the deployment's: the first to connect records a
    /// check of it, and a data directory with other keys is refused (its rows would open on
    /// no other node).
    pub async fn connect(url: &str, size: usize, master: &MasterKeys) -> Result<Self, ServerError> {
        let accounts = Self::new(crate::pg::app_pool(url, size).await?, master);
        let check = keys::mac(&accounts.index_key, &[b"deployment key check"]);
        let client = crate::pg::pooled(&accounts.pool).await?;
        crate::pg::schema::check_version(&client).await?;
        client
            .execute("INSERT INTO deployment (key_check) VALUES ($1) ON CONFLICT DO NOTHING", &[&check.as_slice()])
            .await
            .map_err(crate::pg::failed)?;
        let found: Vec<u8> = client
            .query_one("SELECT key_check FROM deployment", &[])
            .await
            .map_err(crate::pg::failed)?
            .get(0);
        if found != check {
            return Err(ServerError::Store(
                "this data directory's master key is not the one this database's deployment uses: \
                 run with a copy of the data directory the other servers use"
                    .into(),
            ));
        }
        drop(client);
        Ok(accounts)
    }

    /// The id and tenant of the user signing in as `username`, if there is one (for the
    /// admin commands).
    pub async fn find_user(&self, username: &str) -> Result<Option<(String, String)>, ServerError> {
        let found = self
            .user_by_name(username)
            .await
            .map_err(|e| ServerError::Store(format!("cannot look the user up: {e}")))?;
        Ok(found.map(|user| (user.id, user.tenant)))
    }

    /// The node's pool, which the records and the audit share.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Uses `pool` with the accounts keys of the server's master key, unchecked (see
    /// [`PgAccounts::connect`]).
    fn new(pool: Pool, master: &MasterKeys) -> Self {
        let subkey = |label: &[u8]| Key::new(keys::mac(&master.accounts, &[label]));
        Self {
            pool,
            seal_key: subkey(b"seal"),
            index_key: subkey(b"username-index"),
            row_key: subkey(b"row-mac"),
            token_key: subkey(b"token-hash"),
            rotations: master.rotations.clone(),
            sign_in: master.sign_in.clone(),
        }
    }

    /// Adds a user to `tenant` with a password and an active TOTP secret; returns the secret
    /// for the person's authenticator, once.
    pub async fn add_user(
        &self,
        tenant: &str,
        username: &str,
        role: Role,
        password: &str,
        now: i64,
    ) -> Result<NewUser, ServerError> {
        let new = crate::admin::new_account(username, password)?;
        let id = &new.user.id;
        let username_sealed = keys::seal(&self.seal_key, &aad(b"username", id), username.as_bytes())?;
        let password_sealed = keys::seal(&self.seal_key, &aad(b"password", id), new.password_hash.as_bytes())?;
        let totp_sealed = keys::seal(&self.seal_key, &aad(b"totp", id), &new.totp_secret)?;
        let store = crate::pg::failed;
        let mut client = crate::pg::pooled(&self.pool).await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(store)?;
        let username_key = self.username_key(username);
        let mac = self.row_mac(&[b"user", id.as_bytes(), tenant.as_bytes(), role.as_str().as_bytes(), &username_key]);
        tx.execute(
            "INSERT INTO users (id, tenant, username_key, username_sealed, role, password_sealed, totp_secret, created_at, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[id, &tenant, &username_key.as_slice(), &username_sealed, &role.as_str(), &password_sealed, &totp_sealed, &now, &mac],
        )
        .await
        .map_err(|e| ServerError::Invalid(format!("cannot add user {username}: {}", store(e))))?;
        tx.commit().await.map_err(store)?;
        Ok(new.user)
    }

    /// The tenant `username` belongs to, if there is such a user.
    async fn tenant_of_user(&self, username: &str) -> Result<Option<String>, ServerError> {
        let client = crate::pg::pooled(&self.pool).await?;
        let row = client
            .query_one("SELECT tenant_of_username($1)", &[&self.username_key(username).as_slice()])
            .await
            .map_err(crate::pg::failed)?;
        Ok(row.get(0))
    }

    /// Disables `username` and signs out all their devices, on every node.
    pub async fn disable_user(&self, username: &str) -> Result<(), ServerError> {
        let store = crate::pg::failed;
        let no_user = || ServerError::Invalid(format!("no user named {username}"));
        let tenant = self.tenant_of_user(username).await?.ok_or_else(no_user)?;
        let mut client = crate::pg::pooled(&self.pool).await?;
        let tx = tenant_tx(&mut client, &tenant).await.map_err(store)?;
        let user = tx
            .query_opt(
                "UPDATE users SET disabled = true WHERE username_key = $1 AND tenant = $2 RETURNING id",
                &[&self.username_key(username).as_slice(), &tenant],
            )
            .await
            .map_err(store)?
            .ok_or_else(no_user)?;
        let id: String = user.get(0);
        tx.execute(
            "UPDATE devices SET revoked = true, revoked_by_person = true WHERE user_id = $1 AND tenant = $2",
            &[&id, &tenant],
        )
        .await
        .map_err(store)?;
        tx.commit().await.map_err(store)
    }

    /// Gives `username` a new TOTP secret (a lost authenticator) and signs out all their
    /// devices, on every node; returns the secret for their new authenticator, once.
    pub async fn reset_mfa(&self, username: &str) -> Result<NewUser, ServerError> {
        let store = crate::pg::failed;
        let no_user = || ServerError::Invalid(format!("no user named {username}"));
        let tenant = self.tenant_of_user(username).await?.ok_or_else(no_user)?;
        let secret = crate::auth::totp::new_secret()?;
        let generator = crate::auth::totp::totp(&secret, username)?;
        let mut client = crate::pg::pooled(&self.pool).await?;
        let tx = tenant_tx(&mut client, &tenant).await.map_err(store)?;
        let id: String = tx
            .query_opt(
                "SELECT id FROM users WHERE username_key = $1 AND tenant = $2",
                &[&self.username_key(username).as_slice(), &tenant],
            )
            .await
            .map_err(store)?
            .ok_or_else(no_user)?
            .get(0);
        let sealed = keys::seal(&self.seal_key, &aad(b"totp", &id), &secret)?;
        tx.execute(
            "UPDATE users SET totp_secret = $2, totp_pending = NULL WHERE id = $1 AND tenant = $3",
            &[&id, &sealed, &tenant],
        )
        .await
        .map_err(store)?;
        tx.execute("UPDATE devices SET revoked = true WHERE user_id = $1 AND tenant = $2", &[&id, &tenant])
            .await
            .map_err(store)?;
        tx.commit().await.map_err(store)?;
        let otpauth_uri = generator.to_url().map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
        Ok(NewUser { id, totp_base32: generator.secret().to_base32(), otpauth_uri })
    }

    /// Sets how long `role`'s devices in `tenant` may stay unused, on every node.
    pub async fn set_idle_limit(&self, tenant: &str, role: Role, minutes: u32) -> Result<(), ServerError> {
        crate::admin::check_idle_minutes(minutes)?;
        let store = crate::pg::failed;
        let mut client = crate::pg::pooled(&self.pool).await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(store)?;
        tx.execute(
            "INSERT INTO idle_limits (tenant, role, idle_secs) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, role) DO UPDATE SET idle_secs = excluded.idle_secs",
            &[&tenant, &role.as_str(), &(i64::from(minutes) * 60)],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
                ServerError::Invalid(format!("no tenant {tenant}"))
            } else {
                store(e)
            }
        })?;
        tx.commit().await.map_err(store)
    }

    /// A token's hash as PostgreSQL keeps it: keyed, so a row cannot be made for a token.
    fn token(&self, hash: &[u8]) -> Vec<u8> {
        keys::mac(&self.token_key, &[hash]).to_vec()
    }

    /// The MAC of what a row binds.
    fn row_mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        keys::mac(&self.row_key, parts).to_vec()
    }

    /// Checks a row's MAC; a row altered by someone without the master key is refused.
    fn check_row(&self, parts: &[&[u8]], mac: &[u8]) -> Result<(), AuthError> {
        if keys::verify_mac(&self.row_key, parts, mac) {
            return Ok(());
        }
        tracing::error!("an account row does not match its MAC: altered in the database");
        Err(AuthError::Internal)
    }

    /// Checks the user row of columns `u.id, u.tenant, u.role, u.username_key, u.mac`
    /// starting at `first`.
    fn check_user(&self, r: &Row, first: usize) -> Result<(), AuthError> {
        let (id, tenant, role): (&str, &str, &str) = (r.get(first), r.get(first + 1), r.get(first + 2));
        let username_key: &[u8] = r.get(first + 3);
        let parts: [&[u8]; 5] = [b"user", id.as_bytes(), tenant.as_bytes(), role.as_bytes(), username_key];
        self.check_row(&parts, r.get(first + 4))
    }

    /// Checks the [`CHAIN_COLUMNS`] at `first`: a token of `kind` with `extra` bound, its
    /// device and its user, each as the server wrote it.
    fn check_chain(&self, r: &Row, first: usize, kind: &[u8], extra: &[u8]) -> Result<(), AuthError> {
        self.check_token(r, first, kind, extra)?;
        self.check_device(r, first + 4)?;
        self.check_user(r, first + 8)
    }

    /// Checks the device row of columns `d.id, d.tenant, d.user_id, d.mac` at `first`.
    fn check_device(&self, r: &Row, first: usize) -> Result<(), AuthError> {
        let (id, tenant, user): (&str, &str, &str) = (r.get(first), r.get(first + 1), r.get(first + 2));
        self.check_row(&[b"device", id.as_bytes(), tenant.as_bytes(), user.as_bytes()], r.get(first + 3))
    }

    /// Checks the token row of columns `t.token_hash, t.tenant, t.device_id, t.mac` at
    /// `first`, for a token of `kind` with `extra` bound.
    fn check_token(&self, r: &Row, first: usize, kind: &[u8], extra: &[u8]) -> Result<(), AuthError> {
        let (hash, tenant, device): (&[u8], &str, &str) = (r.get(first), r.get(first + 1), r.get(first + 2));
        self.check_row(&[kind, hash, tenant.as_bytes(), device.as_bytes(), extra], r.get(first + 3))
    }

    /// The MAC of a pending second step: whose it is, until when, and the budget it carries.
    fn challenge_mac(
        &self,
        hash: &[u8],
        tenant: &str,
        user_id: &str,
        expires_at: i64,
        bucket: &[u8],
        known: bool,
    ) -> Vec<u8> {
        let (expires, known) = (expires_at.to_be_bytes(), [u8::from(known)]);
        self.row_mac(&challenge_binding(hash, tenant, user_id, &expires, bucket, &known))
    }

    fn username_key(&self, username: &str) -> [u8; 32] {
        keys::mac(&self.index_key, &[username.as_bytes()])
    }

    fn open(&self, label: &[u8], id: &str, sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, AuthError> {
        keys::open(&self.seal_key, &aad(label, id), sealed).ok_or_else(|| {
            tracing::error!("a sealed account field did not open: altered, moved, or another server's key");
            AuthError::Internal
        })
    }

    fn open_text(&self, label: &[u8], id: &str, sealed: &[u8]) -> Result<String, AuthError> {
        String::from_utf8(self.open(label, id, sealed)?.to_vec()).map_err(|_| AuthError::Internal)
    }

    fn seal(&self, label: &[u8], id: &str, plain: &[u8]) -> Result<Vec<u8>, AuthError> {
        keys::seal(&self.seal_key, &aad(label, id), plain).map_err(|_| AuthError::Internal)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, AuthError> {
        crate::pg::pooled(&self.pool).await.map_err(|_| AuthError::Unavailable)
    }

    /// Runs one statement in `tenant`; returns the rows it changed.
    async fn execute(&self, tenant: &str, sql: &str, params: &Params<'_>) -> Result<u64, AuthError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(failed)?;
        let changed = tx.execute(sql, params).await.map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(changed)
    }

    /// Runs one query in `tenant`.
    async fn query(&self, tenant: &str, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, AuthError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, tenant).await.map_err(failed)?;
        let rows = tx.query(sql, params).await.map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(rows)
    }

    /// Runs one query in the tenant `function` (a schema function naming the tenant of one
    /// key) finds for `key`, with `key` as its first parameter; nothing when none.
    async fn lookup(&self, function: &'static str, key: &[u8], sql: &str) -> Result<Option<Row>, AuthError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(failed)?;
        tx.execute(&format!("SELECT set_config('carekeep.tenant', coalesce({function}($1), ''), true)"), &[&key])
            .await
            .map_err(failed)?;
        let row = tx.query_opt(sql, &[&key]).await.map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(row)
    }

    pub(super) async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>, AuthError> {
        let key = self.username_key(username);
        let row = self
            .lookup(
                "tenant_of_username",
                &key,
                "SELECT password_sealed, disabled, id, tenant, role, username_key, mac FROM users WHERE username_key = $1",
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        self.check_user(&r, 2)?;
        let id: String = r.get(2);
        let password_hash = self.open_text(b"password", &id, r.get(0))?;
        Ok(Some(UserRow { tenant: r.get(3), password_hash, disabled: r.get(1), id }))
    }

    pub(super) async fn insert_challenge(
        &self,
        hash: &[u8],
        tenant: &str,
        user_id: &str,
        expires_at: i64,
        bucket: &[u8],
        known_device: bool,
    ) -> Result<(), AuthError> {
        let hash = self.token(hash);
        let mac = self.challenge_mac(&hash, tenant, user_id, expires_at, bucket, known_device);
        self.execute(
            tenant,
            "INSERT INTO mfa_challenges (token_hash, tenant, user_id, expires_at, bucket, known_device, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&hash, &tenant, &user_id, &expires_at, &bucket, &known_device, &mac],
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn challenge(&self, hash: &[u8]) -> Result<Option<ChallengeRow>, AuthError> {
        let hash = self.token(hash);
        let Some(r) = self
            .lookup(
                "tenant_of_challenge",
                &hash,
                "SELECT c.user_id, c.expires_at, u.totp_secret, u.disabled, c.bucket, c.known_device,
                        u.username_sealed, u.tenant, c.tenant, c.mac,
                        u.id, u.tenant, u.role, u.username_key, u.mac
                 FROM mfa_challenges c JOIN users u ON u.id = c.user_id WHERE c.token_hash = $1",
            )
            .await?
        else {
            return Ok(None);
        };
        let (user_id, tenant): (&str, &str) = (r.get(0), r.get(8));
        let bucket: Option<&[u8]> = r.get(4);
        let (expires, known) = (r.get::<_, i64>(1).to_be_bytes(), [u8::from(r.get::<_, bool>(5))]);
        let parts = challenge_binding(&hash, tenant, user_id, &expires, bucket.unwrap_or_default(), &known);
        self.check_row(&parts, r.get(9))?;
        self.check_user(&r, 10)?;
        let user_id: String = r.get(0);
        let totp_stored: Vec<u8> = r.get(2);
        let totp_secret = self.open(b"totp", &user_id, &totp_stored)?.to_vec();
        let username = self.open_text(b"username", &user_id, r.get(6))?;
        Ok(Some(ChallengeRow {
            expires_at: r.get(1),
            totp_secret,
            totp_stored,
            user_disabled: r.get(3),
            bucket: r.get(4),
            known_device: r.get(5),
            username,
            tenant: r.get(7),
            user_id,
        }))
    }

    pub(super) async fn pass_sign_in(&self, passed: &PassedSignIn, issued: &IssuedTokens) -> Result<(), AuthError> {
        let name = self.seal(b"device-name", &passed.device_id, passed.device_name.as_bytes())?;
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, &passed.tenant).await.map_err(failed)?;
        // Of two nodes taking one challenge, or claiming one step, the second waits for the
        // first's row lock and then finds nothing left to take.
        if tx
            .execute("DELETE FROM mfa_challenges WHERE token_hash = $1", &[&self.token(&passed.challenge_hash)])
            .await
            .map_err(failed)?
            == 0
        {
            return Err(AuthError::ChallengeExpired);
        }
        // Disabled, or given a new authenticator, since the challenge was read: as expired.
        // The row stays locked to the end, so neither can happen before this commits.
        let still_open: Option<bool> = tx
            .query_opt(
                "SELECT NOT disabled AND totp_secret = $2 FROM users WHERE id = $1 AND tenant = $3 FOR UPDATE",
                &[&passed.user_id, &passed.totp_stored, &passed.tenant],
            )
            .await
            .map_err(failed)?
            .map(|r| r.get(0));
        if still_open != Some(true) {
            return Err(AuthError::ChallengeExpired);
        }
        if tx
            .execute(
                "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND tenant = $3 AND totp_last_step < $2",
                &[&passed.user_id, &passed.step, &passed.tenant],
            )
            .await
            .map_err(failed)?
            == 0
        {
            return Err(AuthError::CodeAlreadyUsed);
        }
        // The budget starts afresh; its lease stays with the attempt that holds it.
        tx.execute(
            "UPDATE sign_in_budgets SET failures = 0, blocked_until = 0 WHERE bucket = $1",
            &[&passed.budget.stored_key()],
        )
        .await
        .map_err(failed)?;
        let mac = self.row_mac(&[
            b"device",
            passed.device_id.as_bytes(),
            passed.tenant.as_bytes(),
            passed.user_id.as_bytes(),
        ]);
        tx.execute(
            "INSERT INTO devices (id, tenant, user_id, name_sealed, created_at, last_seen, full_auth_at, mac)
             VALUES ($1, $2, $3, $4, $5, $5, $5, $6)",
            &[&passed.device_id, &passed.tenant, &passed.user_id, &name, &passed.now, &mac],
        )
        .await
        .map_err(failed)?;
        self.write_tokens(&tx, issued).await?;
        tx.commit().await.map_err(failed)
    }

    pub(super) async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshRow>, AuthError> {
        let sql = format!(
            "SELECT t.used, {SESSION_COLUMNS}, {CHAIN_COLUMNS} FROM refresh_tokens t {SESSION_JOINS} WHERE t.token_hash = $1"
        );
        let Some(r) = self.lookup("tenant_of_refresh_token", &self.token(hash), &sql).await? else { return Ok(None) };
        self.check_chain(&r, 9, b"refresh", &[])?;
        Ok(Some(RefreshRow { used: r.get(0), session: session(&r, 1) }))
    }

    pub(super) async fn refresh_used(
        &self,
        tenant: &str,
        hash: &[u8],
        device_id: &str,
    ) -> Result<Option<bool>, AuthError> {
        let rows = self
            .query(
                tenant,
                "SELECT used FROM refresh_tokens WHERE token_hash = $1 AND device_id = $2",
                &[&self.token(hash), &device_id],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    pub(super) async fn rotate(&self, spent_hash: &[u8], issued: &IssuedTokens) -> Result<Option<String>, AuthError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, &issued.tenant).await.map_err(failed)?;
        // Of two nodes rotating one token, the second waits for the first's row lock and
        // then finds it used.
        let spent = tx
            .execute(
                "UPDATE refresh_tokens SET used = true WHERE token_hash = $1 AND tenant = $2 AND NOT used",
                &[&self.token(spent_hash), &issued.tenant],
            )
            .await
            .map_err(failed)?;
        if spent == 0 {
            return Ok(None);
        }
        let user_id = self.write_tokens(&tx, issued).await?;
        tx.commit().await.map_err(failed)?;
        Ok(Some(user_id))
    }

    pub(super) async fn refresh_device(&self, hash: &[u8]) -> Result<Option<(String, String)>, AuthError> {
        let row = self
            .lookup(
                "tenant_of_refresh_token",
                &self.token(hash),
                "SELECT token_hash, tenant, device_id, mac FROM refresh_tokens WHERE token_hash = $1",
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        self.check_token(&r, 0, b"refresh", &[])?;
        Ok(Some((r.get(1), r.get(2))))
    }

    pub(super) async fn access_token(&self, hash: &[u8]) -> Result<Option<AccessRow>, AuthError> {
        let sql = format!(
            "SELECT t.expires_at, u.id, u.role, {SESSION_COLUMNS}, {CHAIN_COLUMNS}
             FROM access_tokens t {SESSION_JOINS} WHERE t.token_hash = $1"
        );
        let Some(r) = self.lookup("tenant_of_access_token", &self.token(hash), &sql).await? else { return Ok(None) };
        let expires_at: i64 = r.get(0);
        self.check_chain(&r, 11, b"access", &expires_at.to_be_bytes())?;
        Ok(Some(AccessRow { expires_at, user_id: r.get(1), role: r.get(2), session: session(&r, 3) }))
    }

    pub(super) async fn touch_device(&self, tenant: &str, device_id: &str, now: i64) -> Result<(), AuthError> {
        self.execute(
            tenant,
            "UPDATE devices SET last_seen = $2 WHERE id = $1 AND tenant = $3",
            &[&device_id, &now, &tenant],
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn record_tokens(&self, issued: &IssuedTokens) -> Result<String, AuthError> {
        let mut client = self.client().await?;
        let tx = tenant_tx(&mut client, &issued.tenant).await.map_err(failed)?;
        let user_id = self.write_tokens(&tx, issued).await?;
        tx.commit().await.map_err(failed)?;
        Ok(user_id)
    }

    pub(super) async fn full_auth_at(&self, tenant: &str, device_id: &str) -> Result<i64, AuthError> {
        let rows = self
            .query(tenant, "SELECT full_auth_at FROM devices WHERE id = $1", &[&device_id])
            .await?;
        rows.first().map(|r| r.get(0)).ok_or(AuthError::SessionEnded)
    }

    pub(super) async fn begin_totp(&self, tenant: &str, user_id: &str, secret: &[u8]) -> Result<String, AuthError> {
        let pending = self.seal(b"totp", user_id, secret)?;
        let rows = self
            .query(
                tenant,
                "UPDATE users SET totp_pending = $2 WHERE id = $1 RETURNING username_sealed",
                &[&user_id, &pending],
            )
            .await?;
        let sealed: Vec<u8> = rows.first().map(|r| r.get(0)).ok_or(AuthError::SessionEnded)?;
        self.open_text(b"username", user_id, &sealed)
    }

    pub(super) async fn usernames(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, String>, AuthError> {
        let rows = self
            .query(
                tenant,
                "SELECT id, tenant, role, username_key, mac, username_sealed FROM users WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        let mut names = std::collections::HashMap::new();
        for row in &rows {
            self.check_user(row, 0)?;
            let id: String = row.get(0);
            names.insert(id.clone(), self.open_text(b"username", &id, row.get(5))?);
        }
        Ok(names)
    }

    pub(super) async fn pending_totp(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, AuthError> {
        let rows = self
            .query(tenant, "SELECT totp_pending FROM users WHERE id = $1", &[&user_id])
            .await?;
        match rows.first().and_then(|r| r.get::<_, Option<Vec<u8>>>(0)) {
            Some(sealed) => Ok(Some((self.open(b"totp", user_id, &sealed)?.to_vec(), sealed))),
            None => Ok(None),
        }
    }

    pub(super) async fn confirm_totp(
        &self,
        tenant: &str,
        user_id: &str,
        stored: &[u8],
        step: i64,
    ) -> Result<bool, AuthError> {
        let changed = self
            .execute(
                tenant,
                "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $2
                 WHERE id = $1 AND totp_pending = $3",
                &[&user_id, &step, &stored],
            )
            .await?;
        Ok(changed > 0)
    }

    pub(super) async fn devices(
        &self,
        tenant: &str,
        all_users: bool,
        user_id: &str,
    ) -> Result<Vec<DeviceRow>, AuthError> {
        let rows = self
            .query(
                tenant,
                "SELECT id, user_id, name_sealed, created_at, last_seen, revoked, wipe FROM devices
                 WHERE tenant = $1 AND ($2 OR user_id = $3) ORDER BY created_at, id",
                &[&tenant, &all_users, &user_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                let name = self.open_text(b"device-name", &id, r.get(2))?;
                Ok(DeviceRow {
                    user_id: r.get(1),
                    name,
                    created_at: r.get(3),
                    last_seen: r.get(4),
                    revoked: r.get(5),
                    wipe: r.get(6),
                    id,
                })
            })
            .collect()
    }

    pub(super) async fn device_in_reach(
        &self,
        tenant: &str,
        device_id: &str,
        all_users: bool,
        user_id: &str,
    ) -> Result<bool, AuthError> {
        let rows = self
            .query(
                tenant,
                "SELECT 1 FROM devices WHERE id = $1 AND tenant = $2 AND ($3 OR user_id = $4)",
                &[&device_id, &tenant, &all_users, &user_id],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    pub(super) async fn revoke_by_person(&self, tenant: &str, device_id: &str, wipe: bool) -> Result<(), AuthError> {
        self.execute(
            tenant,
            "UPDATE devices SET revoked = true, revoked_by_person = true, wipe = (wipe OR $2) WHERE id = $1 AND tenant = $3",
            &[&device_id, &wipe, &tenant],
        )
        .await
        .map(|_| ())
    }

    pub(super) async fn end_device(&self, tenant: &str, device_id: &str) -> Result<(), AuthError> {
        self.execute(tenant, "UPDATE devices SET revoked = true WHERE id = $1 AND tenant = $2", &[&device_id, &tenant])
            .await
            .map(|_| ())
    }

    /// Counts an attempt from an unknown device in its network's window of this minute, in
    /// the database every node shares; refuses it when the network is over its limit.
    pub(super) async fn admit(&self, throttle: &Throttle, client: IpAddr, now: i64) -> Result<(), AuthError> {
        let minute = now.div_euclid(60);
        let network = throttle.network_key(client);
        let row = self
            .client()
            .await?
            .query_one(
                "WITH gone AS (DELETE FROM sign_in_windows WHERE minute < $1::bigint - 5)
                 INSERT INTO sign_in_windows (minute, network, attempts) VALUES ($1, $2, 1)
                 ON CONFLICT (minute, network) DO UPDATE SET attempts = sign_in_windows.attempts + 1
                 RETURNING attempts, coalesce((SELECT failures FROM sign_in_failures WHERE minute = $1), 0)",
                &[&minute, &network.as_slice()],
            )
            .await
            .map_err(failed)?;
        let attempts = u32::try_from(row.get::<_, i32>(0)).unwrap_or(u32::MAX);
        let server_failures = u32::try_from(row.get::<_, i32>(1)).unwrap_or(u32::MAX);
        if attempts > throttle.network_limit(server_failures) {
            return Err(AuthError::RateLimited { retry_after_secs: 60 - now.rem_euclid(60) });
        }
        Ok(())
    }

    /// Leases `budget` to this attempt until it releases it (or [`LEASE_SECS`] pass);
    /// refuses with a one-second wait while another attempt, on any node, holds it.
    pub(super) async fn lease(&self, budget: &Budget, now: i64) -> Result<Lease, AuthError> {
        let mut lease = [0_u8; 16];
        getrandom::fill(&mut lease).map_err(|_| AuthError::Internal)?;
        let bucket = budget.stored_key();
        let taken = self
            .client()
            .await?
            .query_opt(
                "INSERT INTO sign_in_budgets (bucket, failures, blocked_until, last_failure, lease, leased_until)
                 VALUES ($1, 0, 0, $2, $3, extract(epoch FROM clock_timestamp())::float8 + $4)
                 ON CONFLICT (bucket) DO UPDATE SET lease = excluded.lease, leased_until = excluded.leased_until
                 WHERE sign_in_budgets.leased_until <= extract(epoch FROM clock_timestamp())::float8
                 RETURNING 1",
                &[&bucket, &now, &lease.as_slice(), &LEASE_SECS],
            )
            .await
            .map_err(failed)?;
        if taken.is_none() {
            return Err(AuthError::Throttled { retry_after_secs: 1 });
        }
        Ok(Lease { pool: self.pool.clone(), bucket, mark: lease, released: false })
    }

    pub(super) async fn blocked_until(&self, bucket: &[u8]) -> Result<Option<i64>, AuthError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT blocked_until FROM sign_in_budgets WHERE bucket = $1", &[&bucket])
            .await
            .map_err(failed)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Counts a failure against a budget (and, with `unknown_device`, the deployment's
    /// minute), makes the budget wait what `delay_after` its failures says; returns the wait.
    pub(super) async fn failed(
        &self,
        bucket: &[u8],
        unknown_device: bool,
        now: i64,
        forget_before: i64,
        delay_after: impl Fn(i64) -> i64,
    ) -> Result<i64, AuthError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(failed)?;
        tx.execute(
            "DELETE FROM sign_in_budgets WHERE last_failure < $1 AND blocked_until < $2
             AND leased_until <= extract(epoch FROM clock_timestamp())::float8",
            &[&forget_before, &now],
        )
        .await
        .map_err(failed)?;
        let failures: i64 = tx
            .query_one(
                "INSERT INTO sign_in_budgets (bucket, failures, blocked_until, last_failure) VALUES ($1, 1, 0, $2)
                 ON CONFLICT (bucket) DO UPDATE
                 SET failures = CASE WHEN sign_in_budgets.last_failure < $3 AND sign_in_budgets.blocked_until < $2
                                     THEN 1 ELSE sign_in_budgets.failures + 1 END,
                     last_failure = excluded.last_failure
                 RETURNING failures",
                &[&bucket, &now, &forget_before],
            )
            .await
            .map_err(failed)?
            .get(0);
        let delay = delay_after(failures);
        if delay > 0 {
            tx.execute(
                "UPDATE sign_in_budgets SET blocked_until = greatest(blocked_until, $2) WHERE bucket = $1",
                &[&bucket, &(now + delay)],
            )
            .await
            .map_err(failed)?;
        }
        if unknown_device {
            tx.execute(
                "WITH gone AS (DELETE FROM sign_in_failures WHERE minute < $1::bigint - 5)
                 INSERT INTO sign_in_failures (minute, failures) VALUES ($1, 1)
                 ON CONFLICT (minute) DO UPDATE SET failures = sign_in_failures.failures + 1",
                &[&now.div_euclid(60)],
            )
            .await
            .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)?;
        Ok(delay)
    }
}

impl PgAccounts {
    /// Records the tokens of one issue (their hashes keyed, each row with its MAC) and the
    /// device's activity inside `tx`; returns the device's user.
    async fn write_tokens(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        issued: &IssuedTokens,
    ) -> Result<String, AuthError> {
        let (tenant, device) = (issued.tenant.as_bytes(), issued.device_id.as_bytes());
        let access = self.token(&issued.access_hash);
        let access_mac = self.row_mac(&[b"access", &access, tenant, device, &issued.expires_at.to_be_bytes()]);
        tx.execute(
            "INSERT INTO access_tokens (token_hash, tenant, device_id, expires_at, last_used, mac)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&access, &issued.tenant, &issued.device_id, &issued.expires_at, &issued.now, &access_mac],
        )
        .await
        .map_err(failed)?;
        if let Some(refresh_hash) = &issued.new_refresh_hash {
            let refresh = self.token(refresh_hash);
            let refresh_mac = self.row_mac(&[b"refresh", &refresh, tenant, device, &[]]);
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, tenant, device_id, issued_at, mac) VALUES ($1, $2, $3, $4, $5)",
                &[&refresh, &issued.tenant, &issued.device_id, &issued.now, &refresh_mac],
            )
            .await
            .map_err(failed)?;
        }
        let row = tx
            .query_opt(
                "UPDATE devices SET last_seen = $2 WHERE id = $1 AND tenant = $3 RETURNING user_id",
                &[&issued.device_id, &issued.now, &issued.tenant],
            )
            .await
            .map_err(failed)?;
        row.map(|r| r.get(0)).ok_or_else(|| {
            tracing::error!("tokens issued for a device its tenant does not hold");
            AuthError::Internal
        })
    }
}

/// What a pending second step's MAC binds.
fn challenge_binding<'a>(
    hash: &'a [u8],
    tenant: &'a str,
    user_id: &'a str,
    expires: &'a [u8; 8],
    bucket: &'a [u8],
    known: &'a [u8; 1],
) -> [&'a [u8]; 7] {
    [b"challenge", hash, tenant.as_bytes(), user_id.as_bytes(), expires, bucket, known]
}

/// The additional data a sealed account field is bound to: what it is and whose.
fn aad(label: &[u8], id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + 1 + id.len());
    aad.extend_from_slice(label);
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// One attempt's hold on a budget in the shared database.
pub(crate) struct Lease {
    pool: Pool,
    bucket: Vec<u8>,
    /// This attempt's random mark on the row: releasing clears only its own.
    mark: [u8; 16],
    released: bool,
}

impl Lease {
    /// Frees the budget now.
    pub(super) async fn release(mut self) {
        release(self.pool.clone(), self.bucket.clone(), self.mark).await;
        // Only now: a request dropped during the release still frees it from `drop`.
        self.released = true;
    }
}

impl Drop for Lease {
    /// A request dropped half-way (its client went away) frees its budget in the background.
    fn drop(&mut self) {
        if !self.released
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(release(self.pool.clone(), std::mem::take(&mut self.bucket), self.mark));
        }
    }
}

async fn release(pool: Pool, bucket: Vec<u8>, lease: [u8; 16]) {
    let Ok(client) = pool.get().await else { return };
    // Not ours any more if it expired and another attempt took it.
    if let Err(e) = client
        .execute(
            "UPDATE sign_in_budgets SET lease = NULL, leased_until = 0 WHERE bucket = $1 AND lease = $2",
            &[&bucket, &lease.as_slice()],
        )
        .await
    {
        let _ = failed(e);
    }
}
