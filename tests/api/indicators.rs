//! The `indicators` table equals a clean recomputation over the `candles` table, also after a backfill landed
//! candles inside the window the indicators had already consumed; and the HTTP series serves it.

use std::collections::BTreeMap;
use std::time::Duration;

use candled_actors::domain::Timeframe;
use candled_actors::indicators::{IndicatorConfig, recompute};
use candled_actors::store::{SqliteStore, Store};

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, spawn_app, wait_until};

const SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];

/// Indicator values by (open time, output name).
type Values = BTreeMap<(i64, String), f64>;

fn stored_values(store: &SqliteStore, symbol: &str) -> Values {
    let mut stmt = store
        .connection()
        .prepare("SELECT timestamp, name, value FROM indicators WHERE symbol = ?1 AND timeframe = '1m'")
        .unwrap();
    let rows = stmt.query_map([symbol], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?))).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

fn recomputed_values(store: &SqliteStore, symbol: &str) -> Values {
    let candles = store.closed_candles(symbol, Timeframe::M1).unwrap();
    recompute(&IndicatorConfig::default(), &candles).into_iter().map(|(t, name, v)| ((t, name), v)).collect()
}

fn close_enough(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn stored_indicators_equal_a_recomputation_even_after_a_backfill_lands_late_candles() {
    let fake = FakeExchange::start(FakeConfig { speed: 300.0, ..FakeConfig::default() });
    // A long close deadline: missing closes are found through the gap the next live close reveals, so the
    // backfill lands them after the indicators have moved past them.
    let mut app = spawn_app(
        &fake,
        AppOptions {
            symbols: SYMBOLS.to_vec(),
            timeframes: vec!["1m"],
            history: 60,
            exchange_extra: "close_grace_ms = 3600000",
            ..AppOptions::default()
        },
    );
    app.wait_for_log("Subscribed to ETHUSDT 1m candles", Duration::from_secs(20));
    let live = wait_until(Duration::from_secs(20), || {
        (fake.published_closed_open_times("btcusdt@kline_1m").len() >= 3).then_some(())
    });
    assert!(live.is_some());
    let rebuilds_before = app.log_lines().iter().filter(|l| l.contains("rebuilt from")).count();

    fake.set_drop_closed_events(true);
    let withheld = wait_until(Duration::from_secs(20), || (fake.stats().ws_closed_events_withheld >= 8).then_some(()));
    assert!(withheld.is_some());
    fake.set_drop_closed_events(false);
    let rebuilt = wait_until(Duration::from_secs(30), || {
        let rebuilds = app.log_lines().iter().filter(|l| l.contains("rebuilt from")).count();
        (rebuilds >= rebuilds_before + SYMBOLS.len()).then_some(())
    });
    assert!(rebuilt.is_some(), "no rebuild after the late candles; log:\n{}", app.log_text());
    let more_live = fake.published_closed_open_times("btcusdt@kline_1m").len() + 3;
    wait_until(Duration::from_secs(20), || {
        (fake.published_closed_open_times("btcusdt@kline_1m").len() >= more_live).then_some(())
    });

    let (status, body) = app.get("/api/v1/indicators?symbol=BTCUSDT&timeframe=1m&limit=5");
    assert_eq!(status, 200, "{body}");
    let series = body["series"].as_array().unwrap_or_else(|| panic!("no series: {body}"));
    assert_eq!(series.len(), 5, "{body}");
    assert!(series[4]["values"]["macd_12_26_9_signal"].is_f64(), "{body}");
    assert!(body["provisional"]["values"]["sma_20"].is_f64(), "provisional values are served: {body}");

    let db_path = app.db_path.clone();
    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));

    let store = SqliteStore::open_read_only(&db_path).unwrap();
    for symbol in SYMBOLS {
        let stored = stored_values(&store, symbol);
        let recomputed = recomputed_values(&store, symbol);
        assert!(recomputed.len() > 100, "{symbol}: too few values to prove anything: {}", recomputed.len());
        let stored_keys: Vec<_> = stored.keys().collect();
        let recomputed_keys: Vec<_> = recomputed.keys().collect();
        assert_eq!(stored_keys, recomputed_keys, "{symbol}: a value is missing or extra");
        for (key, value) in &recomputed {
            assert!(close_enough(stored[key], *value), "{symbol} {key:?}: stored {} != {value}", stored[key]);
        }
    }
}
