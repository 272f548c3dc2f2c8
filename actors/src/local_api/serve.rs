//! Kline answers from the store: Binance's selection matched against the stored rows (the read every
//! `/api/v3/klines` request starts with), and the store-alone answer when read-through is off.

use crate::domain::{Candle, Timeframe};
use crate::local_api::request::KlineRequest;
use crate::local_api::selection::{Answer, answer_from, expected_opens};
use crate::store::{Store, StoreError, Window};

/// The rows Binance would select for `request` at `now` (the exchange's clock, ms UTC), if the store holds every
/// one of them; [`Answer::Incomplete`] otherwise.
pub fn klines_from_store(store: &dyn Store, request: &KlineRequest, now: i64) -> Result<Answer, StoreError> {
    let expected = expected_opens(request.timeframe, now, request.start, request.end, request.limit);
    let (Some(&first), Some(&last)) = (expected.first(), expected.last()) else {
        return Ok(Answer::Complete(Vec::new()));
    };
    let current_open = request.timeframe.open_time_containing(now);
    // One row more than selected: a stored row off the grid shows as a mismatch, never as a silent extra. When the
    // selection ends at the candle in progress, the row after it is read too: a stored newer candle means the
    // exchange's clock is past `now` (it was last observed a moment ago), and the exchange is asked instead.
    let upto = if last == current_open { i64::MAX } else { last + 1 };
    let rows =
        store.candles_window(&request.symbol, request.timeframe, first, upto, expected.len() + 1, Window::Oldest)?;
    if last == current_open && rows.iter().any(|row| row.open_time > last) {
        return Ok(Answer::Incomplete);
    }
    Ok(answer_from(&expected, &rows, current_open))
}

/// What the store holds for `request`, selected as Binance selects (read-through off): rows with
/// `startTime <= open time <= endTime`, the oldest `limit` from `startTime` when it is given, otherwise the newest.
pub fn klines_store_alone(store: &dyn Store, request: &KlineRequest) -> Result<Vec<Candle>, StoreError> {
    let window = if request.start.is_some() { Window::Oldest } else { Window::Newest };
    let (from, to) = (request.start.unwrap_or(i64::MIN), request.end.map_or(i64::MAX, |end| end.saturating_add(1)));
    store.candles_window(&request.symbol, request.timeframe, from, to, request.limit, window)
}

/// Whether `timeframe`'s grid is global. `3d` is not: each symbol's 3-day candles step from its own first day, so
/// its selection is left to the exchange.
pub fn has_global_grid(timeframe: Timeframe) -> bool {
    timeframe != Timeframe::D3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::minute_candle;
    use crate::domain::{StreamId, StreamKey};
    use crate::store::SqliteStore;

    fn request(start: Option<i64>, end: Option<i64>, limit: usize) -> KlineRequest {
        KlineRequest { symbol: "BTCUSDT".into(), timeframe: Timeframe::M1, start, end, limit, time_zone: None }
    }

    #[test]
    fn the_store_answers_when_it_holds_the_whole_selection() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let streams = [StreamKey::new("BTCUSDT", Timeframe::M1)];
        // Minutes 100..=110 closed, 111 in progress; minute 105 missing.
        let mut rows: Vec<_> =
            (100..=110).filter(|m| *m != 105).map(|m| (StreamId(0), minute_candle(m, 2.0, true))).collect();
        rows.push((StreamId(0), minute_candle(111, 2.0, false)));
        store.write_candles(&streams, &rows).unwrap();
        let now = 111 * 60_000 + 5_000;
        let got = klines_from_store(&store, &request(None, None, 5), now).unwrap();
        let Answer::Complete(candles) = got else { panic!("the newest 5 are stored") };
        assert_eq!(candles.iter().map(|c| c.open_time / 60_000).collect::<Vec<_>>(), [107, 108, 109, 110, 111]);
        // The hole, and history older than the store's.
        assert_eq!(klines_from_store(&store, &request(None, None, 7), now).unwrap(), Answer::Incomplete);
        assert_eq!(klines_from_store(&store, &request(Some(90 * 60_000), None, 3), now).unwrap(), Answer::Incomplete);
        // A clock behind the store's newest candle: the exchange has moved on.
        assert_eq!(klines_from_store(&store, &request(None, None, 2), now - 60_000).unwrap(), Answer::Incomplete);
        // An empty selection needs nothing.
        assert_eq!(
            klines_from_store(&store, &request(Some(now + 60_000), None, 3), now).unwrap(),
            Answer::Complete(vec![])
        );
        // Store alone: what there is, hole and all.
        let alone = klines_store_alone(&store, &request(Some(103 * 60_000), Some(107 * 60_000), 10)).unwrap();
        assert_eq!(alone.iter().map(|c| c.open_time / 60_000).collect::<Vec<_>>(), [103, 104, 106, 107]);
        let newest = klines_store_alone(&store, &request(None, Some(104 * 60_000 + 1), 2)).unwrap();
        assert_eq!(newest.iter().map(|c| c.open_time / 60_000).collect::<Vec<_>>(), [103, 104]);
    }
}
