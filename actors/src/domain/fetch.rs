//! What a REST fetch of klines is for, which candles it asks for, and the `GET /api/v3/klines` pages that ask.

use crate::domain::Timeframe;

/// The most rows one `GET /api/v3/klines` serves.
pub const KLINES_PAGE_LIMIT: u32 = 1000;
/// What one `GET /api/v3/klines` costs, for any `limit` up to [`KLINES_PAGE_LIMIT`].
pub const KLINES_REQUEST_WEIGHT: u32 = 2;

/// Why candles were fetched over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillPurpose {
    /// The start-up history load, or the catch-up since the last run.
    History,
    /// A repair after a (re)connect, a gap, a missed close or a stale spell.
    Repair,
    /// A hole or a stuck in-progress row the audit found in the store.
    Audit,
    /// A second look at a range the exchange answered empty, before it is recorded as an exchange gap.
    Recheck,
}

impl BackfillPurpose {
    /// How logs name such a fetch.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::History => "history load",
            Self::Repair => "REST repair",
            Self::Audit => "audit fetch",
            Self::Recheck => "re-check",
        }
    }
}

/// Which candles a fetch asks for, by open time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchRange {
    /// From this open time up to the exchange's present.
    From(i64),
    /// From `from` to `to`, both included.
    Between { from: i64, to: i64 },
    /// Everything after `after` (the newest closed candle already stored), however old; or, with nothing stored,
    /// the last `count` closed candles.
    History { count: u32, after: Option<i64> },
}

impl FetchRange {
    /// The first and last open times (the last `None`: up to the newest closed candle) this range asks for of
    /// `timeframe` when the exchange's clock reads `exchange_now`.
    pub fn bounds(self, timeframe: Timeframe, exchange_now: i64) -> (i64, Option<i64>) {
        match self {
            Self::From(open) => (open, None),
            Self::Between { from, to } => (from, Some(to)),
            Self::History { after: Some(after), .. } => (timeframe.next_open(after), None),
            Self::History { count, after: None } => (history_start(timeframe, exchange_now, count), None),
        }
    }
}

/// The open time `count` candles before the one current at `exchange_now`: where a history of the `count` newest
/// closed candles starts.
pub fn history_start(timeframe: Timeframe, exchange_now: i64, count: u32) -> i64 {
    let mut open = timeframe.open_time_containing(exchange_now);
    for _ in 0..count {
        open = timeframe.previous_open(open);
    }
    open
}

/// The newest open time whose candle has closed when the exchange's clock reads `exchange_now`, on the grid: the
/// open before the current one.
pub fn newest_closed_open(timeframe: Timeframe, exchange_now: i64) -> i64 {
    timeframe.previous_open(timeframe.open_time_containing(exchange_now))
}

/// The highest `endTime` that selects closed candles only at `exchange_now`. A candle has closed once its next
/// open has come, so this is [`newest_closed_open`] for every interval but `3d`: a `3d` series steps from its own
/// first trading day (observed), so any phase is allowed for by `exchange_now` minus 3 days, every open up to
/// which has closed.
pub fn closed_end_bound(timeframe: Timeframe, exchange_now: i64) -> i64 {
    match timeframe {
        Timeframe::D3 => exchange_now - timeframe.max_ms(),
        _ => newest_closed_open(timeframe, exchange_now),
    }
}

/// One `GET /api/v3/klines` request for closed candles: `startTime`, `endTime` (both open times, included) and
/// `limit`. `endTime` stops before the candle in progress, so a page of 1,000 closed candles is one request of
/// weight 2, never a second one for the row in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KlinesPage {
    pub start_open: i64,
    pub end_open: i64,
    /// The rows the range holds if none is missing, at most [`KLINES_PAGE_LIMIT`].
    pub limit: u32,
}

impl KlinesPage {
    /// The first request for the closed candles of `timeframe` from `from_open` up to `to_open` (inclusive;
    /// `None`: up to the newest closed one) when the exchange's clock reads `exchange_now`. `None` when none of them
    /// has closed yet: nothing needs asking.
    pub fn first(timeframe: Timeframe, from_open: i64, to_open: Option<i64>, exchange_now: i64) -> Option<Self> {
        let bound = closed_end_bound(timeframe, exchange_now);
        Self::between(timeframe, from_open, to_open.map_or(bound, |to| to.min(bound)))
    }

    /// The request after this one, whose answer held `rows` rows, the newest opening at `newest_open`. `None` when
    /// this one covered the rest: it reached `end_open`, or the exchange answered fewer rows than asked (the rest
    /// up to `end_open` does not exist). The end stays where the first request put it: candles that close
    /// meanwhile come live, or with the next repair.
    pub fn next(&self, timeframe: Timeframe, rows: usize, newest_open: Option<i64>) -> Option<Self> {
        let newest = newest_open?;
        if rows < self.limit as usize || newest < self.start_open {
            return None;
        }
        Self::between(timeframe, timeframe.next_open(newest), self.end_open)
    }

    fn between(timeframe: Timeframe, start_open: i64, end_open: i64) -> Option<Self> {
        if start_open > end_open {
            return None;
        }
        // Opens in [start, end]: a 3d end off the epoch grid still counts every open of any phase up to it.
        let rows = timeframe.count_opens(start_open, end_open + 1);
        let limit = rows.min(u64::from(KLINES_PAGE_LIMIT)) as u32;
        Some(Self { start_open, end_open, limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::{TimeZone, Utc};

    fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32, ms: i64) -> i64 {
        Utc.with_ymd_and_hms(year, month, day, hour, minute, second).unwrap().timestamp_millis() + ms
    }

    /// Every request a fetch of `range` makes when the exchange holds every candle: each answered with `limit`
    /// rows from `start_open` on, as the client pages.
    fn pages(timeframe: Timeframe, range: FetchRange, exchange_now: i64) -> Vec<KlinesPage> {
        let (from, to) = range.bounds(timeframe, exchange_now);
        let mut pages = Vec::new();
        let mut page = KlinesPage::first(timeframe, from, to, exchange_now);
        while let Some(asked) = page {
            let newest = (1..asked.limit).fold(asked.start_open, |open, _| timeframe.next_open(open));
            pages.push(asked);
            page = asked.next(timeframe, asked.limit as usize, Some(newest));
        }
        pages
    }

    #[test]
    fn every_purpose_is_named_for_the_logs() {
        use BackfillPurpose::*;
        let names = [History, Repair, Audit, Recheck].map(BackfillPurpose::describe);
        assert_eq!(names, ["history load", "REST repair", "audit fetch", "re-check"]);
    }

    #[test]
    fn a_first_history_of_1000_is_one_request_of_weight_2_on_every_interval() {
        // Mid-candle on every interval: 2026-12-07 (a Monday) 18:37:42.500 UTC.
        let now = utc(2026, 12, 7, 18, 37, 42, 500);
        let history = FetchRange::History { count: 1000, after: None };
        for timeframe in Timeframe::ALL {
            let asked = pages(timeframe, history, now);
            assert_eq!(asked.len(), 1, "{timeframe}: {asked:?}");
            let page = asked[0];
            // TC0: exactly the 1,000 newest closed candles: the newest is the one before the current candle.
            let current = timeframe.open_time_containing(now);
            let newest_closed = timeframe.previous_open(current);
            let oldest = (1..1000).fold(newest_closed, |open, _| timeframe.previous_open(open));
            assert_eq!(page.start_open, oldest, "{timeframe}");
            assert_eq!(page.limit, 1000, "{timeframe}");
            assert!(page.end_open >= newest_closed && page.end_open < current, "{timeframe}: {page:?}");
            let weight = asked.len() as u32 * KLINES_REQUEST_WEIGHT;
            assert_eq!(weight, 2, "{timeframe}");
        }
        // TC1: the exact request on 1m: startTime 1,000 minutes before 18:37, endTime 18:36, limit 1000.
        let page = pages(Timeframe::M1, history, now)[0];
        let minute = 60_000;
        assert_eq!(
            page,
            KlinesPage {
                start_open: utc(2026, 12, 7, 18, 37, 0, 0) - 1000 * minute,
                end_open: utc(2026, 12, 7, 18, 36, 0, 0),
                limit: 1000
            }
        );
        // TC2: 1M: the 1,000 months through November 2026.
        let page = pages(Timeframe::Mo1, history, now)[0];
        assert_eq!((page.end_open, page.limit), (utc(2026, 11, 1, 0, 0, 0, 0), 1000));
        // TC3: 3d: any phase up to now minus 3 days has closed.
        let page = pages(Timeframe::D3, history, now)[0];
        assert_eq!(page.end_open, now - 3 * 86_400_000);
    }

    #[test]
    fn a_history_at_the_exact_close_includes_the_candle_that_just_closed() {
        // 18:37:00.000: the 18:36 minute closed at 18:36:59.999, the 18:37 one is in progress.
        let now = utc(2026, 12, 7, 18, 37, 0, 0);
        let page = pages(Timeframe::M1, FetchRange::History { count: 3, after: None }, now)[0];
        assert_eq!(
            page,
            KlinesPage {
                start_open: utc(2026, 12, 7, 18, 34, 0, 0),
                end_open: utc(2026, 12, 7, 18, 36, 0, 0),
                limit: 3
            }
        );
        // One millisecond earlier, 18:36 is still in progress.
        let page = pages(Timeframe::M1, FetchRange::History { count: 3, after: None }, now - 1)[0];
        assert_eq!(page.end_open, utc(2026, 12, 7, 18, 35, 0, 0));
    }

    #[test]
    fn longer_histories_and_catch_ups_page_by_1000_up_to_the_newest_closed_candle() {
        let now = utc(2026, 12, 7, 18, 37, 42, 500);
        let minute = 60_000;
        let newest_closed = utc(2026, 12, 7, 18, 36, 0, 0);
        // TC0: 2,500 candles: three requests, 1000 + 1000 + 500, contiguous, weight 6.
        let asked = pages(Timeframe::M1, FetchRange::History { count: 2500, after: None }, now);
        assert_eq!(asked.iter().map(|p| p.limit).collect::<Vec<_>>(), [1000, 1000, 500]);
        assert_eq!(asked[0].start_open, newest_closed - 2499 * minute);
        assert_eq!(asked[1].start_open, asked[0].start_open + 1000 * minute);
        assert!(asked.iter().all(|p| p.end_open == newest_closed));
        // TC1: a catch-up of exactly 1,000 missed candles is one request, not two.
        let after = newest_closed - 1000 * minute;
        let asked = pages(Timeframe::M1, FetchRange::History { count: 1000, after: Some(after) }, now);
        assert_eq!(asked, [KlinesPage { start_open: after + minute, end_open: newest_closed, limit: 1000 }]);
        // TC2: a catch-up with nothing closed since the stored candle asks nothing.
        let caught_up = FetchRange::History { count: 1000, after: Some(newest_closed) };
        assert_eq!(pages(Timeframe::M1, caught_up, now), []);
        // TC3: a repair from a given minute, and a range that ends before the present, ask exactly their rows.
        let repair = pages(Timeframe::M1, FetchRange::From(newest_closed - 4 * minute), now);
        assert_eq!(repair, [KlinesPage { start_open: newest_closed - 4 * minute, end_open: newest_closed, limit: 5 }]);
        let range = FetchRange::Between { from: newest_closed - 9 * minute, to: newest_closed - 8 * minute };
        assert_eq!(pages(Timeframe::M1, range, now)[0].limit, 2);
        // TC4: a range reaching into the future stops at the newest closed candle.
        let range = FetchRange::Between { from: newest_closed, to: newest_closed + 10 * minute };
        assert_eq!(
            pages(Timeframe::M1, range, now),
            [KlinesPage { start_open: newest_closed, end_open: newest_closed, limit: 1 }]
        );
    }

    #[test]
    fn a_short_or_empty_answer_ends_the_paging() {
        let page = KlinesPage { start_open: 0, end_open: 5_000 * 60_000, limit: 1000 };
        // TC0: fewer rows than asked: the exchange has nothing more up to the end (a listing starts later).
        assert_eq!(page.next(Timeframe::M1, 999, Some(998 * 60_000)), None);
        // TC1: an empty answer.
        assert_eq!(page.next(Timeframe::M1, 0, None), None);
        // TC2: a full page goes on from after its newest row.
        let next = page.next(Timeframe::M1, 1000, Some(999 * 60_000)).unwrap();
        assert_eq!((next.start_open, next.limit), (1000 * 60_000, 1000));
        // TC3: a page whose newest row is older than its start (a misbehaving exchange) does not loop.
        assert_eq!(page.next(Timeframe::M1, 1000, Some(-60_000)), None);
    }
}
