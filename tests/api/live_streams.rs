//! The live stream set: `config.toml` edited while candled runs. Added streams reach SQLite within 5 s on the
//! connection that has room, removed ones are unsubscribed and leave every endpoint, a new indicator set is
//! rebuilt, and the streams the edit does not touch see no reconnect, no gap and no repeated history.

use std::time::{Duration, Instant};

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{
    AppOptions, TestApp, assert_streams_complete_through, klines_requests, open_db, spawn_app, stored_closed, task_row,
    wait_until,
};

/// 60 exchange ms per real ms: a 1m candle closes every second, a 5m one every 5 s.
const SPEED: f64 = 60.0;
/// How soon an edit must show: the bound.
const APPLIED_WITHIN: Duration = Duration::from_secs(5);

fn options(symbols: &[&'static str], timeframes: &[&'static str], extra: &'static str) -> AppOptions {
    AppOptions { symbols: symbols.to_vec(), timeframes: timeframes.to_vec(), history: 20, extra, ..Default::default() }
}

fn start(fake: &FakeExchange, options: AppOptions) -> TestApp {
    let streams: Vec<(String, String)> = (options.symbols.iter())
        .flat_map(|s| options.timeframes.iter().map(move |t| (s.to_string(), t.to_string())))
        .collect();
    let mut app = spawn_app(fake, options);
    for (symbol, timeframe) in streams {
        app.wait_for_log(&format!("Subscribed to {symbol} {timeframe} candles"), Duration::from_secs(20));
    }
    app
}

#[test]
fn an_added_symbol_and_timeframe_reach_sqlite_within_5s_on_the_same_connection() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let app = start(&fake, options(&["BTCUSDT"], &["1m"], ""));
    wait_until(Duration::from_secs(10), || (!stored_closed(&app.db(), "BTCUSDT", "1m").is_empty()).then_some(()))
        .expect("BTCUSDT 1m stored");
    let requests_before = klines_requests(&fake, &["symbol=BTCUSDT", "interval=1m"]).len();

    let edited = Instant::now();
    app.edit_config(&fake, &options(&["BTCUSDT", "ETHUSDT"], &["1m", "5m"], ""));
    let added = [("ETHUSDT", "1m"), ("BTCUSDT", "5m"), ("ETHUSDT", "5m")];
    let stored = wait_until(APPLIED_WITHIN, || {
        let db = open_db(&app.db_path);
        added.iter().all(|(symbol, timeframe)| !stored_closed(&db, symbol, timeframe).is_empty()).then_some(())
    });
    assert!(
        stored.is_some(),
        "the added streams' candles did not reach SQLite within {APPLIED_WITHIN:?} of the edit; log:\n{}",
        app.log_text()
    );
    let applied_in = edited.elapsed();

    // One connection carries all four: the new streams were SUBSCRIBEd on it, nothing reconnected.
    let stats = fake.stats();
    assert_eq!(stats.ws_connections_accepted, 1, "{stats:?}");
    assert_eq!(stats.ws_streams_per_connection, [4], "{stats:?}");
    assert_eq!(app.count_log_lines("Subscribed to BTCUSDT 1m candles"), 1, "the untouched stream was re-announced");
    assert!(task_row(&app, "subscription:ETHUSDT:5m").is_some() && task_row(&app, "indicator:BTCUSDT:5m").is_some());

    // Every stream equals the exchange through a later close; the untouched one has no gap and no repeated history.
    let horizon = fake.now_ms();
    let mut streams = vec![("BTCUSDT", "1m")];
    streams.extend(added);
    assert_streams_complete_through(&fake, &app, &streams, horizon, Duration::from_secs(20));
    assert_eq!(
        klines_requests(&fake, &["symbol=BTCUSDT", "interval=1m"]).len(),
        requests_before,
        "the untouched stream fetched again"
    );
    println!("the added streams reached SQLite {} ms after the edit", applied_in.as_millis());
}

#[test]
fn a_removed_symbol_is_unsubscribed_leaves_every_endpoint_and_continues_from_its_candles_when_back() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let both = options(&["BTCUSDT", "ETHUSDT"], &["1m"], "");
    let app = start(&fake, both);
    let has_eth = |app: &TestApp| {
        let (_, streams) = app.get("/api/v1/streams");
        let listed = streams["streams"].as_array().is_some_and(|s| s.iter().any(|r| r["symbol"] == "ETHUSDT"));
        let (_, metrics) = app.get("/metrics");
        let in_metrics = metrics.as_str().unwrap_or_default().contains("symbol=\"ETHUSDT\"");
        let tasks =
            task_row(app, "subscription:ETHUSDT:1m").is_some() || task_row(app, "indicator:ETHUSDT:1m").is_some();
        (listed, in_metrics, tasks)
    };
    assert_eq!(has_eth(&app), (true, true, true));
    wait_until(Duration::from_secs(10), || (stored_closed(&app.db(), "ETHUSDT", "1m").len() >= 3).then_some(()))
        .expect("ETHUSDT stored");

    app.edit_config(&fake, &options(&["BTCUSDT"], &["1m"], ""));
    let gone = wait_until(APPLIED_WITHIN, || {
        let stats = fake.stats();
        (has_eth(&app) == (false, false, false)
            && stats.ws_unsubscribe_messages_received >= 1
            && stats.ws_streams_per_connection == [1])
        .then_some(stats)
    });
    let stats = gone.unwrap_or_else(|| {
        panic!("ETHUSDT still somewhere: {:?}, fake: {:?}\nlog:\n{}", has_eth(&app), fake.stats(), app.log_text())
    });
    assert_eq!(stats.ws_connections_accepted, 1, "{stats:?}");
    let kept = stored_closed(&app.db(), "ETHUSDT", "1m");
    assert!(kept.len() >= 3, "the removed stream's stored candles stay");

    // Back again: it continues from its stored candles, and fills what closed while it was away.
    std::thread::sleep(Duration::from_secs(2));
    let away_until = fake.now_ms();
    app.edit_config(&fake, &options(&["BTCUSDT", "ETHUSDT"], &["1m"], ""));
    app.wait_for_log_count("Subscribed to ETHUSDT 1m candles", 2, APPLIED_WITHIN);
    let horizon = fake.now_ms().max(away_until);
    assert_streams_complete_through(
        &fake,
        &app,
        &[("BTCUSDT", "1m"), ("ETHUSDT", "1m")],
        horizon,
        Duration::from_secs(20),
    );
    let now = stored_closed(&app.db(), "ETHUSDT", "1m");
    assert!(kept.is_subset(&now) && now.first() == kept.first(), "it continued from its stored candles");
}

#[test]
fn a_new_indicator_set_is_rebuilt_for_every_stream() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let app = start(
        &fake,
        options(
            &["BTCUSDT"],
            &["1m"],
            "[indicators]\nsma = [3]\nema = []\nrsi = []\nmacd = []\nbollinger = []\natr = []\n",
        ),
    );
    let names = |app: &TestApp| -> Vec<String> {
        let db = app.db();
        let mut stmt = db.prepare("SELECT DISTINCT name FROM indicators ORDER BY 1").expect("prepare");
        stmt.query_map([], |row| row.get(0)).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    wait_until(Duration::from_secs(10), || (names(&app) == ["sma_3"]).then_some(())).expect("sma_3 stored");

    app.edit_config(
        &fake,
        &options(
            &["BTCUSDT"],
            &["1m"],
            "[indicators]\nsma = [3]\nema = [4]\nrsi = []\nmacd = []\nbollinger = []\natr = []\n",
        ),
    );
    let rebuilt = wait_until(APPLIED_WITHIN, || {
        let db = app.db();
        let counts: (i64, i64) = db
            .query_row(
                "SELECT (SELECT COUNT(*) FROM indicators WHERE name = 'ema_4'),
                        (SELECT COUNT(*) FROM candles WHERE is_closed = 1 AND symbol = 'BTCUSDT')",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("count");
        // Every closed candle past the warm-up has its new value, the history's included.
        (counts.0 >= counts.1 - 3 && counts.0 > 0).then_some(counts)
    });
    assert!(rebuilt.is_some(), "ema_4 was not rebuilt over the stored candles; log:\n{}", app.log_text());
    assert_eq!(names(&app), ["ema_4", "sma_3"]);
    let (_, provisional) = app.get("/api/v1/indicators?symbol=BTCUSDT&timeframe=1m&limit=1");
    assert!(provisional.to_string().contains("ema_4"), "{provisional}");
    assert_eq!(task_row(&app, "indicator:BTCUSDT:1m").expect("listed")["restarts"], 0, "a replacement is no restart");
}

#[test]
fn supervisor_and_audit_edits_apply_to_the_next_restart_and_the_next_pass() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let before = "[audit]\ninterval_secs = 300\n\n[supervisor]\nrestart_budget = 5\nbackoff_initial_ms = 50\n";
    let after = "[audit]\ninterval_secs = 1\n\n[supervisor]\nrestart_budget = 1\nbackoff_initial_ms = 50\n";
    let app = start(&fake, options(&["BTCUSDT"], &["1m"], before));
    let task = "subscription:BTCUSDT:1m";
    let passes = |app: &TestApp| crate::helpers::stream_row(app, "BTCUSDT", "1m")["audit_passes"].as_u64().unwrap_or(0);
    // The first pass runs once the history has landed; the next one is 300 s away.
    wait_until(Duration::from_secs(10), || (passes(&app) >= 1).then_some(())).expect("a first audit pass");
    assert_eq!(task_row(&app, task).expect("listed")["restart_policy"], "budget(5 in 60s)");

    app.edit_config(&fake, &options(&["BTCUSDT"], &["1m"], after));
    let policy =
        wait_until(APPLIED_WITHIN, || task_row(&app, task).filter(|row| row["restart_policy"] == "budget(1 in 60s)"));
    assert!(policy.is_some(), "the new policy is not shown: {:?}", task_row(&app, task));
    // The audit now passes every second, not every 300 s: two more passes within 10 s prove it with room for a
    // loaded machine, where a pass itself can take a while.
    let counted = passes(&app);
    let more = wait_until(Duration::from_secs(10), || (passes(&app) >= counted + 2).then_some(()));
    assert!(more.is_some(), "no pass a second after the edit: {} then {}", counted, passes(&app));

    // The next restarts follow the new budget: one restart, then the task stays down, marked failed.
    let stop = |app: &TestApp| {
        let url = format!("http://127.0.0.1:{}/api/v1/test/tasks/{task}/stop", app.port);
        reqwest::blocking::Client::new().post(url).send().expect("the fault-injection route").status().as_u16()
    };
    assert_eq!(stop(&app), 204);
    wait_until(Duration::from_secs(10), || {
        task_row(&app, task).filter(|row| row["restarts"] == 1 && row["state"] == "running")
    })
    .expect("restarted once");
    assert_eq!(stop(&app), 204);
    let failed = wait_until(Duration::from_secs(10), || task_row(&app, task).filter(|row| row["state"] == "failed"));
    assert!(failed.is_some(), "a second stop within the new budget of 1 did not fail it: {:?}", task_row(&app, task));
}
