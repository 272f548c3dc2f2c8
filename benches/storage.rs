//! Batched SQLite upserts of closed and in-progress candles through `SqliteStore`, beside the floor: a raw
//! rusqlite batched insert of the same rows into the same schema's `candle_rows` (the streams registered
//! beforehand), in one transaction with one prepared statement.
//! Both statements are compiled in the untimed setup, as in production, where a statement is compiled once.

use candled_actors::domain::{Candle, StreamId, StreamKey, Timeframe};
use candled_actors::store::sqlite::SCHEMA;
use candled_actors::store::{SqliteStore, Store};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

#[path = "support/floor.rs"]
mod floor;
use rusqlite::Connection;

const BATCH: usize = 1_000;
/// The floor's statement: a plain insert of every column.
const RAW_INSERT: &str = "INSERT INTO candle_rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

fn rows(is_closed: bool) -> Vec<(StreamId, Candle)> {
    (0..BATCH as i64)
        .map(|i| {
            let candle = Candle {
                open_time: i * 60_000,
                close_time: i * 60_000 + 59_999,
                open: 100.0 + i as f64,
                high: 102.0 + i as f64,
                low: 99.0 + i as f64,
                close: 101.0 + i as f64,
                volume: 12.5,
                quote_volume: 1250.0,
                trades: 42,
                taker_buy_base: 6.0,
                taker_buy_quote: 600.0,
                is_closed,
            };
            (StreamId((i % 4) as u32), candle)
        })
        .collect()
}

fn streams() -> Vec<StreamKey> {
    ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"].iter().map(|s| StreamKey::new(*s, Timeframe::M1)).collect()
}

/// The floor: a plain INSERT of the same rows into an empty table (stream `i` has the id `i + 1`).
fn raw_insert(conn: &mut Connection, rows: &[(StreamId, Candle)]) {
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx.prepare_cached(RAW_INSERT).unwrap();
        for (stream, c) in rows {
            floor::execute_candle(&mut stmt, i64::from(stream.0) + 1, c);
        }
    }
    tx.commit().unwrap();
}

fn storage(c: &mut Criterion) {
    let streams = streams();
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, is_closed) in [("closed", true), ("in_progress", false)] {
        let batch = rows(is_closed);
        group.bench_function(format!("upsert_new/{name}"), |b| {
            b.iter_batched(
                || {
                    // An empty batch compiles and caches the statement, as the first batch does in production.
                    let mut store = SqliteStore::open_in_memory().unwrap();
                    store.write_candles(&streams, &[]).unwrap();
                    store
                },
                |mut store| store.write_candles(&streams, &batch).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    // In-progress updates of candles that already exist: the steady state of a live stream.
    let mut store = SqliteStore::open_in_memory().unwrap();
    let batch = rows(false);
    store.write_candles(&streams, &batch).unwrap();
    group.bench_function("upsert_existing/in_progress", |b| b.iter(|| store.write_candles(&streams, &batch).unwrap()));
    let batch = rows(true);
    group.bench_function("floor_raw_insert/closed", |b| {
        b.iter_batched(
            || {
                let conn = Connection::open_in_memory().unwrap();
                conn.execute_batch(SCHEMA).unwrap();
                for key in &streams {
                    conn.execute(
                        "INSERT INTO streams (symbol, timeframe) VALUES (?1, ?2)",
                        [key.symbol.as_str(), key.timeframe.as_str()],
                    )
                    .unwrap();
                }
                drop(conn.prepare_cached(RAW_INSERT).unwrap());
                conn
            },
            |mut conn| raw_insert(&mut conn, &batch),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, storage);
criterion_main!(benches);
