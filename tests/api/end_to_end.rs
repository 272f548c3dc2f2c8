//! The supervisor end to end: config → fake Binance streams → actors → SQLite, with the health endpoints.

use std::time::Duration;

use serde_json::Value;

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{
    AppOptions, assert_closed_candles_exact, open_db, published_closed, served_closed, spawn_app, stored_closed,
    wait_until,
};

const SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];
const TIMEFRAMES: [&str; 3] = ["1m", "5m", "15m"];
const HISTORY: usize = 30;
/// The README's query for the latest 10 values of every indicator of a stream.
const LATEST_10_PER_INDICATOR: &str = "SELECT name, timestamp, value FROM (SELECT name, timestamp, value, ROW_NUMBER() \
     OVER (PARTITION BY name ORDER BY timestamp DESC) AS n FROM indicators WHERE symbol='BTCUSDT' AND timeframe='1m') \
     WHERE n <= 10 ORDER BY name, timestamp DESC;";
/// 300 exchange ms per real ms: a 1m candle closes every 0.2 s, a 15m one every 3 s.
const SPEED: f64 = 300.0;

fn streams() -> impl Iterator<Item = (&'static str, &'static str)> {
    SYMBOLS.into_iter().flat_map(|s| TIMEFRAMES.into_iter().map(move |tf| (s, tf)))
}

#[test]
fn every_published_closed_candle_reaches_sqlite_exactly_once_and_health_reports_every_task() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let mut app = spawn_app(
        &fake,
        AppOptions {
            symbols: SYMBOLS.to_vec(),
            timeframes: TIMEFRAMES.to_vec(),
            history: HISTORY as u32,
            ..AppOptions::default()
        },
    );
    // 6 subscriptions + 6 indicators + storage + backfill + history + audit + 1 connection.
    app.wait_for_log("Registered 17 background task(s)", Duration::from_secs(10));
    app.wait_for_log("Started 17 tasks", Duration::from_secs(10));
    for (symbol, timeframe) in streams() {
        app.wait_for_log(&format!("Subscribed to {symbol} {timeframe} candles"), Duration::from_secs(20));
    }

    // Run until every stream has seen at least two live closes, and everything published so far is stored.
    let db_path = app.db_path.clone();
    let caught_up = wait_until(Duration::from_secs(60), || {
        let db = open_db(&db_path);
        streams()
            .all(|(symbol, timeframe)| {
                let live = fake.published_closed_open_times(&crate::helpers::stream_name(symbol, timeframe));
                live.len() >= 2
                    && published_closed(&fake, symbol, timeframe).is_subset(&stored_closed(&db, symbol, timeframe))
            })
            .then_some(())
    });
    assert!(caught_up.is_some(), "not every published candle was stored; log:\n{}", app.log_text());

    let (status, health) = app.get("/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["tasks"]["total"], 17, "{health}");
    assert_eq!(health["tasks"]["running"], 16, "{health}");
    assert_eq!(health["data_issues"], serde_json::json!([]), "{health}");
    assert_eq!(health["tasks"]["finished"], 1, "the history task ran once and finished: {health}");
    assert_eq!(health["tasks"]["failed"], 0, "{health}");
    assert!(health["mailbox_depth"].is_u64(), "{health}");

    let (status, body) = app.get("/api/v1/tasks/status");
    assert_eq!(status, 200);
    let tasks = body["tasks"].as_array().expect("a task list");
    assert_eq!(tasks.len(), 17);
    let of_kind = |kind: &str| tasks.iter().filter(|t| t["kind"] == kind).collect::<Vec<&Value>>();
    let subscriptions = of_kind("subscription");
    assert_eq!(subscriptions.len(), 6);
    for (symbol, timeframe) in streams() {
        let task = subscriptions
            .iter()
            .find(|t| t["symbol"] == symbol && t["timeframe"] == timeframe)
            .unwrap_or_else(|| panic!("no subscription task for {symbol} {timeframe}: {body}"));
        assert_eq!(task["name"], format!("subscription:{symbol}:{timeframe}"));
        assert_eq!(task["state"], "running");
        assert_eq!(task["priority"], "high");
        assert_eq!(task["restart_policy"], "budget(5 in 60s)");
        assert!(task["messages_handled"].as_u64().unwrap() > 0, "{task}");
        assert!(task["last_message_ms"].as_i64().is_some(), "{task}");
        assert!(task["mailbox_capacity"].as_u64().unwrap() > 0, "{task}");
        assert!(task["mailbox_depth"].is_u64(), "{task}");
    }
    assert_eq!(of_kind("indicator").len(), 6);
    let connection = of_kind("connection")[0];
    assert_eq!((connection["state"].as_str(), connection["priority"].as_str()), (Some("running"), Some("critical")));
    assert_eq!(connection["restart_policy"], "always");
    assert_eq!(connection["metadata"]["streams"], "6");
    assert!(connection["last_message_ms"].as_i64().is_some(), "frames stamp the connection: {connection}");
    let history = of_kind("history")[0];
    assert_eq!((history["state"].as_str(), history["auto_restart"].as_bool()), (Some("finished"), Some(false)));
    assert_eq!(history["timeout_secs"], 300, "a run-once task has a time limit: {history}");
    assert!(subscriptions[0]["timeout_secs"].is_null(), "a restarting task has none");
    assert_eq!(of_kind("storage")[0]["state"], "running");
    let audit = of_kind("audit")[0];
    assert_eq!((audit["state"].as_str(), audit["priority"].as_str()), (Some("running"), Some("high")), "{audit}");
    assert!(tasks.iter().all(|t| t.get("last_error").is_some() && t.get("last_error_at").is_some()), "{body}");

    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", log.join("\n"));

    let db = open_db(&db_path);
    for (symbol, timeframe) in streams() {
        let stored = assert_closed_candles_exact(&fake, &db, symbol, timeframe);
        // History included: the first stored candle is the first the history load served, `HISTORY` of them.
        let history = served_closed(&fake, symbol, timeframe);
        assert!(history.len() >= HISTORY, "{symbol} {timeframe}: only {} served over REST", history.len());
        assert_eq!(stored.first(), history.first(), "{symbol} {timeframe}: history start");
        let published = published_closed(&fake, symbol, timeframe);
        assert!(published.iter().all(|t| stored.binary_search(t).is_ok()), "{symbol} {timeframe}: lost a candle");
    }
    let in_progress: i64 = db.query_row("SELECT COUNT(*) FROM candles WHERE is_closed = 0", [], |r| r.get(0)).unwrap();
    assert!(in_progress <= 6, "at most one in-progress candle per stream, got {in_progress}");

    // The seed's own queries, as users run them, through the sqlite3 command-line tool.
    let sqlite3 = |query: &str| {
        let output = std::process::Command::new("sqlite3").arg(&db_path).arg(query).output();
        let output = output.expect("the sqlite3 tool (.ci/run installs it)");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let count: i64 = db.query_row("SELECT COUNT(*) FROM candles WHERE symbol='BTCUSDT'", [], |r| r.get(0)).unwrap();
    assert_eq!(sqlite3("SELECT COUNT(*) FROM candles WHERE symbol='BTCUSDT';").trim(), count.to_string());
    let latest = sqlite3("SELECT symbol, timeframe, timestamp FROM candles ORDER BY timestamp DESC LIMIT 10;");
    assert_eq!(latest.lines().count(), 10, "{latest}");
    assert!(latest.lines().all(|line| line.split('|').count() == 3), "{latest}");
    // The README's "latest 10 values of every indicator": 10 rows for each of the 11 default outputs.
    let per_indicator = sqlite3(LATEST_10_PER_INDICATOR);
    let mut names: Vec<&str> = per_indicator.lines().filter_map(|line| line.split('|').next()).collect();
    assert_eq!(names.len(), 110, "{per_indicator}");
    names.dedup();
    assert_eq!(names.len(), 11, "{per_indicator}");
}
