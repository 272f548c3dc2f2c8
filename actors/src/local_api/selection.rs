//! Which kline rows Binance returns for a `startTime`/`endTime`/`limit` combination, and whether the rows at hand
//! (from the store or the cache) hold every one of them.
//!
//! Binance selects by open time: neither time gives the newest `limit` rows; `startTime` alone the oldest `limit`
//! rows opening at or after it; `endTime` alone the newest `limit` rows opening at or before it; both, the oldest
//! `limit` rows between them. The in-progress candle is a row like any other, always the newest.

use crate::domain::{Candle, Timeframe};

/// The open times Binance selects, oldest first, assuming the exchange has a candle at every open time of the grid
/// up to the one in progress at `now` (ms UTC, the exchange's clock). Where the exchange's history starts, or where
/// it has holes, it returns fewer: rows at hand that match this list exactly are therefore Binance's answer, and
/// rows that do not are a reason to ask the exchange.
pub fn expected_opens(timeframe: Timeframe, now: i64, start: Option<i64>, end: Option<i64>, limit: usize) -> Vec<i64> {
    let current = timeframe.open_time_containing(now);
    let highest = end.map_or(current, |end| timeframe.open_time_containing(end).min(current));
    let mut opens = Vec::with_capacity(limit.min(1000));
    match start {
        Some(start) => {
            let contains = timeframe.open_time_containing(start);
            let mut open = if contains < start { timeframe.next_open(contains) } else { contains };
            while open <= highest && opens.len() < limit {
                opens.push(open);
                open = timeframe.next_open(open);
            }
        }
        None => {
            let mut open = highest;
            while opens.len() < limit {
                opens.push(open);
                open = timeframe.previous_open(open);
            }
            opens.reverse();
        }
    }
    opens
}

/// What the rows at hand can answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Every selected row is at hand: these, oldest first.
    Complete(Vec<Candle>),
    /// Some selected row is missing (or an older row is still marked in progress): ask the exchange.
    Incomplete,
}

/// Matches `rows` (oldest first, at least every row with an open time between the first and the last of
/// `expected`) against `expected`. Every row must be there; all must be closed except one at `current_open`.
pub fn answer_from(expected: &[i64], rows: &[Candle], current_open: i64) -> Answer {
    let (Some(&first), Some(&last)) = (expected.first(), expected.last()) else {
        return Answer::Complete(Vec::new());
    };
    let inside = rows.iter().filter(|row| row.open_time >= first && row.open_time <= last);
    let mut selected = Vec::with_capacity(expected.len());
    let mut wanted = expected.iter();
    for row in inside {
        if wanted.next() != Some(&row.open_time) || !(row.is_closed || row.open_time == current_open) {
            return Answer::Incomplete;
        }
        selected.push(*row);
    }
    if selected.len() == expected.len() { Answer::Complete(selected) } else { Answer::Incomplete }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    /// 2026-01-05 00:10:30 UTC: inside the candle opening at 00:10.
    const NOW: i64 = 1_767_571_800_000 + 30_000;
    const CURRENT: i64 = 1_767_571_800_000;

    fn opens(start: Option<i64>, end: Option<i64>, limit: usize) -> Vec<i64> {
        expected_opens(Timeframe::M1, NOW, start, end, limit)
    }

    fn minutes_before(count: i64) -> i64 {
        CURRENT - count * MINUTE
    }

    #[test]
    fn each_combination_of_times_selects_as_binance_does() {
        // Neither: the newest `limit`, the in-progress one last.
        assert_eq!(opens(None, None, 3), vec![minutes_before(2), minutes_before(1), CURRENT]);
        // Start only: the oldest from an exact open time, or from the next one after a time inside a candle.
        assert_eq!(opens(Some(minutes_before(5)), None, 2), vec![minutes_before(5), minutes_before(4)]);
        assert_eq!(opens(Some(minutes_before(5) + 1), None, 2), vec![minutes_before(4), minutes_before(3)]);
        assert_eq!(opens(Some(minutes_before(1) - 1), None, 10), vec![minutes_before(1), CURRENT]);
        // End only: the newest opening at or before it.
        assert_eq!(opens(None, Some(minutes_before(3)), 2), vec![minutes_before(4), minutes_before(3)]);
        assert_eq!(opens(None, Some(minutes_before(3) - 1), 1), vec![minutes_before(4)]);
        // Both: from start, at most limit, up to end.
        assert_eq!(
            opens(Some(minutes_before(3)), Some(minutes_before(2)), 10),
            vec![minutes_before(3), minutes_before(2)]
        );
        assert_eq!(
            opens(Some(minutes_before(3)), Some(minutes_before(1)), 2),
            vec![minutes_before(3), minutes_before(2)]
        );
        // Empty: the future, and a range inside one candle.
        assert!(opens(Some(CURRENT + 1), None, 10).is_empty());
        assert!(opens(Some(minutes_before(3) + 1), Some(minutes_before(3) + 5), 10).is_empty());
        // A future end stops at the candle in progress.
        assert_eq!(opens(None, Some(NOW + 10 * MINUTE), 1), vec![CURRENT]);
    }

    #[test]
    fn months_step_by_calendar_month() {
        let now = 1_767_571_800_000; // 2026-01-05
        let got = expected_opens(Timeframe::Mo1, now, None, None, 2);
        assert_eq!(got, vec![1_764_547_200_000, 1_767_225_600_000]); // 2025-12-01, 2026-01-01
    }

    fn candle(open_time: i64, is_closed: bool) -> Candle {
        crate::domain::fixtures::minute_candle(open_time / MINUTE, 1.0, is_closed)
    }

    #[test]
    fn rows_answer_only_when_every_selected_one_is_there_and_final() {
        let expected = opens(None, None, 3);
        let rows = vec![
            candle(minutes_before(3), true),
            candle(minutes_before(2), true),
            candle(minutes_before(1), true),
            candle(CURRENT, false),
        ];
        assert_eq!(answer_from(&expected, &rows, CURRENT), Answer::Complete(rows[1..].to_vec()));
        // A hole.
        let holed = vec![rows[0], rows[1], rows[3]];
        assert_eq!(answer_from(&expected, &holed, CURRENT), Answer::Incomplete);
        // An older row still marked in progress.
        let stale = vec![rows[1], candle(minutes_before(1), false), rows[3]];
        assert_eq!(answer_from(&expected, &stale, CURRENT), Answer::Incomplete);
        // History that starts later than the selection.
        assert_eq!(answer_from(&opens(None, None, 5), &rows, CURRENT), Answer::Incomplete);
        // Nothing selected: nothing to fetch.
        assert_eq!(answer_from(&[], &[], CURRENT), Answer::Complete(Vec::new()));
    }
}
