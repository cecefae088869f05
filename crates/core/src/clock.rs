//! Injected time (DESIGN.md §1): every timeout is tested by moving a clock, never by sleeping.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
///
/// Persisted timestamps (the unlock back-off, which must survive a restart) use wall time;
/// callers must treat a clock that went backwards as "no time has passed".
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to: for tests and simulations of long timeouts.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<i64>,
}

impl ManualClock {
    /// A clock reading `start_unix`.
    pub fn new(start_unix: i64) -> Self {
        Self { now: Mutex::new(start_unix) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let step = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        let mut now = self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = now.saturating_add(step);
    }

    /// Sets the clock back by `by`, as a user changing the system time would.
    pub fn rewind(&self, by: Duration) {
        let step = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        let mut now = self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = now.saturating_sub(step);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        *self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
