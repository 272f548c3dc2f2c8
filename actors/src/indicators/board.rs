//! The latest provisional indicator values of every stream: written by the indicator actors on every in-progress
//! update, read by HTTP. One small lock per stream, so writers never contend with each other. Streams come and go
//! with the config.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

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
struct Values {
    open_time: i64,
    /// Empty while there is no in-progress candle (or it gives no value yet).
    values: Vec<IndicatorValue>,
}

#[derive(Debug)]
struct Slot {
    key: StreamKey,
    values: Mutex<Option<Values>>,
}

#[derive(Debug)]
struct Inner {
    names: RwLock<Arc<[String]>>,
    /// Indexed by [`StreamId`]; `None` for a stream not configured now.
    slots: RwLock<Vec<Option<Slot>>>,
}

/// Shared by the indicator actors (writers, by [`StreamId`]) and HTTP (reader, by symbol and timeframe).
#[derive(Debug, Clone)]
pub struct ProvisionalBoard {
    inner: Arc<Inner>,
}

impl ProvisionalBoard {
    /// A board with no stream yet; `names` are the indicator output names.
    pub fn new(names: Arc<[String]>) -> Self {
        Self { inner: Arc::new(Inner { names: RwLock::new(names), slots: RwLock::new(Vec::new()) }) }
    }

    /// The indicator output names that [`IndicatorValue::output`] indexes.
    pub fn names(&self) -> Arc<[String]> {
        self.inner.names.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A new indicator set: every stream's values are gone until its new indicator actor publishes.
    pub fn set_names(&self, names: Arc<[String]>) {
        *self.inner.names.write().unwrap_or_else(PoisonError::into_inner) = names;
        for slot in self.inner.slots.read().unwrap_or_else(PoisonError::into_inner).iter().flatten() {
            *slot.values.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Gives `stream` a slot (empty).
    pub fn add(&self, stream: StreamId, key: StreamKey) {
        let mut slots = self.inner.slots.write().unwrap_or_else(PoisonError::into_inner);
        let index = stream.0 as usize;
        if slots.len() <= index {
            slots.resize_with(index + 1, || None);
        }
        slots[index] = Some(Slot { key, values: Mutex::new(None) });
    }

    /// Removes `stream`'s slot: it is no longer configured.
    pub fn remove(&self, stream: StreamId) {
        if let Some(slot) = self.inner.slots.write().unwrap_or_else(PoisonError::into_inner).get_mut(stream.0 as usize)
        {
            *slot = None;
        }
    }

    fn with_slot(&self, stream: StreamId, f: impl FnOnce(&mut Option<Values>)) {
        let slots = self.inner.slots.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(Some(slot)) = slots.get(stream.0 as usize) {
            f(&mut slot.values.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Publishes the provisional values of the in-progress candle opened at `open_time`. Reuses the slot's buffer.
    pub fn publish(&self, stream: StreamId, open_time: i64, values: &[IndicatorValue]) {
        self.with_slot(stream, |slot| {
            let slot = slot.get_or_insert_with(Values::default);
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
        let names = self.names();
        let slots = self.inner.slots.read().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.iter().flatten().find(|s| s.key.symbol == symbol && s.key.timeframe == timeframe)?;
        let values = slot.values.lock().unwrap_or_else(PoisonError::into_inner);
        let values = values.as_ref()?;
        let named = (values.values.iter())
            .filter_map(|v| names.get(usize::from(v.output)).map(|name| (name.clone(), v.value)))
            .collect();
        Some(Provisional { open_time: values.open_time, values: named })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_get_and_close() {
        let board = ProvisionalBoard::new(vec!["sma_2".to_owned(), "rsi_2".to_owned()].into());
        board.add(StreamId(0), StreamKey::new("BTCUSDT", Timeframe::M1));
        board.add(StreamId(1), StreamKey::new("BTCUSDT", Timeframe::M5));
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

    #[test]
    fn streams_and_names_change_while_running() {
        let board = ProvisionalBoard::new(vec!["sma_2".to_owned()].into());
        let (btc, eth) = (StreamId(0), StreamId(3));
        board.add(btc, StreamKey::new("BTCUSDT", Timeframe::M1));
        board.add(eth, StreamKey::new("ETHUSDT", Timeframe::M1));
        board.publish(btc, 0, &[IndicatorValue { output: 0, value: 1.0 }]);
        board.publish(eth, 0, &[IndicatorValue { output: 0, value: 2.0 }]);
        // TC0: a removed stream shows nothing and takes nothing; the others keep theirs.
        board.remove(eth);
        assert_eq!(board.get("ETHUSDT", Timeframe::M1), None);
        board.publish(eth, 0, &[IndicatorValue { output: 0, value: 3.0 }]);
        assert_eq!(board.get("ETHUSDT", Timeframe::M1), None);
        assert_eq!(board.get("BTCUSDT", Timeframe::M1).map(|p| p.values), Some(vec![("sma_2".into(), 1.0)]));
        // TC1: a new indicator set clears every value: the old outputs' numbers mean other names now.
        board.set_names(vec!["ema_5".to_owned()].into());
        assert_eq!(board.get("BTCUSDT", Timeframe::M1), None);
        board.publish(btc, 60_000, &[IndicatorValue { output: 0, value: 4.0 }]);
        assert_eq!(board.get("BTCUSDT", Timeframe::M1).map(|p| p.values), Some(vec![("ema_5".into(), 4.0)]));
        // TC2: a stream added back starts empty.
        board.add(eth, StreamKey::new("ETHUSDT", Timeframe::M1));
        assert_eq!(board.get("ETHUSDT", Timeframe::M1), None);
    }
}
