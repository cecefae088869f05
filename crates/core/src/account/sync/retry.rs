//! Trying again after a transient failure (server unreachable, slow, 5xx, garbled answer):
//! exponential back-off with jitter, so many devices coming back online at once do not
//! hammer a recovering server in step.

use std::time::Duration;

/// How often and how patiently a sync retries one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all (1: no retry).
    pub attempts: u32,
    /// The pause before the first retry; it doubles with each further one.
    pub base: Duration,
    /// The longest pause.
    pub cap: Duration,
}

impl Default for Retry {
    /// Four tries, pausing about 0.5 s, 1 s and 2 s between them.
    fn default() -> Self {
        Self { attempts: 4, base: Duration::from_millis(500), cap: Duration::from_secs(8) }
    }
}

impl Retry {
    /// The pause before retry number `retry` (0-based): the doubled base, capped, then a
    /// random point in its upper half ("equal jitter": never zero, never in step).
    pub fn pause(&self, retry: u32) -> Duration {
        let full = self
            .base
            .saturating_mul(1_u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.cap);
        let mut random = [0u8; 4];
        // Without randomness the pause is still bounded; only the jitter is lost.
        let _ = getrandom::fill(&mut random);
        let fraction = f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX);
        full / 2 + full.mul_f64(fraction / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_stay_under_the_cap_and_are_jittered() {
        let retry = Retry { attempts: 6, base: Duration::from_millis(100), cap: Duration::from_millis(500) };
        for n in 0..6 {
            let full = Duration::from_millis(100 * (1 << n)).min(Duration::from_millis(500));
            let pause = retry.pause(n);
            assert!(pause >= full / 2 && pause <= full, "retry {n}: {pause:?}");
        }
        let pauses: std::collections::HashSet<_> = (0..20).map(|_| retry.pause(3)).collect();
        assert!(pauses.len() > 1, "jitter varies the pause");
    }
}
