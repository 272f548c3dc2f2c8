//! Storage faults a user can cause: the database file deleted or replaced while candled runs (noticed, logged,
//! `/health` 503 meanwhile, the candles land in a fresh database at the path, and the audit refills what the lost
//! file held), and a second candled started on the same database (refused with exit code 2). And one a database
//! server causes: the store unreachable for a while (`/health` degraded, no restart, nothing lost).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{
    AppOptions, TestApp, assert_closed_candles_exact, open_db, run_to_exit, served_closed, spawn_app, stored_closed,
    wait_until,
};

const SYMBOL: &str = "BTCUSDT";
const TIMEFRAME: &str = "1m";
const ONE_MINUTE: i64 = 60_000;
/// How long a test waits for something the app does within a few seconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// 300 exchange ms per real ms: a 1m candle closes every 0.2 s.
fn fake() -> FakeExchange {
    FakeExchange::start(FakeConfig { speed: 300.0, ..FakeConfig::default() })
}

/// One stream, a short history, a storage restart that waits 1.5 s (long enough to see the 503), and an audit pass
/// every second.
fn start(fake: &FakeExchange) -> TestApp {
    let options = AppOptions {
        symbols: vec![SYMBOL],
        timeframes: vec![TIMEFRAME],
        history: 5,
        extra: "[supervisor]\nbackoff_initial_ms = 1500\n\n[audit]\ninterval_secs = 1\n",
        ..AppOptions::default()
    };
    let mut app = spawn_app(fake, options);
    app.wait_for_log(&format!("Subscribed to {SYMBOL} {TIMEFRAME} candles"), PATIENCE);
    let stored = wait_until(PATIENCE, || (stored_closed(&app.db(), SYMBOL, TIMEFRAME).len() >= 5).then_some(()));
    assert!(stored.is_some(), "no candles stored; log:\n{}", app.log_text());
    app
}

fn wait_for(what: &str, app: &TestApp, mut probe: impl FnMut() -> bool) {
    let happened = wait_until(PATIENCE, || probe().then_some(()));
    assert!(happened.is_some(), "{what} did not happen; log:\n{}", app.log_text());
}

/// The storage task's row on `/api/v1/tasks/status`.
fn storage_task(app: &TestApp) -> serde_json::Value {
    let (_, body) = app.get("/api/v1/tasks/status");
    let tasks = body["tasks"].as_array().cloned().unwrap_or_default();
    tasks.into_iter().find(|t| t["name"] == "storage").unwrap_or_else(|| panic!("no storage task in {body}"))
}

/// The oldest closed candle stored now, once the audit has seen it: what the audit refills a lost store from.
fn first_stored(app: &TestApp) -> i64 {
    let audit_passes = || app.get("/api/v1/streams").1["streams"][0]["audit_passes"].as_u64().unwrap_or_default();
    wait_for("an audit pass", app, || audit_passes() >= 1);
    stored_closed(&app.db(), SYMBOL, TIMEFRAME).first().copied().expect("candles stored")
}

/// After the database file was taken away: one ERROR naming the path and `what_happened`, `/health` 503 then 200
/// again, the reopen counted, and in the database now at the path every closed candle from `first_before` (the
/// oldest the lost file held) on, equal to the exchange's: the live ones since, and the audit's refill of the rest.
fn assert_reopened_and_refilled(fake: &FakeExchange, app: &TestApp, first_before: i64, what_happened: &str) {
    wait_for("a 503 while storage restarts", app, || app.get("/health").0 == 503);
    wait_for("healthy again", app, || app.get("/health").0 == 200);
    let needle = format!("the database file data/candles.db was {what_happened} while open");
    let errors: Vec<String> =
        app.log_lines().into_iter().filter(|line| line.contains(" ERROR ") && line.contains(&needle)).collect();
    assert_eq!(errors.len(), 1, "one ERROR with {needle:?}; log:\n{}", app.log_text());
    assert_eq!(app.metric("candled_storage_reopened_total"), 1.0);
    assert_eq!(storage_task(app)["restarts"], 1, "{}", storage_task(app));

    let through = fake.now_ms() + 3 * ONE_MINUTE;
    let expected: Vec<i64> =
        fake.closed_candles(SYMBOL, TIMEFRAME, first_before, through).iter().map(|k| k.open_time).collect();
    wait_for("every candle the lost file held, and every one closed since, in the database at the path", app, || {
        closed_at(&app.db_path).is_some_and(|stored| expected.iter().all(|t| stored.contains(t)))
    });
    let stored = assert_closed_candles_exact(fake, &open_db(&app.db_path), SYMBOL, TIMEFRAME);
    assert_eq!(stored.first(), Some(&first_before), "refilled from the oldest candle the lost file held");
    let (_, streams) = app.get("/api/v1/streams");
    let repaired = streams["streams"][0]["candles_repaired"].as_u64().unwrap_or_default();
    assert!(repaired >= 1, "the audit refilled it: {streams}");
    let (status, body) = app.get(&format!("/api/v1/candles?symbol={SYMBOL}&timeframe={TIMEFRAME}&limit=5"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(5), "{body}");
}

/// The open times of the closed candles in the database at `path`, or `None` while there is none with a `candles`
/// table (just deleted, or replaced by a file that storage has not opened yet).
fn closed_at(path: &Path) -> Option<BTreeSet<i64>> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let sql = "SELECT timestamp FROM candles WHERE symbol = ?1 AND timeframe = ?2 AND is_closed = 1";
    let mut stmt = db.prepare(sql).ok()?;
    let rows = stmt.query_map([SYMBOL, TIMEFRAME], |row| row.get(0)).ok()?;
    rows.collect::<Result<_, _>>().ok()
}

/// `<db>-wal` or `<db>-shm`.
fn sidecar(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(suffix);
    path.into()
}

/// Deletes the database file, and its `-wal` and `-shm` files if `with_sidecars`, while the app runs.
fn assert_deleting_the_database_is_survived(with_sidecars: bool) {
    let fake = fake();
    let app = start(&fake);
    let mut doomed = vec![app.db_path.clone()];
    if with_sidecars {
        doomed.extend([sidecar(&app.db_path, "-wal"), sidecar(&app.db_path, "-shm")]);
    }
    let first_before = first_stored(&app);
    for path in doomed {
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
    }
    assert_reopened_and_refilled(&fake, &app, first_before, "deleted");
}

#[test]
fn a_deleted_database_is_noticed_and_a_fresh_one_takes_the_candles() {
    assert_deleting_the_database_is_survived(true);
}

/// The user's `rm candles.db` exactly: the old `-wal` and `-shm` stay at the path beside the fresh database.
#[test]
fn a_deleted_database_file_without_its_wal_is_noticed_and_a_fresh_one_takes_the_candles() {
    assert_deleting_the_database_is_survived(false);
}

#[test]
fn a_database_replaced_underneath_is_noticed_and_the_new_file_takes_the_candles() {
    let fake = fake();
    let app = start(&fake);
    let other = app.db_path.with_file_name("other.db");
    let marker = Connection::open(&other).expect("another SQLite file");
    marker.execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('not candled''s');").unwrap();
    drop(marker);
    let first_before = first_stored(&app);
    std::fs::rename(&other, &app.db_path).expect("move the other file over the database");
    assert_reopened_and_refilled(&fake, &app, first_before, "replaced by another file");
    let note: String = app.db().query_row("SELECT text FROM notes", [], |row| row.get(0)).expect("the other file");
    assert_eq!(note, "not candled's", "candled writes into the file now at the path");
}

#[test]
fn a_second_candled_on_the_same_database_refuses_to_start() {
    let fake = fake();
    let app = start(&fake);
    let folder = app.db_path.parent().and_then(Path::parent).expect("the app's folder");
    let (status, stderr) = run_to_exit(folder, &["--config", "config.toml"]);
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    let message = format!("the database data/candles.db is in use by another candled (pid {})", app.pid());
    assert!(stderr.contains(&message), "stderr lacks {message:?}:\n{stderr}");
    assert!(!stderr.contains("HTTP listening"), "the second one never served:\n{stderr}");

    // The first one is undisturbed: healthy, and still storing.
    assert_eq!(app.get("/health").0, 200);
    let written = app.metric("candled_candles_written_total{kind=\"closed\"}");
    wait_for("more closed candles written", &app, || {
        app.metric("candled_candles_written_total{kind=\"closed\"}") > written
    });
    assert_closed_candles_exact(&fake, &app.db(), SYMBOL, TIMEFRAME);
}

/// A store unreachable for a while (an injected outage, as a PostgreSQL restart would be): `/health` answers 200
/// `degraded` and the storage task is `degraded`, with no restart spent; once the store answers again, the rows kept
/// meanwhile are committed, so every closed candle of the outage is stored, exactly once and equal to the
/// exchange's, with no help from the audit (it does not run again in this test).
#[test]
fn an_unreachable_store_degrades_health_restarts_nothing_and_loses_nothing() {
    let fake = fake();
    let options = AppOptions {
        symbols: vec![SYMBOL],
        timeframes: vec![TIMEFRAME],
        history: 5,
        // At 300× the default 5 s grace is 17 ms of real time: a closed event that late on a loaded machine would be
        // fetched as overdue, and every audit pass would fetch the candle that just closed. Two minutes is 400 ms.
        exchange_extra: "close_grace_ms = 120000\n",
        extra: "[audit]\ninterval_secs = 3600\n",
        ..AppOptions::default()
    };
    let mut app = spawn_app(&fake, options);
    app.wait_for_log(&format!("Subscribed to {SYMBOL} {TIMEFRAME} candles"), PATIENCE);
    let app = app;
    wait_for("candles stored", &app, || stored_closed(&app.db(), SYMBOL, TIMEFRAME).len() >= 5);
    wait_for("healthy", &app, || app.get("/health").1["status"] == "healthy");
    // The audit's start-up passes are over (it makes one when a repair storm has been quiet for 5 s, and its own
    // first pass may fetch a candle the history missed, which starts that count again): from here on only the kept
    // rows can fill the outage.
    let audit_passes = || app.get("/api/v1/streams").1["streams"][0]["audit_passes"].as_u64().unwrap_or_default();
    let mut seen = (audit_passes(), std::time::Instant::now());
    let settled = wait_until(Duration::from_secs(40), || {
        let passes = audit_passes();
        if passes != seen.0 || passes == 0 {
            seen = (passes, std::time::Instant::now());
        }
        (seen.1.elapsed() >= Duration::from_secs(12)).then_some(())
    });
    assert!(settled.is_some(), "the audit did not settle; log:\n{}", app.log_text());
    let passes_before = seen.0;

    let url = format!("http://127.0.0.1:{}/api/v1/test/tasks/storage/unreachable", app.port);
    let injected = reqwest::blocking::Client::new().post(url).send().expect("the fault-injection route answers");
    assert_eq!(injected.status().as_u16(), 204);
    let outage_from = fake.now_ms();
    // TC0: degraded, not unhealthy, while the store is unreachable; the storage task says why.
    wait_for("/health 200 degraded", &app, || {
        let (status, body) = app.get("/health");
        status == 200 && body["status"] == "degraded" && body["tasks"]["degraded"] == 1
    });
    let task = storage_task(&app);
    assert_eq!((task["state"].as_str(), task["restarts"].as_u64()), (Some("degraded"), Some(0)), "{task}");
    assert!(task["last_error"].as_str().is_some_and(|e| e.contains("unreachable")), "{task}");
    // TC1: healthy again once it answers, with no restart spent.
    wait_for("healthy again", &app, || app.get("/health").1["status"] == "healthy");
    let task = storage_task(&app);
    assert_eq!((task["state"].as_str(), task["restarts"].as_u64()), (Some("running"), Some(0)), "{task}");
    let outage_to = fake.now_ms();
    let warned = app.log_lines().into_iter().filter(|line| line.contains("is unreachable (an injected outage)"));
    assert_eq!(warned.count(), 1, "one WARN for the outage; log:\n{}", app.log_text());
    wait_for("the recovery logged", &app, || app.log_lines().iter().any(|line| line.contains("answers again after")));
    // TC2: every candle closed during the outage is stored, from the rows kept: exactly the exchange's.
    let closed_in_outage: Vec<i64> =
        fake.closed_candles(SYMBOL, TIMEFRAME, outage_from, outage_to).iter().map(|k| k.open_time).collect();
    assert!(closed_in_outage.len() >= 5, "the outage spans candles: {closed_in_outage:?}");
    wait_for("every candle of the outage stored", &app, || {
        let stored = stored_closed(&app.db(), SYMBOL, TIMEFRAME);
        closed_in_outage.iter().all(|open| stored.contains(open))
    });
    assert_closed_candles_exact(&fake, &app.db(), SYMBOL, TIMEFRAME);
    let fetched = served_closed(&fake, SYMBOL, TIMEFRAME);
    let refetched: Vec<&i64> = closed_in_outage.iter().filter(|open| fetched.contains(open)).collect();
    assert!(refetched.is_empty(), "none fetched again over REST, but {refetched:?} were; log:\n{}", app.log_text());
    assert_eq!(audit_passes(), passes_before, "no audit pass ran meanwhile; log:\n{}", app.log_text());
}
