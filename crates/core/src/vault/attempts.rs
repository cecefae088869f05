//! The failed-unlock counter: persisted, so quitting the app does not reset it.

use std::time::Duration;

use super::Profile;
use crate::error::UnlockError;
use crate::{Clock, Error, Result};

/// How wrong passwords are answered. Values come from the server's signed policy; these
/// defaults apply until one is cached (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnlockPolicy {
    /// From this many failures on, each further attempt waits (doubling each time).
    pub backoff_from: u32,
    /// At this many failures the local cache is wiped.
    pub wipe_after: u32,
    /// The first wait.
    pub base_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for UnlockPolicy {
    fn default() -> Self {
        Self {
            backoff_from: 3,
            wipe_after: 10,
            base_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(15 * 60),
        }
    }
}

impl UnlockPolicy {
    /// How long to wait after `failures` failures before the next attempt.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures < self.backoff_from {
            return Duration::ZERO;
        }
        let doublings = (failures - self.backoff_from).min(20);
        self.base_delay.saturating_mul(1 << doublings).min(self.max_delay)
    }
}

/// The counter's state on disk: `<failures> <unix time of the last one>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Attempts {
    pub(crate) failures: u32,
    pub(crate) last_failure: i64,
}

impl Attempts {
    pub(crate) fn load(profile: &Profile) -> Result<Self> {
        let text = match std::fs::read_to_string(profile.attempts_file()) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io("read", &e)),
        };
        let mut parts = text.split_whitespace().map(str::parse::<i64>);
        match (parts.next(), parts.next()) {
            (Some(Ok(failures)), Some(Ok(last_failure))) => {
                Ok(Self { failures: u32::try_from(failures).unwrap_or(u32::MAX), last_failure })
            }
            // A damaged counter must not hand out fresh attempts, nor wipe on a misread:
            // it reads as the default back-off threshold.
            _ => Ok(Self { failures: UnlockPolicy::default().backoff_from, last_failure: 0 }),
        }
    }

    pub(crate) fn save(self, profile: &Profile) -> Result<()> {
        profile
            .write_atomically(&profile.attempts_file(), format!("{} {}\n", self.failures, self.last_failure).as_bytes())
    }

    pub(crate) fn reset(profile: &Profile) -> Result<()> {
        match std::fs::remove_file(profile.attempts_file()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("write", &e)),
        }
    }

    /// `Err(UnlockBackoff)` while the policy's wait since the last failure has not passed.
    /// A clock set back restarts the wait from now rather than letting it run for ever.
    pub(crate) fn check_wait(&mut self, policy: &UnlockPolicy, clock: &dyn Clock, profile: &Profile) -> Result<()> {
        let now = clock.now_unix();
        if now < self.last_failure {
            self.last_failure = now;
            self.save(profile)?;
        }
        let delay = i64::try_from(policy.delay_after(self.failures).as_secs()).unwrap_or(i64::MAX);
        let ready_at = self.last_failure.saturating_add(delay);
        if now < ready_at {
            let wait = u64::try_from(ready_at - now).unwrap_or(0);
            return Err(Error::Unlock(UnlockError::UnlockBackoff { retry_after: Duration::from_secs(wait) }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_the_third_failure_and_doubles_to_a_cap() {
        let p = UnlockPolicy::default();
        assert_eq!(p.delay_after(0), Duration::ZERO);
        assert_eq!(p.delay_after(2), Duration::ZERO);
        assert_eq!(p.delay_after(3), Duration::from_secs(5));
        assert_eq!(p.delay_after(4), Duration::from_secs(10));
        assert_eq!(p.delay_after(9), Duration::from_secs(320));
        assert_eq!(p.delay_after(40), p.max_delay);
    }
}
