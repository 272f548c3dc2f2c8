//! Volume indicators: on-balance volume and the daily session VWAP.

/// TA-Lib `OBV`: starts at the first candle with `obv = volume[0]`; then adds the volume on a higher close,
/// subtracts it on a lower close, and carries it on an equal close. Lookback 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Obv {
    started: bool,
    prev_close: f64,
    value: f64,
}

impl Obv {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, close: f64, volume: f64) -> Option<f64> {
        if !self.started {
            self.started = true;
            self.value = volume;
        } else if close > self.prev_close {
            self.value += volume;
        } else if close < self.prev_close {
            self.value -= volume;
        }
        self.prev_close = close;
        Some(self.value)
    }

    pub fn peek(&self, close: f64, volume: f64) -> Option<f64> {
        let mut copy = *self;
        copy.update(close, volume)
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

const DAY_MS: i64 = 86_400_000;

/// Session VWAP (no TA-Lib function): the session is the UTC day of the candle's open time and resets at 00:00 UTC.
/// `vwap = Σ tp·volume / Σ volume` over the session's candles so far, with typical price `tp = (high + low + close)
/// / 3` (TA-Lib `TYPPRICE`). Nothing is emitted while the session's volume is still 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vwap {
    day: Option<i64>,
    price_volume: f64,
    volume: f64,
}

impl Vwap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, open_time: i64, high: f64, low: f64, close: f64, volume: f64) -> Option<f64> {
        let day = open_time.div_euclid(DAY_MS);
        if self.day != Some(day) {
            *self = Self { day: Some(day), price_volume: 0.0, volume: 0.0 };
        }
        let typical = (high + low + close) / 3.0;
        self.price_volume += typical * volume;
        self.volume += volume;
        (self.volume != 0.0).then(|| self.price_volume / self.volume)
    }

    pub fn peek(&self, open_time: i64, high: f64, low: f64, close: f64, volume: f64) -> Option<f64> {
        let mut copy = *self;
        copy.update(open_time, high, low, close, volume)
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obv_follows_close_direction() {
        let mut obv = Obv::new();
        // (close, volume, expected)
        let steps = [(10.0, 5.0, 5.0), (11.0, 2.0, 7.0), (11.0, 9.0, 7.0), (9.0, 3.0, 4.0)];
        for (c, v, want) in steps {
            assert_eq!(obv.update(c, v), Some(want));
        }
    }

    #[test]
    fn vwap_resets_at_utc_midnight_and_waits_for_volume() {
        let mut vwap = Vwap::new();
        let t0 = 19_000 * DAY_MS - 900_000; // the last 15m candle of a day
        assert_eq!(vwap.update(t0, 12.0, 6.0, 9.0, 2.0), Some(9.0));
        assert_eq!(vwap.update(t0 + 900_000, 3.0, 3.0, 3.0, 0.0), None);
        assert_eq!(vwap.update(t0 + 1_800_000, 6.0, 3.0, 3.0, 1.0), Some(4.0));
        assert_eq!(vwap.update(t0 + 2_700_000, 4.0, 4.0, 4.0, 3.0), Some(4.0));
    }
}
