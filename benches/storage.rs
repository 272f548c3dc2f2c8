//! Batched SQLite upserts of closed and in-progress candles through `SqliteStore`, beside the floor: a raw
//! rusqlite batched insert of the same rows into the same schema's `candle_rows` (the streams registered
//! beforehand), in one transaction with one prepared statement.
//! Both statements are compiled in the untimed setup, as in production, where a statement is compiled once.
//!
//! `import_floor/*` is the SQLite floor of `candled import` with indicators: the rows of 100,000 candles (a
//! `candle_rows` row and an `indicator_rows` row of 11 outputs each) inserted raw into a new database file, 32 rows a
//! statement and 50,000 candles a transaction, as the import writes them, through a rollback journal and through the
//! WAL. Nothing is read, parsed or computed.

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

const IMPORT_CANDLES: usize = 102_400;
/// About the import's 50,000, and a whole number of statements.
const IMPORT_CHUNK: usize = 51_200;
const IMPORT_ROWS_PER_STATEMENT: usize = 32;
const OUTPUTS: usize = 11;
/// The parameters of a row of either table: `candle_rows` has 13 columns, `indicator_rows` 2 + [`OUTPUTS`].
const ROW_WIDTH: usize = 13;

/// An `INSERT` of `rows` rows of `width` parameters into `table`.
fn multi_row_insert(table: &str, width: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(","));
    format!("INSERT INTO {table} VALUES {}", vec![row; rows].join(","))
}

/// A new database file with the schema, one stream and the 11 output columns, in `journal` mode.
fn import_target(journal: &str) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("candles.db");
    let names: Vec<String> = (0..OUTPUTS).map(|i| format!("output_{i}")).collect();
    let row = candled_actors::store::IndicatorRow { stream: StreamId(0), open_time: -1, output: 0, value: 1.0 };
    let mut store = SqliteStore::open(&path).unwrap();
    store.write_batch(&streams()[..1], &names, &[], &[row]).unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM indicator_rows", []).unwrap();
    conn.query_row(&format!("PRAGMA journal_mode = {journal}"), [], |_| Ok(())).unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    (dir, conn)
}

fn import_floor(c: &mut Criterion) {
    let candles: Vec<Candle> = (0..IMPORT_CANDLES as i64)
        .map(|i| Candle { open_time: i * 60_000, close_time: i * 60_000 + 59_999, ..rows(true)[0].1 })
        .collect();
    let mut group = c.benchmark_group("import_floor");
    group.sample_size(10).throughput(Throughput::Elements(IMPORT_CANDLES as u64));
    for journal in ["delete", "wal"] {
        group.bench_function(journal, |b| {
            b.iter_batched(
                || import_target(journal),
                |(dir, mut conn)| {
                    for chunk in candles.chunks(IMPORT_CHUNK) {
                        let tx = conn.transaction().unwrap();
                        {
                            let mut candle_rows = tx
                                .prepare(&multi_row_insert("candle_rows", ROW_WIDTH, IMPORT_ROWS_PER_STATEMENT))
                                .unwrap();
                            let mut indicator_rows = tx
                                .prepare(&multi_row_insert("indicator_rows", ROW_WIDTH, IMPORT_ROWS_PER_STATEMENT))
                                .unwrap();
                            for rows in chunk.chunks_exact(IMPORT_ROWS_PER_STATEMENT) {
                                for (row, c) in rows.iter().enumerate() {
                                    let first = row * ROW_WIDTH + 1;
                                    floor::bind_candle(&mut candle_rows, first, 1, c);
                                    indicator_rows.raw_bind_parameter(first, 1_i64).unwrap();
                                    indicator_rows.raw_bind_parameter(first + 1, c.open_time).unwrap();
                                    for output in 0..OUTPUTS {
                                        let value = c.close + output as f64;
                                        indicator_rows.raw_bind_parameter(first + 2 + output, value).unwrap();
                                    }
                                }
                                candle_rows.raw_execute().unwrap();
                                indicator_rows.raw_execute().unwrap();
                            }
                        }
                        tx.commit().unwrap();
                    }
                    (dir, conn)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, storage, import_floor);
criterion_main!(benches);
