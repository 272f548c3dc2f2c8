//! Per-client request weight, counted as Binance counts it: each request adds its weight to the client's current
//! minute (UTC wall clock); going over the limit earns a 429 with `Retry-After` until the minute ends, and a client
//! that sends again before then is banned with 418 for [`BAN`]. One client's weight never touches another's.

use std::collections::HashMap;
use std::hash::Hash;

const MINUTE_MS: i64 = 60_000;
/// How long a client that ignored a 429 is refused (Binance's shortest ban).
pub const BAN_MS: i64 = 120_000;
/// [`BAN_MS`] as a name for the docs.
pub const BAN: std::time::Duration = std::time::Duration::from_millis(BAN_MS as u64);

/// What to answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; the client's weight this minute, this request included.
    Allowed { used: u32 },
    /// 429: over the limit. Retry after this many seconds.
    RateLimited { used: u32, retry_after_secs: u64 },
    /// 418: sent on after a 429. Retry after this many seconds.
    Banned { used: u32, retry_after_secs: u64 },
}

#[derive(Debug, Clone, Copy, Default)]
struct ClientWeight {
    minute: i64,
    used: u32,
    /// A 429 was answered; until then another request is a ban.
    limited_until: i64,
    banned_until: i64,
}

/// The weight of every client seen in the current minute (and of the banned ones).
#[derive(Debug)]
pub struct WeightLimiter<K> {
    limit: u32,
    clients: HashMap<K, ClientWeight>,
    swept_minute: i64,
}

impl<K: Hash + Eq + Clone> WeightLimiter<K> {
    pub fn new(limit: u32) -> Self {
        Self { limit, clients: HashMap::new(), swept_minute: i64::MIN }
    }

    /// Charges `weight` to `client` at `now_ms` (ms UTC), or refuses it.
    pub fn charge(&mut self, client: &K, weight: u32, now_ms: i64) -> Verdict {
        let minute = now_ms.div_euclid(MINUTE_MS);
        self.sweep(minute, now_ms);
        let entry = self.clients.entry(client.clone()).or_default();
        if entry.minute != minute {
            entry.minute = minute;
            entry.used = 0;
        }
        let seconds_until = |until: i64| ((until - now_ms).max(0) as u64).div_ceil(1000).max(1);
        if now_ms < entry.banned_until {
            return Verdict::Banned { used: entry.used, retry_after_secs: seconds_until(entry.banned_until) };
        }
        if now_ms < entry.limited_until {
            entry.banned_until = now_ms + BAN_MS;
            return Verdict::Banned { used: entry.used, retry_after_secs: seconds_until(entry.banned_until) };
        }
        if entry.used.saturating_add(weight) > self.limit {
            entry.limited_until = (minute + 1) * MINUTE_MS;
            return Verdict::RateLimited { used: entry.used, retry_after_secs: seconds_until(entry.limited_until) };
        }
        entry.used += weight;
        Verdict::Allowed { used: entry.used }
    }

    /// The clients tracked: those seen this minute, and those still refused.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    /// Once a minute, forgets clients with nothing left to remember.
    fn sweep(&mut self, minute: i64, now_ms: i64) {
        if minute == self.swept_minute {
            return;
        }
        self.swept_minute = minute;
        self.clients.retain(|_, c| c.minute == minute || now_ms < c.banned_until || now_ms < c.limited_until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_571_200_000; // a minute boundary

    #[test]
    fn a_client_over_its_limit_gets_429_then_418_while_another_is_served() {
        let mut limiter = WeightLimiter::new(10);
        assert_eq!(limiter.charge(&"a", 4, T0), Verdict::Allowed { used: 4 });
        assert_eq!(limiter.charge(&"a", 4, T0 + 1), Verdict::Allowed { used: 8 });
        assert_eq!(limiter.charge(&"a", 4, T0 + 30_000), Verdict::RateLimited { used: 8, retry_after_secs: 30 });
        // The other client's budget is its own.
        assert_eq!(limiter.charge(&"b", 10, T0 + 30_001), Verdict::Allowed { used: 10 });
        // Sending on after the 429 is a ban, for two minutes, even past the minute's end.
        assert_eq!(limiter.charge(&"a", 1, T0 + 40_000), Verdict::Banned { used: 8, retry_after_secs: 120 });
        assert_eq!(limiter.charge(&"a", 1, T0 + 70_000), Verdict::Banned { used: 0, retry_after_secs: 90 });
        assert_eq!(limiter.charge(&"b", 2, T0 + 70_000), Verdict::Allowed { used: 2 });
        assert_eq!(limiter.charge(&"a", 1, T0 + 160_000), Verdict::Allowed { used: 1 });
    }

    #[test]
    fn a_client_that_waits_out_its_429_is_served_in_the_next_minute() {
        let mut limiter = WeightLimiter::new(2);
        assert_eq!(limiter.charge(&1, 2, T0), Verdict::Allowed { used: 2 });
        assert!(matches!(limiter.charge(&1, 2, T0 + 59_500), Verdict::RateLimited { retry_after_secs: 1, .. }));
        assert_eq!(limiter.charge(&1, 2, T0 + 60_000), Verdict::Allowed { used: 2 });
    }

    #[test]
    fn idle_clients_are_forgotten_each_minute() {
        let mut limiter = WeightLimiter::new(100);
        for client in 0..50 {
            limiter.charge(&client, 1, T0);
        }
        assert_eq!(limiter.tracked(), 50);
        limiter.charge(&0, 1, T0 + 60_000);
        assert_eq!(limiter.tracked(), 1);
    }
}
