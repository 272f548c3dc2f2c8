//! Nothing lost: under each fault the fake exchange can inject, the final `candles` table equals the exchange's
//! ground truth for the whole window, exactly once per key, and the counters show that the fault really happened.

use std::time::Duration;

use crate::fake_exchange::{FakeConfig, FakeExchange, MalformedKind};
use crate::helpers::{
    AppOptions, TestApp, assert_streams_complete_through, open_db, served_closed, spawn_app, spawn_in, stored_closed,
    stream_row, wait_until,
};

const SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];
const TIMEFRAMES: [&str; 2] = ["1m", "5m"];
/// 300 exchange ms per real ms: a 1m candle closes every 0.2 s, a 5m one every second.
const SPEED: f64 = 300.0;
const FIVE_MINUTES: i64 = 300_000;
/// How long a test waits for the table to catch up with the exchange.
const CATCH_UP: Duration = Duration::from_secs(60);

fn streams() -> impl Iterator<Item = (&'static str, &'static str)> {
    SYMBOLS.into_iter().flat_map(|s| TIMEFRAMES.into_iter().map(move |tf| (s, tf)))
}

fn fake(config: FakeConfig) -> FakeExchange {
    FakeExchange::start(FakeConfig { speed: SPEED, ..config })
}

/// Quick detection, so that faults resolve within a test's seconds: the watchdog closes a connection after 2 s
/// without a frame, a stream is stale after 2 s of silence, and a close is overdue 1 s (exchange time) late.
fn options(extra: &'static str) -> AppOptions {
    AppOptions {
        symbols: SYMBOLS.to_vec(),
        timeframes: TIMEFRAMES.to_vec(),
        history: 20,
        exchange_extra: "stall_timeout_secs = 2\nclose_grace_ms = 1000\nstream_stale_secs = 2",
        extra,
        ..AppOptions::default()
    }
}

const FAST_RESTARTS: &str = "[supervisor]\nbackoff_initial_ms = 50\nbackoff_max_ms = 1000\n";

fn start(fake: &FakeExchange, extra: &'static str) -> TestApp {
    let mut app = spawn_app(fake, options(extra));
    for (symbol, timeframe) in streams() {
        app.wait_for_log(&format!("Subscribed to {symbol} {timeframe} candles"), Duration::from_secs(20));
    }
    app
}

/// An exchange time two 5m candles from now: a horizon the table must reach after a fault ends.
fn horizon(fake: &FakeExchange) -> i64 {
    fake.now_ms() + 2 * FIVE_MINUTES
}

/// Waits until every stream holds every closed candle of the exchange from its first stored one up to `horizon`,
/// then asserts the whole stored window equals the exchange's candles, field by field, with no hole.
fn assert_complete_through(fake: &FakeExchange, app: &TestApp, horizon: i64) {
    let streams: Vec<_> = streams().collect();
    assert_streams_complete_through(fake, app, &streams, horizon, CATCH_UP);
}

fn wait_for(what: &str, app: &TestApp, mut probe: impl FnMut() -> bool) {
    let happened = wait_until(CATCH_UP, || probe().then_some(()));
    assert!(happened.is_some(), "{what} did not happen; log:\n{}", app.log_text());
}

#[test]
fn abrupt_tcp_resets_every_few_frames_lose_nothing() {
    let fake = fake(FakeConfig::default());
    let app = start(&fake, FAST_RESTARTS);
    fake.drop_connections_after_frames(Some(40));
    wait_for("three abrupt resets", &app, || fake.stats().ws_abrupt_drops >= 3);
    fake.drop_connections_after_frames(None);
    assert_complete_through(&fake, &app, horizon(&fake));
    assert!(app.metric("candled_reconnects_total") >= 3.0);
    assert!(stream_row(&app, "BTCUSDT", "1m")["repairs"].as_u64().unwrap() >= 3);
}

#[test]
fn a_silent_stall_with_the_socket_open_is_detected_and_repaired() {
    let fake = fake(FakeConfig::default());
    let mut app = start(&fake, FAST_RESTARTS);
    fake.stall_for(Duration::from_secs(5));
    app.wait_for_log("no frame for", Duration::from_secs(10));
    assert!(fake.stats().ws_stalled_connections >= 1);
    assert_complete_through(&fake, &app, horizon(&fake));
    assert!(app.metric("candled_reconnects_total") >= 1.0);
}

#[test]
fn server_shutdown_and_close_frames_cause_reconnects() {
    let fake = fake(FakeConfig::default());
    let mut app = start(&fake, FAST_RESTARTS);
    fake.send_server_shutdown(Duration::from_millis(500));
    app.wait_for_log("server shutdown announced", Duration::from_secs(10));
    wait_for("a reconnect after serverShutdown", &app, || fake.stats().ws_connections_accepted >= 2);
    fake.send_close(1001, "going away");
    app.wait_for_log("closed by the exchange", Duration::from_secs(10));
    wait_for("a reconnect after the close frame", &app, || fake.stats().ws_connections_accepted >= 3);
    assert_eq!(fake.stats().ws_server_shutdowns_sent, 1);
    assert_complete_through(&fake, &app, horizon(&fake));
}

#[test]
fn pings_are_answered_before_the_pong_deadline() {
    // Pings every 300 ms (Binance: every 20 s) ask for 3.3 pongs a second: under the 5 messages per second.
    let fake = fake(FakeConfig {
        ping_interval: Duration::from_millis(300),
        pong_timeout: Duration::from_millis(1000),
        ..FakeConfig::default()
    });
    let app = start(&fake, "");
    wait_for("20 pongs", &app, || fake.stats().ws_pongs_received >= 20);
    let stats = fake.stats();
    assert_eq!(stats.ws_pong_deadline_closes, 0);
    assert_eq!(stats.ws_connections_accepted, 1, "the connection never had to be reopened");
    assert_eq!(stats.ws_rate_limit_closes, 0, "pongs count towards the 5 messages per second");
    assert_complete_through(&fake, &app, horizon(&fake));
}

#[test]
fn malformed_frames_are_counted_logged_dropped_and_never_stored() {
    let fake = fake(FakeConfig::default());
    let mut app = start(&fake, FAST_RESTARTS);
    for (sent, kind) in MalformedKind::ALL.into_iter().enumerate() {
        fake.inject_malformed(kind);
        wait_for("the malformed frame", &app, || fake.stats().ws_malformed_frames_sent > sent as u64);
    }
    // Every malformed frame is a corrupted copy of a real closed event: storing one would break the table.
    assert_complete_through(&fake, &app, horizon(&fake));
    for reason in [
        "invalid_json",
        "wrong_type",
        "non_finite",
        "negative",
        "non_numeric",
        "high_below_low",
        "outside_range",
        "binary",
    ] {
        let count = app.metric(&format!("candled_frames_rejected_total{{reason=\"{reason}\"}}"));
        assert!(count >= 1.0, "no {reason} frame was counted");
    }
    assert!(app.metric("candled_frames_rejected_total{reason=\"outside_range\"}") >= 2.0);
    app.wait_for_log("dropped a malformed frame (not valid JSON): {", Duration::from_secs(1));
    // The oversized frame (about 2 MiB, over the 1 MiB limit) closes the connection; the backfill covers it.
    app.wait_for_log("connection error: Space limit exceeded", Duration::from_secs(10));
    let (_, body) = app.get("/api/v1/streams");
    assert!(body["rejected_frames"]["invalid_json"].as_u64().unwrap() >= 1, "{body}");
}

#[test]
fn duplicate_stale_and_out_of_order_events_change_nothing() {
    let fake = fake(FakeConfig::default());
    let app = start(&fake, "");
    fake.set_duplicate_events(true);
    wait_for("duplicates, stale updates and reordering", &app, || {
        let stats = fake.stats();
        stats.ws_duplicate_events_sent >= 10 && stats.ws_out_of_order_events_sent >= 10
    });
    fake.set_duplicate_events(false);
    assert_complete_through(&fake, &app, horizon(&fake));
    assert!(app.metric("candled_stale_updates_ignored_total") >= 10.0);
    for (symbol, timeframe) in streams() {
        assert_eq!(stream_row(&app, symbol, timeframe)["revisions"], 0, "an identical duplicate is no revision");
    }
    let rebuilds = app.log_text().matches("indicators rebuilt from").count();
    assert_eq!(rebuilds, 4, "only the start-up rebuilds: an identical replay changes no indicator");
}

#[test]
fn rest_429_is_honoured_so_no_418_ever_comes() {
    let fake = fake(FakeConfig::default());
    fake.rest_rate_limit(3, Duration::from_secs(2));
    let app = start(&fake, "");
    assert_complete_through(&fake, &app, horizon(&fake));
    let stats = fake.stats();
    assert!(stats.rest_429s >= 1, "the fault did not fire");
    assert_eq!(stats.rest_418s, 0, "a request went out before Retry-After expired");
    assert_eq!(app.metric("candled_rest_requests_total{status=\"429\"}"), stats.rest_429s as f64);
}

#[test]
fn the_exchange_down_for_a_while_then_back_loses_nothing() {
    let fake = fake(FakeConfig::default());
    let app = start(&fake, FAST_RESTARTS);
    fake.set_down_for(Duration::from_secs(3));
    wait_for("a refused reconnect while down", &app, || fake.stats().ws_refused_while_down >= 1);
    assert_complete_through(&fake, &app, horizon(&fake));
    assert!(fake.stats().rest_503s + fake.stats().ws_refused_while_down >= 1);
    assert!(stream_row(&app, "ETHUSDT", "5m")["repairs"].as_u64().unwrap() >= 1);
}

#[test]
fn an_exchange_down_at_start_still_yields_the_whole_history_once_it_is_back() {
    let fake = fake(FakeConfig::default());
    // Long enough that the first history load fails after its own retries.
    fake.set_down_for(Duration::from_secs(15));
    let mut app = spawn_app(&fake, options(FAST_RESTARTS));
    app.wait_for_log("history load failed, retrying", Duration::from_secs(30));
    for (symbol, timeframe) in streams() {
        app.wait_for_log(&format!("Subscribed to {symbol} {timeframe} candles"), Duration::from_secs(30));
    }
    assert_complete_through(&fake, &app, horizon(&fake));
    let db = open_db(&app.db_path);
    for (symbol, timeframe) in streams() {
        let served = served_closed(&fake, symbol, timeframe);
        assert!(served.len() >= 20, "{symbol} {timeframe}: the history arrived late but whole: {}", served.len());
        assert!(served.is_subset(&stored_closed(&db, symbol, timeframe)));
    }
    // The state follows the truth: failed while a load had failed, finished once every stream's history landed.
    app.wait_for_log("every stream's history has landed after all, the history task is finished", CATCH_UP);
    let (_, body) = app.get("/api/v1/tasks/status");
    let history = body["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "history").cloned().unwrap();
    assert_eq!(history["state"], "finished", "{history}");
    let cause = history["last_error"].as_str().unwrap_or_default();
    assert!(cause.contains("503") && history["last_error_at"].is_i64(), "the failure keeps its cause: {history}");
    wait_for("health to recover", &app, || app.get("/health").1["status"] == "healthy");
}

#[test]
fn closes_that_never_arrive_are_fetched_after_their_deadline() {
    let fake = fake(FakeConfig::default());
    let app = start(&fake, "");
    fake.set_drop_closed_events(true);
    let end = horizon(&fake);
    // With every x:true withheld, only the close deadline can bring these candles in.
    assert_complete_through(&fake, &app, end);
    assert!(fake.stats().ws_closed_events_withheld >= 10);
    assert!(stream_row(&app, "BTCUSDT", "1m")["missed_close_deadlines"].as_u64().unwrap() >= 1);
}

#[test]
fn a_stream_silent_on_a_live_connection_turns_stale_then_is_resubscribed_and_backfilled() {
    let fake = fake(FakeConfig::default());
    let app = start(&fake, "[supervisor.tasks]\nsubscription = { priority = \"critical\" }\n");
    fake.mute_stream("btcusdt@kline_1m", false);
    wait_for("a 503 for the stale critical stream", &app, || app.get("/health").0 == 503);
    let (_, body) = app.get("/api/v1/tasks/status");
    let task = body["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "subscription:BTCUSDT:1m").cloned();
    assert_eq!(task.unwrap()["state"], "stale");
    assert_eq!(stream_row(&app, "BTCUSDT", "1m")["stale"], true);
    wait_for("a resubscribe", &app, || fake.stats().ws_unsubscribe_messages_received >= 1);
    fake.unmute_stream("btcusdt@kline_1m");
    wait_for("healthy again", &app, || app.get("/health").0 == 200);
    assert_complete_through(&fake, &app, horizon(&fake));
    assert!(fake.stats().ws_muted_events_withheld >= 1);
    assert!(stream_row(&app, "BTCUSDT", "1m")["stale_episodes"].as_u64().unwrap() >= 1);
    assert_eq!(fake.stats().ws_connections_accepted, 1, "the connection itself stayed up");
}

#[test]
fn resubscribing_brings_back_a_stream_the_exchange_stopped_sending() {
    let fake = fake(FakeConfig::default());
    let app = start(&fake, "");
    fake.mute_stream("ethusdt@kline_5m", true);
    wait_for("the resubscribe that unmutes it", &app, || fake.stats().ws_streams_unmuted_by_subscribe >= 1);
    assert_complete_through(&fake, &app, horizon(&fake));
    assert_eq!(fake.stats().ws_connections_accepted, 1);
}

#[test]
fn connections_rotate_make_before_break_without_a_gap_or_a_reconnect() {
    let fake = fake(FakeConfig::default());
    let mut app = spawn_app(&fake, AppOptions { exchange_extra: "rotate_after_secs = 1", ..options("") });
    app.wait_for_log("Subscribed to ETHUSDT 5m candles", Duration::from_secs(20));
    wait_for("three rotations", &app, || app.log_text().matches("rotated to the new connection").count() >= 3);
    assert_complete_through(&fake, &app, horizon(&fake));
    assert!(fake.stats().ws_connections_accepted >= 4);
    assert_eq!(app.metric("candled_reconnects_total"), 0.0, "a rotation is not a reconnect");
    let subscribed = app.log_text().matches("Subscribed to BTCUSDT 1m candles").count();
    assert_eq!(subscribed, 1, "the stream never went down, so it never needed a repair");
}

#[test]
fn kill_9_mid_stream_then_a_restart_restores_every_candle() {
    let fake = fake(FakeConfig::default());
    let app = start(&fake, "");
    wait_for("a few live closes", &app, || fake.published_closed_open_times("ethusdt@kline_5m").len() >= 2);
    let killed_at = fake.now_ms();
    let dir = app.kill_9();
    // Let the exchange close candles while candled is down: nothing replays them over the WebSocket.
    let down = wait_until(Duration::from_secs(10), || (fake.now_ms() > killed_at + 2 * FIVE_MINUTES).then_some(()));
    assert!(down.is_some());
    let mut app = spawn_in(dir);
    app.wait_for_log("Subscribed to BTCUSDT 1m candles", Duration::from_secs(20));
    assert_complete_through(&fake, &app, horizon(&fake));
    let integrity: String = app.db().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let downtime_candles = fake.closed_candles("BTCUSDT", "1m", killed_at, killed_at + 2 * FIVE_MINUTES);
    assert!(downtime_candles.len() >= 9, "the test must span real downtime");
}
