//! What one published candle looks like on the wire: its subject, its `Nats-Msg-Id` and its JSON payload.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{Candle, StreamKey};

/// The subjects of one configured prefix (such as `candles.binance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where a stream's closed candles go: `<prefix>.<SYMBOL>.<timeframe>`, for example `candles.binance.BTCUSDT.1m`.
    pub fn closed(&self, key: &StreamKey) -> String {
        format!("{}.{}.{}", self.prefix, key.symbol, key.timeframe)
    }

    /// Where a stream's in-progress updates go (core NATS, not kept): `<prefix>.live.<SYMBOL>.<timeframe>`.
    pub fn live(&self, key: &StreamKey) -> String {
        format!("{}.live.{}.{}", self.prefix, key.symbol, key.timeframe)
    }

    /// The JetStream stream's subject filter: every closed-candle subject (exactly two tokens after the prefix), and
    /// none of the in-progress ones (`live.<SYMBOL>.<timeframe>` has three), which are never stored.
    pub fn stream_filter(&self) -> String {
        format!("{}.*.*", self.prefix)
    }
}

/// The `Nats-Msg-Id` of a closed candle: `<SYMBOL>:<timeframe>:<open_time>`; its `n`-th revision adds `:r<n>`. The
/// server drops a message whose id it saw within the stream's duplicate window.
pub fn msg_id(key: &StreamKey, open_time: i64, revision: u32) -> String {
    match revision {
        0 => format!("{}:{}:{open_time}", key.symbol, key.timeframe),
        n => format!("{}:{}:{open_time}:r{n}", key.symbol, key.timeframe),
    }
}

/// The JSON payload of a published closed candle. Decimals are JSON numbers (the stored `f64`s); times are ms UTC.
///
/// ```json
/// {"symbol":"BTCUSDT","timeframe":"1m","open_time":1700000040000,"close_time":1700000099999,
///  "open":37000.5,"high":37010.0,"low":36990.1,"close":37005.2,"volume":12.5,"quote_volume":462550.3,
///  "trades":321,"taker_buy_base":6.1,"taker_buy_quote":225700.2,"revision":0,
///  "indicators":{"ema_12":37001.9,"rsi_14":55.2,"sma_20":36998.4}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandlePayload {
    pub symbol: String,
    pub timeframe: String,
    pub open_time: i64,
    pub close_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub quote_volume: f64,
    pub trades: u64,
    pub taker_buy_base: f64,
    pub taker_buy_quote: f64,
    /// 0 for the candle as first published, `n` for its `n`-th revision.
    pub revision: u32,
    /// The indicator values computed on this candle, by output name (none while the indicators warm up).
    pub indicators: BTreeMap<String, f64>,
}

impl CandlePayload {
    pub fn new(key: &StreamKey, candle: &Candle, revision: u32, indicators: BTreeMap<String, f64>) -> Self {
        Self {
            symbol: key.symbol.clone(),
            timeframe: key.timeframe.to_string(),
            open_time: candle.open_time,
            close_time: candle.close_time,
            open: candle.open,
            high: candle.high,
            low: candle.low,
            close: candle.close,
            volume: candle.volume,
            quote_volume: candle.quote_volume,
            trades: candle.trades,
            taker_buy_base: candle.taker_buy_base,
            taker_buy_quote: candle.taker_buy_quote,
            revision,
            indicators,
        }
    }

    /// The candle it carries (closed).
    pub fn candle(&self) -> Candle {
        Candle {
            open_time: self.open_time,
            close_time: self.close_time,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume,
            quote_volume: self.quote_volume,
            trades: self.trades,
            taker_buy_base: self.taker_buy_base,
            taker_buy_quote: self.taker_buy_quote,
            is_closed: true,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Only non-finite floats fail, and serde_json writes those as null.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;
    use crate::domain::fixtures::minute_candle;

    #[test]
    fn subjects_and_msg_ids_spell_the_stream_as_binance_does() {
        let subjects = Subjects::new("candles.binance");
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        let cases = [
            // TC0: the closed-candle subject.
            (subjects.closed(&key), "candles.binance.BTCUSDT.1m"),
            // TC1: in progress: its own subject, outside the stream's filter.
            (subjects.live(&key), "candles.binance.live.BTCUSDT.1m"),
            // TC2: the stream's filter.
            (subjects.stream_filter(), "candles.binance.*.*"),
            // TC3: a first publication.
            (msg_id(&key, 1_700_000_040_000, 0), "BTCUSDT:1m:1700000040000"),
            // TC4: revisions are numbered.
            (msg_id(&key, 1_700_000_040_000, 1), "BTCUSDT:1m:1700000040000:r1"),
            (msg_id(&StreamKey::new("ETHBTC", Timeframe::H1), 0, 12), "ETHBTC:1h:0:r12"),
        ];
        for (i, (got, want)) in cases.iter().enumerate() {
            assert_eq!(got, want, "TC{i}");
        }
    }

    #[test]
    fn the_payload_carries_every_field_and_reads_back() {
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        let candle = minute_candle(3, 100.5, true);
        let indicators = BTreeMap::from([("sma_20".to_owned(), 99.25), ("rsi_14".to_owned(), 55.0)]);
        let payload = CandlePayload::new(&key, &candle, 0, indicators);
        let json: serde_json::Value = serde_json::from_slice(&payload.to_json()).unwrap();
        assert_eq!(json["symbol"], "BTCUSDT");
        assert_eq!(json["timeframe"], "1m");
        assert_eq!(json["open_time"], candle.open_time);
        assert_eq!(json["close"], candle.close);
        assert_eq!(json["trades"], candle.trades);
        assert_eq!(json["indicators"]["sma_20"], 99.25);
        let back: CandlePayload = serde_json::from_slice(&payload.to_json()).unwrap();
        assert_eq!(back.candle(), candle);
        assert_eq!(back, payload);
    }
}
