//! Rate budgets: a sliding request-weight budget with `Retry-After` blocks, and a pacer for control messages.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A budget of `limit` units per `window`, such as Binance's 6000 request weight per minute or 300 connection
/// attempts per 5 minutes. It also honours an exchange-imposed block (`Retry-After` on 429 or 418).
#[derive(Debug, Clone)]
pub struct RateBudget {
    limit: u32,
    window: Duration,
    spent: VecDeque<(Instant, u32)>,
    used: u32,
    blocked_until: Option<Instant>,
}

impl RateBudget {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, spent: VecDeque::new(), used: 0, blocked_until: None }
    }

    /// Spends `cost` at `now` if the budget allows; otherwise returns how long to wait before asking again.
    pub fn try_spend(&mut self, now: Instant, cost: u32) -> Result<(), Duration> {
        if let Some(until) = self.blocked_until {
            if now < until {
                return Err(until - now);
            }
            self.blocked_until = None;
        }
        while let Some(&(at, spent)) = self.spent.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.spent.pop_front();
            self.used -= spent;
        }
        let cost = cost.min(self.limit);
        if self.used + cost > self.limit {
            let oldest = self.spent.front().map_or(now, |&(at, _)| at);
            return Err((oldest + self.window).saturating_duration_since(now).max(Duration::from_millis(1)));
        }
        self.spent.push_back((now, cost));
        self.used += cost;
        Ok(())
    }

    /// The exchange asked us to wait: nothing is spent before `until`.
    pub fn block_until(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |current| current.max(until)));
    }

    pub fn used(&self) -> u32 {
        self.used
    }
}

/// How long a request waits while another one probes the exchange.
const PROBE_POLL: Duration = Duration::from_millis(20);

/// The REST client's gate: a [`RateBudget`], plus a single probe whenever the exchange's willingness is unknown
/// (at start, and after a 429 or 418). Until the probe is answered nothing else goes out, so the end of a
/// `Retry-After` is never met by a burst of requests, of which all but the first would earn a 418 ban.
#[derive(Debug, Clone)]
pub struct RequestGate {
    budget: RateBudget,
    probe: Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Needed,
    InFlight,
    Open,
}

/// Leave to send one request; `probe` if its answer decides whether others may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub probe: bool,
}

impl RequestGate {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { budget: RateBudget::new(limit, window), probe: Probe::Needed }
    }

    /// Leave to send a request of `cost` at `now`, or how long to wait before asking again.
    pub fn try_acquire(&mut self, now: Instant, cost: u32) -> Result<Permit, Duration> {
        if self.probe == Probe::InFlight {
            return Err(PROBE_POLL);
        }
        self.budget.try_spend(now, cost)?;
        let probe = self.probe == Probe::Needed;
        if probe {
            self.probe = Probe::InFlight;
        }
        Ok(Permit { probe })
    }

    /// The exchange answered (anything but a rate limit).
    pub fn answered(&mut self, permit: Permit) {
        if permit.probe {
            self.probe = Probe::Open;
        }
    }

    /// The request got no answer (a network error): the next request probes again.
    pub fn unanswered(&mut self, permit: Permit) {
        if permit.probe {
            self.probe = Probe::Needed;
        }
    }

    /// A 429 or 418: nothing goes out before `until`, and then only a probe.
    pub fn rate_limited(&mut self, until: Instant) {
        self.budget.block_until(until);
        self.probe = Probe::Needed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_up_to_the_limit_then_waits_for_the_oldest_to_expire() {
        let start = Instant::now();
        let mut budget = RateBudget::new(6, Duration::from_secs(60));
        assert_eq!(budget.try_spend(start, 2), Ok(()));
        assert_eq!(budget.try_spend(start + Duration::from_secs(10), 2), Ok(()));
        assert_eq!(budget.try_spend(start + Duration::from_secs(20), 2), Ok(()));
        // TC0: full: wait until the first spend leaves the window.
        assert_eq!(budget.try_spend(start + Duration::from_secs(30), 2), Err(Duration::from_secs(30)));
        // TC1: once it has, there is room again.
        assert_eq!(budget.try_spend(start + Duration::from_secs(60), 2), Ok(()));
        assert_eq!(budget.used(), 6);
    }

    #[test]
    fn retry_after_blocks_everything_until_it_expires() {
        let start = Instant::now();
        let mut budget = RateBudget::new(6000, Duration::from_secs(60));
        budget.block_until(start + Duration::from_secs(5));
        // An earlier block never shortens a later one.
        budget.block_until(start + Duration::from_secs(1));
        assert_eq!(budget.try_spend(start + Duration::from_secs(2), 2), Err(Duration::from_secs(3)));
        assert_eq!(budget.try_spend(start + Duration::from_secs(5), 2), Ok(()));
    }

    #[test]
    fn after_a_rate_limit_one_probe_goes_out_and_the_rest_wait_for_its_answer() {
        let start = Instant::now();
        let mut gate = RequestGate::new(6000, Duration::from_secs(60));
        // TC0: at start the first request probes; a second waits while it is in flight.
        let first = gate.try_acquire(start, 2).unwrap();
        assert!(first.probe);
        assert_eq!(gate.try_acquire(start, 2), Err(PROBE_POLL));
        // TC1: once it is answered, requests flow freely.
        gate.answered(first);
        assert_eq!(gate.try_acquire(start, 2), Ok(Permit { probe: false }));
        assert_eq!(gate.try_acquire(start, 2), Ok(Permit { probe: false }));
        // TC2: a 429 with Retry-After 2 s: nothing before it expires...
        gate.rate_limited(start + Duration::from_secs(2));
        assert_eq!(gate.try_acquire(start + Duration::from_secs(1), 2), Err(Duration::from_secs(1)));
        // TC3: ...then one probe, and the others wait for it.
        let probe = gate.try_acquire(start + Duration::from_secs(2), 2).unwrap();
        assert!(probe.probe);
        assert_eq!(gate.try_acquire(start + Duration::from_secs(2), 2), Err(PROBE_POLL));
        // TC4: a late answer to a request sent before the 429 does not open the gate.
        gate.answered(Permit { probe: false });
        assert_eq!(gate.try_acquire(start + Duration::from_secs(2), 2), Err(PROBE_POLL));
        // TC5: a probe lost to a network error makes the next request the probe.
        gate.unanswered(probe);
        assert!(gate.try_acquire(start + Duration::from_secs(3), 2).unwrap().probe);
    }

    #[test]
    fn a_cost_above_the_limit_is_capped_rather_than_never_served() {
        let mut budget = RateBudget::new(5, Duration::from_secs(1));
        assert_eq!(budget.try_spend(Instant::now(), 50), Ok(()));
        assert_eq!(budget.used(), 5);
    }
}
