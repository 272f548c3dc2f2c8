//! HTTP conventions against the real binary: 405 with `Allow`, HEAD on every GET endpoint, a JSON body on every
//! error, one parameter parser for every endpoint, a 404 naming an unknown symbol; malformed requests logged once
//! at WARN rather than each at ERROR; and a config file capped in size.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ALLOW, CONTENT_TYPE};
use serde_json::Value;

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{AppOptions, TestApp, spawn_app, wait_until};

const GET_ENDPOINTS: [&str; 6] = [
    "/health",
    "/api/v1/tasks/status",
    "/api/v1/streams",
    "/api/v1/candles?symbol=BTCUSDT&timeframe=1m",
    "/api/v1/indicators?symbol=BTCUSDT&timeframe=1m",
    "/metrics",
];

/// A response: status, `Allow` and `Content-Type` headers, body text.
struct Answer {
    status: u16,
    allow: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    /// The body as JSON, with the status and body in the panic message when it is not.
    fn json(&self) -> Value {
        assert_eq!(self.content_type.as_deref(), Some("application/json"), "{}: {}", self.status, self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts a JSON error: the status, `{"error": ..., "parameter": ...}`, and the text naming each of `names`.
    fn assert_error(&self, status: u16, parameter: Option<&str>, names: &[&str]) {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["parameter"].as_str(), parameter, "{body}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("no error text: {body}"));
        for name in names {
            assert!(error.contains(name), "the error does not name {name:?}: {body}");
        }
    }
}

fn request(app: &TestApp, method: Method, path: &str) -> Answer {
    let client = reqwest::blocking::Client::builder().no_proxy().build().expect("an HTTP client");
    let response =
        client.request(method, format!("http://127.0.0.1:{}{path}", app.port)).send().expect("an HTTP answer");
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, allow, content_type) = (response.status().as_u16(), header(ALLOW), header(CONTENT_TYPE));
    Answer { status, allow, content_type, body: response.text().expect("a body") }
}

fn start(fake: &FakeExchange) -> TestApp {
    spawn_app(
        fake,
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: 10, ..AppOptions::default() },
    )
}

#[test]
fn methods_head_errors_and_parameters_follow_http_conventions() {
    let fake = FakeExchange::start(FakeConfig { speed: 60.0, ..FakeConfig::default() });
    let app = start(&fake);
    let history = wait_until(Duration::from_secs(20), || {
        let answer = request(&app, Method::GET, "/api/v1/candles?symbol=BTCUSDT&timeframe=1m");
        (answer.status == 200 && answer.json().as_array().is_some_and(|rows| rows.len() >= 10)).then_some(())
    });
    assert!(history.is_some(), "no history stored; log:\n{}", app.log_text());

    for path in GET_ENDPOINTS {
        // HEAD: the GET's status and headers, no body.
        let get = request(&app, Method::GET, path);
        let head = request(&app, Method::HEAD, path);
        assert_eq!(get.status, 200, "GET {path}: {}", get.body);
        assert_eq!((head.status, &head.content_type, head.body.as_str()), (200, &get.content_type, ""), "HEAD {path}");
        // Any other method: 405, `Allow`, a JSON body.
        for method in [Method::POST, Method::DELETE] {
            let answer = request(&app, method.clone(), path);
            assert_eq!(answer.allow.as_deref(), Some("GET, HEAD"), "{method} {path}");
            answer.assert_error(405, None, &[method.as_str(), path.split('?').next().unwrap_or(path)]);
        }
    }

    // An unknown path, whatever the method.
    request(&app, Method::GET, "/api/v2/candles").assert_error(404, None, &["/api/v2/candles"]);
    request(&app, Method::POST, "/nowhere").assert_error(404, None, &["/nowhere"]);

    // One parser: a parameter twice, an unknown one, a bad time and an inverted window, on both endpoints.
    for endpoint in ["/api/v1/candles", "/api/v1/indicators"] {
        let get = |query: &str| request(&app, Method::GET, &format!("{endpoint}?{query}"));
        get("symbol=BTCUSDT&symbol=ETHUSDT&timeframe=1m").assert_error(400, Some("symbol"), &["more than once"]);
        get("symbol=BTCUSDT&timeframe=1m&limt=5").assert_error(400, Some("limt"), &["limit"]);
        get("symbol=BTCUSDT&timeframe=1m&limit=0").assert_error(400, Some("limit"), &["\"0\""]);
        get("symbol=BTCUSDT&timeframe=1m&start=abc").assert_error(400, Some("start"), &["start"]);
        get("symbol=NOSUCHUSDT&timeframe=1m").assert_error(404, Some("symbol"), &["\"NOSUCHUSDT\""]);
    }
    let inverted = "/api/v1/candles?symbol=BTCUSDT&timeframe=1m&start=1700000120000&end=1700000060000";
    request(&app, Method::GET, inverted).assert_error(400, Some("start"), &["1700000120000", "`end` 1700000060000"]);
}

#[test]
fn malformed_requests_are_reported_once_at_warn_not_each_at_error() {
    let fake = FakeExchange::start(FakeConfig::default());
    let mut app = start(&fake);
    const REQUESTS: usize = 200;
    for _ in 0..REQUESTS {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        stream.write_all(b"GARBAGE\r\n\r\n").expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("the server answers and closes");
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    }
    assert_eq!(app.metric("candled_http_client_errors_total"), REQUESTS as f64, "every one is counted");
    // The server logs each error before it closes the connection; shutting down puts a last line after them all.
    let sent = Command::new("kill").args(["-TERM", &app.pid().to_string()]).status().expect("run kill");
    assert!(sent.success());
    app.wait_for_log("Stopped cleanly", Duration::from_secs(30));

    let log = app.log_lines();
    let errors: Vec<_> = log.iter().filter(|line| line.contains("ERROR")).collect();
    assert!(errors.is_empty(), "no ERROR line for a client's mistake: {errors:#?}");
    let reports: Vec<_> = log.iter().filter(|line| line.contains("HTTP client error")).collect();
    assert_eq!(reports.len(), 1, "one report per minute at most: {reports:#?}");
    assert!(reports[0].contains("WARN") && reports[0].contains("request parse error"), "{}", reports[0]);
}

#[test]
fn a_config_file_over_one_mib_is_refused_naming_the_file_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // An endless file and a file one byte over the limit: read no further than the limit, exit 2 at once.
    let oversized = dir.path().join("big.toml");
    std::fs::write(&oversized, format!("#{}", " ".repeat(1 << 20))).unwrap();
    for config in ["/dev/zero", "big.toml"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_candled"))
            .args(["--config", config])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start candled");
        let exited = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten());
        let Some(status) = exited else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("candled --config {config} still reading after 10 s");
        };
        let mut stderr = String::new();
        child.stderr.take().expect("piped stderr").read_to_string(&mut stderr).expect("stderr");
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("error: config file ") && stderr.contains(config), "{stderr}");
        assert!(stderr.contains("1 MiB limit"), "{stderr}");
    }
}
