//! Handler tests for the query endpoints, on a temporary database.

use std::path::{Path, PathBuf};

use actix::Actor;
use actix_web::{App, test, web};
use candled_actors::actors::health::HealthActor;
use candled_actors::domain::{Candle, StreamId, StreamKey, Timeframe};
use candled_actors::indicators::{IndicatorConfig, IndicatorSet, IndicatorValue, ProvisionalBoard};
use candled_actors::metrics::Metrics;
use candled_actors::registry::StreamRegistry;
use candled_actors::store::{IndicatorRow, SqliteStore, Store};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{AppState, routes};
use crate::config::Settings;
use crate::reload::{LiveConfig, ReloadHandle};

const SHIPPED: &str = include_str!("../../config.toml");

fn candle(minute: i64, close: f64, is_closed: bool) -> Candle {
    let open_time = 1_700_000_040_000 + minute * 60_000;
    Candle {
        open_time,
        close_time: open_time + 59_999,
        open: close - 1.0,
        high: close + 2.0,
        low: close - 2.0,
        close,
        volume: 3.5,
        quote_volume: 3.5 * close,
        trades: 12,
        taker_buy_base: 1.5,
        taker_buy_quote: 1.5 * close,
        is_closed,
    }
}

/// A database holding four closed BTCUSDT 1m candles, an in-progress one, and indicator values on the last two
/// closed ones, in a temporary folder removed when the returned one is dropped; and a board with provisional
/// values for the in-progress one.
fn fixture() -> (TempDir, PathBuf, ProvisionalBoard) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("candles.db");
    let streams = [StreamKey::new("BTCUSDT", Timeframe::M1)];
    let config = IndicatorConfig {
        sma: vec![3],
        ema: vec![],
        rsi: vec![2],
        macd: vec![],
        bollinger: vec![],
        atr: vec![],
        ..IndicatorConfig::default()
    };
    let set = IndicatorSet::new(&config);
    let names: Vec<String> = set.names().to_vec();
    assert_eq!(names, ["sma_3", "rsi_2"]);
    let s = StreamId(0);
    let candles: Vec<_> = (0..5).map(|m| (s, candle(m, 100.0 + m as f64, m < 4))).collect();
    let row = |minute: i64, output, value| IndicatorRow {
        stream: s,
        open_time: candles[minute as usize].1.open_time,
        output,
        value,
    };
    let indicators = [row(2, 0, 101.0), row(2, 1, 100.0), row(3, 0, 102.0), row(3, 1, 100.0)];
    let mut store = SqliteStore::open(&path).expect("temp db");
    store.write_batch(&streams, &names, &candles, &indicators).expect("write");
    let board = ProvisionalBoard::new(names.into());
    board.add(s, streams[0].clone());
    let values = [IndicatorValue { output: 0, value: 103.0 }, IndicatorValue { output: 1, value: 100.0 }];
    board.publish(s, candles[4].1.open_time, &values);
    (dir, path, board)
}

async fn get(path: &Path, board: &ProvisionalBoard, uri: &str) -> (u16, Value) {
    let state = AppState {
        local_streams: crate::http::binance_ws::LocalStreams::new(Default::default(), true, 8),
        health: HealthActor::new(Metrics::new()).start(),
        metrics: Metrics::new(),
        store: candled_actors::store::StoreBackend::sqlite(path),
        provisional: board.clone(),
        // BTCUSDT is only stored, ETHUSDT only configured: both are known symbols.
        streams: StreamRegistry::new(&[StreamKey::new("ETHUSDT", Timeframe::M1)]),
        startup: Default::default(),
        config: LiveConfig::new("config.toml".into(), Settings::parse(SHIPPED, "config.toml").expect("valid")),
        reload: ReloadHandle::channel().0,
        admin_token: None,
        committed: Default::default(),
        exchange_clock: Default::default(),
        local_binance: None,
    };
    let app = test::init_service(App::new().app_data(web::Data::new(state)).configure(routes)).await;
    let response = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
    let status = response.status().as_u16();
    let body: Value = serde_json::from_slice(&test::read_body(response).await).expect("a JSON body");
    if std::env::var_os("CANDLED_PRINT_EXAMPLES").is_some() {
        println!("GET {uri} -> {status}\n{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    }
    (status, body)
}

#[actix_web::test]
async fn candles_newest_by_default_and_from_start_when_given() {
    let (_dir, path, board) = fixture();
    // TC0: the newest two, ascending, with every column.
    let (status, body) = get(&path, &board, "/api/v1/candles?symbol=BTCUSDT&timeframe=1m&limit=2").await;
    assert_eq!(status, 200);
    let rows = body.as_array().expect("an array");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        json!({
            "symbol": "BTCUSDT", "timeframe": "1m", "timestamp": 1_700_000_220_000_i64, "open": 102.0, "high": 105.0,
            "low": 101.0, "close": 103.0, "volume": 3.5, "close_time": 1_700_000_279_999_i64,
            "quote_volume": 360.5, "trades": 12, "taker_buy_base": 1.5, "taker_buy_quote": 154.5, "is_closed": true
        })
    );
    assert_eq!(rows[1]["is_closed"], false);
    // TC1: from `start`, up to `end` (exclusive); a lower-case symbol is accepted.
    let uri = "/api/v1/candles?symbol=btcusdt&timeframe=1m&start=1700000100000&end=1700000220000";
    let (status, body) = get(&path, &board, uri).await;
    assert_eq!(status, 200);
    let times: Vec<_> = body.as_array().expect("array").iter().map(|r| r["timestamp"].as_i64()).collect();
    assert_eq!(times, [Some(1_700_000_100_000), Some(1_700_000_160_000)]);
}

#[actix_web::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let (_dir, path, board) = fixture();
    let cases = [
        ("/api/v1/candles?timeframe=1m", "symbol"),
        ("/api/v1/candles?symbol=BTCUSDT&timeframe=2m", "timeframe"),
        ("/api/v1/candles?symbol=BTCUSDT", "timeframe"),
        ("/api/v1/candles?symbol=BTCUSDT&timeframe=1m&limit=5001", "limit"),
        ("/api/v1/candles?symbol=BTCUSDT&timeframe=1m&limit=0", "limit"),
        ("/api/v1/candles?symbol=BTCUSDT&timeframe=1m&start=yesterday", "start"),
        ("/api/v1/candles?symbol=BTCUSDT&timeframe=1m&end=1.5", "end"),
        ("/api/v1/indicators?symbol=&timeframe=1m", "symbol"),
        ("/api/v1/indicators?symbol=BTCUSDT&timeframe=1x", "timeframe"),
        // The same parser everywhere: a window the indicators do not take, a parameter twice, an unknown one.
        ("/api/v1/indicators?symbol=BTCUSDT&timeframe=1m&start=abc", "start"),
        ("/api/v1/candles?symbol=BTCUSDT&symbol=ETHUSDT&timeframe=1m", "symbol"),
        ("/api/v1/candles?symbol=BTCUSDT&timeframe=1m&limt=5", "limt"),
        ("/api/v1/candles?symbol=BTCUSDT&timeframe=1m&start=1700000220000&end=1700000100000", "start"),
    ];
    for (uri, parameter) in cases {
        let (status, body) = get(&path, &board, uri).await;
        assert_eq!((status, body["parameter"].as_str()), (400, Some(parameter)), "{uri}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.starts_with(&format!("`{parameter}`"))), "{body}");
    }
    // An empty value counts as absent, as in the README's `start=&end=` template.
    let (status, body) = get(&path, &board, "/api/v1/candles?symbol=BTCUSDT&timeframe=1m&start=&end=&limit=").await;
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(5)), "{body}");
}

#[actix_web::test]
async fn a_symbol_neither_configured_nor_stored_is_404_and_a_stored_one_is_served() {
    let (_dir, path, board) = fixture();
    for uri in ["/api/v1/candles?symbol=nosuch&timeframe=1m", "/api/v1/indicators?symbol=NOSUCH&timeframe=1m"] {
        let (status, body) = get(&path, &board, uri).await;
        assert_eq!((status, &body["parameter"]), (404, &json!("symbol")), "{uri}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("\"NOSUCH\"")), "{body}");
    }
    // Configured but nothing stored yet: an empty answer, not a 404; stored but no longer configured: served.
    let (status, body) = get(&path, &board, "/api/v1/candles?symbol=ETHUSDT&timeframe=1m").await;
    assert_eq!((status, body), (200, json!([])));
    let (status, body) = get(&path, &board, "/api/v1/candles?symbol=BTCUSDT&timeframe=1m&limit=1").await;
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(1)), "{body}");
}

#[actix_web::test]
async fn indicators_series_and_provisional() {
    let (_dir, path, board) = fixture();
    let (status, body) = get(&path, &board, "/api/v1/indicators?symbol=BTCUSDT&timeframe=1m&limit=100").await;
    assert_eq!(status, 200);
    let want = json!({
        "symbol": "BTCUSDT",
        "timeframe": "1m",
        "series": [
            { "timestamp": 1_700_000_160_000_i64, "values": { "rsi_2": 100.0, "sma_3": 101.0 } },
            { "timestamp": 1_700_000_220_000_i64, "values": { "rsi_2": 100.0, "sma_3": 102.0 } }
        ],
        "provisional": { "timestamp": 1_700_000_280_000_i64, "values": { "rsi_2": 100.0, "sma_3": 103.0 } }
    });
    assert_eq!(body, want);
    // TC1: `limit` keeps the newest timestamps; another stream has nothing and no provisional values.
    let (_, body) = get(&path, &board, "/api/v1/indicators?symbol=BTCUSDT&timeframe=1m&limit=1").await;
    assert_eq!(body["series"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["series"][0]["timestamp"], 1_700_000_220_000_i64);
    let (status, body) = get(&path, &board, "/api/v1/indicators?symbol=ETHUSDT&timeframe=1m").await;
    assert_eq!((status, &body["series"], &body["provisional"]), (200, &json!([]), &Value::Null));
}
