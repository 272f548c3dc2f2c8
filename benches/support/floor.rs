//! The benches' floors write candle rows with plain rusqlite into the schema's physical tables, sharing nothing with
//! the engine they are measured against; this is their one row-binding step.

use candled_actors::domain::Candle;
use rusqlite::{CachedStatement, params};

/// Executes a 13-parameter `candle_rows` statement (its columns, in table order) for one row of stream `stream_id`
/// (the `streams` id).
pub fn execute_candle(stmt: &mut CachedStatement<'_>, stream_id: i64, c: &Candle) {
    stmt.execute(params![
        stream_id,
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
