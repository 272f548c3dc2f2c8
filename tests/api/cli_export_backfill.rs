//! `candled backfill` and `candled export` against the fake exchange: a backfill stores a range exactly as the
//! exchange has it, for a symbol the config does not name; an interrupted one resumes and completes within the
//! weight budget; it refuses to write beside a running candled; an export reads back in pandas row for row.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::fake_exchange::{FakeConfig, FakeExchange, FakeStats};
use crate::helpers::{
    AppOptions, CandleRow, assert_closed_candles_exact, edit_candles, klines_requests, open_db, open_db_read_write,
    spawn_app, stored_candles, wait_until, write_config,
};

const MINUTE: i64 = 60_000;
/// 2024-12-31T00:00:00Z: a day before the fake lists anything.
const DEC_31_2024: i64 = 1_735_603_200_000;
/// 2025-01-01T00:00:00Z: the fake's listing.
const JAN_1_2025: i64 = 1_735_689_600_000;
/// Binance's request weight per minute.
const WEIGHT_PER_MINUTE: u64 = 6000;

/// A folder with a config naming only BTCUSDT 1m against `fake`, and no database yet.
fn folder(fake: &FakeExchange) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options = AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 5, ..AppOptions::default() };
    write_config(dir.path(), fake, &options);
    dir
}

fn candled(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_candled"));
    command.args(["--config", "config.toml"]).args(args).current_dir(dir).stdin(Stdio::null());
    command.env("RUST_LOG", "warn").env_remove("CANDLED_ADMIN_TOKEN");
    command
}

/// Runs `candled <args>` in `dir` to its exit.
fn run(dir: &Path, args: &[&str]) -> Output {
    candled(dir, args).output().expect("run candled")
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn backfill_args<'a>(symbol: &'a str, from: &'a str, to: &'a str) -> Vec<&'a str> {
    vec!["backfill", "--symbol", symbol, "--timeframe", "1m", "--from", from, "--to", to]
}

/// The request weight the fake was asked for, by Binance's costs: klines 2, time 1, exchangeInfo 20.
fn weight_asked(fake: &FakeExchange) -> u64 {
    fake.rest_log()
        .iter()
        .map(|record| match record.path.as_str() {
            "/api/v3/klines" => 2,
            "/api/v3/exchangeInfo" => 20,
            _ => 1,
        })
        .sum()
}

fn stored_gaps(db: &rusqlite::Connection, symbol: &str) -> Vec<(i64, i64)> {
    let mut stmt = db
        .prepare("SELECT from_open, to_open FROM exchange_gaps WHERE symbol = ?1 AND timeframe = '1m' ORDER BY 1")
        .expect("prepare");
    stmt.query_map([symbol], |row| Ok((row.get(0)?, row.get(1)?))).expect("query").map(Result::unwrap).collect()
}

fn assert_no_ban(stats: &FakeStats) {
    assert_eq!(stats.rest_418s, 0, "a request went out inside a Retry-After window: {stats:?}");
}

#[test]
fn a_backfill_stores_the_range_exactly_for_a_symbol_the_config_does_not_name() {
    let fake = FakeExchange::start(FakeConfig::default());
    let dir = folder(&fake);
    // The first klines request is refused with a 429: the backfill waits it out and goes on.
    fake.rest_rate_limit_klines(1, Duration::from_secs(1));
    let (from, to) = (DEC_31_2024.to_string(), "2025-01-10");
    let output = run(dir.path(), &backfill_args("ethusdt", &from, to));
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("14400 candles missing, 12960 fetched, 12960 written, 0 revised"), "{}", text(&output));

    let db = open_db(&dir.path().join("data/candles.db"));
    let opens = assert_closed_candles_exact(&fake, &db, "ETHUSDT", "1m");
    assert_eq!((opens[0], opens.len()), (JAN_1_2025, 9 * 1440), "from the listing to 2025-01-09T23:59");
    // The day before the listing has no candles: asked twice, then recorded as an exchange gap.
    assert_eq!(stored_gaps(&db, "ETHUSDT"), [(DEC_31_2024, JAN_1_2025)]);
    let stats = fake.stats();
    assert_eq!(stats.rest_429s, 1, "{stats:?}");
    assert_no_ban(&stats);

    // Run again: nothing is missing, so no kline is asked for.
    let klines_before = klines_requests(&fake, &[]).len();
    let again = run(dir.path(), &backfill_args("ETHUSDT", &from, to));
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 candles missing, 0 fetched"), "{}", text(&again));
    assert_eq!(klines_requests(&fake, &[]).len(), klines_before);

    // A hole inside the range (100 candles from 2025-01-05) is found and filled, and nothing else is asked for.
    let hole_from = JAN_1_2025 + 4 * 1440 * MINUTE;
    let deleted = edit_candles(
        &open_db_read_write(&dir.path().join("data/candles.db")),
        "DELETE FROM candles WHERE symbol = 'ETHUSDT' AND timestamp >= ?1 AND timestamp < ?2",
        [hole_from, hole_from + 100 * MINUTE],
    );
    assert_eq!(deleted, 100);
    let filled = run(dir.path(), &backfill_args("ETHUSDT", &from, to));
    assert!(filled.status.success(), "{}", text(&filled));
    let stdout = String::from_utf8_lossy(&filled.stdout);
    assert!(stdout.contains("100 candles missing, 100 fetched, 100 written, 0 revised"), "{}", text(&filled));
    assert_eq!(klines_requests(&fake, &[]).len(), klines_before + 1, "one page for the hole");
    assert_eq!(assert_closed_candles_exact(&fake, &db, "ETHUSDT", "1m").len(), 9 * 1440);
}

/// The number of closed candles stored for BTCUSDT 1m, 0 while the database does not exist yet.
fn stored_count(database: &Path) -> usize {
    if !database.exists() {
        return 0;
    }
    let db = open_db(database);
    let count = db.query_row("SELECT COUNT(*) FROM candles WHERE symbol = 'BTCUSDT' AND is_closed = 1", [], |row| {
        row.get::<_, i64>(0)
    });
    count.map_or(0, |count| count as usize)
}

/// Waits for `child` to exit, sampling the fake's weight of the current minute meanwhile; returns the output and
/// the highest weight seen.
fn wait_sampling_weight(child: Child, fake: &FakeExchange) -> (Output, u64) {
    let mut highest = 0;
    let mut child = child;
    let exited = wait_until(Duration::from_secs(120), || {
        highest = highest.max(fake.stats().rest_used_weight_1m);
        child.try_wait().ok().flatten()
    });
    if exited.is_none() {
        let _ = child.kill();
    }
    (child.wait_with_output().expect("the backfill's output"), highest)
}

#[test]
fn an_interrupted_backfill_resumes_where_it_stopped_within_the_weight_budget() {
    let fake = FakeExchange::start(FakeConfig::default());
    let dir = folder(&fake);
    let database = dir.path().join("data/candles.db");
    // 90 days of 1m candles: 129,600 rows, 26 chunks of 5,000.
    let args = backfill_args("BTCUSDT", "2025-01-01", "2025-04-01");
    let total = 90 * 1440;

    let mut first = candled(dir.path(), &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start");
    let mut highest_weight = 0;
    let partway = wait_until(Duration::from_secs(60), || {
        highest_weight = highest_weight.max(fake.stats().rest_used_weight_1m);
        let stored = stored_count(&database);
        (stored >= 30_000).then_some(stored)
    });
    first.kill().expect("SIGKILL the backfill");
    let status = first.wait().expect("reap it");
    let killed_at = stored_count(&database);
    assert!(partway.is_some() && !status.success(), "the backfill stored 30,000 candles, then was killed ({status})");
    assert!(killed_at < total, "killed part way: {killed_at} of {total} stored");
    let klines_first = klines_requests(&fake, &[]).len();

    // The resumed run meets two 429s, and waits each out.
    fake.rest_rate_limit_klines(2, Duration::from_secs(1));
    let started = Instant::now();
    let resumed = candled(dir.path(), &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    let (output, highest) = wait_sampling_weight(resumed, &fake);
    highest_weight = highest_weight.max(highest);
    let resumed_in = started.elapsed();
    assert!(output.status.success(), "{}", text(&output));
    let missing = total - killed_at;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("{missing} candles missing, {missing} fetched")), "{}", text(&output));

    let db = open_db(&database);
    let opens = assert_closed_candles_exact(&fake, &db, "BTCUSDT", "1m");
    assert_eq!((opens[0], opens.len()), (JAN_1_2025, total));
    assert_eq!(*opens.last().unwrap(), JAN_1_2025 + (total as i64 - 1) * MINUTE);
    let stats = fake.stats();
    assert_eq!(stats.rest_429s, 2, "{stats:?}");
    assert_no_ban(&stats);
    assert!(highest_weight <= WEIGHT_PER_MINUTE, "{highest_weight} weight in one minute");
    // The resumed run asked only for what the first had not stored (a chunk the kill cut short is asked again).
    let klines_resumed = klines_requests(&fake, &[]).len() - klines_first - 2;
    let pages_missing = missing.div_ceil(1000);
    assert!(klines_resumed <= pages_missing + 6, "{klines_resumed} pages for {missing} missing candles");
    println!(
        "backfill figures: {total} candles; first run killed at {killed_at} after {klines_first} klines requests; \
         resumed run {missing} candles in {resumed_in:?} with {klines_resumed} klines requests (+2 refused); \
         weight asked in all {}, highest in one minute {highest_weight}",
        weight_asked(&fake)
    );
}

#[test]
fn a_backfill_refuses_to_write_beside_a_running_candled() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = spawn_app(
        &fake,
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 5, ..Default::default() },
    );
    let dir = app.config_path().parent().expect("the app's folder").to_owned();
    let output = run(&dir, &backfill_args("ETHUSDT", "2025-01-01", "2025-01-02"));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("in use by another candled (pid {})", app.pid())), "{stderr}");
    assert!(stderr.contains("stop candled, run the backfill"), "{stderr}");
    assert_eq!(stored_candles(&app.db(), "ETHUSDT", "1m"), []);
}

/// Python with pandas and pyarrow, or `None` (with a note printed) where they are not installed.
fn pandas() -> Option<&'static str> {
    let found = Command::new("python3").args(["-c", "import pandas, pyarrow"]).output();
    if found.is_ok_and(|output| output.status.success()) {
        return Some("python3");
    }
    println!("note: pandas or pyarrow is not installed (.ci/run installs them): the read-back checks are skipped");
    None
}

/// Reads `file` with pandas and prints every row as JSON: the candle columns, times as ms, then the indicators.
const READ_BACK: &str = r#"
import json, sys
import pandas as pd
path, kind = sys.argv[1], sys.argv[2]
if kind == "csv":
    # pandas 3 reads floats exactly by default (and deprecates the switch); older ones need it.
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    frame = pd.read_csv(path, **exact)
else:
    frame = pd.read_parquet(path)
    for column in ("timestamp", "close_time"):
        assert str(frame[column].dtype) == "datetime64[ms, UTC]", frame[column].dtype
        frame[column] = frame[column].astype("int64")
assert str(frame["trades"].dtype) == "int64" and str(frame["is_closed"].dtype) == "bool", frame.dtypes
assert str(frame["open"].dtype) == "float64", frame.dtypes
# Floats travel as their shortest repr, which Rust parses exactly (serde_json's own float parsing may not).
def cell(value):
    if isinstance(value, float):
        return None if value != value else repr(value)
    return value
rows = [[cell(value) for value in row] for row in frame.astype(object).values.tolist()]
print(json.dumps({"columns": list(frame.columns), "rows": rows}))
"#;

/// A row as pandas read it: the candle, then the indicator values (`None` where empty or null).
type ReadRow = (CandleRow, Vec<Option<f64>>);

/// The file as pandas reads it: its columns, and its rows.
fn read_back(python: &str, file: &Path, kind: &str) -> (Vec<String>, Vec<ReadRow>) {
    let output = Command::new(python).args(["-c", READ_BACK]).arg(file).arg(kind).output().expect("run python3");
    assert!(output.status.success(), "pandas could not read {}: {}", file.display(), text(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON from the script");
    let columns = json["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    let rows = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let cell = |index: usize| &row[index];
            let float = |index: usize| exact_float(cell(index)).unwrap();
            let candle = CandleRow {
                timestamp: cell(0).as_i64().unwrap(),
                open: float(1),
                high: float(2),
                low: float(3),
                close: float(4),
                volume: float(5),
                close_time: cell(6).as_i64().unwrap(),
                quote_volume: float(7),
                trades: cell(8).as_i64().unwrap(),
                taker_buy_base: float(9),
                taker_buy_quote: float(10),
                is_closed: cell(11).as_bool().unwrap(),
            };
            let indicators = row.as_array().unwrap()[12..].iter().map(exact_float).collect();
            (candle, indicators)
        })
        .collect();
    (columns, rows)
}

/// A float the script sent as its repr (`None` for a null), parsed by Rust's correctly rounded parser.
fn exact_float(cell: &serde_json::Value) -> Option<f64> {
    cell.as_str().map(|text| text.parse().expect("a float's repr"))
}

/// The stored indicator values of BTCUSDT 1m at `timestamp`, for `names`.
fn stored_indicators(db: &rusqlite::Connection, timestamp: i64, names: &[String]) -> Vec<Option<f64>> {
    names
        .iter()
        .map(|name| {
            db.query_row(
                "SELECT value FROM indicators WHERE symbol = 'BTCUSDT' AND timeframe = '1m' AND timestamp = ?1
                 AND name = ?2",
                rusqlite::params![timestamp, name],
                |row| row.get(0),
            )
            .ok()
        })
        .collect()
}

#[test]
fn an_export_reads_back_in_pandas_row_for_row_as_csv_and_parquet() {
    let fake = FakeExchange::start(FakeConfig { speed: 120.0, ..FakeConfig::default() });
    let app = spawn_app(
        &fake,
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 300, ..Default::default() },
    );
    let indicator_rows = |db: &rusqlite::Connection| -> i64 {
        db.query_row("SELECT COUNT(DISTINCT timestamp) FROM indicators", [], |row| row.get(0)).unwrap_or(0)
    };
    wait_until(Duration::from_secs(30), || (indicator_rows(&app.db()) >= 300).then_some(()))
        .expect("candled stored the history's indicators");
    let dir = app.config_path().parent().expect("the app's folder").to_owned();
    let python = pandas();
    // Beside the running candled: every closed candle, the candle columns only.
    let output = run(&dir, &["export", "--symbol", "BTCUSDT", "--timeframe", "1m", "-o", "all.csv"]);
    assert!(output.status.success(), "{}", text(&output));
    if let Some(python) = python {
        let (columns, rows) = read_back(python, &dir.join("all.csv"), "csv");
        assert_eq!(columns.len(), 12, "{columns:?}");
        assert!(rows.len() >= 300, "every closed candle: {}", rows.len());
    }
    // An unknown extension needs --format; a bad time is refused.
    let output = run(&dir, &["export", "--symbol", "BTCUSDT", "--timeframe", "1m", "-o", "out.txt"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("give --format csv or --format parquet"));
    let output = run(&dir, &["export", "--symbol", "BTCUSDT", "--timeframe", "1m", "--to", "bad", "-o", "x.csv"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));

    // Stopped, the table stands still for a row-for-row comparison, indicators included.
    let (status, folder, _) = app.terminate();
    assert!(status.success(), "{status}");
    let db = open_db(&folder.path().join("data/candles.db"));
    let closed: Vec<CandleRow> = stored_candles(&db, "BTCUSDT", "1m").into_iter().filter(|r| r.is_closed).collect();
    // A window inside what is stored: from the 11th closed candle (as a date-time) to the 251st (excluded, as ms).
    let (from, to) = (closed[10].timestamp, closed[250].timestamp);
    let table = &closed[10..250];
    let from_text = chrono::DateTime::from_timestamp_millis(from)
        .expect("a time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (format, file) in [("csv", "out.csv"), ("parquet", "out.parquet")] {
        let args =
            ["export", "--symbol", "BTCUSDT", "--timeframe", "1m", "--from", &from_text, "--to", &to.to_string()];
        let output = run(folder.path(), &[&args[..], &["--format", format, "--indicators", "-o", file]].concat());
        assert!(output.status.success(), "{}", text(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("exported 240 closed candles of BTCUSDT 1m"), "{}", text(&output));
        let Some(python) = python else { continue };
        let (columns, rows) = read_back(python, &folder.path().join(file), format);
        let names: Vec<String> = columns[12..].to_vec();
        assert!(names.contains(&"rsi_14".to_owned()) && names.contains(&"sma_20".to_owned()), "{columns:?}");
        assert_eq!(rows.len(), table.len(), "{format}");
        for ((candle, indicators), stored) in rows.iter().zip(table) {
            assert_eq!(candle, stored, "{format}");
            assert_eq!(*indicators, stored_indicators(&db, stored.timestamp, &names), "{format}");
        }
    }
}
