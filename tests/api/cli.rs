//! The subcommands besides `run`: `check-config`, `import` (data.binance.vision files, compared with what the live
//! path stores for the same candles) and `status`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::fake_exchange::{FakeConfig, FakeExchange, FakeKline};
use crate::helpers::{
    AppOptions, assert_closed_candles_exact, open_db, spawn_app, stored_candles, stored_closed, wait_until,
    write_config,
};

/// The data.binance.vision header row (2025 on).
const HEADER: &str = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,\
                      taker_buy_quote_volume,ignore";

/// Runs `candled args...` in `dir` to completion: exit status, stdout and stderr.
fn candled(dir: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_candled"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run candled");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status, text(output.stdout), text(output.stderr))
}

/// A config for import runs: no exchange is asked; the database is `data/candles.db` under `dir`.
fn offline_config(dir: &Path, timeframes: &str) -> PathBuf {
    let text = format!(
        "[exchange]\nws_url = \"ws://127.0.0.1:9\"\nrest_url = \"http://127.0.0.1:9\"\n\n\
         [market_data]\nsymbols = [\"BTCUSDT\"]\ntimeframes = [{timeframes}]\n\n\
         [storage]\npath = \"data/candles.db\"\n\n[http]\nbind = \"127.0.0.1:0\"\n"
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

#[derive(Clone, Copy)]
enum Unit {
    Millis,
    Micros,
}

/// One data.binance.vision row for a candle of the fake.
fn vision_row(k: &FakeKline, unit: Unit) -> String {
    let (open, close) = match unit {
        Unit::Millis => (k.open_time, k.close_time),
        Unit::Micros => (k.open_time * 1000, k.close_time * 1000 + 999),
    };
    format!(
        "{open},{},{},{},{},{},{close},{},{},{},{},0",
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        k.quote_volume,
        k.trades,
        k.taker_buy_base_volume,
        k.taker_buy_quote_volume
    )
}

/// Writes `candles` as `name` (`.csv`, or `.zip` holding the csv) in `dir`, with a `.CHECKSUM` when asked; returns
/// the path.
fn write_vision_file(
    dir: &Path,
    name: &str,
    candles: &[FakeKline],
    unit: Unit,
    header: bool,
    checksum: bool,
) -> PathBuf {
    let mut text = if header { format!("{HEADER}\n") } else { String::new() };
    for k in candles {
        text.push_str(&vision_row(k, unit));
        text.push('\n');
    }
    let bytes = match name.strip_suffix(".zip") {
        None => text.into_bytes(),
        Some(stem) => {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            zip.start_file(format!("{stem}.csv"), options).expect("zip entry");
            zip.write_all(text.as_bytes()).expect("zip write");
            zip.finish().expect("zip finish").into_inner()
        }
    };
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write the file");
    if checksum {
        std::fs::write(dir.join(format!("{name}.CHECKSUM")), format!("{:x}  {name}\n", Sha256::digest(&bytes)))
            .expect("write the checksum");
    }
    path
}

/// Every indicator row of a stream, in key order.
fn indicator_rows(db: &Connection, symbol: &str, timeframe: &str) -> Vec<(i64, String, f64)> {
    let mut stmt = db
        .prepare("SELECT timestamp, name, value FROM indicators WHERE symbol = ?1 AND timeframe = ?2 ORDER BY 1, 2")
        .expect("prepare");
    let rows = stmt.query_map([symbol, timeframe], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

fn revisions(db: &Connection) -> i64 {
    db.query_row("SELECT COUNT(*) FROM candle_revisions", [], |r| r.get(0)).expect("count")
}

#[test]
fn check_config_prints_the_normalised_config_or_the_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    offline_config(dir.path(), "\"1m\", \"5m\"");
    // TC0: valid, as a positional path and through the global `--config`.
    for args in [&["check-config", "config.toml"][..], &["--config", "config.toml", "check-config"]] {
        let (status, stdout, stderr) = candled(dir.path(), args);
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
        let view: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
        assert_eq!(view["market_data"]["streams"], serde_json::json!(["BTCUSDT:1m", "BTCUSDT:5m"]));
        assert_eq!(view["storage"]["batch_size"], 20_000, "defaults are filled in");
        assert!(stderr.contains("config file config.toml is valid: 2 streams"), "{stderr}");
    }
    // TC1: invalid: exit 2 with the same error start-up prints, and no storage made.
    let bad = std::fs::read_to_string(dir.path().join("config.toml")).unwrap().replace("\"5m\"", "\"7m\"");
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let (status, stdout, stderr) = candled(dir.path(), &["check-config", "bad.toml"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let (run_status, _, run_stderr) = candled(dir.path(), &["--config", "bad.toml"]);
    assert_eq!(run_status.code(), Some(2));
    assert!(stderr.starts_with("error: config file bad.toml: `market_data.timeframes[1]`"), "{stderr}");
    assert_eq!(stderr, run_stderr);
    assert!(!dir.path().join("data").exists());
}

#[test]
fn check_config_online_names_the_symbols_the_exchange_does_not_list() {
    let fake = FakeExchange::start(FakeConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let options = |symbols| AppOptions { symbols, timeframes: vec!["1m"], history: 5, ..AppOptions::default() };
    // TC0: every symbol listed.
    write_config(dir.path(), &fake, &options(vec!["BTCUSDT", "ETHUSDT"]));
    let (status, _, stderr) = candled(dir.path(), &["check-config", "--online"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    // TC1: one unlisted: exit 2 naming it; offline the same config is valid.
    write_config(dir.path(), &fake, &options(vec!["BTCUSDT", "NOPEUSDT"]));
    let (status, stdout, stderr) = candled(dir.path(), &["check-config", "--online"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("1 symbol is not listed on the exchange: NOPEUSDT"), "{stderr}");
    assert_eq!(candled(dir.path(), &["check-config"]).0.code(), Some(0));
}

/// Lets a live candled store BTCUSDT 1m candles from the fake, stops it, and returns its folder.
fn live_database(fake: &FakeExchange) -> tempfile::TempDir {
    let options = AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 40, ..AppOptions::default() };
    let app = spawn_app(fake, options);
    let stored = wait_until(Duration::from_secs(30), || {
        (stored_closed(&open_db(&app.db_path), "BTCUSDT", "1m").len() >= 45).then_some(())
    });
    assert!(stored.is_some(), "the live path stored too little; log:\n{}", app.log_text());
    let (status, dir, log) = app.terminate();
    assert!(status.success(), "{}", log.join("\n"));
    dir
}

#[test]
fn imported_files_store_what_the_live_path_stores_and_a_reimport_changes_nothing() {
    let fake = FakeExchange::start(FakeConfig { speed: 60.0, ..FakeConfig::default() });
    let live_dir = live_database(&fake);
    let live = open_db(&live_dir.path().join("data/candles.db"));
    let opens = assert_closed_candles_exact(&fake, &live, "BTCUSDT", "1m");
    let (first, last) = (opens[0], opens[opens.len() - 1]);
    let candles = fake.closed_candles("BTCUSDT", "1m", first, last + 1);

    // The same candles in four files: ms and µs, zipped and not, with and without a header, checksums on two.
    let dir = tempfile::tempdir().unwrap();
    offline_config(dir.path(), "\"1m\"");
    let quarter = candles.len().div_ceil(4);
    let parts: Vec<&[FakeKline]> = candles.chunks(quarter).collect();
    let files = [
        write_vision_file(dir.path(), "BTCUSDT-1m-2026-01-01.csv", parts[0], Unit::Millis, false, false),
        write_vision_file(dir.path(), "BTCUSDT-1m-2026-01-02.csv", parts[1], Unit::Micros, true, true),
        write_vision_file(dir.path(), "BTCUSDT-1m-2026-01-03.zip", parts[2], Unit::Millis, true, true),
        write_vision_file(dir.path(), "BTCUSDT-1m-2026-01.zip", parts[3], Unit::Micros, false, false),
    ];
    let mut args = vec!["import"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let (status, stdout, stderr) = candled(dir.path(), &args);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let rows = candles.len();
    assert!(stdout.contains(&format!("BTCUSDT 1m: {rows} rows: {rows} new, 0 unchanged, 0 revised")), "{stdout}");

    // TC0: the rows equal the exchange's and the live path's, field by field; so do the indicators.
    let db_path = dir.path().join("data/candles.db");
    let imported = open_db(&db_path);
    assert_closed_candles_exact(&fake, &imported, "BTCUSDT", "1m");
    let live_closed: Vec<_> = stored_candles(&live, "BTCUSDT", "1m").into_iter().filter(|r| r.is_closed).collect();
    assert_eq!(stored_candles(&imported, "BTCUSDT", "1m"), live_closed);
    let indicators = indicator_rows(&imported, "BTCUSDT", "1m");
    assert!(!indicators.is_empty(), "indicators rebuilt");
    assert_eq!(indicators, indicator_rows(&live, "BTCUSDT", "1m"));

    // TC1: a re-import changes nothing.
    let (status, stdout, stderr) = candled(dir.path(), &args);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains(&format!("{rows} rows: 0 new, {rows} unchanged, 0 revised")), "{stdout}");
    assert_eq!(stored_candles(&imported, "BTCUSDT", "1m"), live_closed);
    assert_eq!(indicator_rows(&imported, "BTCUSDT", "1m"), indicators);
    assert_eq!(revisions(&imported), 0);

    // TC2: a file whose candle differs from the stored one is a recorded revision, and the indicators follow.
    let mut revised = parts[1][2].clone();
    revised.close = if revised.close == revised.low { revised.high.clone() } else { revised.low.clone() };
    let file = write_vision_file(dir.path(), "BTCUSDT-1m-2026-02-01.csv", &[revised], Unit::Millis, false, false);
    let (status, stdout, stderr) = candled(dir.path(), &["import", file.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("1 rows: 0 new, 0 unchanged, 1 revised"), "{stdout}");
    assert_eq!(revisions(&imported), 1);
    assert_ne!(indicator_rows(&imported, "BTCUSDT", "1m"), indicators);
}

#[test]
fn a_bad_checksum_or_row_refuses_the_whole_import() {
    let fake = FakeExchange::start(FakeConfig::default());
    let candles = fake.closed_candles("BTCUSDT", "1m", fake.now_ms() - 3_600_000, fake.now_ms() - 60_000);
    let dir = tempfile::tempdir().unwrap();
    offline_config(dir.path(), "\"1m\"");
    let good = write_vision_file(dir.path(), "BTCUSDT-1m-2026-01-01.csv", &candles[..10], Unit::Millis, false, true);
    let zip = write_vision_file(dir.path(), "BTCUSDT-1m-2026-01-02.zip", &candles[10..], Unit::Micros, true, true);
    // TC0: the zip's checksum names other bytes.
    std::fs::write(
        dir.path().join("BTCUSDT-1m-2026-01-02.zip.CHECKSUM"),
        format!("{:x}  x.zip\n", Sha256::digest(b"x")),
    )
    .unwrap();
    let (status, _, stderr) = candled(dir.path(), &["import", good.to_str().unwrap(), zip.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BTCUSDT-1m-2026-01-02.zip does not match its checksum file"), "{stderr}");
    // TC1: a row with a bad close time names its file and line.
    let broken = [candles[0].clone(), FakeKline { close_time: candles[1].close_time - 1, ..candles[1].clone() }];
    write_vision_file(dir.path(), "BTCUSDT-1m-2026-01-03.csv", &broken, Unit::Millis, false, false);
    let (status, _, stderr) = candled(dir.path(), &["import", "BTCUSDT-1m-2026-01-03.csv"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BTCUSDT-1m-2026-01-03.csv: line 2: close time does not match"), "{stderr}");
    // TC1b: files are parsed in parallel, yet of two bad ones the first named is the one reported.
    let (status, _, stderr) =
        candled(dir.path(), &["import", good.to_str().unwrap(), "BTCUSDT-1m-2026-01-03.csv", zip.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BTCUSDT-1m-2026-01-03.csv: line 2") && !stderr.contains("checksum"), "{stderr}");
    // TC2: a name that does not tell the stream, then the same file with --symbol and --timeframe.
    std::fs::copy(&good, dir.path().join("minutes.csv")).unwrap();
    let (status, _, stderr) = candled(dir.path(), &["import", "minutes.csv"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("give --symbol and --timeframe"), "{stderr}");
    let db = dir.path().join("data/candles.db");
    assert!(!db.exists() || stored_candles(&open_db(&db), "BTCUSDT", "1m").is_empty(), "nothing written");
    let (status, stdout, stderr) =
        candled(dir.path(), &["import", "--symbol", "BTCUSDT", "--timeframe", "1m", "minutes.csv"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("10 rows: 10 new"), "{stdout}");
}

#[test]
fn import_is_refused_while_candled_runs_on_the_database() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = spawn_app(
        &fake,
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 5, ..AppOptions::default() },
    );
    let candles = fake.closed_candles("BTCUSDT", "1m", fake.now_ms() - 600_000, fake.now_ms() - 60_000);
    let folder = app.config_path().parent().unwrap().to_owned();
    let file = write_vision_file(&folder, "BTCUSDT-1m-2026-01-01.csv", &candles, Unit::Millis, false, false);
    let (status, _, stderr) = candled(&folder, &["import", file.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("in use by another candled (pid {})", app.pid())), "{stderr}");
    assert!(stderr.contains(&format!("stop pid {} (kill -TERM)", app.pid())), "{stderr}");
}

#[test]
fn status_shows_the_tasks_and_streams_of_a_running_instance() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = spawn_app(
        &fake,
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 5, ..AppOptions::default() },
    );
    let url = format!("http://127.0.0.1:{}", app.port);
    let folder = tempfile::tempdir().unwrap();
    let folder = folder.path();
    let shown = wait_until(Duration::from_secs(20), || {
        let (status, stdout, _) = candled(folder, &["status", "--url", &url]);
        (status.success() && stdout.contains("BTCUSDT 1m")).then_some(stdout)
    });
    let stdout = shown.unwrap_or_else(|| panic!("status never showed the stream; log:\n{}", app.log_text()));
    assert!(stdout.starts_with(&format!("candled at {url}: healthy")), "{stdout}");
    assert!(
        stdout.contains("TASK") && stdout.contains("subscription:BTCUSDT:1m") && stdout.contains("storage"),
        "{stdout}"
    );
    assert!(stdout.contains("STREAM") && stdout.contains("LAST CLOSED"), "{stdout}");
    // Nothing listening: exit 1 with the reason.
    drop(app);
    let (status, _, stderr) = candled(folder, &["status", "--url", &url]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains(&format!("cannot reach candled at {url}")), "{stderr}");
}

/// Real data.binance.vision files, read in place when `../shared` holds them.
#[test]
fn the_shared_binance_vision_files_import_in_place() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/klines/binance-vision");
    let file = fixtures.join("BTCUSDT-spot-klines-4h-2026-01-01.csv");
    if !file.exists() {
        eprintln!("skipped: {} is not here", file.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    offline_config(dir.path(), "\"4h\"");
    let (status, stdout, stderr) = candled(dir.path(), &["import", fixtures.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("BTCUSDT 4h: 6 rows: 6 new"), "{stdout}");
    let rows = stored_candles(&open_db(&dir.path().join("data/candles.db")), "BTCUSDT", "4h");
    assert_eq!(rows.len(), 6);
    // The first and last rows of the file, µs times now in ms.
    assert_eq!((rows[0].timestamp, rows[0].close_time), (1_767_225_600_000, 1_767_239_999_999));
    assert_eq!((rows[0].open, rows[0].close, rows[0].trades), (87648.21, 87846.02, 215223));
    assert_eq!((rows[5].timestamp, rows[5].taker_buy_quote), (1_767_297_600_000, 62_883_427.987_382_2));
    assert!(rows.iter().all(|r| r.is_closed));
    let (_, stdout, _) = candled(dir.path(), &["import", file.to_str().unwrap()]);
    assert!(stdout.contains("6 rows: 0 new, 6 unchanged, 0 revised"), "{stdout}");
}
