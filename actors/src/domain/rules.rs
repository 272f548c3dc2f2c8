//! The candle rules of one stream: which updates to store, which closed candles extend the series, and which
//! ranges are missing and must be fetched from REST.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::domain::{Candle, Timeframe};

/// What to do with one candle of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An update of a candle that is not closed yet: upsert it (it may be coalesced with later updates).
    InProgress,
    /// An update of a candle that is already closed: ignore it. A closed candle is final.
    StaleInProgress,
    /// A closed candle newer than every closed candle seen: store it and feed it to the indicators.
    Closed,
    /// A closed candle at or before the newest one seen (a backfill, a replay or a duplicate): store it; storage
    /// keeps the first copy and records a revision only if the values differ. `changes` is false for an identical
    /// replay of a recent close, and true for a gap fill or a revision: what indicators already consumed changed.
    LateClosed { changes: bool },
}

/// A range of open times whose closed candles are missing: `[from_open, to_open)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from_open: i64,
    pub to_open: i64,
}

impl Gap {
    pub fn contains(&self, open: i64) -> bool {
        (self.from_open..self.to_open).contains(&open)
    }

    pub fn overlaps(&self, other: &Gap) -> bool {
        self.from_open < other.to_open && other.from_open < self.to_open
    }
}

/// Tracks the closed candles of one stream, to decide what each update means and to find gaps.
///
/// `contiguous` is the newest open time up to which the series has no hole since tracking began. Closed candles
/// beyond a hole wait in `ahead` until the hole is filled or a backfill covers it. `awaiting_close` holds the
/// candles seen in progress whose final update has not arrived yet, with their close times.
///
/// A stream with nothing stored has no anchor yet. When a history load is coming, its first live close is not
/// one either: whatever closed between the end of the history and that close would go unseen. Such a stream keeps
/// its live closes `ahead` until the history's [`CandleRules::backfilled_through`] anchors it.
#[derive(Debug, Clone)]
pub struct CandleRules {
    timeframe: Timeframe,
    contiguous: Option<i64>,
    /// With nothing stored: whether the first closed candle seen anchors the series (no history load is coming).
    anchor_on_first_close: bool,
    ahead: BTreeSet<i64>,
    awaiting_close: BTreeMap<i64, i64>,
    /// Fingerprints of the last closed candles seen, newest last: a replay of one of them changes nothing.
    recent: VecDeque<(i64, u64)>,
}

/// How many recent closes are remembered to recognise replays (a few bytes each, per stream).
const RECENT_CLOSES: usize = 8;

/// A fingerprint of every field of a candle.
fn fingerprint(candle: &Candle) -> u64 {
    let mut hasher = DefaultHasher::new();
    let prices = [candle.open, candle.high, candle.low, candle.close, candle.volume, candle.quote_volume];
    let taker = [candle.taker_buy_base, candle.taker_buy_quote];
    (candle.open_time, candle.close_time, candle.trades, candle.is_closed).hash(&mut hasher);
    prices.iter().chain(&taker).for_each(|v| v.to_bits().hash(&mut hasher));
    hasher.finish()
}

impl CandleRules {
    /// Starts tracking after `last_closed`, the newest closed open time already stored (if any). With nothing
    /// stored, the first closed candle seen anchors the series.
    pub fn new(timeframe: Timeframe, last_closed: Option<i64>) -> Self {
        Self {
            timeframe,
            contiguous: last_closed,
            anchor_on_first_close: true,
            ahead: BTreeSet::new(),
            awaiting_close: BTreeMap::new(),
            recent: VecDeque::with_capacity(RECENT_CLOSES),
        }
    }

    /// Starts tracking a stream with nothing stored whose history load is coming: only that load anchors it.
    pub fn awaiting_history(timeframe: Timeframe) -> Self {
        Self { anchor_on_first_close: false, ..Self::new(timeframe, None) }
    }

    /// The newest closed open time seen.
    pub fn last_closed(&self) -> Option<i64> {
        self.ahead.last().copied().or(self.contiguous)
    }

    /// The newest open time up to which no closed candle is missing.
    pub fn contiguous(&self) -> Option<i64> {
        self.contiguous
    }

    /// The first open time whose closed candle is not known to be stored: where a repair starts.
    pub fn repair_from(&self) -> Option<i64> {
        self.contiguous.map(|open| self.timeframe.next_open(open))
    }

    /// The hole right after the contiguous part, if a newer closed candle shows there is one.
    pub fn first_gap(&self) -> Option<Gap> {
        let first_ahead = *self.ahead.first()?;
        Some(Gap { from_open: self.repair_from()?, to_open: first_ahead })
    }

    /// Classifies one candle, live or backfilled, and records it.
    pub fn apply(&mut self, candle: &Candle) -> Verdict {
        let newest = self.last_closed();
        if !candle.is_closed {
            return match newest {
                Some(closed) if candle.open_time <= closed => Verdict::StaleInProgress,
                _ => {
                    self.awaiting_close.insert(candle.open_time, candle.close_time);
                    Verdict::InProgress
                }
            };
        }
        self.awaiting_close.remove(&candle.open_time);
        let print = (candle.open_time, fingerprint(candle));
        let replay = self.recent.contains(&print);
        if !replay {
            self.recent.retain(|&(open, _)| open != candle.open_time);
            if self.recent.len() == RECENT_CLOSES {
                self.recent.pop_front();
            }
            self.recent.push_back(print);
        }
        let verdict = match newest {
            Some(closed) if candle.open_time <= closed => Verdict::LateClosed { changes: !replay },
            _ => Verdict::Closed,
        };
        match self.contiguous {
            None if self.anchor_on_first_close => self.contiguous = Some(candle.open_time),
            Some(open) if candle.open_time <= open => {}
            _ => {
                self.ahead.insert(candle.open_time);
            }
        }
        self.advance();
        verdict
    }

    /// A backfill fetched every closed candle up to `through_open`: whatever is still missing up to there does
    /// not exist on the exchange either, so the series is contiguous through it.
    pub fn backfilled_through(&mut self, through_open: i64) {
        self.contiguous = Some(self.contiguous.map_or(through_open, |open| open.max(through_open)));
        self.awaiting_close.retain(|&open, _| open > through_open);
        self.advance();
    }

    /// The oldest candle whose close is more than `grace_ms` late at exchange time `exchange_now`: one seen in
    /// progress whose final update has not come, or the one after the newest close (which a silent stream never
    /// shows in progress). Its close must be fetched over REST.
    pub fn overdue_close(&self, exchange_now: i64, grace_ms: i64) -> Option<i64> {
        self.awaited_closes().filter(|&(_, close)| exchange_now > close + grace_ms).map(|(o, _)| o).min()
    }

    /// The exchange time after which [`overdue_close`](Self::overdue_close) finds a close overdue (with `grace_ms`),
    /// if nothing changes meanwhile; `None` while no close is awaited.
    pub fn close_deadline(&self, grace_ms: i64) -> Option<i64> {
        self.awaited_closes().map(|(_, close)| close + grace_ms).min()
    }

    /// The candles whose close is awaited, as (open time, close time): the oldest seen in progress, and the one
    /// after the newest close.
    fn awaited_closes(&self) -> impl Iterator<Item = (i64, i64)> {
        let awaited = self.awaiting_close.first_key_value().map(|(&open, &close)| (open, close));
        let next = self.last_closed().map(|last| self.timeframe.next_open(last));
        let next = next.map(|open| (open, self.timeframe.close_time(open)));
        [awaited, next].into_iter().flatten()
    }

    fn advance(&mut self) {
        let Some(mut contiguous) = self.contiguous else { return };
        while let Some(&first) = self.ahead.first() {
            if first <= contiguous {
                self.ahead.pop_first();
            } else if first == self.timeframe.next_open(contiguous) {
                self.ahead.pop_first();
                contiguous = first;
            } else {
                break;
            }
        }
        self.contiguous = Some(contiguous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::fixtures::{MIN, minute_candle};

    fn candle(open_minute: i64, is_closed: bool) -> Candle {
        minute_candle(open_minute, 1.0, is_closed)
    }

    #[test]
    fn in_progress_then_closed_extends_the_series() {
        let mut rules = CandleRules::new(Timeframe::M1, Some(9 * MIN));
        // TC0: an update of the current candle.
        assert_eq!(rules.apply(&candle(10, false)), Verdict::InProgress);
        // TC1: its close.
        assert_eq!(rules.apply(&candle(10, true)), Verdict::Closed);
        assert_eq!(rules.contiguous(), Some(10 * MIN));
        // TC2: a late in-progress update of the closed candle is stale.
        assert_eq!(rules.apply(&candle(10, false)), Verdict::StaleInProgress);
        // TC3: a duplicate close is late, not new, and changes nothing.
        assert_eq!(rules.apply(&candle(10, true)), Verdict::LateClosed { changes: false });
        // TC4: a revised close (other values) changes what was consumed.
        let revised = Candle { close: 1.5, high: 1.5, ..candle(10, true) };
        assert_eq!(rules.apply(&revised), Verdict::LateClosed { changes: true });
        assert_eq!(rules.apply(&revised), Verdict::LateClosed { changes: false });
        assert_eq!(rules.first_gap(), None);
    }

    #[test]
    fn a_skipped_close_is_a_gap_until_backfilled() {
        let mut rules = CandleRules::new(Timeframe::M1, Some(9 * MIN));
        assert_eq!(rules.apply(&candle(13, true)), Verdict::Closed);
        assert_eq!(rules.first_gap(), Some(Gap { from_open: 10 * MIN, to_open: 13 * MIN }));
        assert_eq!(rules.repair_from(), Some(10 * MIN));
        // The backfill brings 10 and 11 (late), and 12 does not exist on the exchange.
        assert_eq!(rules.apply(&candle(10, true)), Verdict::LateClosed { changes: true });
        assert_eq!(rules.apply(&candle(11, true)), Verdict::LateClosed { changes: true });
        assert_eq!(rules.first_gap(), Some(Gap { from_open: 12 * MIN, to_open: 13 * MIN }));
        rules.backfilled_through(12 * MIN);
        assert_eq!(rules.first_gap(), None);
        assert_eq!(rules.contiguous(), Some(13 * MIN));
        assert_eq!(rules.last_closed(), Some(13 * MIN));
    }

    #[test]
    fn a_close_that_never_arrives_becomes_overdue_until_backfilled() {
        let mut rules = CandleRules::new(Timeframe::M1, Some(9 * MIN));
        rules.apply(&candle(10, false));
        let close_time = 11 * MIN - 1;
        // TC0: within the grace period: not overdue. The deadline is the last instant it is not.
        assert_eq!(rules.overdue_close(close_time + 500, 1_000), None);
        assert_eq!(rules.close_deadline(1_000), Some(close_time + 1_000));
        assert_eq!(rules.overdue_close(close_time + 1_000, 1_000), None);
        // TC1: past it.
        assert_eq!(rules.overdue_close(close_time + 1_001, 1_000), Some(10 * MIN));
        // TC2: the next candle started without the close: still overdue, oldest first.
        rules.apply(&candle(11, false));
        assert_eq!(rules.overdue_close(close_time + 1_001, 1_000), Some(10 * MIN));
        // TC3: the backfill brought it; the next one is not overdue yet.
        assert_eq!(rules.apply(&candle(10, true)), Verdict::Closed);
        rules.backfilled_through(10 * MIN);
        assert_eq!(rules.overdue_close(close_time + 1_001, 1_000), None);
        // TC4: a live close clears it too; the candle after it is due at its own close time.
        rules.apply(&candle(11, true));
        let next_close = 13 * MIN - 1;
        assert_eq!(rules.overdue_close(next_close + 1_000, 1_000), None);
        assert_eq!(rules.close_deadline(1_000), Some(next_close + 1_000));
        assert_eq!(rules.overdue_close(next_close + 1_001, 1_000), Some(12 * MIN));
    }

    #[test]
    fn a_silent_stream_is_overdue_at_the_close_of_the_candle_after_its_newest() {
        // Nothing seen in progress (the stream went silent): the candle after the stored one is still due.
        let rules = CandleRules::new(Timeframe::M5, Some(0));
        let close = 2 * 5 * MIN - 1;
        assert_eq!(rules.overdue_close(close + 500, 1_000), None);
        assert_eq!(rules.overdue_close(close + 1_001, 1_000), Some(5 * MIN));
        assert_eq!(rules.close_deadline(1_000), Some(close + 1_000));
        // A fresh stream with nothing closed yet has nothing due.
        assert_eq!(CandleRules::new(Timeframe::M5, None).overdue_close(i64::MAX / 2, 0), None);
        assert_eq!(CandleRules::new(Timeframe::M5, None).close_deadline(0), None);
    }

    #[test]
    fn a_stream_awaiting_its_history_is_anchored_only_by_it() {
        // The live close of 12 arrives before the history; 11 closed in between and was lost to a reset.
        let mut rules = CandleRules::awaiting_history(Timeframe::M1);
        assert_eq!(rules.apply(&candle(12, true)), Verdict::Closed);
        assert_eq!((rules.contiguous(), rules.repair_from(), rules.first_gap()), (None, None, None));
        // The history brings 8..=10 and says the exchange had closed up to 10 when it answered.
        for minute in 8..=10 {
            assert_eq!(rules.apply(&candle(minute, true)), Verdict::LateClosed { changes: true });
        }
        rules.backfilled_through(10 * MIN);
        assert_eq!(rules.contiguous(), Some(10 * MIN));
        assert_eq!(rules.first_gap(), Some(Gap { from_open: 11 * MIN, to_open: 12 * MIN }));
        // TC1: without the wait, the first live close would have anchored the series and hidden 11.
        let mut eager = CandleRules::new(Timeframe::M1, None);
        eager.apply(&candle(12, true));
        eager.backfilled_through(10 * MIN);
        assert_eq!(eager.first_gap(), None);
    }

    #[test]
    fn the_last_eight_closes_are_remembered_to_recognise_replays() {
        let mut rules = CandleRules::new(Timeframe::M1, Some(0));
        for minute in 1..=8 {
            assert_eq!(rules.apply(&candle(minute, true)), Verdict::Closed);
        }
        // TC0: a replay of any of the last eight changes nothing.
        for minute in 1..=8 {
            assert_eq!(rules.apply(&candle(minute, true)), Verdict::LateClosed { changes: false }, "minute {minute}");
        }
        // TC1: a ninth close evicts the oldest: its replay is no longer recognised.
        assert_eq!(rules.apply(&candle(9, true)), Verdict::Closed);
        assert_eq!(rules.apply(&candle(1, true)), Verdict::LateClosed { changes: true });
        // TC2: a revision replaces its candle's fingerprint, and keeps the others.
        let revised = Candle { close: 1.5, high: 1.5, ..candle(5, true) };
        assert_eq!(rules.apply(&revised), Verdict::LateClosed { changes: true });
        assert_eq!(rules.apply(&revised), Verdict::LateClosed { changes: false });
        assert_eq!(rules.apply(&candle(5, true)), Verdict::LateClosed { changes: true });
        assert_eq!(rules.apply(&candle(7, true)), Verdict::LateClosed { changes: false });
    }

    #[test]
    fn a_backfill_clears_the_closes_it_covered_and_never_moves_the_series_back() {
        let mut rules = CandleRules::new(Timeframe::M1, Some(9 * MIN));
        rules.apply(&candle(10, false));
        rules.apply(&candle(11, false));
        rules.backfilled_through(11 * MIN);
        assert_eq!(rules.contiguous(), Some(11 * MIN));
        // TC0: 10 and 11 are no longer awaited; 12 is due only at its own close.
        let close_of_11 = 12 * MIN - 1;
        assert_eq!(rules.overdue_close(close_of_11 + 1_001, 1_000), None);
        // TC1: an older backfill does not move the series back.
        rules.backfilled_through(5 * MIN);
        assert_eq!(rules.contiguous(), Some(11 * MIN));
    }

    #[test]
    fn a_fresh_stream_starts_at_its_first_closed_candle() {
        let mut rules = CandleRules::new(Timeframe::M1, None);
        assert_eq!(rules.repair_from(), None);
        assert_eq!(rules.apply(&candle(5, false)), Verdict::InProgress);
        assert_eq!(rules.apply(&candle(5, true)), Verdict::Closed);
        assert_eq!(rules.apply(&candle(6, true)), Verdict::Closed);
        assert_eq!(rules.contiguous(), Some(6 * MIN));
    }

    #[test]
    fn a_gap_is_half_open() {
        let gap = Gap { from_open: 10, to_open: 20 };
        // TC0: its first open time is in it, its end is not.
        assert!(gap.contains(10) && gap.contains(19));
        assert!(!gap.contains(9) && !gap.contains(20));
        let cases = [
            // TC1: gaps that share at least one open time overlap, from either side.
            (Gap { from_open: 19, to_open: 30 }, true),
            (Gap { from_open: 0, to_open: 11 }, true),
            (Gap { from_open: 12, to_open: 15 }, true),
            (Gap { from_open: 0, to_open: 40 }, true),
            // TC2: gaps that only touch do not.
            (Gap { from_open: 20, to_open: 30 }, false),
            (Gap { from_open: 0, to_open: 10 }, false),
        ];
        for (other, overlaps) in cases {
            assert_eq!(gap.overlaps(&other), overlaps, "{other:?}");
            assert_eq!(other.overlaps(&gap), overlaps, "{other:?}, the other way round");
        }
    }
}
