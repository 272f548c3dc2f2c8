//! The latest provisional indicator values of every stream: written by the indicator actors on every in-progress
//! update, read by HTTP. One small lock per stream, so writers never contend with each other.

use std::sync::{Arc, Mutex, PoisonError};

use super::IndicatorValue;
use crate::domain::{StreamId, StreamKey, Timeframe};

/// The values the in-progress candle opened at `open_time` would give if it closed now. Never stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Provisional {
    pub open_time: i64,
    /// `(name, value)` in [`IndicatorSet::names`](super::IndicatorSet::names) order.
    pub values: Vec<(String, f64)>,
}

#[derive(Debug, Default)]
struct Slot {
    open_time: i64,
    /// Empty while there is no in-progress candle (or it gives no value yet).
    values: Vec<IndicatorValue>,
}

#[derive(Debug)]
struct Inner {
    names: Arc<[String]>,
    streams: Vec<(StreamKey, Mutex<Option<Slot>>)>,
}

/// Shared by the indicator actors (writers, by [`StreamId`]) and HTTP (reader, by symbol and timeframe).
#[derive(Debug, Clone)]
pub struct ProvisionalBoard {
    inner: Arc<Inner>,
}

impl ProvisionalBoard {
    /// One slot per stream, indexed by [`StreamId`] in `streams` order; `names` are the indicator output names.
    pub fn new(streams: &[StreamKey], names: Arc<[String]>) -> Self {
        let streams = streams.iter().map(|key| (key.clone(), Mutex::new(None))).collect();
        Self { inner: Arc::new(Inner { names, streams }) }
    }

    /// The indicator output names that [`IndicatorValue::output`] indexes.
    pub fn names(&self) -> &Arc<[String]> {
        &self.inner.names
    }

    fn with_slot(&self, stream: StreamId, f: impl FnOnce(&mut Option<Slot>)) {
        if let Some((_, slot)) = self.inner.streams.get(stream.0 as usize) {
            f(&mut slot.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Publishes the provisional values of the in-progress candle opened at `open_time`. Reuses the slot's buffer.
    pub fn publish(&self, stream: StreamId, open_time: i64, values: &[IndicatorValue]) {
        self.with_slot(stream, |slot| {
            let slot = slot.get_or_insert_with(Slot::default);
            slot.open_time = open_time;
            slot.values.clear();
            slot.values.extend_from_slice(values);
        });
    }

    /// The candle opened at `open_time` closed: its provisional values (and older ones) are gone.
    pub fn closed(&self, stream: StreamId, open_time: i64) {
        self.with_slot(stream, |slot| {
            if slot.as_ref().is_some_and(|s| s.open_time <= open_time) {
                *slot = None;
            }
        });
    }

    /// The provisional values of a stream, if it is configured and has an in-progress candle.
    pub fn get(&self, symbol: &str, timeframe: Timeframe) -> Option<Provisional> {
        let (_, slot) =
            self.inner.streams.iter().find(|(key, _)| key.symbol == symbol && key.timeframe == timeframe)?;
        let slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slot.as_ref()?;
        let names = &self.inner.names;
        let values = slot
            .values
            .iter()
            .filter_map(|v| names.get(usize::from(v.output)).map(|name| (name.clone(), v.value)))
            .collect();
        Some(Provisional { open_time: slot.open_time, values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_get_and_close() {
        let streams = [StreamKey::new("BTCUSDT", Timeframe::M1), StreamKey::new("BTCUSDT", Timeframe::M5)];
        let board = ProvisionalBoard::new(&streams, vec!["sma_2".to_owned(), "rsi_2".to_owned()].into());
        let s = StreamId(1);
        assert_eq!(board.get("BTCUSDT", Timeframe::M5), None);
        board.publish(s, 300_000, &[IndicatorValue { output: 1, value: 40.0 }]);
        board.publish(
            s,
            300_000,
            &[IndicatorValue { output: 0, value: 2.0 }, IndicatorValue { output: 1, value: 50.0 }],
        );
        let want = Provisional { open_time: 300_000, values: vec![("sma_2".into(), 2.0), ("rsi_2".into(), 50.0)] };
        assert_eq!(board.get("BTCUSDT", Timeframe::M5), Some(want));
        assert_eq!(board.get("BTCUSDT", Timeframe::M1), None);
        assert_eq!(board.get("ETHUSDT", Timeframe::M5), None);
        // TC0: an older candle closing leaves the newer provisional values alone; its own close clears them.
        board.closed(s, 0);
        assert!(board.get("BTCUSDT", Timeframe::M5).is_some());
        board.closed(s, 300_000);
        assert_eq!(board.get("BTCUSDT", Timeframe::M5), None);
        // TC1: an unknown stream id is ignored.
        board.publish(StreamId(9), 0, &[]);
    }
}
