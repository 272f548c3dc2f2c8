//! Technical indicators computed incrementally on closed candles, matching TA-Lib's output to 1e-9 relative.
//!
//! Each indicator is a plain struct (`Sma`, `Ema`, `Rsi`, `Macd`, `Bollinger`, `Atr`, ...) with `update` (feed
//! one value, get `Some` once warm) and `peek` (the same, without changing state). [`IndicatorSet`] composes the
//! configured ones and numbers their outputs ([`IndicatorSet::names`]). Warm-up lengths and seeding follow TA-Lib
//! (default compatibility, unstable period 0), so no value is emitted before TA-Lib would emit one.
//!
//! Odd input: the structs do plain IEEE arithmetic, so a NaN they are fed propagates into their outputs (it is not
//! hidden). [`IndicatorSet`] never feeds them one: a candle with a non-finite open, high, low, close or volume, or
//! whose open time is not after the previous candle's, is skipped with a `log::warn!` and changes no state.

mod average;
mod board;
mod config;
mod oscillator;
mod ring;
mod stream;
mod volatility;
mod volume;

#[cfg(test)]
mod golden_tests;

pub use average::{Dema, Ema, Sma, Tema, Wma};
pub use board::{Provisional, ProvisionalBoard};
pub use config::{IndicatorConfig, IndicatorConfigError, MAX_PERIOD, format_multiplier};
pub use oscillator::{Adx, Macd, MacdValue, Rsi, Stoch, StochValue};
pub use stream::{FULL_REBUILD, StreamIndicators};
pub use volatility::{Atr, Bands, Bollinger, Keltner, true_range};
pub use volume::{Obv, Vwap};

use std::sync::{Arc, Mutex};

use crate::domain::Candle;
use config::Spec;

/// One output value: `output` indexes [`IndicatorSet::names`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndicatorValue {
    pub output: u16,
    pub value: f64,
}

/// One configured indicator. The larger ones are boxed: every slot is as large as the largest variant, and a stream
/// holds one slot per configured indicator (Stoch alone would make each 200 bytes).
#[derive(Debug, Clone)]
enum Kind {
    Sma(Sma),
    Ema(Ema),
    Wma(Box<Wma>),
    Dema(Box<Dema>),
    Tema(Box<Tema>),
    Rsi(Rsi),
    Macd(Box<Macd>),
    Bollinger(Box<Bollinger>),
    Atr(Atr),
    Adx(Box<Adx>),
    Stoch(Box<Stoch>),
    Keltner(Box<Keltner>),
    Obv(Obv),
    Vwap(Vwap),
}

impl Kind {
    fn new(spec: Spec) -> Self {
        let n = |p: u32| p as usize;
        match spec {
            Spec::Sma(p) => Kind::Sma(Sma::new(n(p))),
            Spec::Ema(p) => Kind::Ema(Ema::new(n(p))),
            Spec::Wma(p) => Kind::Wma(Box::new(Wma::new(n(p)))),
            Spec::Dema(p) => Kind::Dema(Box::new(Dema::new(n(p)))),
            Spec::Tema(p) => Kind::Tema(Box::new(Tema::new(n(p)))),
            Spec::Rsi(p) => Kind::Rsi(Rsi::new(n(p))),
            Spec::Macd(f, s, g) => Kind::Macd(Box::new(Macd::new(n(f), n(s), n(g)))),
            Spec::Bollinger(p, m) => Kind::Bollinger(Box::new(Bollinger::new(n(p), m))),
            Spec::Atr(p) => Kind::Atr(Atr::new(n(p))),
            Spec::Adx(p) => Kind::Adx(Box::new(Adx::new(n(p)))),
            Spec::Stoch(a, b, c) => Kind::Stoch(Box::new(Stoch::new(n(a), n(b), n(c)))),
            Spec::Keltner(p, m) => Kind::Keltner(Box::new(Keltner::new(n(p), m))),
            Spec::Obv => Kind::Obv(Obv::new()),
            Spec::Vwap => Kind::Vwap(Vwap::new()),
        }
    }

    fn reset(&mut self) {
        match self {
            Kind::Sma(i) => i.reset(),
            Kind::Ema(i) => i.reset(),
            Kind::Wma(i) => i.reset(),
            Kind::Dema(i) => i.reset(),
            Kind::Tema(i) => i.reset(),
            Kind::Rsi(i) => i.reset(),
            Kind::Macd(i) => i.reset(),
            Kind::Bollinger(i) => i.reset(),
            Kind::Atr(i) => i.reset(),
            Kind::Adx(i) => i.reset(),
            Kind::Stoch(i) => i.reset(),
            Kind::Keltner(i) => i.reset(),
            Kind::Obv(i) => i.reset(),
            Kind::Vwap(i) => i.reset(),
        }
    }
}

/// Up to three values one indicator emits for one candle.
type Emitted = ([f64; 3], usize);

fn one(v: Option<f64>) -> Emitted {
    v.map_or(([0.0; 3], 0), |v| ([v, 0.0, 0.0], 1))
}

fn three(v: Option<[f64; 3]>) -> Emitted {
    v.map_or(([0.0; 3], 0), |v| (v, 3))
}

fn bands(b: Option<Bands>) -> Emitted {
    three(b.map(|b| [b.upper, b.middle, b.lower]))
}

/// Feeds the candle to one indicator.
fn update_kind(kind: &mut Kind, c: &Candle) -> Emitted {
    let (h, l, x, v) = (c.high, c.low, c.close, c.volume);
    match kind {
        Kind::Sma(i) => one(i.update(x)),
        Kind::Ema(i) => one(i.update(x)),
        Kind::Wma(i) => one(i.update(x)),
        Kind::Dema(i) => one(i.update(x)),
        Kind::Tema(i) => one(i.update(x)),
        Kind::Rsi(i) => one(i.update(x)),
        Kind::Macd(i) => three(i.update(x).map(|m| [m.macd, m.signal, m.hist])),
        Kind::Bollinger(i) => bands(i.update(x)),
        Kind::Atr(i) => one(i.update(h, l, x)),
        Kind::Adx(i) => one(i.update(h, l, x)),
        Kind::Stoch(i) => i.update(h, l, x).map_or(([0.0; 3], 0), |s| ([s.k, s.d, 0.0], 2)),
        Kind::Keltner(i) => bands(i.update(h, l, x)),
        Kind::Obv(i) => one(i.update(x, v)),
        Kind::Vwap(i) => one(i.update(c.open_time, h, l, x, v)),
    }
}

/// What [`update_kind`] would emit, without changing state.
fn peek_kind(kind: &Kind, c: &Candle) -> Emitted {
    let (h, l, x, v) = (c.high, c.low, c.close, c.volume);
    match kind {
        Kind::Sma(i) => one(i.peek(x)),
        Kind::Ema(i) => one(i.peek(x)),
        Kind::Wma(i) => one(i.peek(x)),
        Kind::Dema(i) => one(i.peek(x)),
        Kind::Tema(i) => one(i.peek(x)),
        Kind::Rsi(i) => one(i.peek(x)),
        Kind::Macd(i) => three(i.peek(x).map(|m| [m.macd, m.signal, m.hist])),
        Kind::Bollinger(i) => bands(i.peek(x)),
        Kind::Atr(i) => one(i.peek(h, l, x)),
        Kind::Adx(i) => one(i.peek(h, l, x)),
        Kind::Stoch(i) => i.peek(h, l, x).map_or(([0.0; 3], 0), |s| ([s.k, s.d, 0.0], 2)),
        Kind::Keltner(i) => bands(i.peek(h, l, x)),
        Kind::Obv(i) => one(i.peek(x, v)),
        Kind::Vwap(i) => one(i.peek(c.open_time, h, l, x, v)),
    }
}

#[derive(Debug, Clone)]
struct Slot {
    kind: Kind,
    /// Index of this indicator's first output in `names`.
    first_output: u16,
}

/// The configured indicators of one stream, fed closed candles in order.
#[derive(Debug, Clone)]
pub struct IndicatorSet {
    slots: Box<[Slot]>,
    /// The same for every stream of a config: shared, not copied per stream.
    names: Arc<[String]>,
    last_open_time: Option<i64>,
}

/// The set last built, and its config: the next stream of that config gets a clone of it (its shared names, its
/// slots allocated once at their exact size), not a build of its own.
static TEMPLATE: Mutex<Option<(IndicatorConfig, IndicatorSet)>> = Mutex::new(None);

impl IndicatorSet {
    /// Builds the set. Entries [`IndicatorConfig::validate`] would reject (bad parameters, duplicates, outputs past
    /// the `u16` range) are left out with a `log::warn!`; this never panics. Validate the config first.
    ///
    /// Every set of one config shares its output names: building one per stream costs its state only.
    pub fn new(config: &IndicatorConfig) -> Self {
        let mut template = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
        match template.as_ref() {
            Some((built_for, set)) if built_for == config => set.clone(),
            _ => {
                let set = Self::build(config);
                *template = Some((config.clone(), set.clone()));
                set
            }
        }
    }

    fn build(config: &IndicatorConfig) -> Self {
        let mut slots = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for spec in config.specs() {
            let outputs = spec.output_names();
            if let Err(e) = spec.check() {
                log::warn!("indicator left out: {e}");
                continue;
            }
            if outputs.iter().any(|n| names.contains(n)) {
                log::warn!("indicator left out: indicators.{}: duplicate entry", spec.key());
                continue;
            }
            let Ok(first_output) = u16::try_from(names.len()) else {
                log::warn!("indicator left out: indicators.{}: too many outputs", spec.key());
                continue;
            };
            if usize::from(first_output) + outputs.len() > usize::from(u16::MAX) + 1 {
                log::warn!("indicator left out: indicators.{}: too many outputs", spec.key());
                continue;
            }
            slots.push(Slot { kind: Kind::new(spec), first_output });
            names.extend(outputs);
        }
        Self { slots: slots.into(), names: names.into(), last_open_time: None }
    }

    /// Every output name, in a fixed order; [`IndicatorValue::output`] indexes this.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn acceptable(&self, candle: &Candle) -> bool {
        let fields = [candle.open, candle.high, candle.low, candle.close, candle.volume];
        if !fields.iter().all(|f| f.is_finite()) {
            log::warn!("indicators: candle at {} has a non-finite price or volume; skipped", candle.open_time);
            return false;
        }
        if self.last_open_time.is_some_and(|t| candle.open_time <= t) {
            log::warn!("indicators: candle at {} is not after the previous one; skipped", candle.open_time);
            return false;
        }
        true
    }

    fn emit(first_output: u16, (values, count): Emitted, out: &mut Vec<IndicatorValue>) {
        for (i, &value) in values.iter().take(count).enumerate() {
            out.push(IndicatorValue { output: first_output + i as u16, value });
        }
    }

    /// Feeds one closed candle and appends the values emitted for it (nothing for an indicator still warming up).
    pub fn update(&mut self, candle: &Candle, out: &mut Vec<IndicatorValue>) {
        if !self.acceptable(candle) {
            return;
        }
        self.last_open_time = Some(candle.open_time);
        for slot in self.slots.iter_mut() {
            Self::emit(slot.first_output, update_kind(&mut slot.kind, candle), out);
        }
    }

    /// Appends the values [`update`](Self::update) would emit if this in-progress candle closed now. No state
    /// changes; the candle is checked the same way.
    pub fn provisional(&self, candle: &Candle, out: &mut Vec<IndicatorValue>) {
        if !self.acceptable(candle) {
            return;
        }
        for slot in &self.slots {
            Self::emit(slot.first_output, peek_kind(&slot.kind, candle), out);
        }
    }

    /// Forgets all state, as before the first candle.
    pub fn reset(&mut self) {
        self.last_open_time = None;
        for slot in self.slots.iter_mut() {
            slot.kind.reset();
        }
    }
}

/// A clean recomputation: the `(open time, name, value)` the configured indicators give over `candles` (closed ones
/// only, oldest first), in emission order. What the `indicators` table must hold for the stream's `candles`.
pub fn recompute(config: &IndicatorConfig, candles: &[Candle]) -> Vec<(i64, String, f64)> {
    let mut set = IndicatorSet::new(config);
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for candle in candles.iter().filter(|c| c.is_closed) {
        out.clear();
        set.update(candle, &mut out);
        let names = set.names();
        rows.extend(out.iter().map(|v| (candle.open_time, names[usize::from(v.output)].clone(), v.value)));
    }
    rows
}
