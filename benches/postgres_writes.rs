//! The same 10,000 closed candles, and 10,000 in-progress updates of existing candles, written in one batch by
//! `SqliteStore` (a WAL file) and by `PostgresStore` (multi-row `UNNEST` upserts under the store's rules), beside the
//! floor: a raw binary `COPY` of the closed candles into a plain table of the v1 `candles` columns (symbol and
//! timeframe as text), without keys or indexes; and, on PostgreSQL, the same closed candles with 11 indicator
//! outputs each (110,000 values), the write path's real shape. Each closed-candle write starts from empty tables
//! (the physical ones, emptied untimed: `candle_rows` and `indicator_rows` in schema v2, `candles` and `indicators`
//! in v1). PostgreSQL runs in a schema of its own, dropped at the end; when the server is unreachable, a note says so
//! and only SQLite is measured.

use std::pin::pin;
use std::time::{Duration, Instant};

use candled_actors::domain::{Candle, StreamId, StreamKey, Timeframe};
use candled_actors::store::test_support::{TestSchema, postgres_url};
use candled_actors::store::{IndicatorRow, PostgresBackend, PostgresStore, SqliteStore, Store};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

const BATCH: usize = 10_000;

/// The default indicator set's outputs: what a closed candle carries.
const OUTPUTS: [&str; 11] = [
    "sma_20",
    "sma_50",
    "ema_12",
    "ema_26",
    "rsi_14",
    "macd_12_26_9",
    "macd_12_26_9_signal",
    "macd_12_26_9_hist",
    "bb_20_2_upper",
    "bb_20_2_middle",
    "bb_20_2_lower",
];

/// Every output of every candle of `rows`.
fn indicator_rows(rows: &[(StreamId, Candle)]) -> Vec<IndicatorRow> {
    rows.iter()
        .flat_map(|(stream, c)| {
            (0..OUTPUTS.len() as u16).map(move |output| IndicatorRow {
                stream: *stream,
                open_time: c.open_time,
                output,
                value: c.close + f64::from(output) / 7.0,
            })
        })
        .collect()
}

/// Empties the SQLite tables candles are stored in: `candle_rows` (schema v2) or `candles` (v1).
fn clear_sqlite(sqlite: &SqliteStore) {
    let connection = sqlite.connection();
    let v2: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'candle_rows')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    connection.execute_batch(if v2 { "DELETE FROM candle_rows" } else { "DELETE FROM candles" }).unwrap();
}

fn streams() -> Vec<StreamKey> {
    ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"].iter().map(|s| StreamKey::new(*s, Timeframe::M1)).collect()
}

/// 2,500 candles of each of the four streams.
fn rows(is_closed: bool) -> Vec<(StreamId, Candle)> {
    (0..BATCH as i64)
        .map(|i| {
            let open_time = (i / 4) * 60_000;
            let candle = Candle {
                open_time,
                close_time: open_time + 59_999,
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

/// Times `write` alone, `iterations` times, each after an untimed `reset`.
fn timed<S>(iterations: u64, state: &mut S, reset: impl Fn(&mut S), write: impl Fn(&mut S)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        reset(state);
        let started = Instant::now();
        write(state);
        total += started.elapsed();
    }
    total
}

/// The PostgreSQL side: the store, and a plain client for the floor and for emptying tables.
struct Postgres {
    store: PostgresStore,
    client: tokio_postgres::Client,
    runtime: tokio::runtime::Runtime,
    schema: TestSchema,
}

impl Postgres {
    /// `None`, with a note, when the server is unreachable.
    fn connect() -> Option<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let url = postgres_url();
        let client = match runtime.block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls)) {
            Ok((client, connection)) => {
                runtime.spawn(connection);
                client
            }
            Err(error) => {
                eprintln!("note: PostgreSQL at {url} is unreachable ({error}): benching SQLite only");
                return None;
            }
        };
        let schema = TestSchema::create("postgres_writes bench")?;
        let store = PostgresBackend::connect(schema.config()).expect("the PostgreSQL store connects").store();
        let floor = format!("CREATE TABLE {0}.candles_floor (LIKE {0}.candles)", schema.name());
        runtime.block_on(client.batch_execute(&floor)).unwrap();
        Some(Self { store, client, runtime, schema })
    }

    fn execute(&self, sql: &str) {
        let sql = sql.replace("{schema}", self.schema.name());
        self.runtime.block_on(self.client.batch_execute(&sql)).unwrap();
    }

    /// Empties the physical tables of candles, indicator values and revisions, whichever schema version.
    fn clear(&self) {
        let table = format!("{}.candle_rows", self.schema.name());
        let row = self.runtime.block_on(self.client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]));
        if row.unwrap().get(0) {
            self.execute("TRUNCATE {schema}.candle_rows, {schema}.indicator_rows, {schema}.candle_revisions");
        } else {
            self.execute("TRUNCATE {schema}.candles, {schema}.indicators, {schema}.candle_revisions");
        }
    }

    /// The floor: one binary `COPY` of the rows.
    fn copy(&self, streams: &[StreamKey], rows: &[(StreamId, Candle)]) {
        let f8 = Type::FLOAT8;
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            f8.clone(),
            f8.clone(),
            f8.clone(),
            f8.clone(),
            f8.clone(),
            Type::INT8,
            f8.clone(),
            Type::INT8,
            f8.clone(),
            f8,
            Type::INT2,
        ];
        let sql = format!("COPY {}.candles_floor FROM STDIN BINARY", self.schema.name());
        self.runtime.block_on(async {
            let sink = self.client.copy_in(&sql).await.unwrap();
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
            for (stream, c) in rows {
                let key = &streams[stream.0 as usize];
                let (trades, is_closed) = (c.trades as i64, i16::from(c.is_closed));
                let row: [&(dyn ToSql + Sync); 14] = [
                    &key.symbol,
                    &key.timeframe.as_str(),
                    &c.open_time,
                    &c.open,
                    &c.high,
                    &c.low,
                    &c.close,
                    &c.volume,
                    &c.close_time,
                    &c.quote_volume,
                    &trades,
                    &c.taker_buy_base,
                    &c.taker_buy_quote,
                    &is_closed,
                ];
                writer.as_mut().write(&row).await.unwrap();
            }
            assert_eq!(writer.finish().await.unwrap(), rows.len() as u64);
        });
    }
}

fn postgres_writes(c: &mut Criterion) {
    let streams = streams();
    let (closed, in_progress) = (rows(true), rows(false));
    let mut group = c.benchmark_group("postgres_writes");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);

    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = SqliteStore::open(&dir.path().join("candles.db")).unwrap();
    sqlite.write_candles(&streams, &[]).unwrap();
    group.bench_function("sqlite/closed", |b| {
        b.iter_custom(|iterations| {
            timed(
                iterations,
                &mut sqlite,
                |sqlite| clear_sqlite(sqlite),
                |sqlite| assert_eq!(sqlite.write_candles(&streams, &closed).unwrap(), BATCH),
            )
        })
    });
    clear_sqlite(&sqlite);
    sqlite.write_candles(&streams, &in_progress).unwrap();
    group.bench_function("sqlite/in_progress_updates", |b| {
        b.iter(|| assert_eq!(sqlite.write_candles(&streams, &in_progress).unwrap(), BATCH))
    });

    if let Some(mut postgres) = Postgres::connect() {
        group.bench_function("postgres/closed", |b| {
            b.iter_custom(|iterations| {
                timed(
                    iterations,
                    &mut postgres,
                    |postgres| postgres.clear(),
                    |postgres| assert_eq!(postgres.store.write_candles(&streams, &closed).unwrap(), BATCH),
                )
            })
        });
        let (names, values): (Vec<String>, _) =
            (OUTPUTS.iter().map(|n| n.to_string()).collect(), indicator_rows(&closed));
        group.bench_function("postgres/closed_with_11_outputs", |b| {
            b.iter_custom(|iterations| {
                timed(
                    iterations,
                    &mut postgres,
                    |postgres| postgres.clear(),
                    |postgres| {
                        let changed = postgres.store.write_batch(&streams, &names, &closed, &values).unwrap();
                        // v2: a row per candle in each table; v1: a row per candle and per value.
                        assert!(changed == 2 * BATCH || changed == BATCH + values.len(), "{changed} rows changed");
                    },
                )
            })
        });
        postgres.clear();
        postgres.store.write_candles(&streams, &in_progress).unwrap();
        group.bench_function("postgres/in_progress_updates", |b| {
            b.iter(|| assert_eq!(postgres.store.write_candles(&streams, &in_progress).unwrap(), BATCH))
        });
        group.bench_function("postgres/copy_floor/closed", |b| {
            b.iter_custom(|iterations| {
                timed(
                    iterations,
                    &mut postgres,
                    |postgres| postgres.execute("TRUNCATE {schema}.candles_floor"),
                    |postgres| postgres.copy(&streams, &closed),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, postgres_writes);
criterion_main!(benches);
