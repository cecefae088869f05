//! A signed-in account on this device: the pinned server, the vault, the session state
//! machine and the keychain, tied together (DESIGN.md §2–§4).
//!
//! - [`Account::sign_in`]: password and code at the server; the vault is created at the
//!   first sign-in and unlocked with the same password at later ones; the refresh token goes
//!   to the keychain, the access token stays in memory, the signed policy is cached.
//! - [`Account::open`]: a later start — locked, with the cached policy checked again.
//! - Unlocking follows the [`Session`] rules: the device key only inside the presence
//!   window, the password only inside the offline grace, otherwise a full sign-in.
//! - [`Account::logout`] revokes at the server and clears the keychain (and, on shared
//!   workstations by policy, the cache); [`Account::wipe`] erases everything.
//!
//! The profile's `session.json` holds what is needed before unlocking — server address,
//! pins, opaque ids, the time of the last full sign-in, the signed policy — never PHI or a
//! secret. Someone able to edit it as the user could stretch the presence window, but such
//! a person can read the user's keychain anyway; the refresh token and keys stay there.

mod access_history;
mod activity;
mod audit_queue;
mod authenticator;
mod devices;
mod documents;
mod export;
mod facts;
mod reading;
pub mod summary;
pub mod sync;
pub use access_history::{ACCESS_HISTORY_COUNT, ServerAccess};
pub use export::PatientExport;
pub use writing::HomeReading;
mod writing;

use std::sync::Arc;

use carekeep_protocol::Secret;
use carekeep_protocol::audit::AuditRecord;
use carekeep_protocol::pins::PinSet;

use crate::error::{CacheError, ConnectionError, ServerError, UnlockError};
use crate::keychain::Item;
use crate::net::{Server, ServerUrl, VerifiedPolicy};
use crate::presence::PresenceVerifier;
use crate::session::{Identity, Rules, Session, State};
use crate::store::Store;
use crate::{Clock, DeviceId, Error, Keychain, Password, Profile, Result, UserId, Vault, WipeReport};
use facts::Facts;

/// One account on one device.
pub struct Account {
    profile: Profile,
    keychain: Keychain,
    clock: Arc<dyn Clock>,
    facts: Facts,
    server: Server,
    vault: Vault,
    session: Session,
    /// Memory only: never written anywhere.
    access_token: Option<Secret>,
    /// How sync retries transient failures.
    retry: sync::Retry,
}

/// What `status` shows: no PHI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The session state.
    pub state: State,
    /// The server.
    pub server: String,
    /// Tenant, user id and role.
    pub tenant: String,
    /// The opaque user id.
    pub user_id: String,
    /// The role.
    pub role: carekeep_protocol::auth::Role,
    /// When the last full sign-in was (Unix seconds).
    pub last_full_auth_unix: i64,
    /// Whether the pin set has expired (it is still enforced).
    pub pins_expired: bool,
    /// Writes waiting for upload, when unlocked.
    pub pending_writes: Option<u64>,
    /// When the last sync finished (Unix seconds); `None` before the first.
    pub last_sync_unix: Option<i64>,
    /// The idle limit in force for this tenant and role.
    pub idle_lock: std::time::Duration,
}

/// What a full sign-in needs: where, which pins, who, and the two factors.
pub struct SignIn<'a> {
    /// The server.
    pub url: ServerUrl,
    /// Its pins (from IT's provisioning, or the last signed policy).
    pub pins: PinSet,
    /// The account name.
    pub username: &'a str,
    /// The password (also the vault's password on this device).
    pub password: &'a Password,
    /// The authenticator's current code.
    pub code: &'a str,
    /// A name for this device in the user's device list (no PHI).
    pub device_name: &'a str,
}

/// How a logout went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedOut {
    /// The server revoked this device's session (false: it could not be reached; the local
    /// tokens are gone, and the server ends the session at its idle limit).
    pub revoked_at_server: bool,
    /// The cache was erased too (shared-workstation policy).
    pub cache_wiped: bool,
}

impl Account {
    /// Signs in at `url` (pinned to `pins`) with password and authenticator code, and opens
    /// this device's vault for the user: created at the first sign-in, unlocked with the
    /// same password afterwards. A profile holding another user's records is refused.
    pub async fn sign_in(
        profile: &Profile,
        keychain: Keychain,
        clock: Arc<dyn Clock>,
        request: SignIn<'_>,
    ) -> Result<Self> {
        let SignIn { url, pins, username, password, code, device_name } = request;
        let server = Server::connect(url, pins)?;
        let cookie = std::fs::read_to_string(profile.device_cookie_file())
            .ok()
            .map(|c| Secret::new(c.trim()));
        let challenge = match server.login(username, password.expose(), cookie.as_ref()).await {
            Err(Error::Connection(ConnectionError::PinMismatch)) => {
                // No account yet, but the refusal is still queued for the organisation.
                let mut witness = Session::signed_out(clock.clone()).continuing(audit_queue::last(profile)?);
                witness.pin_mismatch();
                if profile.dir().exists() {
                    audit_queue::append(profile, &witness.take_audit())?;
                }
                return Err(Error::Connection(ConnectionError::PinMismatch));
            }
            other => other?,
        };
        let tokens = server.verify_code(challenge, code, device_name).await?;
        let verified = server.policy(&tokens.access_token).await?;
        let user = UserId::new(tokens.user_id.clone())?;
        let vault = if profile.has_vault() {
            let mut vault = Vault::open(profile, keychain.clone())?.with_clock(clock.clone());
            if vault.user_id() != &user {
                return Err(Error::Cache(CacheError::OtherAccount));
            }
            vault.unlock_with_password(password)?;
            // A fresh device key at every full sign-in (logout deleted the last one). Without
            // a keychain the password remains the way in.
            unless_no_keychain(vault.enroll_device_key())?;
            vault
        } else {
            Vault::create(profile, keychain.clone(), &user, &DeviceId::new(tokens.device_id.clone())?, password)?
                .with_clock(clock.clone())
        };
        // Without a keychain the refresh token lives in memory only: the next start signs in.
        unless_no_keychain(store_refresh_token(&keychain, &vault, &tokens.refresh_token))?;
        if let Some(cookie) = &tokens.device_cookie {
            profile.write_atomically(&profile.device_cookie_file(), cookie.expose().as_bytes())?;
        }
        let mut facts = Facts::new(&server, &tokens, &verified, clock.now_unix());
        // A sign-in again (step-up, re-authentication) keeps what the cache already holds.
        facts.last_sync_unix = Facts::read(profile).ok().and_then(|f| f.last_sync_unix);
        facts.write(profile)?;
        let chain_end = audit_queue::last(profile)?;
        let mut session = Session::signed_out(clock.clone()).continuing(chain_end);
        session.full_sign_in(facts.identity(), Rules::from_policy(&verified.policy));
        session.time_seen(server.last_server_time().unwrap_or(i64::MIN));
        Ok(Self {
            profile: profile.clone(),
            keychain,
            clock,
            facts,
            server,
            vault,
            session,
            access_token: Some(tokens.access_token),
            retry: sync::Retry::default(),
        })
    }

    /// The account signed in on this device, locked. [`CacheError::NoVault`] if no one is.
    pub fn open(profile: &Profile, keychain: Keychain, clock: Arc<dyn Clock>) -> Result<Self> {
        let facts = Facts::read(profile)?;
        let policy = facts.policy()?;
        let server = Server::connect(ServerUrl::parse(&facts.server)?, facts.pins.clone())?;
        let vault = Vault::open(profile, keychain.clone())?.with_clock(clock.clone());
        let mut session = Session::resume(
            clock.clone(),
            facts.identity(),
            Rules::from_policy(&policy.policy),
            facts.last_full_auth_unix,
            audit_queue::last(profile)?,
        );
        session.time_seen(facts.latest_known_time);
        Ok(Self {
            profile: profile.clone(),
            keychain,
            clock,
            facts,
            server,
            vault,
            session,
            access_token: None,
            retry: sync::Retry::default(),
        })
    }

    /// Unlocks with the device key from the keychain, if the session allows it (the last
    /// full sign-in inside the presence window, the key intact, not locked by hand) and
    /// `presence` confirms the person — in that order: presence check, keychain, unwrap,
    /// open (DESIGN §2). [`UnlockError::PresenceUnavailable`]: ask for the password instead.
    pub fn unlock_with_device_key(&mut self, presence: &dyn PresenceVerifier) -> Result<()> {
        if self.facts.password_required {
            return Err(Error::Unlock(UnlockError::PasswordRequired));
        }
        let has_key = self.vault.has_device_key().unwrap_or(false);
        self.session.check_presence_unlock(has_key)?;
        presence.verify("Unlock your Carekeep records").map_err(Error::from)?;
        self.vault.unlock_with_device_key()?;
        self.session.presence_verified()?;
        Ok(())
    }

    /// Unlocks with the password, checked against this device's vault: inside the offline
    /// grace since the last full sign-in; after it, only a full sign-in will do.
    pub fn unlock_with_password(&mut self, password: &Password) -> Result<()> {
        self.vault.unlock_with_password(password)?;
        if let Err(e) = self.session.offline_password_verified() {
            self.vault.lock();
            return Err(e);
        }
        if self.facts.password_required {
            self.facts.password_required = false;
            self.facts.write(&self.profile)?;
        }
        Ok(())
    }

    /// Locks now: keys dropped; the next unlock must use the password (the device key is
    /// refused until then), so a walk-away lock cannot be undone by presence alone.
    pub fn lock(&mut self) -> Result<()> {
        self.vault.lock();
        self.session.lock();
        self.facts.password_required = true;
        self.facts.write(&self.profile)
    }

    /// The records, while unlocked.
    pub fn store(&mut self) -> Result<Store<'_>> {
        if self.session.tick().is_some() || self.session.state() != State::Unlocked {
            self.vault.lock();
            return Err(Error::Unlock(UnlockError::Locked));
        }
        self.vault.store()
    }

    /// Where things stand.
    pub fn status(&mut self) -> Status {
        let pending_writes = if self.session.state() == State::Unlocked {
            self.vault.store().ok().and_then(|mut s| s.outbox().len().ok())
        } else {
            None
        };
        let today = time::OffsetDateTime::from_unix_timestamp(self.clock.now_unix())
            .map(time::OffsetDateTime::date)
            .ok();
        Status {
            state: self.session.state(),
            server: self.facts.server.clone(),
            tenant: self.facts.tenant.clone(),
            user_id: self.facts.user_id.clone(),
            role: self.facts.role,
            last_full_auth_unix: self.facts.last_full_auth_unix,
            pins_expired: today.is_none_or(|d| self.facts.pins.is_expired(d)),
            pending_writes,
            last_sync_unix: self.facts.last_sync_unix,
            idle_lock: self.facts.policy().map_or(std::time::Duration::ZERO, |p| {
                std::time::Duration::from_secs(u64::from(p.policy.idle_lock_secs))
            }),
        }
    }

    /// The server, for calls made on this account's behalf.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// A current access token: the one in memory, or a fresh one from the refresh token in
    /// the keychain (which rotates it). A revoked or wiped device ends the session here.
    pub async fn access_token(&mut self) -> Result<Secret> {
        if let Some(token) = &self.access_token {
            return Ok(token.clone());
        }
        let refresh = self.keychain.load_secret(self.vault.device_id().as_str(), Item::RefreshToken)?;
        // Written down before asking: if this process dies after the server rotated but
        // before the new token is in the keychain, the next run retries this same rotation.
        let rotation = if let Some(id) = self.facts.pending_rotation.clone() {
            id
        } else {
            let id = crate::keys::random_token()?;
            self.facts.pending_rotation = Some(id.clone());
            self.facts.write(&self.profile)?;
            id
        };
        let refreshed = self
            .server
            .refresh(&Secret::new(refresh.as_str()), &self.facts.server_device_id, &rotation)
            .await;
        if refreshed.as_ref().is_err_and(|e| !e.is_transient()) {
            // Settled, one way or the other: the next refresh is a new rotation.
            self.facts.pending_rotation = None;
            let _ = self.facts.write(&self.profile);
        }
        let tokens = self.after_server(refreshed)?;
        self.session.time_seen(self.server.last_server_time().unwrap_or(i64::MIN));
        store_refresh_token(&self.keychain, &self.vault, &tokens.refresh_token)?;
        self.facts.pending_rotation = None;
        self.facts.write(&self.profile)?;
        self.access_token = Some(tokens.access_token.clone());
        Ok(tokens.access_token)
    }

    /// Passes a server call's `result` on, first acting on what it means for the device: a
    /// pin mismatch goes to the local audit; a remote wipe or a revocation by the
    /// organisation erases the cache (DESIGN §3: `Wiped`).
    fn after_server<T>(&mut self, result: Result<T>) -> Result<T> {
        match &result {
            Err(Error::Connection(ConnectionError::PinMismatch)) => self.session.pin_mismatch(),
            Err(Error::Server(e @ (ServerError::RemoteWipe | ServerError::DeviceRevoked))) => {
                self.session.server_ended(matches!(e, ServerError::RemoteWipe));
                let _ = self.vault.wipe()?;
            }
            _ => {}
        }
        result
    }

    /// Signs out: the server revokes this device (if reachable), the keychain items and the
    /// session facts go, and on shared workstations (policy) the cache is wiped too.
    pub async fn logout(mut self) -> Result<LoggedOut> {
        let device = self.vault.device_id().as_str().to_owned();
        let revoked_at_server = match self.keychain.load_secret(&device, Item::RefreshToken) {
            Ok(refresh) => self.server.logout(&Secret::new(refresh.as_str())).await.is_ok(),
            Err(_) => false,
        };
        self.session.logout();
        let cache_wiped = self.facts.policy().is_ok_and(|p| p.policy.wipe_on_logout);
        if cache_wiped {
            let _ = self.vault.wipe()?;
        } else {
            self.vault.lock();
            self.keychain.delete_all(&device)?;
            Facts::remove(&self.profile)?;
        }
        Ok(LoggedOut { revoked_at_server, cache_wiped })
    }

    /// Erases this device's copy: database, keys, keychain items, session facts.
    pub fn wipe(mut self) -> Result<WipeReport> {
        self.session.server_ended(true);
        self.vault.wipe()
    }

    /// The audit records queued on this device for upload, oldest first: those written by
    /// earlier runs, then this run's.
    pub fn queued_audit(&mut self) -> Result<Vec<AuditRecord>> {
        self.write_audit()?;
        audit_queue::read(&self.profile)
    }

    /// Moves this run's new audit records to the queue file.
    fn write_audit(&mut self) -> Result<()> {
        audit_queue::append(&self.profile, &self.session.take_audit())
    }
}

impl Drop for Account {
    /// What happened in this run is queued even when the account is dropped on an error
    /// path, and the latest time known to be true is kept for the next start.
    fn drop(&mut self) {
        let _ = self.write_audit();
        if matches!(self.session.state(), State::Unlocked | State::Locked | State::ReauthRequired)
            && self.profile.session_file().exists()
        {
            self.facts.latest_known_time = self.session.latest_known_time();
            let _ = self.facts.write(&self.profile);
        }
    }
}

/// `result`, except that an unreachable keychain is no error: the password stays the way in.
fn unless_no_keychain(result: Result<()>) -> Result<()> {
    match result {
        Err(Error::Unlock(UnlockError::KeychainUnavailable)) => Ok(()),
        other => other,
    }
}

fn store_refresh_token(keychain: &Keychain, vault: &Vault, token: &Secret) -> Result<()> {
    keychain.store_secret(vault.device_id().as_str(), Item::RefreshToken, token.expose())
}

impl Facts {
    fn identity(&self) -> Identity {
        Identity {
            tenant: self.tenant.clone(),
            user: self.user_id.clone(),
            role: self.role,
            device: self.server_device_id.clone(),
        }
    }

    fn policy(&self) -> Result<VerifiedPolicy> {
        VerifiedPolicy::verify(self.signed_policy.clone(), self.policy_key.clone())
    }
}
