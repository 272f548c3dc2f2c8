//! Test helpers: start the real `candled` binary on a temporary config against a fake exchange, read its log,
//! query its HTTP endpoints and its store (its SQLite database, or a PostgreSQL schema), cut its connections with
//! a TCP proxy on loopback.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

use crate::fake_exchange::{FakeExchange, FakeKline, RestRecord};

/// How long start-up may take before a test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run the app with. The `*_extra` lines go into their section of the generated `config.toml`; `extra`
/// is appended at the end (whole sections).
#[derive(Default)]
pub struct AppOptions {
    pub symbols: Vec<&'static str>,
    pub timeframes: Vec<&'static str>,
    pub history: u32,
    pub exchange_extra: &'static str,
    pub storage_extra: &'static str,
    /// The `[storage]` lines that choose the store, instead of the default `path = "data/candles.db"` (for
    /// example [`PgTables::storage_section`]).
    pub storage_backend: Option<String>,
    pub http_extra: &'static str,
    pub extra: &'static str,
    /// Leave out the fake's CA even when it serves TLS.
    pub without_ca: bool,
}

/// A running `candled` process with its own folder, config and database.
pub struct TestApp {
    child: Child,
    pub port: u16,
    dir: Option<tempfile::TempDir>,
    pub db_path: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    http: reqwest::blocking::Client,
}

/// Writes a config for `options` against `fake` into `dir` and returns its path.
pub fn write_config(dir: &Path, fake: &FakeExchange, options: &AppOptions) -> PathBuf {
    let quoted = |items: &[&str]| items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let ca = match fake.ca_cert_pem() {
        Some(_) if !options.without_ca => format!("ca_file = {:?}\n", fake.ca_cert_pem_path().display().to_string()),
        _ => String::new(),
    };
    let config = format!(
        "[exchange]\nws_url = {:?}\nrest_url = {:?}\n{ca}{}\n\n\
         [market_data]\nsymbols = [{}]\ntimeframes = [{}]\nhistory = {}\n\n\
         [storage]\n{}\n{}\n\n[http]\nbind = \"127.0.0.1:0\"\n{}\n\n{}",
        fake.ws_url(),
        fake.rest_url(),
        options.exchange_extra,
        quoted(&options.symbols),
        quoted(&options.timeframes),
        options.history,
        options.storage_backend.as_deref().unwrap_or("path = \"data/candles.db\""),
        options.storage_extra,
        options.http_extra,
        options.extra,
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write the config");
    path
}

/// Starts `candled --config <generated>` in a fresh folder and waits until its HTTP endpoint listens.
pub fn spawn_app(fake: &FakeExchange, options: AppOptions) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary folder");
    write_config(dir.path(), fake, &options);
    spawn_in(dir)
}

/// Starts `candled` in `dir`, which already holds a `config.toml` (a restart on the same database).
pub fn spawn_in(dir: tempfile::TempDir) -> TestApp {
    spawn_in_with_env(dir, &[])
}

/// [`spawn_in`] with environment variables set for the process.
pub fn spawn_in_with_env(dir: tempfile::TempDir, env: &[(&str, &str)]) -> TestApp {
    // reqwest is built without a default TLS provider; the tests' client only speaks plain HTTP to the app.
    // Built before the child starts, so that nothing can panic between starting it and owning it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::new();
    // A profiler to run candled under, such as `heaptrack -o /tmp/candled` (then `pid()` is the profiler's).
    let wrapper = std::env::var("CANDLED_TEST_WRAPPER").unwrap_or_default();
    let mut command = wrapper.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    command.push(env!("CARGO_BIN_EXE_candled").to_owned());
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .args(["--config", "config.toml"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("CANDLED_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start candled");
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let db_path = dir.path().join("data/candles.db");
    let mut app = TestApp { child, port: 0, dir: Some(dir), db_path, log, http };
    let listening = app.wait_for_log("HTTP listening on http://127.0.0.1:", START_TIMEOUT);
    let port = listening.rsplit(':').next().and_then(|p| p.trim().parse().ok());
    app.port = port.unwrap_or_else(|| panic!("no port in {listening:?}; log:\n{}", app.log_text()));
    app
}

impl TestApp {
    /// The process id of the running `candled`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the app's `config.toml` for `options`, as a user editing it while candled runs would.
    pub fn edit_config(&self, fake: &FakeExchange, options: &AppOptions) {
        write_config(self.folder(), fake, options);
    }

    /// The app's `config.toml`: rewrite it to edit the config in force.
    pub fn config_path(&self) -> PathBuf {
        self.folder().join("config.toml")
    }

    fn folder(&self) -> &Path {
        self.dir.as_ref().expect("the folder is held while the app runs").path()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let found = wait_until(timeout, || self.log_lines().into_iter().find(|line| line.contains(needle)));
        found.unwrap_or_else(|| {
            let status = self.child.try_wait().ok().flatten();
            panic!("no log line with {needle:?} within {timeout:?} (exit: {status:?}); log:\n{}", self.log_text())
        })
    }

    /// How many log lines so far contain `needle`.
    pub fn count_log_lines(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|line| line.contains(needle)).count()
    }

    /// Waits until `count` log lines contain `needle`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        if wait_until(timeout, || (self.count_log_lines(needle) >= count).then_some(())).is_none() {
            let seen = self.count_log_lines(needle);
            panic!("{seen} log line(s) with {needle:?} within {timeout:?}, not {count}; log:\n{}", self.log_text());
        }
    }

    /// `GET path` on the app: status and JSON body (or the text as a JSON string).
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.try_get(path).unwrap_or_else(|error| panic!("HTTP GET {path}: {error}"))
    }

    /// `GET path`, or the error: for polls across the hand-over from the start-up server to the full one, where a
    /// kept-alive connection of the first may be closed under a request.
    pub fn try_get(&self, path: &str) -> Result<(u16, Value), reqwest::Error> {
        let response = self.http.get(format!("http://127.0.0.1:{}{path}", self.port)).send()?;
        let status = response.status().as_u16();
        let text = response.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// The value of a Prometheus sample such as `candled_frames_received_total`.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        let text = body.as_str().unwrap_or_default().to_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    }

    /// A read-only connection to the app's database.
    pub fn db(&self) -> Connection {
        open_db(&self.db_path)
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> (ExitStatus, tempfile::TempDir, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = wait_for_exit(&mut self.child, Duration::from_secs(30));
        let log = self.log_lines();
        (status, self.take_dir(), log)
    }

    /// Kills the process with SIGKILL (`kill -9`), as a crash would; returns its folder for a restart.
    pub fn kill_9(mut self) -> tempfile::TempDir {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        self.take_dir()
    }

    /// The app's folder (its config and `data/`), handed over once the process has exited.
    fn take_dir(&mut self) -> tempfile::TempDir {
        self.dir.take().expect("the folder is taken once")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    wait_until(timeout, || child.try_wait().ok().flatten()).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("candled did not exit within {timeout:?}")
    })
}

/// Runs `candled --config <path>` to completion (for configs that must be rejected): exit status and stderr.
pub fn run_to_exit(dir: &Path, args: &[&str]) -> (ExitStatus, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_candled"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run candled");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

pub fn open_db(path: &Path) -> Connection {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the database")
}

/// Polls `probe` every 50 ms until it returns `Some`, or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One stored candle row, every column, as SQLite holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CandleRow {
    pub timestamp: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub close_time: i64,
    pub quote_volume: f64,
    pub trades: i64,
    pub taker_buy_base: f64,
    pub taker_buy_quote: f64,
    pub is_closed: bool,
}

impl CandleRow {
    /// A row selected as [`CANDLE_COLUMNS`].
    pub fn from_sql(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(CandleRow {
            timestamp: row.get(0)?,
            open: row.get(1)?,
            high: row.get(2)?,
            low: row.get(3)?,
            close: row.get(4)?,
            volume: row.get(5)?,
            close_time: row.get(6)?,
            quote_volume: row.get(7)?,
            trades: row.get(8)?,
            taker_buy_base: row.get(9)?,
            taker_buy_quote: row.get(10)?,
            is_closed: row.get(11)?,
        })
    }

    /// The row a closed candle from the exchange must become: decimals parsed with Rust's correctly rounded parser.
    pub fn from_fake(kline: &FakeKline) -> Self {
        let num = |s: &str| s.parse::<f64>().expect("the fake serves decimals");
        CandleRow {
            timestamp: kline.open_time,
            open: num(&kline.open),
            high: num(&kline.high),
            low: num(&kline.low),
            close: num(&kline.close),
            volume: num(&kline.volume),
            close_time: kline.close_time,
            quote_volume: num(&kline.quote_volume),
            trades: kline.trades,
            taker_buy_base: num(&kline.taker_buy_base_volume),
            taker_buy_quote: num(&kline.taker_buy_quote_volume),
            is_closed: true,
        }
    }
}

/// The `candles` columns a [`CandleRow`] is read from, in [`CandleRow::from_sql`]'s order.
pub const CANDLE_COLUMNS: &str = "timestamp, open, high, low, close, volume, close_time, quote_volume, trades, \
                                  taker_buy_base, taker_buy_quote, is_closed";

/// A store a test reads candles from: an app's SQLite database ([`Connection`]) or its PostgreSQL schema
/// ([`PgTables`]).
pub trait CandleSource {
    /// Every stored row of one stream, oldest first.
    fn candles_of(&self, symbol: &str, timeframe: &str) -> Vec<CandleRow>;
}

impl CandleSource for Connection {
    fn candles_of(&self, symbol: &str, timeframe: &str) -> Vec<CandleRow> {
        let sql =
            format!("SELECT {CANDLE_COLUMNS} FROM candles WHERE symbol = ?1 AND timeframe = ?2 ORDER BY timestamp");
        let mut stmt = self.prepare(&sql).expect("prepare");
        let rows = stmt.query_map([symbol, timeframe], CandleRow::from_sql).expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    }
}

/// Every stored row of one stream, oldest first.
pub fn stored_candles(db: &(impl CandleSource + ?Sized), symbol: &str, timeframe: &str) -> Vec<CandleRow> {
    db.candles_of(symbol, timeframe)
}

/// The Binance stream name of (symbol, timeframe).
pub fn stream_name(symbol: &str, timeframe: &str) -> String {
    format!("{}@kline_{timeframe}", symbol.to_ascii_lowercase())
}

/// Asserts that the closed candles stored for a stream are exactly the exchange's closed candles from the first
/// stored one to the last, with no hole, no duplicate and every field equal. Returns the stored open times.
pub fn assert_closed_candles_exact(
    fake: &FakeExchange,
    db: &(impl CandleSource + ?Sized),
    symbol: &str,
    timeframe: &str,
) -> Vec<i64> {
    let closed: Vec<CandleRow> = stored_candles(db, symbol, timeframe).into_iter().filter(|r| r.is_closed).collect();
    assert!(!closed.is_empty(), "{symbol} {timeframe}: no closed candle stored");
    let first = closed[0].timestamp;
    let last = closed[closed.len() - 1].timestamp;
    let expected: Vec<CandleRow> =
        fake.closed_candles(symbol, timeframe, first, last + 1).iter().map(CandleRow::from_fake).collect();
    assert_eq!(closed.len(), expected.len(), "{symbol} {timeframe}: holes or extra rows between {first} and {last}");
    for (stored, expected) in closed.iter().zip(&expected) {
        assert_eq!(stored, expected, "{symbol} {timeframe}: stored candle differs from the exchange's");
    }
    closed.iter().map(|r| r.timestamp).collect()
}

/// Open times of the closed kline rows the fake served over REST for one stream.
pub fn served_closed(fake: &FakeExchange, symbol: &str, timeframe: &str) -> BTreeSet<i64> {
    let (symbol, interval) = (format!("symbol={symbol}"), format!("interval={timeframe}"));
    klines_requests(fake, &[&symbol, &interval])
        .into_iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| {
            let in_progress = r.in_progress_open_time;
            r.kline_open_times.into_iter().filter(move |&t| Some(t) != in_progress)
        })
        .collect()
}

/// Every closed candle the fake published for a stream, over WebSocket and REST.
pub fn published_closed(fake: &FakeExchange, symbol: &str, timeframe: &str) -> BTreeSet<i64> {
    let mut all = served_closed(fake, symbol, timeframe);
    all.extend(fake.published_closed_open_times(&stream_name(symbol, timeframe)));
    all
}

/// The open times of the closed candles stored for a stream.
pub fn stored_closed(db: &(impl CandleSource + ?Sized), symbol: &str, timeframe: &str) -> BTreeSet<i64> {
    stored_candles(db, symbol, timeframe).into_iter().filter(|r| r.is_closed).map(|r| r.timestamp).collect()
}

/// A read-write connection to the app's database, as a user's second tool would open it while candled runs.
pub fn open_db_read_write(path: &Path) -> Connection {
    let db = Connection::open(path).expect("open the database read-write");
    db.busy_timeout(Duration::from_secs(10)).expect("set a busy timeout");
    db
}

/// Runs one hand edit of the `candles` view (a user's `DELETE` or `UPDATE`) through `db` and returns how many
/// candles it changed. SQLite counts nothing changed through a view's INSTEAD OF triggers in `changes()` (what
/// `execute` returns), so the count is `total_changes()`, which does count them, less the revisions the revision
/// trigger recorded on the way; in one write transaction, so that candled's commits do not mix in.
pub fn edit_candles(db: &Connection, sql: &str, params: impl rusqlite::Params) -> usize {
    let revisions = |tx: &Connection| {
        tx.query_row("SELECT COUNT(*) FROM candle_revisions", [], |row| row.get::<_, i64>(0)).expect("revisions") as u64
    };
    let tx = rusqlite::Transaction::new_unchecked(db, rusqlite::TransactionBehavior::Immediate).expect("a transaction");
    let (changes, recorded) = (tx.total_changes(), revisions(&tx));
    tx.execute(sql, params).unwrap_or_else(|error| panic!("{sql}: {error}"));
    let changed = tx.total_changes() - changes - (revisions(&tx) - recorded);
    tx.commit().expect("commit the edit");
    changed as usize
}

/// Open times of the rows of a stream still `is_closed = 0` although their close time is before `before_ms`.
pub fn in_progress_closed_before(
    db: &(impl CandleSource + ?Sized),
    symbol: &str,
    timeframe: &str,
    before_ms: i64,
) -> Vec<i64> {
    let rows = stored_candles(db, symbol, timeframe).into_iter();
    rows.filter(|row| !row.is_closed && row.close_time < before_ms).map(|row| row.timestamp).collect()
}

/// How long a candle that closed on the exchange may take to be stored as closed before it counts as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(20);

/// Asserts that no row of a stream stays `is_closed = 0` once its close time has passed on the fake's clock: every
/// row whose candle closed before now is stored closed within [`STUCK_AFTER`].
pub fn assert_no_stuck_in_progress(
    fake: &FakeExchange,
    db: &(impl CandleSource + ?Sized),
    symbol: &str,
    timeframe: &str,
) {
    let now = fake.now_ms();
    let settled =
        wait_until(STUCK_AFTER, || in_progress_closed_before(db, symbol, timeframe, now).is_empty().then_some(()));
    if settled.is_none() {
        let stuck = in_progress_closed_before(db, symbol, timeframe, now);
        panic!(
            "{symbol} {timeframe}: rows still in progress although the exchange closed them before {now}: {stuck:?}"
        );
    }
}

/// The row of `/api/v1/streams` for one stream.
pub fn stream_row(app: &TestApp, symbol: &str, timeframe: &str) -> Value {
    let (_, body) = app.get("/api/v1/streams");
    body["streams"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["symbol"] == symbol && r["timeframe"] == timeframe).cloned())
        .unwrap_or_else(|| panic!("no report for {symbol} {timeframe}: {body}"))
}

/// The row of `/api/v1/tasks/status` for the task named `name` (e.g. `subscription:BTCUSDT:1m`), if listed.
pub fn task_row(app: &TestApp, name: &str) -> Option<Value> {
    let (_, body) = app.get("/api/v1/tasks/status");
    body["tasks"].as_array().and_then(|tasks| tasks.iter().find(|t| t["name"] == name).cloned())
}

/// The `GET /api/v3/klines` requests the fake received whose query holds every one of `params` (such as
/// `symbol=BTCUSDT`), whatever their answer.
pub fn klines_requests(fake: &FakeExchange, params: &[&str]) -> Vec<RestRecord> {
    let matches = |r: &RestRecord| params.iter().all(|param| r.query.split('&').any(|p| p == *param));
    fake.rest_log().into_iter().filter(|r| r.path == "/api/v3/klines" && matches(r)).collect()
}

/// Waits (up to `timeout`) until every listed stream holds every closed candle of the exchange from its first stored
/// one up to `horizon`, then asserts each stream's stored window equals the exchange's candles, field by field, and
/// that none stays in progress past its close. Returns the number of closed candles checked.
pub fn assert_streams_complete_through(
    fake: &FakeExchange,
    app: &TestApp,
    streams: &[(&str, &str)],
    horizon: i64,
    timeout: Duration,
) -> usize {
    let db = open_db(&app.db_path);
    assert_streams_complete_in(fake, &db, &|| app.log_text(), streams, horizon, timeout)
}

/// [`assert_streams_complete_through`] on any store (`db`), with `log` for the message of a failure.
pub fn assert_streams_complete_in(
    fake: &FakeExchange,
    db: &(impl CandleSource + ?Sized),
    log: &dyn Fn() -> String,
    streams: &[(&str, &str)],
    horizon: i64,
    timeout: Duration,
) -> usize {
    let complete = wait_until(timeout, || {
        streams
            .iter()
            .all(|&(symbol, timeframe)| {
                let stored = stored_closed(db, symbol, timeframe);
                let Some(&first) = stored.first() else { return false };
                let expected = fake.closed_candles(symbol, timeframe, first, horizon);
                !expected.is_empty() && expected.iter().all(|k| stored.contains(&k.open_time))
            })
            .then_some(())
    });
    if complete.is_none() {
        let behind: Vec<String> = streams
            .iter()
            .map(|&(symbol, timeframe)| {
                let stored = stored_closed(db, symbol, timeframe);
                let first = stored.first().copied().unwrap_or(horizon);
                let absent: Vec<i64> = fake
                    .closed_candles(symbol, timeframe, first, horizon)
                    .iter()
                    .map(|k| k.open_time)
                    .filter(|open| !stored.contains(open))
                    .collect();
                format!("{symbol} {timeframe}: {} stored, absent {absent:?}", stored.len())
            })
            .collect();
        panic!(
            "the table did not catch up with the exchange through {horizon}:\n{}\nlog:\n{}",
            behind.join("\n"),
            log()
        );
    }
    streams
        .iter()
        .map(|&(symbol, timeframe)| {
            let checked = assert_closed_candles_exact(fake, db, symbol, timeframe).len();
            assert_no_stuck_in_progress(fake, db, symbol, timeframe);
            checked
        })
        .sum()
}

/// The Python that has the real Binance clients (`python-binance`, `ccxt`): `$CANDLED_CLIENTS_PYTHON`, else the venv
/// `.ci/run` makes in `target/py-clients`. Where neither exists the caller skips, with a note; under `CI=true` a
/// missing client is a failure, never a skip.
pub fn clients_python() -> Option<PathBuf> {
    let python = std::env::var_os("CANDLED_CLIENTS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-clients/bin/python"));
    let usable =
        Command::new(&python).args(["-c", "import binance, ccxt"]).output().is_ok_and(|output| output.status.success());
    if usable {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} cannot import binance and ccxt: .ci/run installs them",
        python.display()
    );
    println!("note: python-binance and ccxt are not installed (.ci/run installs them in target/py-clients): skipped");
    None
}

/// A connection of the test's own to a PostgreSQL schema candled stores into, to read its tables as a user would.
pub struct PgTables {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    schema: String,
}

impl PgTables {
    /// Connects to `url` with `schema` first on the search path.
    pub fn connect(url: &str, schema: &str) -> Self {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for PostgreSQL");
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(connection);
            client.batch_execute(&format!("SET search_path TO {schema}")).await.expect("SET search_path");
            client
        });
        Self { runtime, client, schema: schema.to_owned() }
    }

    /// The `[storage]` lines of a candled that stores into this schema through `url` (the server's, or a proxy's).
    pub fn storage_section(&self, url: &str) -> String {
        format!("backend = \"postgres\"\nurl = {url:?}\nschema = {:?}\npool_size = 4", self.schema)
    }

    /// The rows of a query.
    pub fn rows(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Vec<tokio_postgres::Row> {
        self.runtime.block_on(self.client.query(sql, params)).unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// A query's single `BIGINT` (for example a `COUNT(*)`).
    pub fn count(&self, sql: &str) -> i64 {
        self.rows(sql, &[])[0].get(0)
    }
}

impl CandleSource for PgTables {
    fn candles_of(&self, symbol: &str, timeframe: &str) -> Vec<CandleRow> {
        let sql =
            format!("SELECT {CANDLE_COLUMNS} FROM candles WHERE symbol = $1 AND timeframe = $2 ORDER BY timestamp");
        let rows = self.rows(&sql, &[&symbol, &timeframe]);
        rows.iter()
            .map(|row| CandleRow {
                timestamp: row.get(0),
                open: row.get(1),
                high: row.get(2),
                low: row.get(3),
                close: row.get(4),
                volume: row.get(5),
                close_time: row.get(6),
                quote_volume: row.get(7),
                trades: row.get(8),
                taker_buy_base: row.get(9),
                taker_buy_quote: row.get(10),
                is_closed: row.get::<_, i16>(11) == 1,
            })
            .collect()
    }
}

/// A TCP proxy on loopback in front of a server, which a test cuts (every live connection closed, new ones refused)
/// and restores: the server unreachable for candled alone, while other tests go on using it.
pub struct Proxy {
    /// Runs the proxy; dropped with it, which closes every connection.
    _runtime: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<usize>,
    /// Connections accepted (and passed on) so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    /// Starts a proxy to `target` (`host:port`) on a port of its own.
    pub fn start(target: &str) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::net::{TcpListener, TcpStream};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("a proxy port");
        let addr = listener.local_addr().expect("the proxy's address");
        let open = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0);
        let connections = Arc::new(AtomicUsize::new(0));
        let (accepting, cuts, count, target) = (open.clone(), cut.clone(), connections.clone(), target.to_owned());
        runtime.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let mut cut = cuts.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { _runtime: runtime, addr, open, cut, connections }
    }

    /// The proxy's `host:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|cuts| *cuts += 1);
    }

    /// Accepts and passes on new connections again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
