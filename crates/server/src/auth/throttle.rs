//! Slowing password and code guessing down without handing anyone a way to lock an account
//! (NIST SP 800-63B §5.2.2; OWASP's "device cookies").
//!
//! - Every attempt draws on a budget: the account's budget for devices it does not know,
//!   or — when the request carries a valid device cookie for that account — that device's
//!   own. Unknown usernames have budgets exactly like known ones, so neither the answers nor
//!   their timing tell whether a name exists.
//! - A budget's first [`ThrottlePolicy::free_failures`] failures cost nothing; each one after
//!   that makes the next attempt wait, doubling from [`ThrottlePolicy::first_delay_secs`] up
//!   to [`ThrottlePolicy::max_delay_secs`]. Nothing ever locks: a guesser slows to a few
//!   tries an hour, and the owner, on a device they signed in from before, is not held back.
//! - Attempts from devices the account does not know are also limited per network (an IPv4
//!   /24, an IPv6 /64); once the whole server has taken its minute's share of their
//!   failures, each network's limit drops to a few attempts for the rest of the minute:
//!   spreading over addresses or accounts buys few guesses, and a person trying from a
//!   network that was quiet still gets in (a global budget that closed would let anyone
//!   shut every new device out). Known devices pass both.
//! - A budget is checked by one attempt at a time ([`Throttle::one_at_a_time`]): a burst of
//!   guesses sent at the same instant would otherwise all pass the "must it wait?" check
//!   before any of their failures were counted. A second attempt while one is being checked
//!   is told to wait a second.
//! - What stays possible, by the nature of a budget: a stranger who keeps failing on one
//!   account keeps that account's unknown-device budget waiting (at most 15 minutes between
//!   attempts); the owner signs in from a device they used before.
//!
//! Budgets live in the store under a keyed hash (no username in clear). The per-network and
//! per-server windows start afresh each minute; on the embedded store they live in this
//! process's memory, on PostgreSQL in the database, shared by every node (under a keyed hash
//! of the network, no address in clear): see [`super::store::Accounts`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::address::AddressKey;
use crate::keys;

/// The throttling rules. Defaults: five free failures, then 30 s doubling to 15 min; 30
/// attempts a minute per network from unknown devices, and 3 once the server has taken 300
/// failures from them in the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures a budget absorbs before any wait.
    pub free_failures: i64,
    /// The wait after the first failure beyond the free ones; it doubles with each further.
    pub first_delay_secs: i64,
    /// The longest wait.
    pub max_delay_secs: i64,
    /// Password attempts a minute from one network, from unknown devices (with codes sent
    /// for made-up challenges, and the authenticator change; a real challenge's code was
    /// paid for at its password step).
    pub per_network_per_minute: u32,
    /// Failed attempts a minute the whole server takes from unknown devices before each
    /// network's limit drops to [`ThrottlePolicy::per_network_under_attack`].
    pub server_failures_per_minute: u32,
    /// Attempts a minute per network once the server's failures are over its share.
    pub per_network_under_attack: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            free_failures: 5,
            first_delay_secs: 30,
            max_delay_secs: 15 * 60,
            per_network_per_minute: 30,
            server_failures_per_minute: 300,
            per_network_under_attack: 3,
        }
    }
}

impl ThrottlePolicy {
    /// How long the next attempt must wait after `failures` consecutive failures.
    pub fn delay_after(&self, failures: i64) -> i64 {
        if failures < self.free_failures {
            return 0;
        }
        let doublings = u32::try_from(failures - self.free_failures).unwrap_or(u32::MAX).min(30);
        self.first_delay_secs.saturating_mul(1 << doublings).min(self.max_delay_secs)
    }
}

/// Failures older than this no longer count: a budget forgets a day-old mistake.
pub(crate) const FORGET_AFTER_SECS: i64 = 24 * 3600;

/// Which budget an attempt draws on: an account's (by keyed hash of its name) for unknown
/// devices, or one known device's for that account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    key: [u8; 32],
    known_device: bool,
}

impl Budget {
    /// The stored form, for a half-finished sign-in to carry to its second step.
    pub fn to_stored(&self) -> (Vec<u8>, bool) {
        (self.key.to_vec(), self.known_device)
    }

    /// A budget from its stored form.
    pub fn from_stored(key: &[u8], known_device: bool) -> Option<Self> {
        Some(Self { key: key.try_into().ok()?, known_device })
    }

    /// Whether a known device's cookie selected it.
    pub fn known_device(&self) -> bool {
        self.known_device
    }

    /// The keyed hash the store keeps the budget under.
    pub(crate) fn stored_key(&self) -> Vec<u8> {
        self.key.to_vec()
    }
}

/// Why an attempt was not even tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The budget must wait this many seconds.
    Throttled(i64),
    /// The network or the server took all it takes this minute; wait this many seconds.
    RateLimited(i64),
}

#[derive(Default)]
struct Windows {
    minute: i64,
    per_network: HashMap<AddressKey, u32>,
    server_failures: u32,
}

/// The throttle: budgets, device cookies, and this minute's windows.
pub struct Throttle {
    policy: ThrottlePolicy,
    key: keys::Key,
    windows: Mutex<Windows>,
    /// Budgets an attempt is being checked against right now.
    checking: Mutex<HashSet<[u8; 32]>>,
}

/// An attempt being checked against its budget; the budget is free again when it drops.
pub struct Checking {
    throttle: Arc<Throttle>,
    key: [u8; 32],
}

impl Drop for Checking {
    fn drop(&mut self) {
        self.throttle
            .checking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// The name a budget is kept under: case and surrounding space do not make a new budget.
fn normalised(username: &str) -> String {
    username.trim().to_lowercase()
}

impl Throttle {
    /// A throttle under `policy`, keying budgets and cookies with `key`.
    pub fn new(policy: ThrottlePolicy, key: keys::Key) -> Self {
        Self { policy, key, windows: Mutex::default(), checking: Mutex::default() }
    }

    /// The rules in force.
    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// The budget an attempt at `username` draws on: that device's, when `cookie` is a
    /// device cookie this server gave for this username; the account's for unknown devices
    /// otherwise (a cookie for another name, altered, or none).
    pub fn budget(&self, username: &str, cookie: Option<&str>) -> Budget {
        let name = normalised(username);
        let nonce = cookie.and_then(|c| self.cookie_nonce(&name, c));
        let key = keys::mac(&self.key, &[b"budget", name.as_bytes(), nonce.as_ref().map_or(&[][..], |n| &n[..])]);
        Budget { key, known_device: nonce.is_some() }
    }

    /// A new device cookie for `username`, given at a full sign-in.
    pub fn new_cookie(&self, username: &str) -> Result<String, crate::ServerError> {
        let mut nonce = [0_u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| crate::ServerError::KeyGeneration(e.to_string()))?;
        let tag = keys::mac(&self.key, &[b"device-cookie", normalised(username).as_bytes(), &nonce]);
        let mut cookie = nonce.to_vec();
        cookie.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(cookie))
    }

    fn cookie_nonce(&self, name: &str, cookie: &str) -> Option<[u8; 16]> {
        let bytes = URL_SAFE_NO_PAD.decode(cookie).ok()?;
        let (nonce, tag) = bytes.split_at_checked(16)?;
        keys::verify_mac(&self.key, &[b"device-cookie", name.as_bytes(), nonce], tag).then(|| nonce.try_into().ok())?
    }

    /// Counts an attempt from `client` in this minute's window of its network — unless a
    /// known device makes it — and refuses it when the network is over its limit (a low one
    /// while the server's failures are over their share).
    pub fn admit(&self, client: IpAddr, budget: &Budget, now: i64) -> Result<(), Held> {
        if budget.known_device {
            return Ok(());
        }
        let mut windows = self.windows(now);
        let limit = self.network_limit(windows.server_failures);
        let count = windows.per_network.entry(AddressKey::network(client)).or_insert(0);
        *count += 1;
        if *count > limit {
            return Err(Held::RateLimited(60 - now.rem_euclid(60)));
        }
        Ok(())
    }

    /// A network's attempts a minute while the server has taken `server_failures` failures
    /// from unknown devices this minute.
    pub(crate) fn network_limit(&self, server_failures: u32) -> u32 {
        if server_failures >= self.policy.server_failures_per_minute {
            self.policy.per_network_under_attack
        } else {
            self.policy.per_network_per_minute
        }
    }

    /// The keyed hash a shared window is kept under: the network of `client` (see
    /// [`AddressKey::network`]), never the address itself.
    pub(crate) fn network_key(&self, client: IpAddr) -> [u8; 32] {
        let network = match AddressKey::network(client) {
            AddressKey::V4(octets) => octets.to_vec(),
            AddressKey::V6Prefix(prefix) => prefix.to_vec(),
        };
        keys::mac(&self.key, &[b"network", &network])
    }

    /// Counts a failure from an unknown device in this process's minute.
    pub(crate) fn count_server_failure(&self, now: i64) {
        self.windows(now).server_failures += 1;
    }

    fn windows(&self, now: i64) -> std::sync::MutexGuard<'_, Windows> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let minute = now.div_euclid(60);
        if windows.minute != minute {
            *windows = Windows { minute, ..Windows::default() };
        }
        windows
    }

    /// Claims `budget` for one attempt's check — its wait, the password or code, and the
    /// failure it may count — or refuses with a one-second wait while another attempt holds
    /// it, so a burst at one instant is checked (and counted) one by one.
    pub fn one_at_a_time(throttle: &Arc<Throttle>, budget: &Budget) -> Result<Checking, Held> {
        if throttle
            .checking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(budget.key)
        {
            Ok(Checking { throttle: throttle.clone(), key: budget.key })
        } else {
            Err(Held::Throttled(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(ThrottlePolicy::default(), zeroize::Zeroizing::new([7; 32]))
    }

    #[test]
    fn waits_double_after_the_free_failures_and_stop_at_the_cap() {
        let p = ThrottlePolicy::default();
        let waits: Vec<i64> = (1..=12).map(|f| p.delay_after(f)).collect();
        assert_eq!(waits, [0, 0, 0, 0, 30, 60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(p.delay_after(i64::MAX), 900);
    }

    #[test]
    fn a_cookie_selects_its_device_budget_only_for_its_own_username() {
        let t = throttle();
        let cookie = t.new_cookie("Amy").unwrap();
        let own = t.budget(" amy ", Some(&cookie));
        assert!(own.known_device());
        assert_ne!(own, t.budget("amy", None), "the device's budget is not the account's");
        assert_eq!(t.budget("amy", None), t.budget("AMY", None));
        let other = t.budget("bob", Some(&cookie));
        assert_eq!(other, t.budget("bob", None), "another name's cookie counts as none");
        let mut forged = cookie.into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(t.budget("amy", Some(&forged)), t.budget("amy", None));
        assert_ne!(t.budget("amy", Some(&t.new_cookie("amy").unwrap())), own, "each device its own");
    }

    #[test]
    fn networks_and_the_server_are_limited_for_unknown_devices_only() {
        let t = throttle();
        let stranger = t.budget("amy", None);
        let known = t.budget("amy", Some(&t.new_cookie("amy").unwrap()));
        let now = 1_800_000_020;
        for host in 0..30 {
            t.admit(format!("127.0.0.{}", 50 + host % 4).parse().unwrap(), &stranger, now)
                .unwrap();
        }
        assert_eq!(t.admit("127.0.0.99".parse().unwrap(), &stranger, now), Err(Held::RateLimited(40)));
        t.admit("127.0.1.1".parse().unwrap(), &stranger, now).unwrap();
        t.admit("127.0.0.50".parse().unwrap(), &known, now).unwrap();
        t.admit("127.0.0.50".parse().unwrap(), &stranger, now + 40).unwrap();
        t.windows(now + 40).server_failures = 300;
        for _ in 0..3 {
            t.admit("10.9.9.9".parse().unwrap(), &stranger, now + 41).unwrap();
        }
        assert!(t.admit("10.9.9.9".parse().unwrap(), &stranger, now + 41).is_err(), "a few per network");
        assert!(t.admit("10.9.9.9".parse().unwrap(), &known, now + 41).is_ok());
        assert!(t.admit("10.7.7.7".parse().unwrap(), &stranger, now + 41).is_ok(), "a quiet network still gets in");
    }
}
