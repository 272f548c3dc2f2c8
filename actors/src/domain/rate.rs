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
        self.expire(now);
        let cost = cost.min(self.limit);
        if self.used + cost > self.limit {
            let oldest = self.spent.front().map_or(now, |&(at, _)| at);
            return Err((oldest + self.window).saturating_duration_since(now).max(Duration::from_millis(1)));
        }
        self.spent.push_back((now, cost));
        self.used += cost;
        Ok(())
    }

    /// Forgets what was spent a whole window before `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, spent)) = self.spent.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.spent.pop_front();
            self.used -= spent;
        }
    }

    /// Counts `cost` as spent at `at`, in time order.
    fn insert(&mut self, at: Instant, cost: u32) {
        let position = self.spent.iter().rposition(|&(spent_at, _)| spent_at <= at).map_or(0, |index| index + 1);
        self.spent.insert(position, (at, cost));
        self.used += cost;
    }

    /// The request that spent `cost` at `spent_at` was answered at `answered`. The exchange charged it somewhere
    /// in between (when it arrived), so it counts until a window after `answered`: a request that waited on its
    /// way can never be counted in the same exchange minute as one sent a window after it was sent.
    pub fn settle(&mut self, spent_at: Instant, cost: u32, answered: Instant) {
        if answered <= spent_at {
            return;
        }
        match self.spent.iter().rposition(|&spent| spent == (spent_at, cost)) {
            Some(index) => {
                self.spent.remove(index);
                self.used -= cost;
            }
            // Expired already (a window passed while it was out): it counts again from its answer.
            None if answered.saturating_duration_since(spent_at) < self.window => return,
            None => {}
        }
        self.insert(answered, cost);
    }

    /// The exchange reports `reported` weight used in its current window (Binance's `X-MBX-USED-WEIGHT-1M`) at
    /// `now`. Every request it charged in that window is counted here already (from its answer), so more than this
    /// budget counts was spent by someone else on the same IP, or by an earlier run in the same minute: the
    /// difference is counted as spent now, and the budget never offers what the exchange would refuse.
    pub fn reconcile(&mut self, now: Instant, reported: u32) {
        self.expire(now);
        if reported > self.used {
            let foreign = (reported - self.used).min(self.limit);
            self.insert(now, foreign);
        }
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

/// Leave to send one request; `probe` if its answer decides whether others may follow. It remembers what it spent
/// and when, to be settled when its answer comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub probe: bool,
    spent_at: Instant,
    cost: u32,
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
        Ok(Permit { probe, spent_at: now, cost: cost.min(self.budget.limit) })
    }

    /// The exchange answered (anything but a rate limit) at `now`, reporting `reported_weight` used in its window
    /// if it said.
    pub fn answered(&mut self, permit: Permit, now: Instant, reported_weight: Option<u32>) {
        self.budget.settle(permit.spent_at, permit.cost, now);
        if let Some(reported) = reported_weight {
            self.budget.reconcile(now, reported);
        }
        if permit.probe {
            self.probe = Probe::Open;
        }
    }

    /// The request got no answer (a network error) by `now`: it may have been charged, and the next request probes
    /// again.
    pub fn unanswered(&mut self, permit: Permit, now: Instant) {
        self.budget.settle(permit.spent_at, permit.cost, now);
        if permit.probe {
            self.probe = Probe::Needed;
        }
    }

    /// A 429 or 418 at `now`: nothing goes out before `until`, and then only a probe.
    pub fn rate_limited(&mut self, permit: Permit, now: Instant, until: Instant) {
        self.budget.settle(permit.spent_at, permit.cost, now);
        self.budget.block_until(until);
        self.probe = Probe::Needed;
    }

    /// Weight counted in the current window.
    pub fn used(&self) -> u32 {
        self.budget.used()
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
        gate.answered(first, start, None);
        assert!(!gate.try_acquire(start, 2).unwrap().probe);
        let before_the_429 = gate.try_acquire(start, 2).unwrap();
        assert!(!before_the_429.probe);
        // TC2: a 429 with Retry-After 2 s: nothing before it expires...
        let limited = gate.try_acquire(start, 2).unwrap();
        gate.rate_limited(limited, start, start + Duration::from_secs(2));
        assert_eq!(gate.try_acquire(start + Duration::from_secs(1), 2), Err(Duration::from_secs(1)));
        // TC3: ...then one probe, and the others wait for it.
        let probe = gate.try_acquire(start + Duration::from_secs(2), 2).unwrap();
        assert!(probe.probe);
        assert_eq!(gate.try_acquire(start + Duration::from_secs(2), 2), Err(PROBE_POLL));
        // TC4: a late answer to a request sent before the 429 does not open the gate.
        gate.answered(before_the_429, start + Duration::from_secs(2), None);
        assert_eq!(gate.try_acquire(start + Duration::from_secs(2), 2), Err(PROBE_POLL));
        // TC5: a probe lost to a network error makes the next request the probe.
        gate.unanswered(probe, start + Duration::from_secs(2));
        assert!(gate.try_acquire(start + Duration::from_secs(3), 2).unwrap().probe);
    }

    #[test]
    fn a_cost_above_the_limit_is_capped_rather_than_never_served() {
        let mut budget = RateBudget::new(5, Duration::from_secs(1));
        assert_eq!(budget.try_spend(Instant::now(), 50), Ok(()));
        assert_eq!(budget.used(), 5);
    }

    #[test]
    fn a_request_counts_from_its_answer_so_a_slow_one_never_shares_the_exchange_minute_with_a_later_one() {
        let start = Instant::now();
        let mut gate = RequestGate::new(4, Duration::from_secs(60));
        let probe = gate.try_acquire(start, 2).unwrap();
        gate.answered(probe, start, None);
        // TC0: sent at 0 s, answered at 5 s (the exchange charged it somewhere in between).
        let slow = gate.try_acquire(start, 2).unwrap();
        gate.answered(slow, start + Duration::from_secs(5), None);
        // TC1: the budget is full; the first request leaves the window at 60 s, the slow one only at 65 s.
        assert_eq!(gate.try_acquire(start + Duration::from_secs(30), 2), Err(Duration::from_secs(30)));
        assert!(gate.try_acquire(start + Duration::from_secs(60), 2).is_ok());
        assert_eq!(gate.try_acquire(start + Duration::from_secs(61), 2), Err(Duration::from_secs(4)));
        assert!(gate.try_acquire(start + Duration::from_secs(65), 2).is_ok());
        // TC2: a lost request counts from when it was given up too.
        let mut gate = RequestGate::new(2, Duration::from_secs(60));
        let lost = gate.try_acquire(start, 2).unwrap();
        gate.unanswered(lost, start + Duration::from_secs(15));
        assert_eq!(gate.try_acquire(start + Duration::from_secs(60), 2), Err(Duration::from_secs(15)));
    }

    #[test]
    fn weight_the_exchange_reports_beyond_our_own_is_counted_as_spent() {
        let start = Instant::now();
        let mut gate = RequestGate::new(6000, Duration::from_secs(60));
        // TC0: our first request, and the exchange says 5,002 are used this minute (an earlier run spent 5,000).
        let first = gate.try_acquire(start, 2).unwrap();
        gate.answered(first, start, Some(5002));
        assert_eq!(gate.used(), 5002);
        // TC1: so only 998 more go out in this window...
        for _ in 0..499 {
            let permit = gate.try_acquire(start, 2).unwrap();
            gate.answered(permit, start, None);
        }
        assert_eq!(gate.try_acquire(start, 2), Err(Duration::from_secs(60)));
        // TC2: a report at or below our own count changes nothing.
        let mut gate = RequestGate::new(6000, Duration::from_secs(60));
        let probe = gate.try_acquire(start, 2).unwrap();
        gate.answered(probe, start, Some(2));
        let (second, third) = (gate.try_acquire(start, 2).unwrap(), gate.try_acquire(start, 2).unwrap());
        // The third arrived first: the exchange had charged 4 when it answered, while 6 are out.
        gate.answered(third, start, Some(4));
        gate.answered(second, start, Some(6));
        assert_eq!(gate.used(), 6);
    }
}
