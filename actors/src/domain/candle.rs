//! The candle as candled stores and computes on it, and the key that names its stream.

use std::fmt;

use crate::domain::Timeframe;

/// One kline: a candle of one (symbol, timeframe), in progress or closed.
///
/// Prices and volumes are IEEE doubles, correctly rounded from Binance's decimal strings (exact for up to 15
/// significant digits, which covers every spot price). Times are the exchange's, in ms UTC. The candle is `Copy`
/// and carries no strings: the stream it belongs to travels beside it as a [`StreamId`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    /// Open time (`t`), ms UTC. The storage key together with the stream.
    pub open_time: i64,
    /// Close time (`T`): the next open time minus 1 ms.
    pub close_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Base asset volume (`v`).
    pub volume: f64,
    /// Quote asset volume (`q`).
    pub quote_volume: f64,
    /// Number of trades (`n`).
    pub trades: u64,
    /// Taker buy base asset volume (`V`).
    pub taker_buy_base: f64,
    /// Taker buy quote asset volume (`Q`).
    pub taker_buy_quote: f64,
    /// `x`: this is the final update of the candle.
    pub is_closed: bool,
}

/// A dense index naming one configured (symbol, timeframe) stream: cheap to copy, hash and route by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

/// The (symbol, timeframe) a [`StreamId`] stands for. Symbols are upper case, as in REST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub symbol: String,
    pub timeframe: Timeframe,
}

impl StreamKey {
    pub fn new(symbol: impl Into<String>, timeframe: Timeframe) -> Self {
        Self { symbol: symbol.into(), timeframe }
    }

    /// The WebSocket stream name, for example `btcusdt@kline_1m`.
    pub fn stream_name(&self) -> String {
        format!("{}@kline_{}", self.symbol.to_ascii_lowercase(), self.timeframe)
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.symbol, self.timeframe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_named_as_binance_names_it_and_shown_as_symbol_and_timeframe() {
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        assert_eq!(key.stream_name(), "btcusdt@kline_1m");
        assert_eq!(key.to_string(), "BTCUSDT 1m");
        assert_eq!(StreamKey::new("ETHBTC", Timeframe::Mo1).stream_name(), "ethbtc@kline_1M");
    }
}
