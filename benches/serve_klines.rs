//! Serving `GET /api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000` from the store, as the handler does it: the
//! selection check against the stored rows (`klines_from_store`) and Binance's 12-element rows with 8-decimal
//! strings (`rows_json`), on an open read-only connection, and with the connection opened per request as the
//! handler opens it. Beside the floor: the same SELECT with plain rusqlite and `serde_json` serialization of the
//! rows as numbers. The store is a generated SQLite file of 5,000 one-minute candles; no network.

use candled_actors::domain::{Candle, StreamId, StreamKey, Timeframe};
use candled_actors::local_api::{Answer, KlineRequest, format, klines_from_store};
use candled_actors::store::{SqliteStore, Store};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, OpenFlags, params};

const CANDLES: i64 = 5_000;
const LIMIT: usize = 1_000;
const MINUTE: i64 = 60_000;
/// 2026-01-05 00:00 UTC: the newest candle opens 5,000 minutes later and is in progress.
const FIRST_OPEN: i64 = 1_767_571_200_000;
const NOW: i64 = FIRST_OPEN + (CANDLES - 1) * MINUTE + 30_000;
/// The floor's statement: the SELECT `candles_window` runs.
const SELECT: &str = "SELECT timestamp, close_time, open, high, low, close, volume, quote_volume, trades, \
                      taker_buy_base, taker_buy_quote, is_closed FROM candles
                      WHERE symbol = ?1 AND timeframe = ?2 AND timestamp >= ?3 AND timestamp < ?4
                      ORDER BY timestamp ASC LIMIT ?5";

/// Prices with two decimals, volumes with five, as BTCUSDT's are.
fn candle(index: i64) -> Candle {
    let cents = 9_000_000 + (index * 7_919) % 200_000;
    let price = |offset: i64| (cents + offset) as f64 / 100.0;
    let volume = (1_000_000 + (index * 104_729) % 90_000_000) as f64 / 100_000.0;
    Candle {
        open_time: FIRST_OPEN + index * MINUTE,
        close_time: FIRST_OPEN + index * MINUTE + MINUTE - 1,
        open: price(0),
        high: price(1_234),
        low: price(-987),
        close: price(321),
        volume,
        quote_volume: (volume * price(0) * 100.0).round() / 100.0,
        trades: 500 + (index % 3_000) as u64,
        taker_buy_base: (volume * 0.4 * 100_000.0).round() / 100_000.0,
        taker_buy_quote: (volume * 0.4 * price(0) * 100.0).round() / 100.0,
        is_closed: index < CANDLES - 1,
    }
}

fn generated_store(path: &std::path::Path) {
    let mut store = SqliteStore::open(path).expect("a store");
    let streams = [StreamKey::new("BTCUSDT", Timeframe::M1)];
    let rows: Vec<_> = (0..CANDLES).map(|i| (StreamId(0), candle(i))).collect();
    store.write_candles(&streams, &rows).expect("written");
    store.checkpoint().expect("checkpointed");
}

/// What the handler does once it has a connection: the selection check, then the rows.
fn serve(store: &SqliteStore, request: &KlineRequest) -> String {
    match klines_from_store(store, request, NOW).expect("a read") {
        Answer::Complete(candles) => format::rows_json(&candles),
        Answer::Incomplete => panic!("the store holds the newest 1000"),
    }
}

/// The floor: the same rows, selected with plain rusqlite and serialized by serde_json as numbers.
fn floor(conn: &Connection) -> String {
    type Row = (i64, f64, f64, f64, f64, f64, i64, f64, i64, f64, f64, &'static str);
    let from = FIRST_OPEN + (CANDLES - LIMIT as i64) * MINUTE;
    let mut stmt = conn.prepare_cached(SELECT).expect("the floor's SELECT");
    let rows = stmt
        .query_map(params!["BTCUSDT", "1m", from, i64::MAX, LIMIT as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(1)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                "0",
            ))
        })
        .expect("rows");
    let rows: Vec<Row> = rows.collect::<Result<_, _>>().expect("rows");
    serde_json::to_string(&rows).expect("JSON")
}

fn serve_klines(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("candles.db");
    generated_store(&path);
    let request = KlineRequest {
        symbol: "BTCUSDT".into(),
        timeframe: Timeframe::M1,
        start: None,
        end: None,
        limit: LIMIT,
        time_zone: None,
    };
    let store = SqliteStore::open_read_only(&path).expect("read-only");
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("read-only");
    let served: serde_json::Value = serde_json::from_str(&serve(&store, &request)).unwrap();
    let floored: serde_json::Value = serde_json::from_str(&floor(&conn)).unwrap();
    assert_eq!(served.as_array().map(Vec::len), Some(LIMIT));
    assert_eq!(floored.as_array().map(Vec::len), Some(LIMIT));
    assert_eq!(served[0][0], floored[0][0], "the same rows");

    let mut group = c.benchmark_group("serve_klines");
    group.throughput(Throughput::Elements(LIMIT as u64));
    group.bench_function("floor_select_serde_json", |b| b.iter(|| floor(&conn)));
    group.bench_function("serve_from_store", |b| b.iter(|| serve(&store, &request)));
    group.bench_function("serve_from_store_opening_the_connection", |b| {
        b.iter(|| serve(&SqliteStore::open_read_only(&path).expect("read-only"), &request))
    });
    group.finish();
}

criterion_group!(benches, serve_klines);
criterion_main!(benches);
