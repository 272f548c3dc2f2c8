//! Candles for the domain's unit tests: one-minute candles named by their open minute.

use crate::domain::Candle;

pub const MIN: i64 = 60_000;

/// The one-minute candle opened at `open_minute` (minutes since the epoch), closing at `close`.
pub fn minute_candle(open_minute: i64, close: f64, is_closed: bool) -> Candle {
    let open_time = open_minute * MIN;
    Candle {
        open_time,
        close_time: open_time + MIN - 1,
        open: 1.0,
        high: close.max(1.0),
        low: close.min(1.0),
        close,
        volume: 0.0,
        quote_volume: 0.0,
        trades: 0,
        taker_buy_base: 0.0,
        taker_buy_quote: 0.0,
        is_closed,
    }
}
