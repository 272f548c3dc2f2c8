//! Capped, jittered exponential back-off: the delay before the next reconnect or restart.

use std::time::Duration;

use serde::Deserialize;

/// A back-off policy: `initial`, doubled per consecutive failure up to `max`, with "equal jitter" (the delay is
/// drawn from `[d/2, d]`) so that many clients failing together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BackoffPolicy {
    #[serde(with = "millis")]
    pub initial: Duration,
    #[serde(with = "millis")]
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self { initial: Duration::from_millis(250), max: Duration::from_secs(30) }
    }
}

/// The state of one back-off: how many failures in a row.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self { policy, failures: 0 }
    }

    /// The upper bound of the next delay, before jitter: `initial * 2^failures`, capped at `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.policy.initial.saturating_mul(factor).min(self.policy.max)
    }

    /// The delay before the next attempt, counting one more failure. `unit` in `[0, 1]` picks the jitter.
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// The delay before the next attempt, with random jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(fastrand::f64())
    }

    /// A success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, max_ms: u64) -> BackoffPolicy {
        BackoffPolicy { initial: Duration::from_millis(initial_ms), max: Duration::from_millis(max_ms) }
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(policy(100, 1000));
        let ceilings: Vec<u128> =
            (0..6).map(|_| (backoff.ceiling(), backoff.next_delay_with(1.0)).0.as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.failures(), 6, "each delay counts one failure");
    }

    #[test]
    fn a_policy_reads_its_durations_in_milliseconds() {
        let read: BackoffPolicy = serde_json::from_str(r#"{"initial": 250, "max": 30000}"#).expect("valid");
        assert_eq!(read, BackoffPolicy::default());
    }

    #[test]
    fn jitter_stays_within_half_to_full_ceiling() {
        // TC0: lowest jitter is half the ceiling.
        assert_eq!(Backoff::new(policy(100, 1000)).next_delay_with(0.0), Duration::from_millis(50));
        // TC1: highest is the ceiling.
        assert_eq!(Backoff::new(policy(100, 1000)).next_delay_with(1.0), Duration::from_millis(100));
        // TC2: out-of-range jitter is clamped.
        assert_eq!(Backoff::new(policy(100, 1000)).next_delay_with(7.0), Duration::from_millis(100));
        // TC3: random jitter never exceeds the ceiling nor drops below half of it.
        let mut backoff = Backoff::new(policy(100, 1000));
        for _ in 0..100 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay();
            assert!(delay <= ceiling && delay >= ceiling / 2);
        }
    }

    #[test]
    fn survives_huge_failure_counts_and_resets() {
        let mut backoff = Backoff::new(policy(250, 30_000));
        for _ in 0..1_000 {
            backoff.next_delay_with(1.0);
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(30), "no overflow past the cap");
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.ceiling(), Duration::from_millis(250));
    }

    #[test]
    fn zero_initial_never_waits() {
        let mut backoff = Backoff::new(policy(0, 1000));
        assert_eq!(backoff.next_delay_with(1.0), Duration::ZERO);
        assert_eq!(backoff.next_delay_with(1.0), Duration::ZERO);
    }
}
