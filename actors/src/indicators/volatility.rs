//! Volatility indicators: true range, ATR, Bollinger Bands and Keltner Channels.

use super::average::{Ema, Sma};
use super::ring::Ring;

/// TA-Lib's true range: the largest of `high − low`, `|high − prev_close|` and `|low − prev_close|`.
pub fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    let mut out = high - low;
    let up = (high - prev_close).abs();
    if up > out {
        out = up;
    }
    let down = (low - prev_close).abs();
    if down > out {
        out = down;
    }
    out
}

/// TA-Lib `ATR`: the first true range is at input index 1 (it needs the previous close); ATR is seeded with the SMA
/// of the first `period` true ranges (first output at index `period`), then `atr = (atr·(period − 1) + tr) / period`.
/// Period 1 is the true range itself, as TA-Lib's `TRANGE`.
#[derive(Debug, Clone, Copy)]
pub struct Atr {
    period: usize,
    count: usize,
    prev_close: f64,
    sum: f64,
    value: f64,
}

impl Atr {
    pub fn new(period: usize) -> Self {
        Self { period: period.max(1), count: 0, prev_close: 0.0, sum: 0.0, value: 0.0 }
    }

    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let n = self.period as f64;
        let index = self.count;
        self.count = self.count.saturating_add(1);
        let tr = true_range(high, low, self.prev_close);
        self.prev_close = close;
        if index == 0 {
            return None;
        }
        if index <= self.period {
            self.sum += tr;
            if index < self.period {
                return None;
            }
            self.value = self.sum / n;
        } else {
            self.value = (self.value * (n - 1.0) + tr) / n;
        }
        Some(self.value)
    }

    pub fn peek(&self, high: f64, low: f64, close: f64) -> Option<f64> {
        let mut copy = *self;
        copy.update(high, low, close)
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }
}

/// Upper, middle and lower band of one output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    pub upper: f64,
    pub middle: f64,
    pub lower: f64,
}

/// TA-Lib `BBANDS` with MA type SMA and equal up/down deviations: middle = SMA(period), bands = middle ±
/// `multiplier`·σ with σ the population standard deviation of the window. Lookback `period − 1`.
///
/// σ is computed two-pass over the window (O(period)): TA-Lib ≥ 0.8 computes the variance cancellation-free too,
/// so the old `E[x²] − mean²` arithmetic would no longer match it on flat runs and large prices. A window whose
/// values are all equal has σ = 0 exactly.
#[derive(Debug, Clone)]
pub struct Bollinger {
    period: usize,
    multiplier: f64,
    ring: Ring,
    middle: Sma,
}

impl Bollinger {
    pub fn new(period: usize, multiplier: f64) -> Self {
        let period = period.max(1);
        Self { period, multiplier, ring: Ring::new(period), middle: Sma::new(period) }
    }

    fn sigma(&self, x: f64) -> f64 {
        let n = self.period as f64;
        let (mut lo, mut hi, mut sum) = (x, x, 0.0);
        for v in self.ring.window_with(x) {
            lo = lo.min(v);
            hi = hi.max(v);
            sum += v;
        }
        if lo == hi {
            return 0.0;
        }
        let mean = sum / n;
        let (mut dev, mut dev2) = (0.0, 0.0);
        for v in self.ring.window_with(x) {
            let d = v - mean;
            dev += d;
            dev2 += d * d;
        }
        let variance = (dev2 - dev * dev / n) / n;
        if variance > 0.0 { variance.sqrt() } else { 0.0 }
    }

    fn bands(&self, middle: f64, x: f64) -> Bands {
        let width = self.sigma(x) * self.multiplier;
        Bands { upper: middle + width, middle, lower: middle - width }
    }

    pub fn update(&mut self, x: f64) -> Option<Bands> {
        let out = self.middle.update(x).map(|middle| self.bands(middle, x));
        self.ring.push(x);
        out
    }

    pub fn peek(&self, x: f64) -> Option<Bands> {
        self.middle.peek(x).map(|middle| self.bands(middle, x))
    }

    pub fn reset(&mut self) {
        self.ring.clear();
        self.middle.reset();
    }
}

/// Keltner Channels (no TA-Lib function; defined from TA-Lib parts): middle = TA-Lib `EMA(close, period)`,
/// bands = middle ± `multiplier` × TA-Lib `ATR(period)`. First output at input index `period` (ATR's lookback).
#[derive(Debug, Clone, Copy)]
pub struct Keltner {
    multiplier: f64,
    ema: Ema,
    atr: Atr,
}

impl Keltner {
    pub fn new(period: usize, multiplier: f64) -> Self {
        Self { multiplier, ema: Ema::new(period), atr: Atr::new(period) }
    }

    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<Bands> {
        let middle = self.ema.update(close);
        let atr = self.atr.update(high, low, close);
        let (middle, atr) = (middle?, atr?);
        let width = self.multiplier * atr;
        Some(Bands { upper: middle + width, middle, lower: middle - width })
    }

    pub fn peek(&self, high: f64, low: f64, close: f64) -> Option<Bands> {
        let mut copy = *self;
        copy.update(high, low, close)
    }

    pub fn reset(&mut self) {
        self.ema.reset();
        self.atr.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_range_cases() {
        // (high, low, prev_close, expected)
        let cases = [(10.0, 8.0, 9.0, 2.0), (10.0, 8.0, 5.0, 5.0), (10.0, 8.0, 14.0, 6.0), (3.0, 3.0, 3.0, 0.0)];
        for (h, l, pc, want) in cases {
            assert_eq!(true_range(h, l, pc), want, "{h} {l} {pc}");
        }
    }

    #[test]
    fn bollinger_flat_run_has_zero_width() {
        let mut bb = Bollinger::new(3, 2.0);
        for x in [0.1, 0.1, 0.1, 0.1, 123456.789, 123456.789, 123456.789, 123456.789] {
            if let Some(b) = bb.update(x)
                && b.middle == x
            {
                assert_eq!(b.upper, b.lower);
            }
        }
        let b = bb.update(123456.789).unwrap_or(Bands { upper: 0.0, middle: 0.0, lower: 1.0 });
        assert_eq!(b.upper, b.lower);
    }

    #[test]
    fn bollinger_population_sigma() {
        let mut bb = Bollinger::new(4, 1.0);
        let mut last = None;
        for x in [2.0, 4.0, 4.0, 6.0] {
            last = bb.update(x);
        }
        // mean 4, population variance (4 + 0 + 0 + 4) / 4 = 2
        let b = last.unwrap_or(Bands { upper: 0.0, middle: 0.0, lower: 0.0 });
        assert!((b.upper - (4.0 + 2f64.sqrt())).abs() < 1e-12);
        assert!((b.lower - (4.0 - 2f64.sqrt())).abs() < 1e-12);
    }
}
