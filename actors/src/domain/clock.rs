//! The exchange's clock, as candled last observed it: every kline event's `E` and every REST server time moves it.
//! Deadlines (a close that is late, a candle the audit may expect) are judged on it, never on the local clock.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// The offset between the exchange's clock and the local one, from the latest observation. Shared by every actor;
/// lock-free, so the hot path (one store per event) stays cheap.
#[derive(Debug, Default)]
pub struct ExchangeClock {
    offset_ms: AtomicI64,
    known: AtomicBool,
}

impl ExchangeClock {
    /// The exchange said it was `exchange_ms` when the local clock read `local_ms`.
    pub fn observe(&self, exchange_ms: i64, local_ms: i64) {
        self.offset_ms.store(exchange_ms - local_ms, Ordering::Relaxed);
        self.known.store(true, Ordering::Relaxed);
    }

    /// The exchange's time when the local clock reads `local_ms`; `None` before the first observation.
    pub fn at(&self, local_ms: i64) -> Option<i64> {
        self.known.load(Ordering::Relaxed).then(|| local_ms + self.offset_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_observation_sets_the_offset() {
        let clock = ExchangeClock::default();
        // TC0: nothing observed yet.
        assert_eq!(clock.at(1_000), None);
        // TC1: the exchange is 500 ms ahead.
        clock.observe(1_500, 1_000);
        assert_eq!(clock.at(2_000), Some(2_500));
        // TC2: a later observation replaces it, even when it moves the clock back.
        clock.observe(1_900, 2_000);
        assert_eq!(clock.at(3_000), Some(2_900));
    }
}
