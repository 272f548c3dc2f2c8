//! The benches' floors write candle rows with plain rusqlite into the schema's physical tables, sharing nothing with
//! the engine they are measured against; this is their one row-binding step.

use candled_actors::domain::Candle;
use rusqlite::{CachedStatement, Statement};

/// Binds one `candle_rows` row of stream `stream_id` (the `streams` id), its 13 columns in table order, from
/// parameter `first` of `stmt`.
pub fn bind_candle(stmt: &mut Statement<'_>, first: usize, stream_id: i64, c: &Candle) {
    let bind = |stmt: &mut Statement<'_>, offset: usize, value: &dyn rusqlite::ToSql| {
        stmt.raw_bind_parameter(first + offset, value).expect("the floor's parameter");
    };
    bind(stmt, 0, &stream_id);
    bind(stmt, 1, &c.open_time);
    bind(stmt, 2, &c.open);
    bind(stmt, 3, &c.high);
    bind(stmt, 4, &c.low);
    bind(stmt, 5, &c.close);
    bind(stmt, 6, &c.volume);
    bind(stmt, 7, &c.close_time);
    bind(stmt, 8, &c.quote_volume);
    bind(stmt, 9, &(c.trades as i64));
    bind(stmt, 10, &c.taker_buy_base);
    bind(stmt, 11, &c.taker_buy_quote);
    bind(stmt, 12, &c.is_closed);
}

/// Executes a 13-parameter `candle_rows` statement (its columns, in table order) for one row of stream `stream_id`
/// (the `streams` id).
pub fn execute_candle(stmt: &mut CachedStatement<'_>, stream_id: i64, c: &Candle) {
    bind_candle(stmt, 1, stream_id, c);
    stmt.raw_execute().expect("the floor's insert");
}
