//! The benches' floors write candle rows with plain rusqlite, sharing nothing with the engine they are measured
//! against; this is their one row-binding step.

use candled_actors::domain::{Candle, StreamKey};
use rusqlite::{CachedStatement, params};

/// Executes a 14-parameter candle statement (the `candles` columns, in table order) for one row.
pub fn execute_candle(stmt: &mut CachedStatement<'_>, key: &StreamKey, c: &Candle) {
    stmt.execute(params![
        key.symbol,
        key.timeframe.as_str(),
        c.open_time,
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.close_time,
        c.quote_volume,
        c.trades as i64,
        c.taker_buy_base,
        c.taker_buy_quote,
        c.is_closed
    ])
    .expect("the floor's insert");
}
