//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) opens `GET /` of candled running against
//! the fake exchange, and the test reads what the page drew over the DevTools protocol; and `/api/v1/events`, the
//! server-sent events the page follows, read directly.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, TestApp, open_db, spawn_app, stored_candles, wait_until};

const HISTORY: u32 = 300;
/// 10 exchange ms per real ms: a 1m candle closes every 6 s, with in-progress updates every 100 ms.
const SPEED: f64 = 10.0;
/// Where the screenshot goes besides the test's folder, when set (`docs/dashboard.png` for the README).
const SCREENSHOT_ENV: &str = "CANDLED_DASHBOARD_SCREENSHOT";

fn app_with_history(fake: &FakeExchange) -> TestApp {
    let mut app = spawn_app(
        fake,
        AppOptions {
            symbols: vec!["BTCUSDT", "ETHUSDT"],
            timeframes: vec!["1m", "5m"],
            history: HISTORY,
            ..AppOptions::default()
        },
    );
    app.wait_for_log("History: loaded", Duration::from_secs(30));
    app
}

#[test]
fn the_dashboard_draws_the_picked_stream_live_and_lists_every_task() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "note: chromium is not installed, so the dashboard is not checked in a browser (.ci/run installs it)"
        );
        return;
    };
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let app = app_with_history(&fake);
    let mut browser = Browser::launch(&chromium, &format!("http://127.0.0.1:{}/#BTCUSDT/1m", app.port));

    // The picked stream's history is drawn on the chart's canvases, with the indicators in three panes.
    let drawn = wait_until(Duration::from_secs(30), || {
        let page = browser.page();
        (page.candles >= HISTORY as usize && page.indicator_series > 0).then_some(page)
    });
    let drawn =
        drawn.unwrap_or_else(|| panic!("no candles drawn: {:?}\nconsole: {:?}", browser.page(), browser.console()));
    assert_eq!(drawn.stream, "BTCUSDT 1m");
    assert!(drawn.canvases > 0, "{drawn:?}");
    // The default set draws sma_20, ema_12, ema_26, three Bollinger bands, rsi_14 and three MACD outputs (not atr).
    assert_eq!((drawn.indicator_series, drawn.panes), (10, 3), "{drawn:?}");
    let stored = stored_candles(&open_db(&app.db_path), "BTCUSDT", "1m");
    assert!(stored.iter().any(|row| row.timestamp == drawn.last_time), "{drawn:?} is not a stored candle");

    // Live: the last candle follows the in-progress updates: the page shows the newest stored row, then newer ones.
    let in_step = wait_until(Duration::from_secs(15), || {
        let newest = stored_candles(&open_db(&app.db_path), "BTCUSDT", "1m").pop()?;
        let page = browser.page();
        (page.live_updates > 0 && page.last_time == newest.timestamp && page.last_close == newest.close).then_some(page)
    });
    let in_step = in_step.unwrap_or_else(|| panic!("the last candle does not follow the store: {:?}", browser.page()));
    let moved = wait_until(Duration::from_secs(20), || {
        let page = browser.page();
        (page.last_time > in_step.last_time && page.candles > in_step.candles).then_some(page)
    });
    let moved = moved.unwrap_or_else(|| panic!("no new candle appended live after {in_step:?}: {:?}", browser.page()));
    assert!(moved.live_updates > in_step.live_updates, "{moved:?}");

    // The task table lists every task the engine reports, by name.
    let (_, status) = app.get("/api/v1/tasks/status");
    let names: BTreeSet<String> = status["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let listed = wait_until(Duration::from_secs(10), || {
        let page = browser.page();
        (page.tasks.iter().cloned().collect::<BTreeSet<_>>() == names).then_some(page)
    });
    let listed = listed.unwrap_or_else(|| panic!("the task table is not {names:?}: {:?}", browser.page()));
    assert_eq!(listed.tasks.len(), names.len(), "each task once: {listed:?}");
    // 4 subscriptions, 4 indicators, storage, backfill, history, audit and one connection; and the four streams.
    assert_eq!((names.len(), listed.streams_total), (13, 4), "{listed:?}");

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "not a PNG of a drawn page");
    std::fs::write(browser.dir.path().join("dashboard.png"), &png).expect("write the screenshot");
    if let Some(path) = std::env::var_os(SCREENSHOT_ENV) {
        std::fs::write(&path, &png).expect("write the screenshot where asked");
    }
    let profile = browser.dir.path().to_path_buf();
    drop(browser);
    let gone = wait_until(Duration::from_secs(10), || processes_using(&profile).is_empty().then_some(()));
    assert!(gone.is_some(), "chromium processes outlived the test: {:?}", processes_using(&profile));
}

#[test]
fn events_stream_the_asked_streams_committed_candles_and_the_page_is_self_contained() {
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let app = app_with_history(&fake);

    // TC0: only the candles of the stream asked for, in progress ones included, as `/api/v1/candles` shows them.
    let mut events = EventReader::open(app.port, "/api/v1/events?symbol=btcusdt&timeframe=1m");
    let mut candles: Vec<Value> = Vec::new();
    while candles.len() < 5 || !candles.iter().any(|c| c["is_closed"] == false) {
        assert!(candles.len() < 1000, "no in-progress candle among {candles:?}");
        let (name, data) = events.next_event().expect("an event within the deadline");
        assert_eq!(name, "candle", "{data}");
        candles.push(serde_json::from_str::<Value>(&data).expect("JSON data"));
    }
    assert!(candles.iter().all(|c| c["symbol"] == "BTCUSDT" && c["timeframe"] == "1m"), "{candles:?}");
    let last = candles.last().expect("a candle");
    let stored = stored_candles(&open_db(&app.db_path), "BTCUSDT", "1m");
    let row = stored.iter().find(|r| json!(r.timestamp) == last["timestamp"]).expect("the event's candle is stored");
    assert_eq!(last["open"], json!(row.open), "{last}");

    // TC1: a bad or unknown stream is refused like on the other endpoints.
    let (status, body) = app.get("/api/v1/events?symbol=BTCUSDT");
    assert_eq!((status, &body["parameter"]), (400, &json!("timeframe")), "{body}");
    let (status, body) = app.get("/api/v1/events?symbol=NOSUCH&timeframe=1m");
    assert_eq!((status, &body["parameter"]), (404, &json!("symbol")), "{body}");

    // TC2: the page and every file it loads come from candled, and its policy forbids any other origin.
    let http = reqwest::blocking::Client::new();
    let page = http.get(format!("http://127.0.0.1:{}/", app.port)).send().expect("GET /");
    assert_eq!(page.status().as_u16(), 200);
    let policy = page.headers()["content-security-policy"].to_str().expect("a policy").to_owned();
    assert!(policy.starts_with("default-src 'none'; script-src 'self';") && policy.contains("connect-src 'self'"));
    let html = page.text().expect("the page");
    assert!(html.contains("https://www.tradingview.com/"), "the attribution link TradingView's licence asks for");
    for asset in html.split(['"', '\'']).filter(|s| s.starts_with('/') && !s.starts_with("//")) {
        let response = http.get(format!("http://127.0.0.1:{}{asset}", app.port)).send().expect("GET an asset");
        assert_eq!(response.status().as_u16(), 200, "{asset}");
    }
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http://"), "nothing loaded from elsewhere");

    // TC3: an open event stream neither delays candled's stop nor keeps it from stopping cleanly.
    let stopping = std::time::Instant::now();
    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", log.join("\n"));
    // Without ending the stream, the HTTP server would wait out its 2 s shutdown timeout for it.
    let stopped_in = stopping.elapsed();
    assert!(stopped_in < Duration::from_secs(2), "stopping took {stopped_in:?} with an event stream open");
    drop(events);
}

#[test]
fn the_picker_filters_and_pages_a_thousand_streams() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "note: chromium is not installed, so the dashboard is not checked in a browser (.ci/run installs it)"
        );
        return;
    };
    let symbols: Vec<&'static str> = (0..500).map(|i| &*Box::leak(format!("DB{i:04}USDT").into_boxed_str())).collect();
    let fake = FakeExchange::start(FakeConfig {
        speed: 60.0,
        update_every: Duration::from_secs(1),
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        ..FakeConfig::default()
    });
    let mut app = spawn_app(
        &fake,
        AppOptions { symbols: symbols.clone(), timeframes: vec!["1m", "5m"], history: 0, ..AppOptions::default() },
    );
    app.wait_for_log("Started 2004 tasks", Duration::from_secs(60));
    // What the page reads every few seconds, at this size.
    for path in ["/api/v1/streams", "/api/v1/tasks/status"] {
        let started = std::time::Instant::now();
        let body = reqwest::blocking::get(format!("http://127.0.0.1:{}{path}", app.port)).and_then(|r| r.bytes());
        let size = body.expect("an answer").len();
        eprintln!("{path}: {} KiB in {} ms", size / 1024, started.elapsed().as_millis());
    }
    let started = std::time::Instant::now();
    let mut browser = Browser::launch(&chromium, &format!("http://127.0.0.1:{}/", app.port));
    let read_picker = "JSON.stringify({ rows: [...document.querySelectorAll('#streams tbody tr')].map((r) => r.dataset.stream), \
         page: document.querySelector('#streams-pager span').textContent, \
         tasks: document.querySelectorAll('#tasks tbody tr').length, tasksTotal: document.body.dataset.tasksTotal, \
         stream: document.body.dataset.stream })";

    // TC0: one page of 50 of the 1,000 streams, and 100 of the 2,004 tasks (no history task with `history = 0`); the
    // first stream is picked.
    let first = wait_until(Duration::from_secs(30), || {
        let picker = browser.evaluate(read_picker);
        (picker["rows"].as_array()?.len() == 50 && picker["tasksTotal"] == "2004").then_some(picker)
    });
    let first =
        first.unwrap_or_else(|| panic!("the picker did not page 1,000 streams: {}", browser.evaluate(read_picker)));
    eprintln!(
        "the page listed 1,000 streams and 2,004 tasks {} ms after Chromium started",
        started.elapsed().as_millis()
    );
    assert_eq!((first["page"].as_str(), first["tasks"].as_u64()), (Some("page 1 of 20"), Some(100)), "{first}");
    assert_eq!(first["rows"][0], "DB0000USDT 1m", "{first}");
    assert_eq!(first["stream"], "DB0000USDT 1m", "{first}");

    // TC1: the next page.
    browser.evaluate("document.querySelector('#streams-pager [data-step=\"1\"]').click(); 'null'");
    let second = browser.evaluate(read_picker);
    assert_eq!(
        (second["page"].as_str(), &second["rows"][0]),
        (Some("page 2 of 20"), &json!("DB0025USDT 1m")),
        "{second}"
    );

    // TC2: a filter keeps the matching streams, from the first page; picking one charts and follows it.
    let filter = "const box = document.querySelector('#stream-filter'); box.value = 'db0421'; \
         box.dispatchEvent(new Event('input')); 'null'";
    browser.evaluate(filter);
    let filtered = browser.evaluate(read_picker);
    assert_eq!(filtered["rows"], json!(["DB0421USDT 1m", "DB0421USDT 5m"]), "{filtered}");
    assert_eq!(filtered["page"], "page 1 of 1", "{filtered}");
    browser.evaluate("document.querySelector('#streams tbody tr[data-stream=\"DB0421USDT 5m\"]').click(); 'null'");
    let picked = wait_until(Duration::from_secs(20), || {
        let page = browser.page();
        (page.stream == "DB0421USDT 5m" && page.candles > 0 && page.live_updates > 0).then_some(page)
    });
    assert!(picked.is_some(), "the picked stream is not charted live: {:?}", browser.page());
}

/// What the page drew, as it records it in `<body data-*>` and its task table.
#[derive(Debug, Clone, Default)]
struct PageState {
    stream: String,
    candles: usize,
    last_time: i64,
    last_close: f64,
    live_updates: u64,
    indicator_series: usize,
    panes: usize,
    canvases: usize,
    tasks: Vec<String>,
    streams_total: usize,
}

const READ_PAGE: &str = "JSON.stringify({ data: { ...document.body.dataset }, \
     canvases: document.querySelectorAll('#chart canvas').length, \
     tasks: [...document.querySelectorAll('#tasks tbody tr')].map((row) => row.dataset.name) })";

/// A headless Chromium with its own profile folder, driven over the DevTools protocol.
struct Browser {
    /// Declared first, so dropped first: the processes go before their folder.
    _process: ChromiumProcess,
    dir: tempfile::TempDir,
    devtools: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    console: Vec<String>,
}

/// Chromium and its helpers, in a process group of their own; dropping it kills the whole group.
struct ChromiumProcess(Child);

impl Drop for ChromiumProcess {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// The installed Chromium, if any.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].into_iter().find_map(|name| {
        let found = Command::new("which").arg(name).stderr(Stdio::null()).output().ok()?;
        let path = String::from_utf8(found.stdout).ok()?;
        (found.status.success() && !path.trim().is_empty()).then(|| PathBuf::from(path.trim()))
    })
}

impl Browser {
    fn launch(chromium: &Path, url: &str) -> Browser {
        let dir = tempfile::tempdir().expect("a profile folder");
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.path().display()))
            .arg(url)
            // Chromium keeps its singleton socket in a folder of its own under TMPDIR: inside the profile, it goes
            // with it.
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let mut process = ChromiumProcess(child);
        let devtools = connect_to_page(&mut process, dir.path());
        let mut browser = Browser { _process: process, dir, devtools, next_id: 0, console: Vec::new() };
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends one DevTools command and returns its result; events read meanwhile keep the console messages.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params }).to_string();
        self.devtools.send(Message::text(command)).expect("send a DevTools command");
        loop {
            let message = self.devtools.read().unwrap_or_else(|e| panic!("no answer to {method}: {e}"));
            let Ok(text) = message.to_text() else { continue };
            let Ok(answer) = serde_json::from_str::<Value>(text) else { continue };
            if answer["method"] == "Runtime.consoleAPICalled" || answer["method"] == "Runtime.exceptionThrown" {
                self.console.push(answer["params"].to_string());
            }
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method} failed: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Runs `expression` in the page; its value, which must be JSON text.
    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }));
        let text = result["result"]["value"].as_str().unwrap_or("null").to_owned();
        serde_json::from_str(&text).unwrap_or_default()
    }

    fn page(&mut self) -> PageState {
        let page = self.evaluate(READ_PAGE);
        let data = &page["data"];
        let number = |key: &str| data[key].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        PageState {
            stream: data["stream"].as_str().unwrap_or_default().to_owned(),
            candles: number("candles") as usize,
            last_time: number("lastTime") as i64,
            last_close: number("lastClose"),
            live_updates: number("liveUpdates") as u64,
            indicator_series: number("indicatorSeries") as usize,
            panes: number("panes") as usize,
            canvases: page["canvases"].as_u64().unwrap_or(0) as usize,
            tasks: page["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            streams_total: number("streamsTotal") as usize,
        }
    }

    fn console(&self) -> &[String] {
        &self.console
    }

    /// A PNG of the whole page as drawn.
    fn screenshot(&mut self) -> Vec<u8> {
        let size = self.call("Page.getLayoutMetrics", json!({}))["cssContentSize"].clone();
        let clip = json!({ "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 });
        let capture = json!({ "format": "png", "captureBeyondViewport": true, "clip": clip });
        let result = self.call("Page.captureScreenshot", capture);
        base64_decode(result["data"].as_str().expect("screenshot data"))
    }
}

/// The page's DevTools socket, found through the port Chromium writes into its profile folder.
fn connect_to_page(process: &mut ChromiumProcess, profile: &Path) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let port_file = profile.join("DevToolsActivePort");
    let port = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&port_file).ok()?.lines().next()?.trim().parse::<u16>().ok()
    });
    let port =
        port.unwrap_or_else(|| panic!("chromium wrote no DevToolsActivePort (exit: {:?})", process.0.try_wait()));
    let http = reqwest::blocking::Client::new();
    let target = wait_until(Duration::from_secs(10), || {
        let targets: Value = http.get(format!("http://127.0.0.1:{port}/json/list")).send().ok()?.json().ok()?;
        let page = targets.as_array()?.iter().find(|t| t["type"] == "page")?;
        page["webSocketDebuggerUrl"].as_str().map(str::to_owned)
    });
    let target = target.expect("a page target");
    let (socket, _) = tungstenite::connect(target.as_str()).expect("connect to the page's DevTools socket");
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
    }
    socket
}

/// Ids of the processes whose command line names `profile` (Chromium passes its profile folder to every helper).
fn processes_using(profile: &Path) -> Vec<u32> {
    let needle = profile.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

/// Standard base64 (what DevTools sends screenshots in).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut bytes = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk.iter().enumerate().fold(0u32, |acc, (i, &d)| acc | (u32::from(d) << (18 - 6 * i)));
        bytes.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    bytes
}

/// Reads a server-sent event stream over a plain HTTP/1.1 connection.
struct EventReader {
    lines: BufReader<TcpStream>,
}

impl EventReader {
    fn open(port: u16, path: &str) -> EventReader {
        use std::io::Write as _;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n").expect("send");
        let mut lines = BufReader::new(stream);
        let mut head = String::new();
        // The head ends with an empty line.
        while lines.read_line(&mut head).expect("the response head") > 2 {}
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
        EventReader { lines }
    }

    /// The next event's name and data, skipping comments; chunked framing lines are skipped as they are not fields.
    fn next_event(&mut self) -> Option<(String, String)> {
        let (mut name, mut data) = (None, None);
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = Some(value.to_owned());
            } else if line.is_empty()
                && let (Some(name), Some(data)) = (&name, &data)
            {
                return Some((name.clone(), data.clone()));
            }
        }
    }
}
