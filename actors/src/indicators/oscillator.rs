//! Momentum indicators: RSI, MACD, the slow stochastic and ADX, with TA-Lib's seeding and lookbacks.

use super::average::{Ema, Sma};
use super::ring::Ring;
use super::volatility::true_range;

/// TA-Lib `RSI`: Wilder-smoothed average gain / loss, seeded with the simple averages of the first `period`
/// changes. First value at input index `period` (lookback `period`, unstable period 0).
/// `rsi = 100 · gain / (gain + loss)`, and `0` when `gain + loss == 0` (a flat run), as TA-Lib returns.
#[derive(Debug, Clone, Copy)]
pub struct Rsi {
    period: usize,
    count: usize,
    prev: f64,
    gain: f64,
    loss: f64,
}

impl Rsi {
    pub fn new(period: usize) -> Self {
        Self { period: period.max(1), count: 0, prev: 0.0, gain: 0.0, loss: 0.0 }
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        let n = self.period as f64;
        let index = self.count;
        self.count = self.count.saturating_add(1);
        let change = x - self.prev;
        self.prev = x;
        if index == 0 {
            return None;
        }
        if index <= self.period {
            if change < 0.0 {
                self.loss -= change;
            } else {
                self.gain += change;
            }
            if index < self.period {
                return None;
            }
            self.loss /= n;
            self.gain /= n;
        } else {
            self.loss *= n - 1.0;
            self.gain *= n - 1.0;
            if change < 0.0 {
                self.loss -= change;
            } else {
                self.gain += change;
            }
            self.loss /= n;
            self.gain /= n;
        }
        let sum = self.gain + self.loss;
        Some(if sum != 0.0 { 100.0 * (self.gain / sum) } else { 0.0 })
    }

    pub fn peek(&self, x: f64) -> Option<f64> {
        let mut copy = *self;
        copy.update(x)
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }
}

/// One MACD output: the line (fast EMA − slow EMA), its signal EMA, and the histogram (line − signal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdValue {
    pub macd: f64,
    pub signal: f64,
    pub hist: f64,
}

/// TA-Lib `MACD`. Both EMAs emit first at input index `slow − 1`: the fast EMA is started late, seeded with the SMA
/// of the `fast` values ending there. The signal is an SMA-seeded EMA of the line, so the first output is at index
/// `slow + signal − 2`. If `slow < fast` the two are swapped, as TA-Lib does.
#[derive(Debug, Clone, Copy)]
pub struct Macd {
    fast: Ema,
    slow: Ema,
    signal: Ema,
    /// Inputs to skip before feeding the fast EMA: `slow − fast`.
    fast_delay: usize,
    count: usize,
}

impl Macd {
    pub fn new(fast: usize, slow: usize, signal: usize) -> Self {
        let (fast, slow) = if slow < fast { (slow, fast) } else { (fast, slow) };
        Self { fast: Ema::new(fast), slow: Ema::new(slow), signal: Ema::new(signal), fast_delay: slow - fast, count: 0 }
    }

    pub fn update(&mut self, x: f64) -> Option<MacdValue> {
        let index = self.count;
        self.count = self.count.saturating_add(1);
        let slow = self.slow.update(x);
        let fast = if index >= self.fast_delay { self.fast.update(x) } else { None };
        let macd = fast? - slow?;
        let signal = self.signal.update(macd)?;
        Some(MacdValue { macd, signal, hist: macd - signal })
    }

    pub fn peek(&self, x: f64) -> Option<MacdValue> {
        let mut copy = *self;
        copy.update(x)
    }

    pub fn reset(&mut self) {
        self.fast.reset();
        self.slow.reset();
        self.signal.reset();
        self.count = 0;
    }
}

/// One slow stochastic output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochValue {
    pub k: f64,
    pub d: f64,
}

/// TA-Lib `STOCH` with SMA slowing for both %K and %D (MA type 0).
///
/// Fast %K = `100 · ((close − lowest low) / (highest high − lowest low))` over `fastk` bars (TA-Lib 0.8's
/// arithmetic; older releases divided by `range / 100`), `0` when the range is 0; slow %K = SMA(fast %K, `slowk`);
/// slow %D = SMA(slow %K, `slowd`). Lookback `fastk − 1 + slowk − 1 + slowd − 1`.
/// The high/low window is scanned per bar (O(`fastk`)).
#[derive(Debug, Clone)]
pub struct Stoch {
    fast_k_period: usize,
    highs: Ring,
    lows: Ring,
    slow_k: Sma,
    slow_d: Sma,
}

impl Stoch {
    pub fn new(fast_k: usize, slow_k: usize, slow_d: usize) -> Self {
        let fast_k = fast_k.max(1);
        Self {
            fast_k_period: fast_k,
            highs: Ring::new(fast_k),
            lows: Ring::new(fast_k),
            slow_k: Sma::new(slow_k),
            slow_d: Sma::new(slow_d),
        }
    }

    fn fast_k(&self, high: f64, low: f64, close: f64) -> Option<f64> {
        if self.highs.len() + 1 < self.fast_k_period {
            return None;
        }
        let highest = self.highs.window_with(high).fold(f64::NEG_INFINITY, f64::max);
        let lowest = self.lows.window_with(low).fold(f64::INFINITY, f64::min);
        let range = highest - lowest;
        Some(if range != 0.0 { 100.0 * ((close - lowest) / range) } else { 0.0 })
    }

    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<StochValue> {
        let fast = self.fast_k(high, low, close);
        self.highs.push(high);
        self.lows.push(low);
        let k = self.slow_k.update(fast?)?;
        let d = self.slow_d.update(k)?;
        Some(StochValue { k, d })
    }

    pub fn peek(&self, high: f64, low: f64, close: f64) -> Option<StochValue> {
        let k = self.slow_k.peek(self.fast_k(high, low, close)?)?;
        let d = self.slow_d.peek(k)?;
        Some(StochValue { k, d })
    }

    pub fn reset(&mut self) {
        self.highs.clear();
        self.lows.clear();
        self.slow_k.reset();
        self.slow_d.reset();
    }
}

/// TA-Lib `ADX` (no rounding, unstable period 0).
///
/// +DM/−DM (the larger positive move wins, ties give neither) and the true range are summed over the first
/// `period − 1` changes, then Wilder-smoothed (`s = s − s/period + new`). Each bar from input index `period` gives
/// `DX = 100·|−DI − +DI| / (−DI + +DI)` with `±DI = 100·±DM/TR`; ADX is seeded with the mean of the first `period`
/// DX values (first output at index `2·period − 1`), then `adx = (adx·(period − 1) + dx) / period`. A bar whose
/// smoothed TR or DI sum is 0 contributes no DX (the seed sum skips it, the ADX is carried unchanged).
#[derive(Debug, Clone, Copy)]
pub struct Adx {
    period: usize,
    count: usize,
    prev_high: f64,
    prev_low: f64,
    prev_close: f64,
    plus_dm: f64,
    minus_dm: f64,
    tr: f64,
    sum_dx: f64,
    adx: f64,
}

impl Adx {
    pub fn new(period: usize) -> Self {
        Self {
            period: period.max(1),
            count: 0,
            prev_high: 0.0,
            prev_low: 0.0,
            prev_close: 0.0,
            plus_dm: 0.0,
            minus_dm: 0.0,
            tr: 0.0,
            sum_dx: 0.0,
            adx: 0.0,
        }
    }

    fn dx(&self) -> Option<f64> {
        if self.tr == 0.0 {
            return None;
        }
        let minus_di = 100.0 * (self.minus_dm / self.tr);
        let plus_di = 100.0 * (self.plus_dm / self.tr);
        let sum = minus_di + plus_di;
        (sum != 0.0).then(|| 100.0 * ((minus_di - plus_di).abs() / sum))
    }

    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let n = self.period as f64;
        let index = self.count;
        self.count = self.count.saturating_add(1);
        let diff_p = high - self.prev_high;
        let diff_m = self.prev_low - low;
        let tr = true_range(high, low, self.prev_close);
        self.prev_high = high;
        self.prev_low = low;
        self.prev_close = close;
        if index == 0 {
            return None;
        }
        let (plus, minus) = if diff_m > 0.0 && diff_p < diff_m {
            (0.0, diff_m)
        } else if diff_p > 0.0 && diff_p > diff_m {
            (diff_p, 0.0)
        } else {
            (0.0, 0.0)
        };
        if index < self.period {
            self.plus_dm += plus;
            self.minus_dm += minus;
            self.tr += tr;
            return None;
        }
        self.minus_dm = self.minus_dm - self.minus_dm / n + minus;
        self.plus_dm = self.plus_dm - self.plus_dm / n + plus;
        self.tr = self.tr - self.tr / n + tr;
        let dx = self.dx();
        if index < 2 * self.period - 1 {
            self.sum_dx += dx.unwrap_or(0.0);
            return None;
        }
        if index == 2 * self.period - 1 {
            self.sum_dx += dx.unwrap_or(0.0);
            self.adx = self.sum_dx / n;
        } else if let Some(dx) = dx {
            self.adx = (self.adx * (n - 1.0) + dx) / n;
        }
        Some(self.adx)
    }

    pub fn peek(&self, high: f64, low: f64, close: f64) -> Option<f64> {
        let mut copy = *self;
        copy.update(high, low, close)
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_lengths_match_talib_lookbacks() {
        // (indicator, first index with a value)
        let cases: [(&str, usize); 5] =
            [("rsi14", 14), ("macd12_26_9", 33), ("macd26_12_9 swapped", 33), ("stoch5_3_3", 8), ("adx14", 27)];
        for (name, first) in cases {
            let mut rsi = Rsi::new(14);
            let mut macd = Macd::new(12, 26, 9);
            let mut swapped = Macd::new(26, 12, 9);
            let mut stoch = Stoch::new(5, 3, 3);
            let mut adx = Adx::new(14);
            let mut got = None;
            for i in 0..100 {
                let x = 100.0 + (i as f64 * 0.7).sin() * 5.0 + i as f64 * 0.1;
                let emitted = match name {
                    "rsi14" => rsi.update(x).is_some(),
                    "macd12_26_9" => macd.update(x).is_some(),
                    "macd26_12_9 swapped" => swapped.update(x).is_some(),
                    "stoch5_3_3" => stoch.update(x + 1.0, x - 1.0, x).is_some(),
                    _ => adx.update(x + 1.0, x - 1.0, x).is_some(),
                };
                if emitted && got.is_none() {
                    got = Some(i);
                }
            }
            assert_eq!(got, Some(first), "{name}");
        }
    }

    #[test]
    fn flat_input_gives_talib_zeroes() {
        let mut rsi = Rsi::new(3);
        let mut stoch = Stoch::new(3, 1, 1);
        let mut adx = Adx::new(2);
        for _ in 0..10 {
            if let Some(v) = rsi.update(5.0) {
                assert_eq!(v, 0.0);
            }
            if let Some(v) = stoch.update(5.0, 5.0, 5.0) {
                assert_eq!(v, StochValue { k: 0.0, d: 0.0 });
            }
            if let Some(v) = adx.update(5.0, 5.0, 5.0) {
                assert_eq!(v, 0.0);
            }
        }
    }
}
