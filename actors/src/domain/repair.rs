//! What a subscription decides about its stream around the candle rules: the history load that gates repairs, one
//! REST repair at a time, failed fetches retried, overdue closes fetched, ranges answered empty looked at again
//! before they are recorded, a refused stream left alone, a silent stream's escalation, and late closes folded into
//! one indicator rebuild. Pure: the caller passes the time, and performs what each method returns.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

// These two plain enums describe a fetch for both sides of the backfill messages; they belong in `domain`.
use crate::domain::{
    BackfillPurpose, Candle, CandleRules, FetchRange, Gap, SilenceStep, SilenceWatch, Timeframe, Verdict,
};

/// How long to wait before retrying a failed fetch.
pub const FETCH_RETRY: Duration = Duration::from_secs(5);
/// How often the closes are looked at while the exchange's time is not known yet (no event and no REST answer
/// so far).
pub const CLOCK_UNKNOWN_RECHECK: Duration = Duration::from_secs(1);
/// How soon a close already past its deadline is looked at again (the check that found it could not repair it:
/// nothing closed is known to repair from yet).
pub const OVERDUE_RECHECK: Duration = Duration::from_millis(250);
/// A check runs this long after a deadline: a step or a close is due only once its deadline is past.
const ONE_MS: Duration = Duration::from_millis(1);

/// A REST fetch of the stream's closed candles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub range: FetchRange,
    pub purpose: BackfillPurpose,
}

/// How a fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// It may work later.
    Transient,
    /// The exchange refused the stream's requests for good.
    Permanent,
}

/// The answer to a fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchAnswer<'a> {
    /// The fetch answered.
    pub fetch: Fetch,
    /// Every closed candle up to this open time was fetched; missing ones were not on the exchange.
    pub through_open: Option<i64>,
    /// Ranges the exchange answered no candles for.
    pub exchange_gaps: &'a [Gap],
    pub failure: Option<FetchFailure>,
}

/// What a failed fetch leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedFetch {
    /// The stream is refused. `first`: this failure refused it (a refusal is reported once).
    Refused { first: bool },
    /// Pass `fetch` to [`StreamRepair::retry`] after `after`. `None`: nothing is retried (an audit fetch: the next
    /// audit pass looks again).
    Retry { after: Duration, fetch: Option<Fetch> },
}

/// What the answer to a fetch asks of the caller, in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Landing {
    /// A re-checked range answered: it is no longer suspected.
    pub no_longer_suspected: Option<Gap>,
    /// Ranges a re-check answered empty again: recorded as exchange gaps.
    pub confirmed_gaps: Vec<Gap>,
    /// Ranges answered empty for the first time: suspected, each passed to [`StreamRepair::recheck`] after a wait.
    pub suspected_gaps: Vec<Gap>,
    /// The history load landed: repairs may run from now on.
    pub history_landed: bool,
    pub failed: Option<FailedFetch>,
    /// The fetch to make now.
    pub next: Option<Fetch>,
}

/// What a periodic check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOutcome {
    /// The silent stream's next step, for its connection.
    pub silence: Option<SilenceStep>,
    /// The open time of a candle whose close is overdue; `fetch` repairs it.
    pub overdue_close: Option<i64>,
    /// The fetch to make now.
    pub fetch: Option<Fetch>,
}

/// One stream's candle rules, and the repair, re-check, silence and rebuild state around them.
#[derive(Debug, Clone)]
pub struct StreamRepair {
    timeframe: Timeframe,
    rules: CandleRules,
    /// How late a close may be, after its close time, before it is fetched.
    close_grace_ms: i64,
    /// The newest closed candle stored when the task started: where the history load starts.
    stored_at_start: Option<i64>,
    /// Closed candles the history load asks for when nothing is stored.
    history_count: u32,
    /// The history has landed (or there is none to load): repairs may run.
    history_done: bool,
    /// A repair should run as soon as possible.
    repair_wanted: bool,
    repair_in_flight: bool,
    /// The exchange refused this stream's requests for good: nothing more is asked for it.
    refused: bool,
    /// Ranges the exchange answered empty, waiting for their re-check, as `(from_open, to_open)`.
    rechecks: BTreeSet<(i64, i64)>,
    /// The earliest late closed candle applied since the last rebuild was taken.
    late_from: Option<i64>,
    silence: SilenceWatch,
}

impl StreamRepair {
    /// Tracks a stream whose newest stored closed candle is `stored_at_start`. `history`: the history load comes
    /// first, asking for that many closed candles when nothing is stored (or for the catch-up since the stored one).
    pub fn new(
        timeframe: Timeframe,
        stored_at_start: Option<i64>,
        history: Option<u32>,
        close_grace: Duration,
        silence: SilenceWatch,
    ) -> Self {
        let rules = match stored_at_start {
            None if history.is_some() => CandleRules::awaiting_history(timeframe),
            stored => CandleRules::new(timeframe, stored),
        };
        Self {
            timeframe,
            rules,
            close_grace_ms: close_grace.as_millis() as i64,
            stored_at_start,
            history_count: history.unwrap_or(0),
            history_done: history.is_none(),
            repair_wanted: false,
            repair_in_flight: false,
            refused: false,
            rechecks: BTreeSet::new(),
            late_from: None,
            silence,
        }
    }

    /// The history load is a catch-up since the last run, not a first load.
    pub fn catching_up(&self) -> bool {
        self.stored_at_start.is_some()
    }

    pub fn history_done(&self) -> bool {
        self.history_done
    }

    pub fn refused(&self) -> bool {
        self.refused
    }

    /// The fetch to make when the task starts: its history load, if it has one.
    pub fn start(&self) -> Option<Fetch> {
        if self.history_done { None } else { self.history_fetch() }
    }

    /// Applies the rules to one candle, live or fetched. A close that shows a hole wants a repair; a late close
    /// that changes what the indicators consumed joins the next rebuild.
    pub fn apply(&mut self, candle: &Candle) -> Verdict {
        let verdict = self.rules.apply(candle);
        match verdict {
            Verdict::Closed if self.rules.first_gap().is_some() => self.repair_wanted = true,
            Verdict::LateClosed { changes: true } => {
                self.late_from = Some(self.late_from.map_or(candle.open_time, |t| t.min(candle.open_time)));
            }
            _ => {}
        }
        verdict
    }

    /// Where the indicators must rebuild from, for the late closes applied since the last call: the earliest.
    pub fn take_rebuild(&mut self) -> Option<i64> {
        self.late_from.take()
    }

    /// An update arrived at `now`: the silent spell, if any, is over.
    pub fn on_update(&mut self, now: Instant) {
        self.silence.on_update(now);
    }

    /// The stream is live on a connection at `now`: whatever closed meanwhile is repaired.
    pub fn on_live(&mut self, now: Instant) -> Option<Fetch> {
        self.silence.on_live(now);
        self.repair_wanted = true;
        self.next_repair()
    }

    /// The repair to start now: one is wanted, the history is done, none is in flight and the stream is not
    /// refused. A wish with nothing to repair from (nothing closed yet) is dropped.
    pub fn next_repair(&mut self) -> Option<Fetch> {
        if !(self.history_done && self.repair_wanted) || self.repair_in_flight || self.refused {
            return None;
        }
        self.repair_wanted = false;
        let from = self.rules.repair_from()?;
        self.repair_in_flight = true;
        self.ask(FetchRange::From(from), BackfillPurpose::Repair)
    }

    /// The periodic check at `now` (the exchange's time `exchange_now`, once known): a silent stream on a
    /// connection climbs its ladder, and a close overdue while nothing else is being repaired is fetched.
    pub fn watch(&mut self, now: Instant, exchange_now: Option<i64>, connected: bool) -> WatchOutcome {
        if self.refused {
            return WatchOutcome::default();
        }
        let silence = if connected { self.silence.check(now) } else { None };
        let overdue_close = exchange_now
            .and_then(|now| self.rules.overdue_close(now, self.close_grace_ms))
            .filter(|_| !self.repair_in_flight && !self.repair_wanted && self.history_done);
        if overdue_close.is_some() {
            self.repair_wanted = true;
        }
        WatchOutcome { silence, overdue_close, fetch: self.next_repair() }
    }

    /// How long the periodic check may sleep from `now` before [`watch`](Self::watch) could find something due,
    /// if nothing but updates arrives meanwhile (updates only delay a step); `None`: nothing can fall due until
    /// another message arrives (the stream is refused, or off a connection with no close that could be overdue).
    /// A close that could be overdue is not watched while a repair is wanted, in flight or waiting for the history:
    /// the answer to that fetch is the message after which to ask again. Until the exchange's time is known, the
    /// closes are looked at every [`CLOCK_UNKNOWN_RECHECK`], and one already past its deadline every
    /// [`OVERDUE_RECHECK`].
    pub fn next_watch(&self, now: Instant, exchange_now: Option<i64>, connected: bool) -> Option<Duration> {
        if self.refused {
            return None;
        }
        let silence = connected.then(|| self.silence.next_step_at().saturating_duration_since(now) + ONE_MS);
        let close_watched = self.history_done && !self.repair_in_flight && !self.repair_wanted;
        let close = match exchange_now {
            _ if !close_watched => None,
            None => Some(CLOCK_UNKNOWN_RECHECK),
            Some(exchange_now) => self.rules.close_deadline(self.close_grace_ms).map(|deadline| {
                match u64::try_from(deadline - exchange_now) {
                    Ok(wait) => Duration::from_millis(wait) + ONE_MS,
                    Err(_) => OVERDUE_RECHECK,
                }
            }),
        };
        [silence, close].into_iter().flatten().min()
    }

    /// The backfill task restarted and lost its queue: a history load or repair waiting for its answer is asked
    /// again.
    pub fn on_backfill_restarted(&mut self) -> Option<Fetch> {
        if !self.history_done {
            return self.history_fetch();
        }
        if std::mem::take(&mut self.repair_in_flight) {
            self.repair_wanted = true;
            return self.next_repair();
        }
        None
    }

    /// The second look at a range answered empty, once its wait is over.
    pub fn recheck(&self, gap: Gap) -> Option<Fetch> {
        let range = FetchRange::Between { from: gap.from_open, to: self.timeframe.previous_open(gap.to_open) };
        self.ask(range, BackfillPurpose::Recheck)
    }

    /// A failed fetch's retry is due.
    pub fn retry(&mut self, failed: Fetch) -> Option<Fetch> {
        match failed.purpose {
            BackfillPurpose::History => self.history_fetch(),
            BackfillPurpose::Repair => {
                self.repair_wanted = true;
                self.next_repair()
            }
            BackfillPurpose::Recheck => self.ask(failed.range, BackfillPurpose::Recheck),
            BackfillPurpose::Audit => None,
        }
    }

    /// The answer to a fetch, after its candles were applied.
    pub fn on_fetched(&mut self, answer: FetchAnswer<'_>) -> Landing {
        let Fetch { range, purpose } = answer.fetch;
        let mut landing = Landing::default();
        if purpose == BackfillPurpose::Recheck
            && answer.failure.is_none()
            && let FetchRange::Between { from, to } = range
        {
            let gap = Gap { from_open: from, to_open: self.timeframe.next_open(to) };
            self.rechecks.remove(&(gap.from_open, gap.to_open));
            landing.no_longer_suspected = Some(gap);
        }
        // A first empty answer is only a suspicion (the exchange may have answered from a lagging replica); a
        // re-check's empty answer confirms it.
        if purpose == BackfillPurpose::Recheck {
            landing.confirmed_gaps = answer.exchange_gaps.to_vec();
        } else {
            let gaps = answer.exchange_gaps.iter().copied();
            landing.suspected_gaps = gaps.filter(|g| self.rechecks.insert((g.from_open, g.to_open))).collect();
        }
        // A fetch from where the series is contiguous (or a history load) shows what exists up to its end. One of
        // a hole further on says nothing of the ranges before it, which the forward path may still be repairing.
        let from_contiguous = match range {
            FetchRange::Between { from, .. } => self.rules.repair_from().is_some_and(|next| from <= next),
            FetchRange::From(_) | FetchRange::History { .. } => true,
        };
        if let Some(through) = answer.through_open.filter(|_| from_contiguous) {
            self.rules.backfilled_through(through);
        }
        if purpose == BackfillPurpose::Repair {
            self.repair_in_flight = false;
        }
        landing.failed = match answer.failure {
            None => {
                if purpose == BackfillPurpose::History {
                    self.history_done = true;
                    landing.history_landed = true;
                }
                None
            }
            Some(FetchFailure::Permanent) => {
                Some(FailedFetch::Refused { first: !std::mem::replace(&mut self.refused, true) })
            }
            Some(FetchFailure::Transient) => {
                let fetch = (purpose != BackfillPurpose::Audit).then_some(answer.fetch);
                Some(FailedFetch::Retry { after: FETCH_RETRY, fetch })
            }
        };
        landing.next = self.next_repair();
        landing
    }

    /// The history load: everything after what was stored at start, or the last `history_count` closed candles
    /// when nothing was. Live closes that arrive meanwhile come back as replays.
    fn history_fetch(&self) -> Option<Fetch> {
        let range = FetchRange::History { count: self.history_count, after: self.stored_at_start };
        self.ask(range, BackfillPurpose::History)
    }

    /// A fetch, unless the stream is refused.
    fn ask(&self, range: FetchRange, purpose: BackfillPurpose) -> Option<Fetch> {
        (!self.refused).then_some(Fetch { range, purpose })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::fixtures::{MIN, minute_candle};

    const SECOND: Duration = Duration::from_secs(1);
    const GRACE: Duration = Duration::from_secs(2);
    const STALE_AFTER: Duration = Duration::from_secs(10);
    const REPLACE_AFTER: Duration = Duration::from_secs(5);

    /// A one-minute stream with the minute `stored` stored, loading `history` first if given, watched from `start`.
    fn stream(stored: Option<i64>, history: Option<u32>, start: Instant) -> StreamRepair {
        let silence = SilenceWatch::new(STALE_AFTER, REPLACE_AFTER, start);
        StreamRepair::new(Timeframe::M1, stored.map(|m| m * MIN), history, GRACE, silence)
    }

    fn closed(minute: i64) -> Candle {
        minute_candle(minute, 1.0, true)
    }

    fn revised(minute: i64) -> Candle {
        minute_candle(minute, 1.5, true)
    }

    fn repair_from(minute: i64) -> Fetch {
        Fetch { range: FetchRange::From(minute * MIN), purpose: BackfillPurpose::Repair }
    }

    fn between(from: i64, to: i64, purpose: BackfillPurpose) -> Fetch {
        Fetch { range: FetchRange::Between { from: from * MIN, to: to * MIN }, purpose }
    }

    fn gap(from: i64, to: i64) -> Gap {
        Gap { from_open: from * MIN, to_open: to * MIN }
    }

    /// A successful answer to `fetch` with every closed candle through the minute `through`.
    fn answered(fetch: Fetch, through: Option<i64>) -> FetchAnswer<'static> {
        FetchAnswer { fetch, through_open: through.map(|m| m * MIN), exchange_gaps: &[], failure: None }
    }

    fn failed(fetch: Fetch, failure: FetchFailure) -> FetchAnswer<'static> {
        FetchAnswer { failure: Some(failure), ..answered(fetch, None) }
    }

    fn next(fetch: Option<Fetch>) -> Landing {
        Landing { next: fetch, ..Landing::default() }
    }

    /// The exchange's time `ms` after the close of the candle opened at `minute`.
    fn after_close_of(minute: i64, ms: i64) -> Option<i64> {
        Some((minute + 1) * MIN - 1 + ms)
    }

    #[test]
    fn the_history_load_comes_first_and_gates_the_repairs() {
        let now = Instant::now();
        let history = Fetch {
            range: FetchRange::History { count: 500, after: Some(9 * MIN) },
            purpose: BackfillPurpose::History,
        };
        let mut repair = stream(Some(9), Some(500), now);
        // TC0: the start asks for the catch-up since the stored candle.
        assert_eq!(repair.start(), Some(history));
        assert!(repair.catching_up() && !repair.history_done());
        // TC1: live, with a hole shown, and a close overdue: nothing is repaired before the history lands.
        assert_eq!(repair.on_live(now), None);
        assert_eq!(repair.apply(&closed(12)), Verdict::Closed);
        assert_eq!(repair.next_repair(), None);
        let overdue = repair.watch(now, after_close_of(13, 60_000), false);
        assert_eq!(overdue, WatchOutcome::default());
        // TC2: the backfill restarted before the answer: the history is asked again.
        assert_eq!(repair.on_backfill_restarted(), Some(history));
        // TC3: a failed load lands nothing and keeps the gate shut; its retry asks again.
        let landing = repair.on_fetched(failed(history, FetchFailure::Transient));
        let retry = FailedFetch::Retry { after: FETCH_RETRY, fetch: Some(history) };
        assert_eq!(landing, Landing { failed: Some(retry), ..Landing::default() });
        assert_eq!(repair.retry(history), Some(history));
        assert_eq!(repair.next_repair(), None);
        // TC4: the history lands through 10: the wanted repair starts at 11.
        let landing = repair.on_fetched(answered(history, Some(10)));
        assert_eq!(landing, Landing { history_landed: true, ..next(Some(repair_from(11))) });
        assert!(repair.history_done());
        // TC5: without a history load, nothing is fetched at start and the first live repair runs at once.
        let mut repair = stream(Some(9), None, now);
        assert_eq!(repair.start(), None);
        assert!(repair.history_done() && repair.catching_up());
        assert_eq!(repair.on_live(now), Some(repair_from(10)));
        // TC6: with nothing stored, the history asks for the last `count` candles.
        let repair = stream(None, Some(3), now);
        let first_load = FetchRange::History { count: 3, after: None };
        assert_eq!(repair.start(), Some(Fetch { range: first_load, purpose: BackfillPurpose::History }));
        assert!(!repair.catching_up());
    }

    #[test]
    fn a_stream_awaiting_its_history_is_anchored_by_it_not_by_a_live_close() {
        let now = Instant::now();
        let history = Fetch { range: FetchRange::History { count: 3, after: None }, purpose: BackfillPurpose::History };
        let mut repair = stream(None, Some(3), now);
        // TC0: a live close before the history does not anchor the series: nothing to repair from yet.
        assert_eq!(repair.apply(&closed(12)), Verdict::Closed);
        // TC1: the history brings 8..=10 (late) and lands through 10; live again: 11 is repaired.
        for minute in 8..=10 {
            assert_eq!(repair.apply(&closed(minute)), Verdict::LateClosed { changes: true });
        }
        assert_eq!(repair.take_rebuild(), Some(8 * MIN));
        assert_eq!(
            repair.on_fetched(answered(history, Some(10))),
            Landing { history_landed: true, ..Landing::default() }
        );
        assert_eq!(repair.on_live(now), Some(repair_from(11)));
    }

    #[test]
    fn one_repair_runs_at_a_time_and_one_wanted_meanwhile_follows_it() {
        let now = Instant::now();
        let mut repair = stream(Some(9), None, now);
        // TC0: live: repair from after the stored candle.
        assert_eq!(repair.on_live(now), Some(repair_from(10)));
        // TC1: live again, or a close that shows a hole, while it is in flight: nothing more now.
        assert_eq!(repair.on_live(now), None);
        assert_eq!(repair.apply(&closed(13)), Verdict::Closed);
        assert_eq!(repair.next_repair(), None);
        // TC2: the answer covers through 11: the repair wanted meanwhile runs from 12.
        assert_eq!(repair.on_fetched(answered(repair_from(10), Some(11))), next(Some(repair_from(12))));
        // TC3: that one covers through 13: nothing more is wanted.
        assert_eq!(repair.on_fetched(answered(repair_from(12), Some(13))), next(None));
        // TC4: a close right after the series shows no hole: no repair.
        assert_eq!(repair.apply(&closed(14)), Verdict::Closed);
        assert_eq!(repair.next_repair(), None);
        // TC5: a close past a hole, with nothing in flight: the repair starts at once.
        assert_eq!(repair.apply(&closed(16)), Verdict::Closed);
        assert_eq!(repair.next_repair(), Some(repair_from(15)));
        assert_eq!(repair.next_repair(), None);
    }

    #[test]
    fn a_restarted_backfill_is_asked_again_only_for_the_repair_it_lost() {
        let now = Instant::now();
        let mut repair = stream(Some(9), None, now);
        // TC0: nothing in flight: nothing to ask again.
        assert_eq!(repair.on_backfill_restarted(), None);
        // TC1: a repair in flight is asked again, once per restart.
        assert_eq!(repair.on_live(now), Some(repair_from(10)));
        assert_eq!(repair.on_backfill_restarted(), Some(repair_from(10)));
        assert_eq!(repair.on_backfill_restarted(), Some(repair_from(10)));
        // TC2: answered: nothing in flight any more.
        assert_eq!(repair.on_fetched(answered(repair_from(10), Some(10))), next(None));
        assert_eq!(repair.on_backfill_restarted(), None);
    }

    #[test]
    fn a_wish_with_nothing_to_repair_from_is_dropped() {
        let now = Instant::now();
        // A fresh stream with no history to load: nothing closed, nothing to repair from.
        let mut repair = stream(None, None, now);
        // TC0: live: no repair, and the wish is not kept.
        assert_eq!(repair.on_live(now), None);
        // TC1: the first close anchors the series; the dropped wish does not come back.
        assert_eq!(repair.apply(&closed(5)), Verdict::Closed);
        assert_eq!(repair.next_repair(), None);
        // TC2: a later hole is repaired.
        assert_eq!(repair.apply(&closed(7)), Verdict::Closed);
        assert_eq!(repair.next_repair(), Some(repair_from(6)));
    }

    #[test]
    fn a_failed_fetch_is_retried_after_five_seconds() {
        let now = Instant::now();
        let mut repair = stream(Some(9), None, now);
        let retry_of = |fetch| Some(FailedFetch::Retry { after: 5 * SECOND, fetch });
        // TC0: a failed repair is no longer in flight; it is retried later, not at once.
        assert_eq!(repair.on_live(now), Some(repair_from(10)));
        let landing = repair.on_fetched(failed(repair_from(10), FetchFailure::Transient));
        assert_eq!(landing, Landing { failed: retry_of(Some(repair_from(10))), ..Landing::default() });
        assert_eq!(repair.next_repair(), None);
        // TC1: the retry repairs from where the series now ends.
        assert_eq!(repair.apply(&closed(10)), Verdict::Closed);
        assert_eq!(repair.retry(repair_from(10)), Some(repair_from(11)));
        // TC2: a retry while a repair is in flight waits for it.
        assert_eq!(repair.retry(repair_from(10)), None);
        assert_eq!(repair.on_fetched(answered(repair_from(11), Some(11))), next(Some(repair_from(12))));
        // TC3: a failed re-check is retried over the same range.
        let recheck = between(3, 4, BackfillPurpose::Recheck);
        let landing = repair.on_fetched(failed(recheck, FetchFailure::Transient));
        assert_eq!(landing, Landing { failed: retry_of(Some(recheck)), ..Landing::default() });
        assert_eq!(repair.retry(recheck), Some(recheck));
        // TC4: a failed audit fetch is not retried: the next audit pass looks again.
        let audit = between(3, 4, BackfillPurpose::Audit);
        assert_eq!(
            repair.on_fetched(failed(audit, FetchFailure::Transient)),
            Landing { failed: retry_of(None), ..Landing::default() }
        );
        assert_eq!(repair.retry(audit), None);
        assert!(!repair.refused());
    }

    #[test]
    fn a_refused_stream_asks_for_nothing_more() {
        let start = Instant::now();
        let mut repair = stream(Some(9), None, start);
        assert_eq!(repair.on_live(start), Some(repair_from(10)));
        // TC0: refused for good: reported once, nothing follows.
        let landing = repair.on_fetched(failed(repair_from(10), FetchFailure::Permanent));
        assert_eq!(landing, Landing { failed: Some(FailedFetch::Refused { first: true }), ..Landing::default() });
        assert!(repair.refused());
        let landing = repair.on_fetched(failed(between(3, 4, BackfillPurpose::Audit), FetchFailure::Permanent));
        assert_eq!(landing, Landing { failed: Some(FailedFetch::Refused { first: false }), ..Landing::default() });
        // TC1: no repair, retry, re-check or restart asks anything.
        assert_eq!(repair.on_live(start), None);
        assert_eq!(repair.apply(&closed(13)), Verdict::Closed);
        assert_eq!(repair.next_repair(), None);
        assert_eq!(repair.retry(repair_from(10)), None);
        assert_eq!(repair.retry(between(3, 4, BackfillPurpose::Recheck)), None);
        assert_eq!(repair.recheck(gap(3, 5)), None);
        assert_eq!(repair.on_backfill_restarted(), None);
        // TC2: a silent spell and an overdue close change nothing either.
        let late = start + 60 * SECOND;
        assert_eq!(repair.watch(late, after_close_of(14, 60_000), true), WatchOutcome::default());
        // TC3: a stream refused during its history load does not ask for it again.
        let history = Fetch { range: FetchRange::History { count: 5, after: None }, purpose: BackfillPurpose::History };
        let mut repair = stream(None, Some(5), start);
        repair.on_fetched(failed(history, FetchFailure::Permanent));
        assert_eq!((repair.on_backfill_restarted(), repair.retry(history)), (None, None));
    }

    #[test]
    fn an_overdue_close_is_fetched_only_when_nothing_else_is_being_repaired() {
        let now = Instant::now();
        let mut repair = stream(Some(9), None, now);
        // TC0: the exchange's time unknown yet: nothing is overdue.
        assert_eq!(repair.watch(now, None, false), WatchOutcome::default());
        // TC1: within the grace after the close of 10: not overdue.
        assert_eq!(repair.watch(now, after_close_of(10, 2_000), false), WatchOutcome::default());
        // TC2: past it: counted once and fetched.
        let overdue = WatchOutcome { overdue_close: Some(10 * MIN), fetch: Some(repair_from(10)), silence: None };
        assert_eq!(repair.watch(now, after_close_of(10, 2_001), false), overdue);
        // TC3: while that repair is in flight, the same overdue close is not counted again.
        assert_eq!(repair.watch(now, after_close_of(10, 3_000), false), WatchOutcome::default());
        // TC4: answered through 10; 11 closed late too: counted and fetched.
        assert_eq!(repair.on_fetched(answered(repair_from(10), Some(10))), next(None));
        let overdue = WatchOutcome { overdue_close: Some(11 * MIN), fetch: Some(repair_from(11)), silence: None };
        assert_eq!(repair.watch(now, after_close_of(11, 2_001), false), overdue);
        // TC5: a repair already wanted (a hole shown) takes the overdue close along: it is not counted.
        assert_eq!(repair.on_fetched(answered(repair_from(11), Some(11))), next(None));
        assert_eq!(repair.apply(&closed(14)), Verdict::Closed);
        let wanted = WatchOutcome { fetch: Some(repair_from(12)), ..WatchOutcome::default() };
        assert_eq!(repair.watch(now, after_close_of(15, 60_000), false), wanted);
    }

    #[test]
    fn the_watch_sleeps_until_the_first_thing_that_can_fall_due() {
        let start = Instant::now();
        let mut repair = stream(Some(9), None, start);
        let exchange_at = |minute: i64, ms: i64| after_close_of(minute, ms);
        // TC0: off a connection, before the exchange's time is known: the closes are looked at every second.
        assert_eq!(repair.next_watch(start, None, false), Some(CLOCK_UNKNOWN_RECHECK));
        // TC1: the close of 10 is due 2 s (the grace) after its close time; right after that, the check finds it.
        let wait = repair.next_watch(start, exchange_at(10, 500), false).expect("a close awaited");
        assert_eq!(wait, Duration::from_millis(1_501));
        assert_eq!(repair.watch(start, exchange_at(10, 2_000), false), WatchOutcome::default());
        assert_eq!(repair.watch(start, exchange_at(10, 2_001), false).overdue_close, Some(10 * MIN));
        // TC2: while its repair is in flight, no close is watched; on a connection, the silence still is (10 s).
        assert_eq!(repair.next_watch(start, exchange_at(10, 3_000), false), None);
        assert_eq!(
            repair.next_watch(start, exchange_at(10, 3_000), true),
            Some(10 * SECOND + Duration::from_millis(1))
        );
        // TC3: answered: the next close is watched again; a deadline already past is checked soon, not at once (a
        // close that no repair can fetch yet must not spin the timer).
        repair.on_fetched(answered(repair_from(10), Some(10)));
        assert_eq!(repair.next_watch(start, exchange_at(11, 5_000), false), Some(OVERDUE_RECHECK));
        // TC4: the earlier of the silence step and the close deadline wins; an update moves the silence later.
        repair.on_update(start + 9 * SECOND);
        let wait = repair.next_watch(start + 9 * SECOND, exchange_at(11, -60_000), true);
        assert_eq!(wait, Some(10 * SECOND + Duration::from_millis(1)));
        let wait = repair.next_watch(start + 9 * SECOND, exchange_at(11, -1_000), true);
        assert_eq!(wait, Some(Duration::from_millis(3_001)));
        // TC5: a refused stream is never watched.
        repair.on_fetched(failed(repair_from(12), FetchFailure::Permanent));
        assert_eq!(repair.next_watch(start, exchange_at(11, 0), true), None);
    }

    #[test]
    fn a_silent_stream_climbs_its_ladder_only_while_on_a_connection() {
        let start = Instant::now();
        let mut repair = stream(Some(9), None, start);
        let step = |step| WatchOutcome { silence: Some(step), ..WatchOutcome::default() };
        // TC0: silent past the cadence but not on a connection: no step, and none is used up.
        assert_eq!(repair.watch(start + 11 * SECOND, None, false), WatchOutcome::default());
        // TC1: on a connection: resubscribe, then replace the connection.
        assert_eq!(repair.watch(start + 11 * SECOND, None, true), step(SilenceStep::Resubscribe));
        assert_eq!(
            repair.watch(start + 16 * SECOND + Duration::from_millis(1), None, true),
            step(SilenceStep::ReplaceConnection)
        );
        // TC2: an update ends the spell; the next silence counts from it.
        repair.on_update(start + 20 * SECOND);
        assert_eq!(repair.watch(start + 30 * SECOND, None, true), WatchOutcome::default());
        assert_eq!(
            repair.watch(start + 30 * SECOND + Duration::from_millis(1), None, true),
            step(SilenceStep::Resubscribe)
        );
        // TC3: live on a new connection outside a spell: a full cadence before the first step.
        let mut repair = stream(Some(9), None, start);
        assert_eq!(repair.on_live(start + 5 * SECOND), Some(repair_from(10)));
        assert_eq!(repair.watch(start + 15 * SECOND, None, true), WatchOutcome::default());
        assert_eq!(
            repair.watch(start + 15 * SECOND + Duration::from_millis(1), None, true),
            step(SilenceStep::Resubscribe)
        );
    }

    #[test]
    fn an_empty_range_is_looked_at_again_then_recorded() {
        let now = Instant::now();
        let mut repair = stream(Some(9), None, now);
        assert_eq!(repair.on_live(now), Some(repair_from(10)));
        // TC0: a first empty answer is only suspected.
        let empty = [gap(10, 12)];
        let answer = FetchAnswer { exchange_gaps: &empty, ..answered(repair_from(10), Some(13)) };
        assert_eq!(repair.on_fetched(answer), Landing { suspected_gaps: empty.to_vec(), ..Landing::default() });
        // TC1: the same range answered empty again before its re-check: nothing new; a new range is.
        let more = [gap(10, 12), gap(15, 16)];
        let answer = FetchAnswer { exchange_gaps: &more, ..answered(between(10, 16, BackfillPurpose::Audit), None) };
        assert_eq!(repair.on_fetched(answer), Landing { suspected_gaps: vec![gap(15, 16)], ..Landing::default() });
        // TC2: the re-check asks for the range's candles, both ends included.
        let recheck = between(10, 11, BackfillPurpose::Recheck);
        assert_eq!(repair.recheck(gap(10, 12)), Some(recheck));
        // TC3: a failed re-check leaves the range suspected.
        assert_eq!(repair.on_fetched(failed(recheck, FetchFailure::Transient)).no_longer_suspected, None);
        // TC4: answered empty again: confirmed, and no longer merely suspected.
        let answer = FetchAnswer { exchange_gaps: &empty, ..answered(recheck, None) };
        let confirmed =
            Landing { no_longer_suspected: Some(gap(10, 12)), confirmed_gaps: empty.to_vec(), ..Landing::default() };
        assert_eq!(repair.on_fetched(answer), confirmed);
        // TC5: once re-checked, a new empty answer for that range is suspected afresh.
        let answer = FetchAnswer { exchange_gaps: &empty, ..answered(repair_from(10), None) };
        assert_eq!(repair.on_fetched(answer).suspected_gaps, empty.to_vec());
        // TC6: a re-check that found candles clears the suspicion, records nothing.
        let found = answered(between(15, 15, BackfillPurpose::Recheck), None);
        assert_eq!(repair.on_fetched(found), Landing { no_longer_suspected: Some(gap(15, 16)), ..Landing::default() });
        // TC7: an audit fetch over the same kind of range clears no suspicion.
        assert_eq!(repair.on_fetched(answered(between(15, 15, BackfillPurpose::Audit), None)), Landing::default());
    }

    #[test]
    fn only_a_fetch_from_where_the_series_is_contiguous_moves_it() {
        let now = Instant::now();
        // Stored through 9, a live close of 15: the hole is 10..15, the repair would start at 10.
        let with_hole = || {
            let mut repair = stream(Some(9), None, now);
            assert_eq!(repair.apply(&closed(15)), Verdict::Closed);
            repair
        };
        // TC0: an audit fetch of a range past the start of the hole says nothing of 10 and 11.
        let mut repair = with_hole();
        assert_eq!(
            repair.on_fetched(answered(between(12, 13, BackfillPurpose::Audit), Some(13))),
            next(Some(repair_from(10)))
        );
        // TC1: one starting right where the hole starts moves the series through its end.
        let mut repair = with_hole();
        assert_eq!(
            repair.on_fetched(answered(between(10, 13, BackfillPurpose::Audit), Some(13))),
            next(Some(repair_from(14)))
        );
        // TC2: so does one starting inside the series, or a repair from anywhere.
        let mut repair = with_hole();
        assert_eq!(
            repair.on_fetched(answered(between(8, 13, BackfillPurpose::Audit), Some(13))),
            next(Some(repair_from(14)))
        );
        let mut repair = with_hole();
        assert_eq!(repair.on_fetched(answered(repair_from(12), Some(15))), next(Some(repair_from(16))));
    }

    #[test]
    fn late_closes_fold_into_one_rebuild_from_the_earliest() {
        let now = Instant::now();
        let mut repair = stream(Some(9), None, now);
        for minute in 10..=14 {
            assert_eq!(repair.apply(&closed(minute)), Verdict::Closed);
        }
        // TC0: closes in order need no rebuild.
        assert_eq!(repair.take_rebuild(), None);
        // TC1: revisions of 12 then 11 then 13: one rebuild, from 11.
        for minute in [12, 11, 13] {
            assert_eq!(repair.apply(&revised(minute)), Verdict::LateClosed { changes: true });
        }
        assert_eq!(repair.take_rebuild(), Some(11 * MIN));
        // TC2: taken: none is pending.
        assert_eq!(repair.take_rebuild(), None);
        // TC3: an identical replay changes nothing the indicators consumed.
        assert_eq!(repair.apply(&revised(12)), Verdict::LateClosed { changes: false });
        assert_eq!(repair.take_rebuild(), None);
        // TC4: an in-progress update, fresh or stale, asks for no rebuild either.
        assert_eq!(repair.apply(&minute_candle(15, 1.0, false)), Verdict::InProgress);
        assert_eq!(repair.apply(&minute_candle(14, 1.0, false)), Verdict::StaleInProgress);
        assert_eq!(repair.take_rebuild(), None);
    }
}
