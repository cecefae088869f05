//! The session state machine (DESIGN.md §3): who may see records on this device, right now.
//!
//! ```text
//!   SignedOut ──full sign-in──▶ Unlocked ◀──presence / offline password──┐
//!                                  │  idle, background, OS lock            │
//!                                  ▼                                       │
//!                               Locked ──window passed, key gone──▶ ReauthRequired
//!   any ──revoked / remote wipe──▶ Wiped          any ──logout──▶ SignedOut
//! ```
//!
//! Pure logic over an injected [`Clock`]: idle and background timers run on the monotonic
//! clock, so changing the system time cannot stretch them; the age of the last full sign-in
//! is the larger of its wall-clock and monotonic ages, and a wall clock set back before the
//! sign-in counts as "too old", so moving the clock back never extends a session. The shell
//! feeds in what happened (input, backgrounding, the OS locking, a verified presence check);
//! the session says what state follows and records every change as a chained, PHI-free
//! audit record for upload ([`Session::take_audit`]).

use std::sync::Arc;
use std::time::Duration;

use carekeep_protocol::audit::{AuditEvent, AuditRecord, Outcome};
use carekeep_protocol::auth::Role;
use carekeep_protocol::policy::Policy;
use time::format_description::well_known::Rfc3339;

use crate::error::{ServerError, UnlockError};
use crate::{Clock, Error, Result};

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No one is signed in on this device.
    SignedOut,
    /// Records may be shown.
    Unlocked,
    /// Views are wiped and keys dropped; presence or the password unlocks.
    Locked,
    /// Only a full sign-in (password + code; offline: the password within the grace) unlocks.
    ReauthRequired,
    /// The server revoked the device or asked for a wipe: the cache is gone.
    Wiped,
}

impl State {
    /// The state's name, as audit records and the app's screens use it (`locked`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            State::SignedOut => "signed-out",
            State::Unlocked => "unlocked",
            State::Locked => "locked",
            State::ReauthRequired => "reauth-required",
            State::Wiped => "wiped",
        }
    }
}

/// Why the state changed; it names the transition in the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Password and code accepted by the server.
    FullSignIn,
    /// No input for the idle limit.
    Idle,
    /// The app went to the background (or was minimised) past the grace.
    Backgrounded,
    /// The operating system locked the session.
    OsLocked,
    /// A verified biometric / presence check.
    Presence,
    /// The password, checked locally, while the server is out of reach.
    OfflinePassword,
    /// The last full sign-in is older than the policy allows for this unlock.
    WindowPassed,
    /// The enrolled biometrics changed.
    BiometricsChanged,
    /// The device key is no longer in the keychain.
    DeviceKeyGone,
    /// Locked by hand.
    Manual,
    /// The user signed out.
    Logout,
    /// The server revoked this device.
    Revoked,
    /// The server asked this device to erase its records.
    RemoteWipe,
    /// A connection was refused because the server's certificate matched no pin.
    PinMismatch,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::FullSignIn => "full-sign-in",
            Reason::Idle => "idle",
            Reason::Backgrounded => "backgrounded",
            Reason::OsLocked => "os-locked",
            Reason::Presence => "presence",
            Reason::OfflinePassword => "offline-password",
            Reason::WindowPassed => "window-passed",
            Reason::BiometricsChanged => "biometrics-changed",
            Reason::DeviceKeyGone => "device-key-gone",
            Reason::Manual => "manual",
            Reason::Logout => "logout",
            Reason::Revoked => "revoked",
            Reason::RemoteWipe => "remote-wipe",
            Reason::PinMismatch => "pin-mismatch",
        }
    }
}

/// A change of state, for the shell to act on (wipe views on `Locked`, erase on `Wiped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: State,
    /// After.
    pub to: State,
    /// Why.
    pub reason: Reason,
}

/// The timing rules of one tenant and role, from the signed [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Lock after this long without input.
    pub idle_lock: Duration,
    /// Lock this long after going to the background (zero: at once).
    pub background_grace: Duration,
    /// Presence unlocks only while the last full sign-in is younger than this.
    pub absolute_reauth: Duration,
    /// High-risk actions need a full sign-in at most this old.
    pub step_up: Duration,
    /// Offline, the password alone unlocks while the last full sign-in is younger.
    pub offline_grace: Duration,
}

impl Rules {
    /// The rules a signed policy sets (the grace capped at 30 s, as DESIGN §3 says).
    pub fn from_policy(policy: &Policy) -> Self {
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        Self {
            idle_lock: secs(policy.idle_lock_secs),
            background_grace: secs(policy.background_grace_secs.min(30)),
            absolute_reauth: secs(policy.absolute_reauth_secs),
            step_up: secs(policy.step_up_secs),
            offline_grace: secs(policy.offline_grace_secs),
        }
    }
}

/// Who the session belongs to (opaque ids only: they go into audit records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Tenant id.
    pub tenant: String,
    /// User id.
    pub user: String,
    /// Role.
    pub role: Role,
    /// The server's id for this device.
    pub device: String,
}

/// When the last full sign-in happened: wall time (survives restarts) and, within this
/// run, monotonic time (survives clock changes).
#[derive(Debug, Clone, Copy)]
struct FullAuth {
    wall: i64,
    monotonic: Option<Duration>,
}

/// One device's session.
pub struct Session {
    clock: Arc<dyn Clock>,
    state: State,
    identity: Option<Identity>,
    rules: Option<Rules>,
    full_auth: Option<FullAuth>,
    last_input: Duration,
    backgrounded_at: Option<Duration>,
    audit: Vec<AuditRecord>,
    chain_end: Option<AuditRecord>,
    /// The latest wall time known to have been true (earlier device readings, the server's
    /// clock): a device clock set back below it does not make time go back.
    latest_known_time: i64,
}

impl Session {
    /// A device where no one is signed in.
    pub fn signed_out(clock: Arc<dyn Clock>) -> Self {
        Self {
            last_input: clock.monotonic(),
            clock,
            state: State::SignedOut,
            identity: None,
            rules: None,
            full_auth: None,
            backgrounded_at: None,
            audit: Vec::new(),
            chain_end: None,
            latest_known_time: i64::MIN,
        }
    }

    /// Continues the local audit chain from `chain_end` (the last record queued on this
    /// device), so records of successive runs link up.
    #[must_use]
    pub fn continuing(mut self, chain_end: Option<AuditRecord>) -> Self {
        self.chain_end = chain_end;
        self
    }

    /// The app starting on a device with a vault: `Locked`, with the last full sign-in's
    /// wall time as the vault recorded it, and `chain_end` the last local audit record.
    pub fn resume(
        clock: Arc<dyn Clock>,
        identity: Identity,
        rules: Rules,
        last_full_auth_unix: i64,
        chain_end: Option<AuditRecord>,
    ) -> Self {
        let mut session = Self::signed_out(clock);
        session.state = State::Locked;
        session.identity = Some(identity);
        session.rules = Some(rules);
        session.full_auth = Some(FullAuth { wall: last_full_auth_unix, monotonic: None });
        session.chain_end = chain_end;
        session
    }

    /// `unix` is known to be (or to have been) the true time: a reading of this device's
    /// clock from an earlier run, or the server's clock. Windows are measured from the later
    /// of this and the device clock, so setting the clock back after a restart gains nothing
    /// beyond the time last seen.
    pub fn time_seen(&mut self, unix: i64) {
        self.latest_known_time = self.latest_known_time.max(unix);
    }

    /// The latest time known to be true, for the caller to keep across restarts.
    pub fn latest_known_time(&self) -> i64 {
        self.latest_known_time.max(self.clock.now_unix())
    }

    /// The current state (timers are applied by [`Session::tick`]).
    pub fn state(&self) -> State {
        self.state
    }

    /// The rules in force, once someone signed in.
    pub fn rules(&self) -> Option<Rules> {
        self.rules
    }

    /// The wall time of the last full sign-in (for the vault to keep across restarts).
    pub fn last_full_auth_unix(&self) -> Option<i64> {
        self.full_auth.map(|a| a.wall)
    }

    /// Password and code were accepted by the server: `Unlocked`, and the windows restart.
    pub fn full_sign_in(&mut self, identity: Identity, rules: Rules) -> Transition {
        self.identity = Some(identity);
        self.rules = Some(rules);
        self.full_auth = Some(FullAuth { wall: self.clock.now_unix(), monotonic: Some(self.clock.monotonic()) });
        self.last_input = self.clock.monotonic();
        self.backgrounded_at = None;
        self.go(State::Unlocked, Reason::FullSignIn)
    }

    /// The person did something: the idle timer restarts.
    pub fn input(&mut self) {
        if self.state == State::Unlocked {
            self.last_input = self.clock.monotonic();
        }
    }

    /// The idle limit in force while unlocked (`None` when locked): for a shell that must
    /// notice an idle lock falling due while a long command holds the account.
    pub fn idle_limit(&self) -> Option<Duration> {
        if self.state == State::Unlocked { self.rules.map(|r| r.idle_lock) } else { None }
    }

    /// Applies the timers: the idle limit, and the background grace. Call it often (every
    /// few seconds) and before showing anything.
    pub fn tick(&mut self) -> Option<Transition> {
        let (State::Unlocked, Some(rules)) = (self.state, self.rules) else { return None };
        let now = self.clock.monotonic();
        if let Some(since) = self.backgrounded_at
            && now.saturating_sub(since) >= rules.background_grace
        {
            return Some(self.lock_for(Reason::Backgrounded));
        }
        (now.saturating_sub(self.last_input) >= rules.idle_lock).then(|| self.lock_for(Reason::Idle))
    }

    /// The app went to the background or was minimised: locks at once, or after the grace.
    pub fn backgrounded(&mut self) -> Option<Transition> {
        if self.state != State::Unlocked {
            return None;
        }
        self.backgrounded_at = Some(self.clock.monotonic());
        self.tick()
    }

    /// The app is in front again (within the grace, nothing happened).
    pub fn foregrounded(&mut self) -> Option<Transition> {
        let transition = self.tick();
        self.backgrounded_at = None;
        transition
    }

    /// The operating system locked the session (screen lock): lock at once.
    pub fn os_locked(&mut self) -> Option<Transition> {
        (self.state == State::Unlocked).then(|| self.lock_for(Reason::OsLocked))
    }

    /// Locks at once, by the person's choice.
    pub fn lock(&mut self) -> Option<Transition> {
        (self.state == State::Unlocked).then(|| self.lock_for(Reason::Manual))
    }

    /// Whether a biometric / presence unlock may be tried now. If the last full sign-in is
    /// too old (or the device key is gone), the session moves to `ReauthRequired` and the
    /// answer is [`UnlockError::ReauthRequired`]: ask for the password and code instead.
    pub fn check_presence_unlock(&mut self, device_key_intact: bool) -> Result<()> {
        if self.state != State::Locked {
            return Err(self.not_now());
        }
        let rules = self.rules.ok_or(Error::Unlock(UnlockError::ReauthRequired))?;
        if !device_key_intact {
            self.go(State::ReauthRequired, Reason::DeviceKeyGone);
            return Err(Error::Unlock(UnlockError::ReauthRequired));
        }
        if !self.full_auth_within(rules.absolute_reauth) {
            self.go(State::ReauthRequired, Reason::WindowPassed);
            return Err(Error::Unlock(UnlockError::ReauthRequired));
        }
        Ok(())
    }

    /// The presence check passed (after [`Session::check_presence_unlock`]): `Unlocked`.
    pub fn presence_verified(&mut self) -> Result<Transition> {
        self.check_presence_unlock(true)?;
        self.last_input = self.clock.monotonic();
        self.backgrounded_at = None;
        Ok(self.go(State::Unlocked, Reason::Presence))
    }

    /// The password was checked locally while the server cannot be reached: unlocks within
    /// the offline grace; past it, only a full sign-in will do.
    pub fn offline_password_verified(&mut self) -> Result<Transition> {
        if !matches!(self.state, State::Locked | State::ReauthRequired) {
            return Err(self.not_now());
        }
        let rules = self.rules.ok_or(Error::Unlock(UnlockError::ReauthRequired))?;
        if !self.full_auth_within(rules.offline_grace) {
            self.record(Reason::OfflinePassword, self.state, Outcome::Denied);
            return Err(Error::Unlock(UnlockError::OfflineGraceOver));
        }
        self.last_input = self.clock.monotonic();
        self.backgrounded_at = None;
        Ok(self.go(State::Unlocked, Reason::OfflinePassword))
    }

    /// Before a high-risk action (export, share, change MFA or password, break-glass): the
    /// last full sign-in must be recent, else [`ServerError::StepUpRequired`].
    pub fn check_step_up(&self) -> Result<()> {
        let rules = self.rules.ok_or(Error::Server(ServerError::StepUpRequired))?;
        if self.state == State::Unlocked && self.full_auth_within(rules.step_up) {
            Ok(())
        } else {
            Err(Error::Server(ServerError::StepUpRequired))
        }
    }

    /// The enrolled biometrics changed: presence can no longer vouch for this person.
    pub fn biometrics_changed(&mut self) -> Option<Transition> {
        matches!(self.state, State::Unlocked | State::Locked)
            .then(|| self.go(State::ReauthRequired, Reason::BiometricsChanged))
    }

    /// The user signed out (the caller revokes on the server and clears the keychain).
    pub fn logout(&mut self) -> Option<Transition> {
        (self.state != State::SignedOut).then(|| {
            let transition = self.go(State::SignedOut, Reason::Logout);
            self.full_auth = None;
            transition
        })
    }

    /// The server said this device is revoked (`wipe`: asked to erase): `Wiped`.
    pub fn server_ended(&mut self, wipe: bool) -> Option<Transition> {
        (self.state != State::Wiped).then(|| {
            let transition = self.go(State::Wiped, if wipe { Reason::RemoteWipe } else { Reason::Revoked });
            self.full_auth = None;
            transition
        })
    }

    /// Records a refused connection (the certificate matched no pin) without changing state:
    /// a possible interception, for the organisation to see.
    pub fn pin_mismatch(&mut self) {
        self.record(Reason::PinMismatch, self.state, Outcome::Denied);
    }

    /// The local audit records made since the last call, oldest first, for upload.
    pub fn take_audit(&mut self) -> Vec<AuditRecord> {
        std::mem::take(&mut self.audit)
    }

    /// Whether the last full sign-in is younger than `window`, by both clocks and the latest
    /// time known to be true. A wall clock earlier than the sign-in itself means someone
    /// moved it back: not within.
    fn full_auth_within(&self, window: Duration) -> bool {
        let Some(auth) = self.full_auth else { return false };
        if self.clock.now_unix() < auth.wall {
            return false;
        }
        let Ok(wall_age) = u64::try_from(self.latest_known_time() - auth.wall) else { return false };
        let monotonic_age = auth
            .monotonic
            .map_or(Duration::ZERO, |at| self.clock.monotonic().saturating_sub(at));
        Duration::from_secs(wall_age).max(monotonic_age) < window
    }

    fn not_now(&self) -> Error {
        match self.state {
            State::Unlocked => Error::InvalidArgument { what: "unlock", problem: "the session is not locked" },
            State::SignedOut | State::Wiped | State::ReauthRequired | State::Locked => {
                Error::Unlock(UnlockError::ReauthRequired)
            }
        }
    }

    fn lock_for(&mut self, reason: Reason) -> Transition {
        self.backgrounded_at = None;
        self.go(State::Locked, reason)
    }

    fn go(&mut self, to: State, reason: Reason) -> Transition {
        let from = self.state;
        self.state = to;
        self.record(reason, to, Outcome::Success);
        Transition { from, to, reason }
    }

    /// Appends a local, chained, PHI-free record of a transition (or a refused one).
    fn record(&mut self, reason: Reason, to: State, outcome: Outcome) {
        let now = time::OffsetDateTime::from_unix_timestamp(self.clock.now_unix())
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let identity = self.identity.as_ref();
        let event = AuditEvent {
            recorded_at: now.clone(),
            occurred_at: Some(now),
            tenant: identity.map_or_else(|| "-".to_owned(), |i| i.tenant.clone()),
            user: identity.map(|i| i.user.clone()),
            role: identity.map(|i| i.role.as_str().to_owned()),
            device: identity.map(|i| i.device.clone()),
            ip: None,
            action: match reason {
                Reason::PinMismatch => carekeep_protocol::sync::CONNECTION_REFUSED.to_owned(),
                _ => format!("session {} ({})", to.as_str(), reason.as_str()),
            },
            resource_type: None,
            resource_id: None,
            patient: None,
            outcome,
            break_glass: false,
        };
        let record = AuditRecord::append(self.chain_end.as_ref(), event);
        self.chain_end = Some(record.clone());
        self.audit.push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::{Reason, State};

    /// The server appends only actions of the shared vocabulary: every transition this
    /// session can record must be one.
    #[test]
    fn every_transition_is_in_the_servers_vocabulary() {
        let reasons = [
            Reason::FullSignIn,
            Reason::Idle,
            Reason::Backgrounded,
            Reason::OsLocked,
            Reason::Presence,
            Reason::OfflinePassword,
            Reason::WindowPassed,
            Reason::BiometricsChanged,
            Reason::DeviceKeyGone,
            Reason::Manual,
            Reason::Logout,
            Reason::Revoked,
            Reason::RemoteWipe,
        ];
        let states = [State::SignedOut, State::Unlocked, State::Locked, State::ReauthRequired, State::Wiped];
        for reason in reasons {
            // Exhaustive on purpose: a new reason fails to compile here until it is listed.
            match reason {
                Reason::FullSignIn
                | Reason::Idle
                | Reason::Backgrounded
                | Reason::OsLocked
                | Reason::Presence
                | Reason::OfflinePassword
                | Reason::WindowPassed
                | Reason::BiometricsChanged
                | Reason::DeviceKeyGone
                | Reason::Manual
                | Reason::Logout
                | Reason::Revoked
                | Reason::RemoteWipe
                | Reason::PinMismatch => {}
            }
            for state in states {
                let action = format!("session {} ({})", state.as_str(), reason.as_str());
                assert!(carekeep_protocol::sync::is_device_action(&action), "{action}");
            }
        }
    }
}
