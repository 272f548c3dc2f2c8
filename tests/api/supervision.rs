//! Every task supervised: a task whose actor panics or stops is noticed, counted and restarted under its policy, the
//! holders of its address reach the new actor, and nothing is lost (the audit repairs what a panicked storage had
//! not committed). A task whose restart budget is spent stays down, marked failed with the reason.

use std::time::Duration;

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, TestApp, assert_streams_complete_through, spawn_app, task_row, wait_until};

/// 300 exchange ms per real ms: a 1m candle closes every 0.2 s, a 5m one every second.
const SPEED: f64 = 300.0;
const FIVE_MINUTES: i64 = 300_000;
const STREAMS: [(&str, &str); 2] = [("BTCUSDT", "1m"), ("BTCUSDT", "5m")];
/// An audit pass every second, and quick restarts.
const SUPERVISED: &str = "[audit]\ninterval_secs = 1\n\n[supervisor]\nbackoff_initial_ms = 50\nbackoff_max_ms = 1000\n";

fn start(fake: &FakeExchange, extra: &'static str) -> TestApp {
    let options =
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m", "5m"], history: 30, extra, ..Default::default() };
    let mut app = spawn_app(fake, options);
    for (symbol, timeframe) in STREAMS {
        app.wait_for_log(&format!("Subscribed to {symbol} {timeframe} candles"), Duration::from_secs(20));
    }
    app
}

/// `POST /api/v1/test/tasks/{task}/{fault}`; returns the status code.
fn inject(app: &TestApp, task: &str, fault: &str) -> u16 {
    let url = format!("http://127.0.0.1:{}/api/v1/test/tasks/{task}/{fault}", app.port);
    reqwest::blocking::Client::new().post(url).send().expect("the fault-injection route answers").status().as_u16()
}

/// Waits until `task` shows at least `restarts` restarts and `state`; returns its row.
fn wait_for_task(app: &TestApp, task: &str, restarts: u64, state: &str) -> serde_json::Value {
    let row = wait_until(Duration::from_secs(15), || {
        task_row(app, task).filter(|row| row["restarts"].as_u64() >= Some(restarts) && row["state"] == state)
    });
    row.unwrap_or_else(|| {
        panic!(
            "{task} did not reach {state} with {restarts} restart(s): {:?}\nlog:\n{}",
            task_row(app, task),
            app.log_text()
        )
    })
}

#[test]
fn a_panicked_or_stopped_task_is_restarted_counted_and_nothing_is_lost() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let mut app = start(&fake, SUPERVISED);
    assert_eq!(inject(&app, "no-such-task", "panic"), 404);
    assert_eq!(inject(&app, "storage", "explode"), 400);

    let faults = [
        ("subscription:BTCUSDT:1m", "panic"),
        ("indicator:BTCUSDT:1m", "panic"),
        ("connection-0", "panic"),
        ("storage", "panic"),
        ("backfill", "stop"),
    ];
    for (task, fault) in faults {
        let subscribed_before = app.count_log_lines("Subscribed to BTCUSDT 1m candles");
        assert_eq!(task_row(&app, task).expect("listed")["restarts"], 0, "{task}");
        assert_eq!(inject(&app, task, fault), 204, "{task}");
        app.wait_for_log(&format!("{task}: the task's actor panicked or stopped"), Duration::from_secs(10));
        app.wait_for_log(&format!("{task}: restarted"), Duration::from_secs(10));
        wait_for_task(&app, task, 1, "running");
        if task.starts_with("subscription") || task.starts_with("connection") {
            // The new subscription (or every stream of the new connection) is told it is live, and repairs.
            let announced = wait_until(Duration::from_secs(15), || {
                (app.count_log_lines("Subscribed to BTCUSDT 1m candles") > subscribed_before).then_some(())
            });
            assert!(announced.is_some(), "{task}: the stream was not live again; log:\n{}", app.log_text());
        }
    }

    // Everything the exchange closed meanwhile, and after, is in the table exactly.
    let horizon = fake.now_ms() + 2 * FIVE_MINUTES;
    assert_streams_complete_through(&fake, &app, &STREAMS, horizon, Duration::from_secs(30));
    let (_, health) = app.get("/health");
    assert_eq!(health["tasks"]["failed"], 0, "{health}");
    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", log.join("\n"));
    assert!(!log.iter().any(|line| line.contains("restart failed")), "log:\n{}", log.join("\n"));
}

#[test]
fn a_task_whose_restart_budget_is_spent_stays_down_marked_failed() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let mut app = start(
        &fake,
        "[supervisor]\nrestart_budget = 1\nrestart_window_secs = 600\nbackoff_initial_ms = 50\nbackoff_max_ms = 1000\n",
    );
    let task = "indicator:BTCUSDT:5m";
    assert_eq!(inject(&app, task, "panic"), 204);
    wait_for_task(&app, task, 1, "running");
    assert_eq!(inject(&app, task, "panic"), 204);
    let failed = wait_for_task(&app, task, 2, "failed");
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("panicked or stopped") && error.contains("budget(1 in 600s)"), "{failed}");
    // It stays down: given up once, restarted only the first time; the other streams' tasks are untouched.
    app.wait_for_log(
        &format!("{task}: the task's actor panicked or stopped, and its restart policy"),
        Duration::from_secs(5),
    );
    assert_eq!(app.count_log_lines(&format!("{task}: restarted")), 1, "log:\n{}", app.log_text());
    assert_eq!(task_row(&app, task).expect("listed")["state"], "failed");
    assert_eq!(task_row(&app, "indicator:BTCUSDT:1m").expect("listed")["restarts"], 0);
    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", log.join("\n"));
}

#[test]
fn a_subscription_restarted_before_its_history_landed_loads_and_reports_it() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    // Long enough that the first history loads fail and are being retried when the subscription panics.
    fake.set_down_for(Duration::from_secs(15));
    let options = AppOptions {
        symbols: vec!["BTCUSDT"],
        timeframes: vec!["1m", "5m"],
        history: 30,
        extra: SUPERVISED,
        ..Default::default()
    };
    let mut app = spawn_app(&fake, options);
    app.wait_for_log("history load failed, retrying", Duration::from_secs(30));
    let task = "subscription:BTCUSDT:1m";
    assert_eq!(inject(&app, task, "panic"), 204);
    wait_for_task(&app, task, 1, "running");

    // The new subscription loads the history and reports it: the run-once history task finishes.
    let finished =
        wait_until(Duration::from_secs(30), || task_row(&app, "history").filter(|row| row["state"] == "finished"));
    assert!(finished.is_some(), "{:?}\nlog:\n{}", task_row(&app, "history"), app.log_text());
    let horizon = fake.now_ms() + 2 * FIVE_MINUTES;
    assert_streams_complete_through(&fake, &app, &STREAMS, horizon, Duration::from_secs(30));
    let served = crate::helpers::served_closed(&fake, "BTCUSDT", "1m");
    assert!(served.len() >= 30, "the whole history was loaded: {}", served.len());
}
