//! Nothing lost, proven continuously: the anti-entropy audit repairs holes and stuck in-progress rows, an empty answer
//! is re-checked before it becomes a gap, a zombie connection is replaced, a permanent REST error fails only its
//! stream, and a combination of faults (429s at start plus resets; every fault at once in the soak) loses nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake_exchange::{FakeConfig, FakeExchange, Interval, MalformedKind};
use crate::helpers::{
    AppOptions, TestApp, assert_streams_complete_through, edit_candles, klines_requests, open_db, open_db_read_write,
    spawn_app, stored_closed, stream_row, task_row, wait_until,
};

/// 300 exchange ms per real ms: a 1m candle closes every 0.2 s, a 5m one every second.
const SPEED: f64 = 300.0;
const FIVE_MINUTES: i64 = 300_000;
/// How long a test waits for the table to catch up with the exchange.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Quick detection, as in the reliability tests: 2 s without a frame, 2 s of stream silence, a close 1 s overdue.
const QUICK_DETECTION: &str = "stall_timeout_secs = 2\nclose_grace_ms = 1000\nstream_stale_secs = 2";
const FAST_RESTARTS: &str = "[supervisor]\nbackoff_initial_ms = 50\nbackoff_max_ms = 1000\n";
const TWO_SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];
const ONE_AND_FIVE_MINUTES: [&str; 2] = ["1m", "5m"];

fn fake(config: FakeConfig) -> FakeExchange {
    FakeExchange::start(FakeConfig { speed: SPEED, ..config })
}

/// Server pings every 1.5 s with a 2 s pong deadline: the pings alone keep a 4 s frame watchdog quiet
/// ([`WATCHDOG_QUIETED_BY_PINGS`]), and their pongs leave room for candled's 4 control messages a second under the
/// exchange's limit of 5 incoming messages a second.
fn pinging() -> FakeConfig {
    FakeConfig {
        ping_interval: Duration::from_millis(1500),
        pong_timeout: Duration::from_secs(2),
        ..FakeConfig::default()
    }
}

/// Quick detection of a silent stream (2 s) and of an overdue close (1 s), a 4 s frame watchdog that the server's
/// pings keep quiet, and a still-silent connection replaced 3 s after its resubscribe.
const WATCHDOG_QUIETED_BY_PINGS: &str =
    "stall_timeout_secs = 4\nclose_grace_ms = 1000\nstream_stale_secs = 2\nsilent_replace_secs = 3";

fn streams_of(symbols: &[&'static str], timeframes: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    symbols.iter().flat_map(|&s| timeframes.iter().map(move |&tf| (s, tf))).collect()
}

/// Starts the app and waits until each of `streams` is live.
fn start(fake: &FakeExchange, options: AppOptions, streams: &[(&str, &str)]) -> TestApp {
    let mut app = spawn_app(fake, options);
    for (symbol, timeframe) in streams {
        app.wait_for_log(&format!("Subscribed to {symbol} {timeframe} candles"), Duration::from_secs(20));
    }
    app
}

/// An exchange time two 5m candles from now: a horizon the table must reach after a fault ends.
fn horizon(fake: &FakeExchange) -> i64 {
    fake.now_ms() + 2 * FIVE_MINUTES
}

fn wait_for(what: &str, app: &TestApp, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let happened = wait_until(timeout, || probe().then_some(()));
    assert!(happened.is_some(), "{what} did not happen within {timeout:?}; log:\n{}", app.log_text());
}

fn interval(timeframe: &str) -> Interval {
    Interval::parse(timeframe).expect("a timeframe the fake serves")
}

/// Open times of the candles in progress at some moment between `from_ms` and `to_ms` (exchange time).
fn in_progress_between(timeframe: &str, from_ms: i64, to_ms: i64) -> Vec<i64> {
    let interval = interval(timeframe);
    let (first, last) = (interval.open_time_at(from_ms), interval.open_time_at(to_ms));
    (0..).map(|i| first + i * interval.ms()).take_while(|&open| open <= last).collect()
}

/// Counter of `/api/v1/streams` for one stream.
fn stream_counter(app: &TestApp, symbol: &str, timeframe: &str, name: &str) -> u64 {
    let row = stream_row(app, symbol, timeframe);
    row[name].as_u64().unwrap_or_else(|| panic!("{symbol} {timeframe}: no counter {name} in {row}"))
}

/// Waits until a stream holds at least `count` closed candles; returns their open times, oldest first.
fn wait_for_stored(app: &TestApp, symbol: &str, timeframe: &str, count: usize) -> Vec<i64> {
    let stored = wait_until(CATCH_UP, || {
        let stored = stored_closed(&open_db(&app.db_path), symbol, timeframe);
        (stored.len() >= count).then_some(stored)
    });
    let stored =
        stored.unwrap_or_else(|| panic!("fewer than {count} {symbol} {timeframe} candles; log:\n{}", app.log_text()));
    stored.into_iter().collect()
}

/// Deletes the closed rows of a stream with open times in `[from, to]` through a second connection, as a user's tool
/// would; returns how many went.
fn delete_closed(app: &TestApp, symbol: &str, timeframe: &str, from: i64, to: i64) -> usize {
    edit_candles(
        &open_db_read_write(&app.db_path),
        "DELETE FROM candles WHERE symbol = ?1 AND timeframe = ?2 AND timestamp BETWEEN ?3 AND ?4 AND is_closed = 1",
        rusqlite::params![symbol, timeframe, from, to],
    )
}

/// Marks closed rows of a stream in progress again (`is_closed = 0`); returns how many changed.
fn reopen(app: &TestApp, symbol: &str, timeframe: &str, opens: &[i64]) -> usize {
    let db = open_db_read_write(&app.db_path);
    opens
        .iter()
        .map(|open| {
            edit_candles(
                &db,
                "UPDATE candles SET is_closed = 0 WHERE symbol = ?1 AND timeframe = ?2 AND timestamp = ?3",
                rusqlite::params![symbol, timeframe, open],
            )
        })
        .sum()
}

/// Waits until every open time of `opens` is stored closed again.
fn wait_for_restored(app: &TestApp, symbol: &str, timeframe: &str, opens: &[i64], timeout: Duration) {
    wait_for(&format!("the repair of {symbol} {timeframe} {opens:?}"), app, timeout, || {
        let stored = stored_closed(&open_db(&app.db_path), symbol, timeframe);
        opens.iter().all(|open| stored.contains(open))
    });
}

#[test]
fn the_429s_at_start_plus_resets_lose_nothing() {
    let streams = streams_of(&TWO_SYMBOLS, &ONE_AND_FIVE_MINUTES);
    // Pings every 300 ms: a connection reset every 45 frames (about a second) still sees a few.
    let fake = fake(FakeConfig {
        ping_interval: Duration::from_millis(300),
        pong_timeout: Duration::from_secs(1),
        ..FakeConfig::default()
    });
    // The run from issue 8, on the default settings a new user has: the first three klines requests wait out a
    // 429 (the server time asked before them is a 5m candle old by then), the socket resets every 45 frames, with
    // malformed frames, duplicates and server pings in between.
    fake.rest_rate_limit_klines(3, Duration::from_secs(1));
    fake.drop_connections_after_frames(Some(45));
    fake.set_duplicate_events(true);
    let started_at = fake.now_ms();
    let options = AppOptions {
        symbols: TWO_SYMBOLS.to_vec(),
        timeframes: ONE_AND_FIVE_MINUTES.to_vec(),
        history: 100,
        ..AppOptions::default()
    };
    let app = start(&fake, options, &streams);
    let live_at = fake.now_ms();
    let run_until = Instant::now() + Duration::from_secs(15);
    for kind in MalformedKind::ALL.into_iter().cycle() {
        if Instant::now() >= run_until {
            break;
        }
        fake.inject_malformed(kind);
        std::thread::sleep(Duration::from_millis(700));
    }
    fake.drop_connections_after_frames(None);
    fake.set_duplicate_events(false);
    let stats = fake.stats();
    assert!(stats.rest_429s >= 3, "the 429s fired: {stats:?}");
    assert!(stats.ws_abrupt_drops >= 5 && stats.ws_duplicate_events_sent >= 1 && stats.ws_pings_sent >= 5, "{stats:?}");

    assert_streams_complete_through(&fake, &app, &streams, horizon(&fake), CATCH_UP);
    let db = open_db(&app.db_path);
    for &(symbol, timeframe) in &streams {
        let stored = stored_closed(&db, symbol, timeframe);
        let at_start: BTreeSet<i64> = in_progress_between(timeframe, started_at, live_at).into_iter().collect();
        let still_open: Vec<&i64> = at_start.difference(&stored).collect();
        assert!(
            still_open.is_empty(),
            "{symbol} {timeframe}: in progress at start, never stored closed: {still_open:?}"
        );
        assert_eq!(stream_counter(&app, symbol, timeframe, "missing"), 0, "{symbol} {timeframe}");
    }
    assert_eq!(fake.stats().rest_418s, 0, "Retry-After was honoured");
}

/// The combination behind the issue-8 run, made deterministic: closes lost while the history waits out a 429, then
/// live closes before the history lands. Every candle seen in progress ends up stored closed. (The rule that a fresh
/// stream is anchored by its history, not by its first live close, is pinned by
/// `domain::rules::tests::a_stream_awaiting_its_history_is_anchored_only_by_it`.)
#[test]
fn closes_lost_while_the_history_waits_out_a_429_are_fetched() {
    let streams = streams_of(&["BTCUSDT"], &ONE_AND_FIVE_MINUTES);
    let fake = fake(FakeConfig::default());
    // The history waits 2 s (10 simulated minutes); the first second of closes never arrives live.
    fake.rest_rate_limit_klines(2, Duration::from_secs(2));
    fake.set_drop_closed_events(true);
    let options = AppOptions {
        symbols: vec!["BTCUSDT"],
        timeframes: ONE_AND_FIVE_MINUTES.to_vec(),
        history: 20,
        ..AppOptions::default()
    };
    let app = start(&fake, options, &streams);
    wait_for("three closes lost", &app, Duration::from_secs(10), || fake.stats().ws_closed_events_withheld >= 3);
    fake.set_drop_closed_events(false);
    let waiting = fake.stats().rest_429s >= 1 && !app.log_text().contains("History: loaded");
    assert!(waiting, "the closes were lost while the history waited: {:?}", fake.stats());
    assert_streams_complete_through(&fake, &app, &streams, horizon(&fake), CATCH_UP);
}

#[test]
fn a_zombie_connection_is_resubscribed_then_replaced() {
    let streams = streams_of(&TWO_SYMBOLS, &ONE_AND_FIVE_MINUTES);
    let fake = fake(pinging());
    let options = AppOptions {
        symbols: TWO_SYMBOLS.to_vec(),
        timeframes: ONE_AND_FIVE_MINUTES.to_vec(),
        history: 20,
        exchange_extra: WATCHDOG_QUIETED_BY_PINGS,
        extra: FAST_RESTARTS,
        ..AppOptions::default()
    };
    let mut app = start(&fake, options, &streams);
    let accepted = fake.stats().ws_connections_accepted;
    fake.zombify_open_connections();
    app.wait_for_log("resubscribing", Duration::from_secs(10));
    assert_eq!(fake.stats().ws_connections_accepted, accepted, "the resubscribe comes before any new connection");
    wait_for("a resubscribe on the zombie", &app, Duration::from_secs(5), || {
        fake.stats().ws_subscribe_messages_received >= 1
    });
    wait_for("a replacement connection", &app, Duration::from_secs(15), || {
        fake.stats().ws_connections_accepted > accepted
    });
    wait_for("the zombie closed", &app, Duration::from_secs(15), || fake.stats().ws_open_connections == 1);
    assert_streams_complete_through(&fake, &app, &streams, horizon(&fake), CATCH_UP);
    let stats = fake.stats();
    assert_eq!(stats.ws_zombie_connections, 1);
    assert_eq!((stats.ws_rate_limit_closes, stats.ws_pong_deadline_closes), (0, 0), "candled replaced it: {stats:?}");
    assert!(!app.log_text().contains("no frame for"), "the zombie's pings kept the frame watchdog quiet");
    assert!(app.metric("candled_connection_replacements_total") >= 1.0);
}

/// BTCUSDT and ETHUSDT on 1m and 5m with 40 candles of history, quick detection, and an audit pass every second.
fn two_symbols_audited_every_second() -> AppOptions {
    AppOptions {
        symbols: TWO_SYMBOLS.to_vec(),
        timeframes: ONE_AND_FIVE_MINUTES.to_vec(),
        history: 40,
        exchange_extra: QUICK_DETECTION,
        extra: "[audit]\ninterval_secs = 1\n",
        ..AppOptions::default()
    }
}

#[test]
fn the_audit_repairs_deleted_and_reopened_rows() {
    let streams = streams_of(&TWO_SYMBOLS, &ONE_AND_FIVE_MINUTES);
    let fake = fake(FakeConfig::default());
    let options = two_symbols_audited_every_second();
    let app = start(&fake, options, &streams);
    let audit = task_row(&app, "audit").unwrap_or_else(|| panic!("no audit task; log:\n{}", app.log_text()));
    assert_eq!(audit["kind"], "audit", "{audit}");
    let opens = wait_for_stored(&app, "BTCUSDT", "1m", 40);
    let deleted = &opens[5..15];
    let reopened = [opens[20], opens[22], opens[24]];
    assert_eq!(delete_closed(&app, "BTCUSDT", "1m", deleted[0], deleted[deleted.len() - 1]), deleted.len());
    assert_eq!(reopen(&app, "BTCUSDT", "1m", &reopened), reopened.len());
    wait_for_restored(&app, "BTCUSDT", "1m", &[deleted, &reopened].concat(), Duration::from_secs(10));
    assert_streams_complete_through(&fake, &app, &streams, horizon(&fake), CATCH_UP);
    assert!(stream_counter(&app, "BTCUSDT", "1m", "audit_passes") >= 1);
    assert!(stream_counter(&app, "BTCUSDT", "1m", "holes_found") >= 1);
    assert!(stream_counter(&app, "BTCUSDT", "1m", "candles_repaired") >= deleted.len() as u64);
    let labels = "{symbol=\"BTCUSDT\",timeframe=\"1m\"}";
    assert!(app.metric(&format!("candled_audit_passes_total{labels}")) >= 1.0);
    assert!(app.metric(&format!("candled_audit_holes_found_total{labels}")) >= 1.0);
    assert!(app.metric(&format!("candled_audit_candles_repaired_total{labels}")) >= deleted.len() as f64);
}

#[test]
fn an_empty_answer_is_rechecked_not_recorded_as_a_gap() {
    let streams = streams_of(&TWO_SYMBOLS, &ONE_AND_FIVE_MINUTES);
    let fake = fake(FakeConfig::default());
    let options = AppOptions {
        symbols: TWO_SYMBOLS.to_vec(),
        timeframes: ONE_AND_FIVE_MINUTES.to_vec(),
        history: 40,
        // A close is overdue only 60 s (exchange time) late: no live repair takes the empty answer meant for the audit.
        exchange_extra: "stall_timeout_secs = 2\nclose_grace_ms = 60000\nstream_stale_secs = 2",
        extra: "[audit]\ninterval_secs = 1\nrecheck_empty_secs = 1\n",
        ..AppOptions::default()
    };
    let app = start(&fake, options, &streams);
    let opens = wait_for_stored(&app, "BTCUSDT", "1m", 40);
    let deleted = &opens[5..15];
    fake.answer_klines_empty_once("BTCUSDT", "1m");
    assert_eq!(delete_closed(&app, "BTCUSDT", "1m", deleted[0], deleted[deleted.len() - 1]), deleted.len());
    wait_for("the empty answer", &app, Duration::from_secs(10), || fake.stats().rest_klines_faked_empty == 1);
    let empty = fake
        .rest_log()
        .into_iter()
        .find(|r| r.path == "/api/v3/klines" && r.status == 200 && r.kline_open_times.is_empty());
    let start_time = empty.as_ref().and_then(|r| r.query.split('&').find_map(|p| p.strip_prefix("startTime=")));
    let start_time: Option<i64> = start_time.and_then(|t| t.parse().ok());
    assert!(start_time.is_some_and(|t| t <= deleted[0]), "the empty answer was for the deleted range: {empty:?}");
    wait_for_restored(&app, "BTCUSDT", "1m", deleted, Duration::from_secs(15));
    assert_streams_complete_through(&fake, &app, &streams, horizon(&fake), CATCH_UP);
    assert_eq!(stream_counter(&app, "BTCUSDT", "1m", "exchange_gap_count"), 0, "one empty answer is no gap");
    assert_eq!(stream_counter(&app, "BTCUSDT", "1m", "missing"), 0);
}

#[test]
fn a_permanent_rest_error_fails_only_that_stream() {
    let symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];
    let healthy = streams_of(&["BTCUSDT", "BNBUSDT"], &ONE_AND_FIVE_MINUTES);
    let fake = fake(FakeConfig::default());
    fake.reject_klines_for("ETHUSDT");
    let options = AppOptions {
        symbols: symbols.to_vec(),
        timeframes: ONE_AND_FIVE_MINUTES.to_vec(),
        history: 20,
        exchange_extra: QUICK_DETECTION,
        extra: "[audit]\ninterval_secs = 1\n",
        ..AppOptions::default()
    };
    let app = start(&fake, options, &healthy);
    let failed = |timeframe: &str| {
        task_row(&app, &format!("subscription:ETHUSDT:{timeframe}")).filter(|task| {
            task["state"] == "failed" && task["last_error"].as_str().is_some_and(|e| e.contains("-1121"))
        })
    };
    wait_for("both ETHUSDT subscriptions failed with -1121", &app, Duration::from_secs(20), || {
        ONE_AND_FIVE_MINUTES.iter().all(|tf| failed(tf).is_some())
    });
    for timeframe in ONE_AND_FIVE_MINUTES {
        let task = failed(timeframe).expect("still failed");
        assert!(task["last_error_at"].as_i64().is_some_and(|at| at > 0), "{task}");
    }
    let sent = klines_requests(&fake, &["symbol=ETHUSDT"]).len();
    assert!(sent >= 1 && fake.stats().rest_klines_rejected >= 1);
    // Several audit intervals and live closes later, the other streams are whole and ETHUSDT was not asked again.
    let later = fake.now_ms() + 3 * FIVE_MINUTES;
    assert_streams_complete_through(&fake, &app, &healthy, later, CATCH_UP);
    assert_eq!(
        klines_requests(&fake, &["symbol=ETHUSDT"]).len(),
        sent,
        "a request for ETHUSDT went out after it failed"
    );
    for timeframe in ONE_AND_FIVE_MINUTES {
        assert!(failed(timeframe).is_some(), "ETHUSDT {timeframe} stays failed");
    }
}

#[test]
fn health_is_degraded_and_names_a_stream_whose_hole_outlives_its_repair_deadline() {
    let streams = streams_of(&TWO_SYMBOLS, &ONE_AND_FIVE_MINUTES);
    let fake = fake(FakeConfig::default());
    let options = two_symbols_audited_every_second();
    let app = start(&fake, options, &streams);
    let opens = wait_for_stored(&app, "ETHUSDT", "1m", 40);
    assert_eq!(app.get("/health").1["status"], "healthy");
    // The hole cannot be repaired: the exchange refuses every ETHUSDT request from now on.
    fake.reject_klines_for("ETHUSDT");
    assert_eq!(delete_closed(&app, "ETHUSDT", "1m", opens[5], opens[14]), 10);
    let names_the_hole = |issues: &Value| {
        issues
            .as_array()
            .is_some_and(|issues| issues.iter().any(|issue| issue["symbol"] == "ETHUSDT" && issue["timeframe"] == "1m"))
    };
    // The repair deadline is 2 × close grace + the audit interval: about 3 s here.
    wait_for("/health degraded, naming ETHUSDT 1m", &app, Duration::from_secs(15), || {
        let (_, health) = app.get("/health");
        health["status"] == "degraded" && names_the_hole(&health["data_issues"])
    });
    let (_, health) = app.get("/health");
    let issues = health["data_issues"].as_array().cloned().unwrap_or_default();
    assert!(issues.iter().all(|issue| issue["symbol"] == "ETHUSDT" && issue["problem"].is_string()), "{health}");
    let btc = streams_of(&["BTCUSDT"], &ONE_AND_FIVE_MINUTES);
    assert_streams_complete_through(&fake, &app, &btc, horizon(&fake), CATCH_UP);
}

/// Environment variable with the soak's duration in seconds (default 600).
const SOAK_SECS_VAR: &str = "CANDLED_SOAK_SECS";

#[test]
#[ignore = "soak: every fault at once for CANDLED_SOAK_SECS (default 600) seconds"]
fn soak_every_fault_at_once() {
    let soak_secs: u64 = std::env::var(SOAK_SECS_VAR).ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];
    let timeframes = ["1m", "5m", "15m"];
    let streams = streams_of(&symbols, &timeframes);
    let fake = fake(pinging());
    fake.set_connection_chaos(Some(2026));
    fake.set_duplicate_events(true);
    fake.rest_rate_limit(3, Duration::from_secs(1));
    let options = AppOptions {
        symbols: symbols.to_vec(),
        timeframes: timeframes.to_vec(),
        history: 100,
        exchange_extra: WATCHDOG_QUIETED_BY_PINGS,
        extra: "[audit]\ninterval_secs = 5\n\n[supervisor]\nbackoff_initial_ms = 50\nbackoff_max_ms = 1000\n",
        ..AppOptions::default()
    };
    let app = start(&fake, options, &streams);
    let began = Instant::now();
    let soak = Duration::from_secs(soak_secs);
    let mut outage_done = false;
    let mut last_throttle = Instant::now();
    for kind in MalformedKind::ALL.into_iter().cycle() {
        if began.elapsed() >= soak {
            break;
        }
        fake.inject_malformed(kind);
        if !outage_done && began.elapsed() >= soak / 2 {
            fake.set_down_for(Duration::from_secs(8));
            outage_done = true;
        }
        if last_throttle.elapsed() >= Duration::from_secs(60) {
            fake.rest_rate_limit(3, Duration::from_secs(1));
            last_throttle = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    fake.set_connection_chaos(None);
    fake.set_duplicate_events(false);
    let checked = assert_streams_complete_through(
        &fake,
        &app,
        &streams,
        fake.now_ms() + 2 * 3 * FIVE_MINUTES,
        Duration::from_secs(180),
    );
    let stats = fake.stats();
    let repairs: u64 = streams.iter().map(|&(s, tf)| stream_counter(&app, s, tf, "repairs")).sum();
    let audit_repaired: u64 = streams.iter().map(|&(s, tf)| stream_counter(&app, s, tf, "candles_repaired")).sum();
    println!(
        "soak: {soak_secs} s at {SPEED}x, {} streams, {checked} closed candles checked, 0 missing, {} reconnects, \
         {} connection replacements, {repairs} repairs, {audit_repaired} candles repaired by the audit, \
         {} chaos draws ({} zombies), {} malformed frames, {} 429s",
        streams.len(),
        app.metric("candled_reconnects_total"),
        app.metric("candled_connection_replacements_total"),
        stats.ws_chaos_draws,
        stats.ws_chaos_zombies,
        stats.ws_malformed_frames_sent,
        stats.rest_429s,
    );
}
