//! Moving averages: SMA, EMA, WMA, DEMA and TEMA, with TA-Lib's seeding and lookbacks.

use super::ring::Ring;

/// TA-Lib `SMA`: the mean of the last `period` values. First value after `period` inputs (lookback `period - 1`).
///
/// Rolling sum in exactly TA-Lib's order (add the new value, divide, subtract the departing one), never re-anchored:
/// TA-Lib's own rounding residue is part of its output (e.g. STOCH's %K of a flat run is about −1e-14, not 0), and
/// matching it to 1e-9 relative needs the same arithmetic.
#[derive(Debug, Clone)]
pub struct Sma {
    period: usize,
    ring: Ring,
    /// Sum of the newest `period - 1` values held.
    partial: f64,
}

impl Sma {
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self { period, ring: Ring::new(period), partial: 0.0 }
    }

    pub fn period(&self) -> usize {
        self.period
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        let total = self.partial + x;
        self.ring.push(x);
        if !self.ring.is_full() {
            self.partial = total;
            return None;
        }
        self.partial = total - self.ring.oldest().unwrap_or(0.0);
        Some(total / self.period as f64)
    }

    /// What [`update`](Self::update) would return for `x`, without changing state.
    pub fn peek(&self, x: f64) -> Option<f64> {
        (self.ring.len() + 1 >= self.period).then(|| (self.partial + x) / self.period as f64)
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }
}

/// TA-Lib `EMA` (default compatibility): `k = 2 / (period + 1)`, seeded with the SMA of the first `period` values,
/// which is also the first output (lookback `period - 1`). Then `ema = (x - ema) * k + ema`.
#[derive(Debug, Clone, Copy)]
pub struct Ema {
    period: usize,
    k: f64,
    count: usize,
    sum: f64,
    value: f64,
}

impl Ema {
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self { period, k: 2.0 / (period as f64 + 1.0), count: 0, sum: 0.0, value: 0.0 }
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.count < self.period {
            self.count += 1;
            self.sum += x;
            if self.count < self.period {
                return None;
            }
            self.value = self.sum / self.period as f64;
        } else if self.period == 1 {
            // TA-Lib returns the input unchanged for period 1.
            self.value = x;
        } else {
            self.value = (x - self.value) * self.k + self.value;
        }
        Some(self.value)
    }

    pub fn peek(&self, x: f64) -> Option<f64> {
        let mut copy = *self;
        copy.update(x)
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }
}

/// TA-Lib `WMA`: weights `1..=period`, newest heaviest, divided by `period * (period + 1) / 2`.
/// Lookback `period - 1`. O(1) per value via the numerator/window-sum recurrence, re-anchored every `period`.
#[derive(Debug, Clone)]
pub struct Wma {
    period: usize,
    ring: Ring,
    /// Σ i·x over the current full window (weights 1..=period).
    numerator: f64,
    /// Σ x over the current full window.
    window_sum: f64,
    since_anchor: usize,
}

impl Wma {
    pub fn new(period: usize) -> Self {
        let period = period.max(1);
        Self { period, ring: Ring::new(period), numerator: 0.0, window_sum: 0.0, since_anchor: 0 }
    }

    fn divider(&self) -> f64 {
        (self.period * (self.period + 1) / 2) as f64
    }

    /// Numerator and window sum computed directly from the window ending at `x`.
    fn direct(&self, x: f64) -> (f64, f64) {
        self.ring.window_with(x).enumerate().fold((0.0, 0.0), |(num, sum), (i, v)| (num + v * (i + 1) as f64, sum + v))
    }

    fn step(&self, x: f64) -> Option<(f64, f64)> {
        if self.ring.len() + 1 < self.period {
            return None;
        }
        if !self.ring.is_full() || self.since_anchor + 1 >= self.period {
            return Some(self.direct(x));
        }
        let departing = self.ring.oldest().unwrap_or(0.0);
        let numerator = self.numerator - self.window_sum + x * self.period as f64;
        Some((numerator, self.window_sum + x - departing))
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        let step = self.step(x);
        self.ring.push(x);
        let (numerator, window_sum) = step?;
        self.since_anchor = if self.since_anchor + 1 >= self.period { 0 } else { self.since_anchor + 1 };
        self.numerator = numerator;
        self.window_sum = window_sum;
        Some(numerator / self.divider())
    }

    pub fn peek(&self, x: f64) -> Option<f64> {
        self.step(x).map(|(numerator, _)| numerator / self.divider())
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }
}

/// TA-Lib `DEMA`: `2·EMA(x) − EMA(EMA(x))`, the inner EMA seeded by the SMA of its first `period` outputs.
/// Lookback `2·(period − 1)`.
#[derive(Debug, Clone, Copy)]
pub struct Dema {
    ema1: Ema,
    ema2: Ema,
}

impl Dema {
    pub fn new(period: usize) -> Self {
        Self { ema1: Ema::new(period), ema2: Ema::new(period) }
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        let e1 = self.ema1.update(x)?;
        let e2 = self.ema2.update(e1)?;
        Some(2.0 * e1 - e2)
    }

    pub fn peek(&self, x: f64) -> Option<f64> {
        let mut copy = *self;
        copy.update(x)
    }

    pub fn reset(&mut self) {
        self.ema1.reset();
        self.ema2.reset();
    }
}

/// TA-Lib `TEMA`: `EMA3 + (3·EMA1 − 3·EMA2)` with EMA2 = EMA(EMA1), EMA3 = EMA(EMA2), each SMA-seeded.
/// Lookback `3·(period − 1)`.
#[derive(Debug, Clone, Copy)]
pub struct Tema {
    ema1: Ema,
    ema2: Ema,
    ema3: Ema,
}

impl Tema {
    pub fn new(period: usize) -> Self {
        Self { ema1: Ema::new(period), ema2: Ema::new(period), ema3: Ema::new(period) }
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        let e1 = self.ema1.update(x)?;
        let e2 = self.ema2.update(e1)?;
        let e3 = self.ema3.update(e2)?;
        Some(e3 + (3.0 * e1 - 3.0 * e2))
    }

    pub fn peek(&self, x: f64) -> Option<f64> {
        let mut copy = *self;
        copy.update(x)
    }

    pub fn reset(&mut self) {
        self.ema1.reset();
        self.ema2.reset();
        self.ema3.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (period, inputs, expected outputs with None during warm-up)
    #[test]
    fn hand_checked_values() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        let cases: [(&str, usize, [Option<f64>; 5]); 3] = [
            ("sma", 3, [None, None, Some(2.0), Some(3.0), Some(4.0)]),
            ("ema", 3, [None, None, Some(2.0), Some(3.0), Some(4.0)]),
            ("wma", 3, [None, None, Some(14.0 / 6.0), Some(20.0 / 6.0), Some(26.0 / 6.0)]),
        ];
        for (name, period, expected) in cases {
            let mut sma = Sma::new(period);
            let mut ema = Ema::new(period);
            let mut wma = Wma::new(period);
            for (x, want) in xs.iter().zip(expected) {
                let (peeked, got) = match name {
                    "sma" => (sma.peek(*x), sma.update(*x)),
                    "ema" => (ema.peek(*x), ema.update(*x)),
                    _ => (wma.peek(*x), wma.update(*x)),
                };
                assert_eq!(peeked, got, "{name}");
                match (got, want) {
                    (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{name}: {g} vs {w}"),
                    (g, w) => assert_eq!(g, w, "{name}"),
                }
            }
        }
    }

    #[test]
    fn period_one_is_identity() {
        let mut e = Ema::new(1);
        let mut d = Dema::new(1);
        let mut t = Tema::new(1);
        for x in [0.1, 0.7, 1e5 + 0.3, 3.3] {
            assert_eq!(e.update(x), Some(x));
            assert_eq!(d.update(x), Some(x));
            assert_eq!(t.update(x), Some(x));
        }
    }
}
