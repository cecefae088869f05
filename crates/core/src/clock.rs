//! Injected time (DESIGN.md §1): every timeout is tested by moving a clock, never by sleeping.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock and monotonic time.
///
/// Persisted timestamps (the unlock back-off, which must survive a restart) use wall time;
/// callers must treat a clock that went backwards as "no time has passed". Timeouts within
/// one run (idle lock) use monotonic time, which no one can set back.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> i64;

    /// Time since an arbitrary start, never going backwards.
    fn monotonic(&self) -> Duration;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn monotonic(&self) -> Duration {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed()
    }
}

/// A clock that moves only when told to: for tests and simulations of long timeouts.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<i64>,
    monotonic: Mutex<Duration>,
}

impl ManualClock {
    /// A clock reading `start_unix` (and monotonic zero).
    pub fn new(start_unix: i64) -> Self {
        Self { now: Mutex::new(start_unix), monotonic: Mutex::new(Duration::ZERO) }
    }

    /// Lets `by` pass: both the wall clock and the monotonic clock move forward.
    pub fn advance(&self, by: Duration) {
        let step = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        let mut now = self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = now.saturating_add(step);
        let mut monotonic = self.monotonic.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *monotonic = monotonic.saturating_add(by);
    }

    /// Sets the wall clock back by `by`, as a user changing the system time would; the
    /// monotonic clock does not move.
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

    fn monotonic(&self) -> Duration {
        *self.monotonic.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
