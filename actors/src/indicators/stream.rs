//! The indicators of one stream as the indicator actor drives them: closed candles fed in order, rebuilds from
//! storage when a late or revised candle lands inside what was already consumed, and closed candles queued while
//! a rebuild's load is in flight.

use super::{IndicatorConfig, IndicatorSet, IndicatorValue};
use crate::domain::Candle;

/// Store from the first candle on: a full rebuild (at start, when nothing is known about what is stored).
pub const FULL_REBUILD: i64 = i64::MIN;

/// A rebuild waiting for its candles.
#[derive(Debug, Default)]
struct Rebuild {
    /// Values of candles opened at or after this are (re)stored; earlier ones did not change.
    store_from: i64,
    /// Closed candles received while waiting, in order.
    queued: Vec<Candle>,
    /// A rebuild requested after the load was sent, which that load may not include: run it next.
    again: Option<i64>,
    /// The load was sent and not answered yet.
    loading: bool,
}

/// The indicator state of one stream.
///
/// Every value it hands out must be stored. Values depend only on the candles up to theirs, so a rebuild caused by
/// a late candle re-stores only the values from that candle on; together they equal a clean recomputation
/// ([`recompute`](super::recompute)) over the stored closed candles.
#[derive(Debug)]
pub struct StreamIndicators {
    set: IndicatorSet,
    out: Vec<IndicatorValue>,
    rebuild: Option<Rebuild>,
    /// The latest in-progress candle, until it (or a newer one) closes.
    in_progress: Option<Candle>,
}

impl StreamIndicators {
    /// A fresh state that needs a full rebuild before anything is fed: call [`start_load`](Self::start_load).
    pub fn new(config: &IndicatorConfig) -> Self {
        let set = IndicatorSet::new(config);
        let out = Vec::with_capacity(set.names().len());
        let rebuild = Some(Rebuild { store_from: FULL_REBUILD, ..Rebuild::default() });
        Self { set, out, rebuild, in_progress: None }
    }

    pub fn names(&self) -> &[String] {
        self.set.names()
    }

    /// A rebuild is pending or in flight.
    pub fn is_rebuilding(&self) -> bool {
        self.rebuild.is_some()
    }

    /// Asks for a rebuild re-storing values from `from` on. Returns whether a load must be sent now (call
    /// [`start_load`](Self::start_load)); otherwise one is pending or in flight and will cover it.
    pub fn request_rebuild(&mut self, from: i64) -> bool {
        match &mut self.rebuild {
            Some(rebuild) if rebuild.loading => {
                rebuild.again = Some(rebuild.again.map_or(from, |again| again.min(from)));
                false
            }
            Some(rebuild) => {
                rebuild.store_from = rebuild.store_from.min(from);
                false
            }
            None => {
                self.rebuild = Some(Rebuild { store_from: from, ..Rebuild::default() });
                true
            }
        }
    }

    /// Marks the pending rebuild's load as sent. Returns false if there is no rebuild to load for.
    pub fn start_load(&mut self) -> bool {
        match &mut self.rebuild {
            Some(rebuild) if !rebuild.loading => {
                rebuild.loading = true;
                true
            }
            _ => false,
        }
    }

    /// The load failed: the rebuild stays pending (with anything requested meanwhile), to be loaded again.
    pub fn load_failed(&mut self) {
        if let Some(rebuild) = &mut self.rebuild {
            rebuild.loading = false;
            if let Some(again) = rebuild.again.take() {
                rebuild.store_from = rebuild.store_from.min(again);
            }
        }
    }

    /// Feeds one closed candle. Returns the values to store, or `None` when a rebuild is pending (the candle is
    /// queued and applied after it).
    pub fn closed(&mut self, candle: &Candle) -> Option<&[IndicatorValue]> {
        if self.in_progress.is_some_and(|c| c.open_time <= candle.open_time) {
            self.in_progress = None;
        }
        if let Some(rebuild) = &mut self.rebuild {
            rebuild.queued.push(*candle);
            return None;
        }
        self.out.clear();
        self.set.update(candle, &mut self.out);
        Some(&self.out)
    }

    /// An in-progress candle: returns the values it would give if it closed now, or `None` while a rebuild is
    /// pending (the state is being replaced; [`provisional`](Self::provisional) gives them after it).
    pub fn in_progress(&mut self, candle: &Candle) -> Option<&[IndicatorValue]> {
        self.in_progress = Some(*candle);
        if self.rebuild.is_some() {
            return None;
        }
        self.out.clear();
        self.set.provisional(candle, &mut self.out);
        Some(&self.out)
    }

    /// The latest in-progress candle's open time and provisional values, unless it closed or a rebuild is pending.
    pub fn provisional(&mut self) -> Option<(i64, &[IndicatorValue])> {
        let candle = self.in_progress.filter(|_| self.rebuild.is_none())?;
        self.out.clear();
        self.set.provisional(&candle, &mut self.out);
        Some((candle.open_time, &self.out))
    }

    /// The loaded closed candles of the stream, oldest first: resets and replays them, then the candles queued
    /// meanwhile that the load did not cover. `store` gets every (open time, values) to store. Returns whether
    /// another load must be sent now (a rebuild was requested while this one was loading).
    pub fn rebuilt(&mut self, candles: &[Candle], mut store: impl FnMut(i64, &[IndicatorValue])) -> bool {
        let Some(rebuild) = self.rebuild.take() else {
            log::warn!("indicators: loaded candles arrived without a rebuild in flight; ignored");
            return false;
        };
        self.set.reset();
        let mut last = None;
        for candle in candles.iter().filter(|c| c.is_closed) {
            last = Some(candle.open_time);
            self.feed(candle, candle.open_time >= rebuild.store_from, &mut store);
        }
        for candle in rebuild.queued.iter().filter(|c| last.is_none_or(|t| c.open_time > t)) {
            self.feed(candle, true, &mut store);
        }
        match rebuild.again {
            Some(from) => {
                self.rebuild = Some(Rebuild { store_from: from, loading: false, ..Rebuild::default() });
                true
            }
            None => false,
        }
    }

    fn feed(&mut self, candle: &Candle, keep: bool, store: &mut impl FnMut(i64, &[IndicatorValue])) {
        self.out.clear();
        self.set.update(candle, &mut self.out);
        if keep && !self.out.is_empty() {
            store(candle.open_time, &self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::indicators::recompute;

    fn config() -> IndicatorConfig {
        IndicatorConfig {
            sma: vec![3],
            ema: vec![2],
            rsi: vec![2],
            macd: vec![[2, 3, 2]],
            bollinger: vec![(3, 2.0)],
            atr: vec![2],
            ..IndicatorConfig::default()
        }
    }

    fn candle(minute: i64, close: f64) -> Candle {
        let open_time = minute * 60_000;
        Candle {
            open_time,
            close_time: open_time + 59_999,
            open: close,
            high: close + 1.0,
            low: close - 1.0,
            close,
            volume: 1.0,
            quote_volume: close,
            trades: 1,
            taker_buy_base: 0.5,
            taker_buy_quote: close / 2.0,
            is_closed: true,
        }
    }

    fn series(minutes: impl IntoIterator<Item = i64>) -> Vec<Candle> {
        minutes.into_iter().map(|m| candle(m, 100.0 + ((m * 7919) % 13) as f64)).collect()
    }

    /// The `indicators` table of one stream: (open time, name) → value, later writes win.
    #[derive(Default)]
    struct Table(BTreeMap<(i64, String), f64>);

    impl Table {
        fn write(&mut self, names: &[String], open_time: i64, values: &[IndicatorValue]) {
            for v in values {
                self.0.insert((open_time, names[usize::from(v.output)].clone()), v.value);
            }
        }

        fn equals_recomputation_over(&self, candles: &[Candle]) -> bool {
            let clean: BTreeMap<_, _> =
                recompute(&config(), candles).into_iter().map(|(t, n, v)| ((t, n), v)).collect();
            clean == self.0
        }
    }

    fn feed(state: &mut StreamIndicators, table: &mut Table, candle: &Candle) -> bool {
        let names = state.names().to_vec();
        match state.closed(candle) {
            Some(values) => {
                table.write(&names, candle.open_time, values);
                true
            }
            None => false,
        }
    }

    fn rebuild(state: &mut StreamIndicators, table: &mut Table, stored: &[Candle]) -> bool {
        let names = state.names().to_vec();
        state.rebuilt(stored, |t, values| table.write(&names, t, values))
    }

    #[test]
    fn start_up_rebuild_then_live_then_a_late_candle_equals_a_clean_recomputation() {
        let mut state = StreamIndicators::new(&config());
        let mut table = Table::default();
        // TC0: closed candles that arrive before the start-up load is answered are queued.
        assert!(state.start_load());
        let stored = series(0..10);
        for c in &series(8..12) {
            assert!(!feed(&mut state, &mut table, c));
        }
        assert!(!rebuild(&mut state, &mut table, &stored));
        assert!(!state.is_rebuilding());
        assert!(table.equals_recomputation_over(&series(0..12)));

        // TC1: live candles, but minute 20 is missed and arrives late from a backfill.
        for c in series((12..20).chain(21..30)) {
            assert!(feed(&mut state, &mut table, &c));
        }
        assert!(!table.equals_recomputation_over(&series(0..30)));
        assert!(state.request_rebuild(20 * 60_000));
        assert!(state.start_load());
        // TC2: a candle arriving during the rebuild is queued, then applied after the replay.
        let next = series(30..31);
        assert!(!feed(&mut state, &mut table, &next[0]));
        assert!(!rebuild(&mut state, &mut table, &series(0..30)));
        assert!(table.equals_recomputation_over(&series(0..31)));
        // TC3: an in-progress candle gives no provisional values during a rebuild, and gives them after it.
        assert!(state.request_rebuild(30 * 60_000));
        let mut current = series(31..32)[0];
        current.is_closed = false;
        assert!(state.in_progress(&current).is_none());
        assert!(state.start_load());
        assert!(!rebuild(&mut state, &mut table, &series(0..31)));
        assert!(state.provisional().is_some_and(|(t, values)| t == current.open_time && values.len() == 10));
        assert_eq!(state.in_progress(&current).map(<[_]>::len), Some(10));
        // TC4: after the rebuild, live feeding resumes; the close ends the provisional values.
        assert!(feed(&mut state, &mut table, &series(31..32)[0]));
        assert!(table.equals_recomputation_over(&series(0..32)));
        assert!(state.provisional().is_none());
    }

    #[test]
    fn a_revision_overwrites_the_values_from_the_revised_candle_on() {
        let mut state = StreamIndicators::new(&config());
        let mut table = Table::default();
        assert!(state.start_load());
        let mut stored = series(0..20);
        assert!(!rebuild(&mut state, &mut table, &stored));
        stored[15].close += 5.0;
        assert!(state.request_rebuild(stored[15].open_time));
        assert!(state.start_load());
        assert!(!rebuild(&mut state, &mut table, &stored));
        assert!(table.equals_recomputation_over(&stored));
    }

    #[test]
    fn requests_during_a_load_run_again_and_a_failed_load_is_retried() {
        let mut state = StreamIndicators::new(&config());
        let mut table = Table::default();
        // TC0: a request before the start-up load is sent joins it.
        assert!(!state.request_rebuild(5));
        assert!(state.start_load());
        assert!(!state.start_load());
        // TC1: a request while loading runs another load after this one.
        assert!(!state.request_rebuild(5 * 60_000));
        assert!(rebuild(&mut state, &mut table, &series(0..10)));
        assert!(state.is_rebuilding());
        // TC2: that load fails and is retried; a request meanwhile joins the retry.
        assert!(state.start_load());
        state.load_failed();
        assert!(!state.request_rebuild(60_000));
        assert!(state.start_load());
        assert!(!rebuild(&mut state, &mut table, &series(0..10)));
        assert!(!state.is_rebuilding());
        assert!(!state.start_load());
        assert!(table.equals_recomputation_over(&series(0..10)));
    }
}
