//! Deterministic market data: intervals, symbols and the candle generator (pure functions, no I/O).
//!
//! Every candle is a function of (symbol, interval, open time); the in-progress view of a candle is a function of
//! (symbol, interval, open time, exchange time) that ends exactly at the closed candle.

use std::collections::HashMap;

/// Decimal places of every served decimal string (Binance pads prices and quantities to 8 places).
const DECIMALS: u32 = 8;
const UNITS_PER_ONE: i128 = 100_000_000;
/// Served decimals keep at most this many significant digits so they round-trip through `f64`.
const MAX_SIGNIFICANT_DIGITS: u32 = 15;
/// Weekly candles open on Mondays; the Unix epoch was a Thursday.
const WEEK_ALIGNMENT_OFFSET_MS: i64 = 4 * 86_400_000;
/// Trade ids advance by one per millisecond since listing, so candles never share ids.
const FIRST_TRADE_ID: i64 = 1_000_000_000;
/// A flat-price block spans this many candles.
const FLAT_BLOCK_CANDLES: i64 = 12;
const FLAT_BLOCK_PROBABILITY: f64 = 0.04;
/// Every this many candles since listing one is forced to trade, so zero-trade runs stay short to walk back.
const FORCED_TRADE_EVERY: i64 = 1000;

/// The calendar-month interval: candles open at 00:00 UTC on the first of each month.
pub const MONTH_INTERVAL: &str = "1M";
/// Nominal length of `1M` where a scale is needed (noise, seeds, flat blocks); its candles use the calendar.
const MONTH_NOMINAL_MS: i64 = 30 * 86_400_000;
/// Every interval Binance serves, in Binance's order. `3d` sits on the Unix-epoch grid of 3 days, `1w` opens on
/// Mondays, `1M` on the first of each calendar month (UTC).
const INTERVALS: [(&str, i64); 16] = [
    ("1s", 1_000),
    ("1m", 60_000),
    ("3m", 180_000),
    ("5m", 300_000),
    ("15m", 900_000),
    ("30m", 1_800_000),
    ("1h", 3_600_000),
    ("2h", 7_200_000),
    ("4h", 14_400_000),
    ("6h", 21_600_000),
    ("8h", 28_800_000),
    ("12h", 43_200_000),
    ("1d", 86_400_000),
    ("3d", 259_200_000),
    ("1w", 604_800_000),
    (MONTH_INTERVAL, MONTH_NOMINAL_MS),
];

/// A Binance kline interval: fixed-length, or the calendar month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interval {
    name: &'static str,
    ms: i64,
}

impl Interval {
    /// Parses a case-sensitive Binance interval name; `None` for unknown names.
    pub fn parse(name: &str) -> Option<Interval> {
        INTERVALS.iter().find(|(n, _)| *n == name).map(|&(name, ms)| Interval { name, ms })
    }

    /// All 16 intervals, shortest first.
    pub fn all() -> impl Iterator<Item = Interval> {
        INTERVALS.iter().map(|&(name, ms)| Interval { name, ms })
    }

    pub fn name(self) -> &'static str {
        self.name
    }

    /// The fixed length; for `1M` a nominal 30 days (use [`Interval::next_open`] for the real boundaries).
    pub fn ms(self) -> i64 {
        self.ms
    }

    fn is_month(self) -> bool {
        self.name == MONTH_INTERVAL
    }

    fn alignment_offset(self) -> i64 {
        if self.name == "1w" { WEEK_ALIGNMENT_OFFSET_MS } else { 0 }
    }

    /// Open time of the candle containing `time_ms`.
    pub fn open_time_at(self, time_ms: i64) -> i64 {
        if self.is_month() {
            return month_start(month_index(time_ms));
        }
        let offset = self.alignment_offset();
        (time_ms - offset).div_euclid(self.ms) * self.ms + offset
    }

    /// Open time of the candle after the one opening at (or containing) `open_time`.
    pub fn next_open(self, open_time: i64) -> i64 {
        if self.is_month() { month_start(month_index(open_time) + 1) } else { self.open_time_at(open_time) + self.ms }
    }

    /// Open time of the candle before the one opening at (or containing) `open_time`.
    pub fn previous_open(self, open_time: i64) -> i64 {
        if self.is_month() { month_start(month_index(open_time) - 1) } else { self.open_time_at(open_time) - self.ms }
    }

    /// Length of the candle opening at `open_time` (a calendar month varies from 28 to 31 days).
    pub fn length_at(self, open_time: i64) -> i64 {
        self.next_open(open_time) - self.open_time_at(open_time)
    }

    /// Candles from the one opening at `from_open` to the one opening at `to_open` (both aligned).
    pub fn candles_between(self, from_open: i64, to_open: i64) -> i64 {
        if self.is_month() { month_index(to_open) - month_index(from_open) } else { (to_open - from_open) / self.ms }
    }

    /// Smallest candle open time that is `>= time_ms`.
    pub fn first_open_at_or_after(self, time_ms: i64) -> i64 {
        let open = self.open_time_at(time_ms);
        if open == time_ms { open } else { self.next_open(open) }
    }

    pub fn is_aligned(self, time_ms: i64) -> bool {
        self.open_time_at(time_ms) == time_ms
    }
}

/// Months since January 1970 of the UTC month containing `time_ms`.
fn month_index(time_ms: i64) -> i64 {
    use chrono::Datelike;
    let date = chrono::DateTime::from_timestamp_millis(time_ms).expect("exchange time within chrono's range");
    (i64::from(date.year()) - 1970) * 12 + i64::from(date.month0())
}

/// 00:00 UTC on the first day of month `index` (months since January 1970).
fn month_start(index: i64) -> i64 {
    let (year, month0) = (1970 + index.div_euclid(12), index.rem_euclid(12));
    chrono::NaiveDate::from_ymd_opt(year as i32, month0 as u32 + 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .expect("a valid first of month")
        .and_utc()
        .timestamp_millis()
}

/// Static description of a tradable symbol and the scale of its generated data.
#[derive(Clone, Debug, PartialEq)]
pub struct SymbolSpec {
    pub symbol: String,
    pub base_asset: String,
    pub quote_asset: String,
    /// Centre of the price path.
    pub base_price: f64,
    /// Price tick is `10^-tick_decimals` (at most 8).
    pub tick_decimals: u32,
    /// Quantity step is `10^-step_decimals` (at most 8).
    pub step_decimals: u32,
    pub volume_per_minute: f64,
    pub trades_per_minute: f64,
}

impl SymbolSpec {
    /// Built-in presets for common names; any other upper-case name gets parameters derived from its hash.
    pub fn for_symbol(symbol: &str) -> SymbolSpec {
        let preset = |base: &str, quote: &str, price: f64, tick: u32, step: u32, volume: f64, trades: f64| SymbolSpec {
            symbol: symbol.to_string(),
            base_asset: base.to_string(),
            quote_asset: quote.to_string(),
            base_price: price,
            tick_decimals: tick,
            step_decimals: step,
            volume_per_minute: volume,
            trades_per_minute: trades,
        };
        match symbol {
            "BTCUSDT" => preset("BTC", "USDT", 46_000.0, 2, 5, 12.0, 900.0),
            "ETHUSDT" => preset("ETH", "USDT", 3_100.0, 2, 4, 180.0, 600.0),
            "BNBUSDT" => preset("BNB", "USDT", 610.0, 2, 3, 40.0, 150.0),
            "SOLUSDT" => preset("SOL", "USDT", 140.0, 2, 3, 900.0, 300.0),
            "XRPUSDT" => preset("XRP", "USDT", 0.52, 4, 1, 60_000.0, 200.0),
            "DOGEUSDT" => preset("DOGE", "USDT", 0.12345, 5, 0, 900_000.0, 150.0),
            "SHIBUSDT" => preset("SHIB", "USDT", 0.00001234, 8, 0, 200_000_000.0, 100.0),
            "PAXGBTC" => preset("PAXG", "BTC", 0.042, 6, 4, 0.5, 1.5),
            _ => Self::derived(symbol),
        }
    }

    fn derived(symbol: &str) -> SymbolSpec {
        let seed = Seed(mix(hash_str(symbol)));
        let exponent = (seed.lane(1) * 9.0).floor() as i32 - 4;
        let base_price = (1.0 + 9.0 * seed.lane(2)) * 10f64.powi(exponent);
        let (base_asset, quote_asset) = match symbol.strip_suffix("USDT") {
            Some(base) if !base.is_empty() => (base.to_string(), "USDT".to_string()),
            _ => (symbol.to_string(), "USDT".to_string()),
        };
        SymbolSpec {
            symbol: symbol.to_string(),
            base_asset,
            quote_asset,
            base_price,
            tick_decimals: (5 - exponent).clamp(1, 8) as u32,
            step_decimals: (exponent + 2).clamp(0, 6) as u32,
            volume_per_minute: 2_000.0 / base_price,
            trades_per_minute: 5.0 + 100.0 * seed.lane(3),
        }
    }

    fn tick_units(&self) -> i128 {
        10i128.pow(DECIMALS - self.tick_decimals.min(DECIMALS))
    }

    fn step_units(&self) -> i128 {
        10i128.pow(DECIMALS - self.step_decimals.min(DECIMALS))
    }
}

/// One kline exactly as served: decimals are the strings put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeKline {
    pub symbol: String,
    pub interval: &'static str,
    pub open_time: i64,
    pub close_time: i64,
    pub first_trade_id: i64,
    pub last_trade_id: i64,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub quote_volume: String,
    pub trades: i64,
    pub taker_buy_base_volume: String,
    pub taker_buy_quote_volume: String,
    pub is_closed: bool,
}

impl FakeKline {
    /// The `k` object of a WebSocket kline event.
    pub fn ws_kline_json(&self) -> String {
        format!(
            r#"{{"t":{},"T":{},"s":"{}","i":"{}","f":{},"L":{},"o":"{}","c":"{}","h":"{}","l":"{}","v":"{}","n":{},"x":{},"q":"{}","V":"{}","Q":"{}","B":"0"}}"#,
            self.open_time,
            self.close_time,
            self.symbol,
            self.interval,
            self.first_trade_id,
            self.last_trade_id,
            self.open,
            self.close,
            self.high,
            self.low,
            self.volume,
            self.trades,
            self.is_closed,
            self.quote_volume,
            self.taker_buy_base_volume,
            self.taker_buy_quote_volume,
        )
    }

    /// A full raw WebSocket kline event with event time `event_time`.
    pub fn ws_event_json(&self, event_time: i64) -> String {
        format!(r#"{{"e":"kline","E":{},"s":"{}","k":{}}}"#, event_time, self.symbol, self.ws_kline_json())
    }

    /// One row of `GET /api/v3/klines`.
    pub fn rest_row_json(&self) -> String {
        format!(
            r#"[{},"{}","{}","{}","{}","{}",{},"{}",{},"{}","{}","0"]"#,
            self.open_time,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.close_time,
            self.quote_volume,
            self.trades,
            self.taker_buy_base_volume,
            self.taker_buy_quote_volume,
        )
    }
}

/// The deterministic market: symbol specs plus the listing time before which no candle exists.
#[derive(Clone, Debug)]
pub struct Market {
    symbols: HashMap<String, SymbolSpec>,
    listing_ms: i64,
}

/// Numeric candle values in units of 1e-8 (prices) and trade counts, before formatting.
#[derive(Clone, Copy, Debug)]
struct CandleValues {
    open: i128,
    high: i128,
    low: i128,
    close: i128,
    volume: i128,
    quote_volume: i128,
    taker_base: i128,
    taker_quote: i128,
    trades: i64,
    first_trade_id: i64,
}

impl Market {
    pub fn new(symbols: &[String], listing_ms: i64) -> Market {
        let symbols = symbols.iter().map(|s| (s.clone(), SymbolSpec::for_symbol(s))).collect();
        Market { symbols, listing_ms }
    }

    pub fn listing_ms(&self) -> i64 {
        self.listing_ms
    }

    pub fn spec(&self, symbol: &str) -> Option<&SymbolSpec> {
        self.symbols.get(symbol)
    }

    /// All listed symbols, sorted.
    pub fn symbols(&self) -> Vec<&SymbolSpec> {
        let mut specs: Vec<&SymbolSpec> = self.symbols.values().collect();
        specs.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        specs
    }

    /// Open time of the first candle (the one containing the listing time).
    pub fn first_open_time(&self, interval: Interval) -> i64 {
        interval.open_time_at(self.listing_ms)
    }

    /// The closed candle opening at `open_time`; `None` for unknown symbols, misaligned or pre-listing times.
    pub fn closed_candle(&self, symbol: &str, interval: Interval, open_time: i64) -> Option<FakeKline> {
        let spec = self.spec(symbol)?;
        if !interval.is_aligned(open_time) || open_time < self.first_open_time(interval) {
            return None;
        }
        let values = self.final_values(spec, interval, open_time);
        Some(self.format(spec, interval, open_time, values, true))
    }

    /// Closed candles with open time in `[from_ms, to_ms)`.
    pub fn closed_candles(&self, symbol: &str, interval: Interval, from_ms: i64, to_ms: i64) -> Vec<FakeKline> {
        let start = interval.first_open_at_or_after(from_ms.max(self.first_open_time(interval)));
        std::iter::successors(Some(start), |open| Some(interval.next_open(*open)))
            .take_while(|open| *open < to_ms)
            .filter_map(|open| self.closed_candle(symbol, interval, open))
            .collect()
    }

    /// The candle opening at `open_time` as seen at exchange time `now_ms`: in progress while
    /// `now_ms <= close_time`, closed afterwards. `None` if the candle does not exist or has not opened yet.
    pub fn candle_at(&self, symbol: &str, interval: Interval, open_time: i64, now_ms: i64) -> Option<FakeKline> {
        let spec = self.spec(symbol)?;
        if !interval.is_aligned(open_time) || open_time < self.first_open_time(interval) || now_ms < open_time {
            return None;
        }
        let final_values = self.final_values(spec, interval, open_time);
        if now_ms >= interval.next_open(open_time) {
            return Some(self.format(spec, interval, open_time, final_values, true));
        }
        let progress = (now_ms - open_time) as f64 / interval.length_at(open_time) as f64;
        let seed = candle_seed(spec, interval, open_time);
        let values = in_progress_values(final_values, progress, seed, spec.tick_units());
        Some(self.format(spec, interval, open_time, values, false))
    }

    fn format(
        &self,
        spec: &SymbolSpec,
        interval: Interval,
        open_time: i64,
        v: CandleValues,
        closed: bool,
    ) -> FakeKline {
        let (first_trade_id, last_trade_id) =
            if v.trades == 0 { (-1, -1) } else { (v.first_trade_id, v.first_trade_id + v.trades - 1) };
        FakeKline {
            symbol: spec.symbol.clone(),
            interval: interval.name(),
            open_time,
            close_time: interval.next_open(open_time) - 1,
            first_trade_id,
            last_trade_id,
            open: format_units(v.open),
            high: format_units(v.high),
            low: format_units(v.low),
            close: format_units(v.close),
            volume: format_units(v.volume),
            quote_volume: format_units(v.quote_volume),
            trades: v.trades,
            taker_buy_base_volume: format_units(v.taker_base),
            taker_buy_quote_volume: format_units(v.taker_quote),
            is_closed: closed,
        }
    }

    /// Whether the candle had no trade. The first candle and every `FORCED_TRADE_EVERY`-th candle after it always
    /// trade, which bounds zero-trade runs.
    fn is_zero_trade(&self, spec: &SymbolSpec, interval: Interval, open_time: i64) -> bool {
        let index = interval.candles_between(self.first_open_time(interval), open_time);
        if index <= 0 || index % FORCED_TRADE_EVERY == 0 {
            return false;
        }
        let seed = candle_seed(spec, interval, open_time);
        let expected_trades = spec.trades_per_minute * interval.length_at(open_time) as f64 / 60_000.0 * activity(seed);
        seed.lane(12) < (-expected_trades).exp() + base_zero_trade_probability(interval)
    }

    fn final_values(&self, spec: &SymbolSpec, interval: Interval, open_time: i64) -> CandleValues {
        let seed = candle_seed(spec, interval, open_time);
        let open_anchor = anchor(spec, interval, open_time);
        let close_anchor = anchor(spec, interval, interval.next_open(open_time));
        let tick = spec.tick_units();
        let id_floor = open_time.max(self.listing_ms);
        let id_capacity = (interval.next_open(open_time) - id_floor).max(1);
        let minutes = interval.length_at(open_time) as f64 / 60_000.0;
        let activity = activity(seed);
        let expected_trades = spec.trades_per_minute * minutes * activity;
        if self.is_zero_trade(spec, interval, open_time) {
            // No trade: every price repeats the close of the last traded candle, which is the open anchor of the
            // first candle of this zero-trade run.
            let mut run_start = open_time;
            while self.is_zero_trade(spec, interval, interval.previous_open(run_start)) {
                run_start = interval.previous_open(run_start);
            }
            let price = anchor(spec, interval, run_start).ticks as i128 * tick;
            return CandleValues {
                open: price,
                high: price,
                low: price,
                close: price,
                volume: 0,
                quote_volume: 0,
                taker_base: 0,
                taker_quote: 0,
                trades: 0,
                first_trade_id: -1,
            };
        }
        let open = open_anchor.ticks as i128 * tick;
        let flat = open_anchor.source_ms == close_anchor.source_ms;
        let close = close_anchor.ticks as i128 * tick;
        let (high, low) = if flat {
            (open, open)
        } else {
            let body = (open - close).abs() as f64;
            let wick_scale = open.min(close) as f64 * 0.0004 * minutes.sqrt().min(40.0);
            let up = ((body * 0.5 * seed.lane(13) + wick_scale * seed.lane(14)) / tick as f64).round() as i128;
            let down = ((body * 0.5 * seed.lane(15) + wick_scale * seed.lane(16)) / tick as f64).round() as i128;
            (open.max(close) + up * tick, (open.min(close) - down * tick).max(tick))
        };
        let trades = if flat { 1 + (seed.lane(17) * 3.0) as i64 } else { expected_trades.round().max(1.0) as i64 };
        let trades = trades.min(id_capacity);
        let step = spec.step_units();
        let volume_scale = if flat { 0.02 } else { activity };
        let volume_steps = ((spec.volume_per_minute * minutes * volume_scale * UNITS_PER_ONE as f64 / step as f64)
            .round() as i128)
            .max(1);
        let volume = round_significant(volume_steps * step);
        let average_price = (open + high + low + close) as f64 / 4.0 / UNITS_PER_ONE as f64;
        let quote_volume = round_significant((volume as f64 * average_price).round() as i128).max(1);
        let taker_steps = (volume / step) as f64 * (0.2 + 0.6 * seed.lane(18));
        let taker_base = round_significant(taker_steps.floor() as i128 * step);
        let taker_share = taker_base as f64 / volume as f64;
        let taker_quote = round_significant((quote_volume as f64 * taker_share).floor() as i128).min(quote_volume);
        CandleValues {
            open,
            high,
            low,
            close,
            volume,
            quote_volume,
            taker_base,
            taker_quote,
            trades,
            first_trade_id: FIRST_TRADE_ID + (id_floor - self.listing_ms),
        }
    }
}

/// Values of a traded candle at `progress` in `[0, 1)`: trades and volumes grow with progress, the price walks
/// open -> first extreme -> second extreme -> close, and high/low are the running extremes of that walk.
fn in_progress_values(final_values: CandleValues, progress: f64, seed: Seed, tick: i128) -> CandleValues {
    let trades = (final_values.trades as f64 * progress).floor() as i64;
    if trades <= 0 {
        let open = final_values.open;
        return CandleValues {
            high: open,
            low: open,
            close: open,
            volume: 0,
            quote_volume: 0,
            taker_base: 0,
            taker_quote: 0,
            trades: 0,
            ..final_values
        };
    }
    let high_first = seed.lane(20) < 0.5;
    let (first, second) =
        if high_first { (final_values.high, final_values.low) } else { (final_values.low, final_values.high) };
    let waypoints = [
        (0.0, final_values.open),
        (0.1 + 0.35 * seed.lane(21), first),
        (0.55 + 0.35 * seed.lane(22), second),
        (1.0, final_values.close),
    ];
    let current = walk_price(&waypoints, progress, tick);
    let visited = waypoints.iter().filter(|(at, _)| *at <= progress).map(|(_, price)| *price);
    let high = visited.clone().fold(current, i128::max);
    let low = visited.fold(current, i128::min);
    let scale = |total: i128| round_significant(total * trades as i128 / final_values.trades as i128);
    CandleValues {
        open: final_values.open,
        high,
        low,
        close: current,
        volume: scale(final_values.volume),
        quote_volume: scale(final_values.quote_volume),
        taker_base: scale(final_values.taker_base),
        taker_quote: scale(final_values.taker_quote),
        trades,
        first_trade_id: final_values.first_trade_id,
    }
}

/// Linear interpolation along the waypoints, snapped to the price tick.
fn walk_price(waypoints: &[(f64, i128); 4], progress: f64, tick: i128) -> i128 {
    for pair in waypoints.windows(2) {
        let ((from_at, from), (to_at, to)) = (pair[0], pair[1]);
        if progress <= to_at {
            let fraction = ((progress - from_at) / (to_at - from_at)).clamp(0.0, 1.0);
            let steps = ((to - from) / tick) as f64;
            return from + (steps * fraction).round() as i128 * tick;
        }
    }
    waypoints[3].1
}

/// Trading activity of a candle: mostly around 1, sometimes bursts.
fn activity(seed: Seed) -> f64 {
    let burst = if seed.lane(10) < 0.05 { 8.0 } else { 1.0 };
    (2.4 * (seed.lane(11) - 0.5)).exp() * burst
}

fn base_zero_trade_probability(interval: Interval) -> f64 {
    match interval.name() {
        "1s" => 0.02,
        "1m" => 0.005,
        "3m" | "5m" => 0.002,
        _ => 0.0,
    }
}

/// A price anchor: the tick-rounded path price at a candle boundary, and the instant it was sampled at
/// (equal sources mean a flat candle).
struct Anchor {
    ticks: i64,
    source_ms: i64,
}

/// Path price used at boundary `time_ms`. Inside a flat block the price is frozen at the block start, and the
/// boundary closing a flat block keeps the frozen price so the flat run's last candle stays flat.
fn anchor(spec: &SymbolSpec, interval: Interval, time_ms: i64) -> Anchor {
    let block_ms = interval.ms() * FLAT_BLOCK_CANDLES;
    let block = time_ms.div_euclid(block_ms);
    let is_flat = |block: i64| {
        Seed(mix(hash_str(&spec.symbol) ^ mix(interval.ms() as u64) ^ mix(block as u64 ^ 0xF1A7))).lane(0)
            < FLAT_BLOCK_PROBABILITY
    };
    let source_ms = if is_flat(block) {
        block * block_ms
    } else if time_ms == block * block_ms && is_flat(block - 1) {
        (block - 1) * block_ms
    } else {
        time_ms
    };
    let price = path_price(spec, interval, source_ms);
    let tick = 10f64.powi(-(spec.tick_decimals as i32));
    Anchor { ticks: ((price / tick).round() as i64).max(1), source_ms }
}

/// Smooth multi-scale oscillation around the base price plus per-boundary noise growing with the interval.
fn path_price(spec: &SymbolSpec, interval: Interval, time_ms: i64) -> f64 {
    let symbol_seed = Seed(mix(hash_str(&spec.symbol)));
    let seconds = time_ms as f64 / 1000.0;
    let waves =
        [(0.08, 29.0 * 86_400.0), (0.03, 3.1 * 86_400.0), (0.008, 7.3 * 3_600.0), (0.003, 1_380.0), (0.0006, 97.0)];
    let log_deviation: f64 = waves
        .iter()
        .enumerate()
        .map(|(i, (amplitude, period))| {
            let phase = symbol_seed.lane(i as u64 + 1) * std::f64::consts::TAU;
            amplitude * (std::f64::consts::TAU * seconds / period + phase).sin()
        })
        .sum();
    let noise_amplitude = (0.0001 * (interval.ms() as f64 / 1000.0).sqrt()).min(0.03);
    let noise = Seed(mix(hash_str(&spec.symbol) ^ mix(interval.ms() as u64) ^ mix(time_ms as u64))).lane(0) - 0.5;
    spec.base_price * log_deviation.exp() * (1.0 + 2.0 * noise_amplitude * noise)
}

fn candle_seed(spec: &SymbolSpec, interval: Interval, open_time: i64) -> Seed {
    Seed(mix(hash_str(&spec.symbol) ^ mix(interval.ms() as u64 ^ 0xC0FFEE) ^ mix(mix(open_time as u64))))
}

/// Formats a value in units of 1e-8 with exactly 8 decimals.
fn format_units(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let magnitude = units.unsigned_abs();
    let scale = UNITS_PER_ONE as u128;
    format!("{sign}{}.{:08}", magnitude / scale, magnitude % scale)
}

/// Rounds to at most 15 significant digits (half away from zero) so the decimal round-trips through `f64`.
fn round_significant(units: i128) -> i128 {
    let digits = units.unsigned_abs().checked_ilog10().map_or(1, |d| d + 1);
    if digits <= MAX_SIGNIFICANT_DIGITS {
        return units;
    }
    let factor = 10i128.pow(digits - MAX_SIGNIFICANT_DIGITS);
    let half = factor / 2;
    let rounded = (units.abs() + half) / factor * factor;
    if units < 0 { -rounded } else { rounded }
}

/// A 64-bit seed with independent uniform lanes in `[0, 1)`.
#[derive(Clone, Copy, Debug)]
struct Seed(u64);

impl Seed {
    fn lane(self, lane: u64) -> f64 {
        (mix(self.0 ^ mix(lane.wrapping_add(0x9E37_79B9))) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a.
fn hash_str(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |hash, byte| (hash ^ byte as u64).wrapping_mul(0x0100_0000_01B3))
}
