//! candled as a local Binance, REST side: the same requests sent to the fake exchange and to candled in front of it
//! get the same answers (klines row for row, exchangeInfo, every error code), the weight header and limit, the
//! `[api]` switches, and real clients (python-binance, ccxt) pointed at candled.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::fake_exchange::{DEFAULT_LISTING_MS, FakeConfig, FakeExchange, Interval};
use crate::helpers::{AppOptions, TestApp, clients_python, klines_requests, spawn_app, stored_closed, wait_until};

const MINUTE: i64 = 60_000;
/// Closed 1m candles candled collects at start: requests reaching further back need read-through.
const HISTORY: u32 = 30;

/// One GET: status, the `X-MBX-USED-WEIGHT-1M` and `Retry-After` headers, the JSON body.
struct Answer {
    status: u16,
    weight: Option<u64>,
    retry_after: Option<u64>,
    body: Value,
}

fn get(base: &str, path_and_query: &str) -> Answer {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(reqwest::blocking::Client::new);
    let response = client.get(format!("{base}{path_and_query}")).send().expect("HTTP GET");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()?.parse().ok());
    let (status, weight, retry_after) =
        (response.status().as_u16(), header("x-mbx-used-weight-1m"), header("retry-after"));
    let body = serde_json::from_str(&response.text().expect("a body")).expect("a JSON body");
    Answer { status, weight, retry_after, body }
}

fn app_url(app: &TestApp) -> String {
    format!("http://127.0.0.1:{}", app.port)
}

/// candled collecting BTCUSDT 1m (30 candles of history) in front of a fake, once the history is stored.
fn start(extra: &'static str) -> (FakeExchange, TestApp) {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = spawn_app(
        &fake,
        AppOptions { symbols: vec!["BTCUSDT"], timeframes: vec!["1m"], history: HISTORY, extra, ..Default::default() },
    );
    let stored = wait_until(Duration::from_secs(20), || {
        (stored_closed(&app.db(), "BTCUSDT", "1m").len() >= HISTORY as usize).then_some(())
    });
    assert!(stored.is_some(), "the history was not stored; log:\n{}", app.log_text());
    (fake, app)
}

/// Waits until the fake's clock is at least 1.5 s past a minute boundary and 2 s before the next, so that no
/// candle (of any interval, all being whole minutes) opens while a pair of requests is out.
fn away_from_boundaries(fake: &FakeExchange) {
    let calm = wait_until(Duration::from_secs(5), || {
        let into_minute = fake.now_ms().rem_euclid(MINUTE);
        (1_500..MINUTE - 2_000).contains(&into_minute).then_some(())
    });
    assert!(calm.is_some(), "the fake's clock never left a minute boundary");
}

/// Sends `path_and_query` to the fake and to candled and asserts the answers equal after JSON parsing: status, and
/// body row for row. The fake's clock runs in real time, so the in-progress candle changes between the two
/// requests: closed rows (close time before the fake's clock) are compared in every field, the in-progress row by
/// its open time only. Both requests go out away from a candle boundary, so both select the same rows.
fn assert_same(fake: &FakeExchange, app: &TestApp, path_and_query: &str) -> Value {
    away_from_boundaries(fake);
    let from_fake = get(&fake.rest_url(), path_and_query);
    let from_candled = get(&app_url(app), path_and_query);
    let now = fake.now_ms();
    assert_eq!(from_candled.status, from_fake.status, "{path_and_query}: {}", from_candled.body);
    let (Some(expected), Some(got)) = (from_fake.body.as_array(), from_candled.body.as_array()) else {
        assert_eq!(from_candled.body, from_fake.body, "{path_and_query}");
        return from_candled.body;
    };
    let opens = |rows: &[Value]| rows.iter().map(|row| row[0].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(opens(got), opens(expected), "{path_and_query}: open times");
    for (got_row, expected_row) in got.iter().zip(expected) {
        if expected_row[6].as_i64().unwrap() < now {
            assert_eq!(got_row, expected_row, "{path_and_query}: a closed row");
        }
    }
    from_candled.body
}

#[test]
fn klines_match_the_fake_for_every_combination_of_times_and_limits() {
    let (fake, app) = start("");
    let current = Interval::parse("1m").unwrap().open_time_at(fake.now_ms());
    let ago = |minutes: i64| current - minutes * MINUTE;
    let first = DEFAULT_LISTING_MS;
    let mut queries: Vec<String> = vec![
        // Neither time; limits 1, default, 1000 (reaching before the stored history).
        String::new(),
        "&limit=1".into(),
        "&limit=10".into(),
        "&limit=1000".into(),
        // startTime only: an exact open time, +-1 ms, the candle in progress, the future.
        format!("&startTime={}", ago(10)),
        format!("&startTime={}&limit=3", ago(10) + 1),
        format!("&startTime={}&limit=3", ago(10) - 1),
        format!("&startTime={}", current),
        format!("&startTime={}", current + 5 * MINUTE),
        // endTime only.
        format!("&endTime={}&limit=5", ago(5)),
        format!("&endTime={}&limit=5", ago(5) - 1),
        format!("&endTime={}&limit=5", ago(5) + 1),
        format!("&endTime={}&limit=2", current + 10 * MINUTE),
        // Both: a window, limit cutting it, one inside a candle (empty), equal times.
        format!("&startTime={}&endTime={}", ago(12), ago(4)),
        format!("&startTime={}&endTime={}&limit=3", ago(12) + 1, ago(4) - 1),
        format!("&startTime={}&endTime={}", ago(7) + 1, ago(7) + 500),
        format!("&startTime={}&endTime={}", ago(7), ago(7)),
        // Older than the stored history, and before the exchange's first candle (read-through).
        format!("&startTime={}&limit=5", ago(200)),
        format!("&startTime={}&endTime={}&limit=1000", ago(2500), ago(1600)),
        format!("&startTime={}&limit=4", first - 3 * MINUTE),
        format!("&endTime={}&limit=4", first + 2 * MINUTE),
        format!("&endTime={}", first - MINUTE),
    ];
    queries.extend(["&limit=1000&startTime=0".to_owned(), format!("&endTime={}&startTime={}", ago(3), ago(2))]);
    // timeZone does not move intervals below a day: served from the store on the UTC grid.
    queries.extend(["&timeZone=0&limit=5".to_owned(), "&timeZone=-05:45&limit=5".to_owned()]);
    let mut answered = 0;
    for query in &queries {
        answered +=
            assert_same(&fake, &app, &format!("/api/v3/klines?symbol=BTCUSDT&interval=1m{query}")).is_array() as u32;
    }
    for query in &queries[..6] {
        assert_same(&fake, &app, &format!("/api/v3/uiKlines?symbol=BTCUSDT&interval=1m{query}"));
    }
    // Read-through rows of a configured stream are stored, and the stream's indicators rebuilt over them.
    assert!(stored_closed(&app.db(), "BTCUSDT", "1m").contains(&ago(200)));
    let indicator_at = |open: i64| -> i64 {
        let sql = "SELECT COUNT(*) FROM indicators WHERE symbol = 'BTCUSDT' AND timeframe = '1m' AND timestamp = ?1";
        app.db().query_row(sql, [open], |row| row.get(0)).unwrap()
    };
    let rebuilt = wait_until(Duration::from_secs(10), || (indicator_at(ago(1700)) > 0).then_some(()));
    assert!(rebuilt.is_some(), "no indicator values on the read-through candles");
    assert!(app.metric("candled_api_klines_answered_total{source=\"store\"}") >= 10.0);
    assert!(app.metric("candled_api_klines_answered_total{source=\"exchange\"}") >= 5.0);
    assert_eq!(app.metric("candled_api_requests_total{endpoint=\"klines\",status=\"200\"}"), f64::from(answered));
    assert_eq!(
        app.metric("candled_api_requests_total{endpoint=\"klines\",status=\"400\"}"),
        1.0,
        "endTime < startTime"
    );
}

#[test]
fn unconfigured_streams_and_holes_are_read_through() {
    let (fake, app) = start("");
    let five = Interval::parse("5m").unwrap().open_time_at(fake.now_ms());
    // A symbol and an interval candled does not collect: fetched, then served again from the cache.
    let window = format!(
        "/api/v3/klines?symbol=ETHUSDT&interval=5m&startTime={}&endTime={}",
        five - 300 * MINUTE,
        five - 60 * MINUTE
    );
    assert_same(&fake, &app, &window);
    // The fake's log holds the test's own requests too: one per comparison, and candled's.
    let asked = || klines_requests(&fake, &["symbol=ETHUSDT"]).len();
    assert_eq!(asked(), 2, "the test's request and candled's read-through");
    assert_same(&fake, &app, &window);
    assert_eq!(asked(), 3, "the test's request only: candled answered from its cache");
    assert!(app.metric("candled_api_klines_answered_total{source=\"cache\"}") >= 1.0);
    assert!(app.metric("candled_api_cache_bytes") > 0.0);
    assert_same(&fake, &app, "/api/v3/klines?symbol=ETHUSDT&interval=5m&limit=7");
    assert_same(&fake, &app, "/api/v3/klines?symbol=SOLUSDT&interval=1h&limit=3");
    // A day in another time zone is the exchange's to select: forwarded as asked (the fake ignores timeZone, so
    // this shows the forwarding, not the alignment).
    let zoned = "timeZone=%2B08:00";
    assert_same(&fake, &app, &format!("/api/v3/klines?symbol=BTCUSDT&interval=1d&{zoned}&limit=3"));
    assert_eq!(klines_requests(&fake, &["timeZone=%2B08%3A00", "interval=1d"]).len(), 1, "candled's request");
    // A hole in a configured stream: three stored candles deleted behind candled's back.
    let current = Interval::parse("1m").unwrap().open_time_at(fake.now_ms());
    let writer = crate::helpers::open_db_read_write(&app.db_path);
    let deleted = crate::helpers::edit_candles(
        &writer,
        "DELETE FROM candles WHERE symbol = 'BTCUSDT' AND timeframe = '1m' AND timestamp BETWEEN ?1 AND ?2",
        [current - 12 * MINUTE, current - 10 * MINUTE],
    );
    assert_eq!(deleted, 3);
    let hole = format!("startTime={}", current - 15 * MINUTE);
    assert_same(&fake, &app, &format!("/api/v3/klines?symbol=BTCUSDT&interval=1m&{hole}&limit=10"));
    assert_eq!(klines_requests(&fake, &[&hole, "limit=10"]).len(), 2, "the test's request and candled's read-through");
}

#[test]
fn exchange_info_and_every_error_match_the_fake() {
    let (fake, app) = start("");
    let info = |base: &str, query: &str| {
        let mut answer = get(base, &format!("/api/v3/exchangeInfo{query}"));
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        answer.body.as_object_mut().unwrap().remove("serverTime").expect("a serverTime");
        answer.body
    };
    for query in ["", "?symbol=ETHUSDT", "?symbols=%5B%22SOLUSDT%22,%22BTCUSDT%22%5D"] {
        assert_eq!(info(&app_url(&app), query), info(&fake.rest_url(), query), "exchangeInfo{query}");
    }
    assert_eq!(get(&app_url(&app), "/api/v3/ping").body, serde_json::json!({}));
    let post = reqwest::blocking::Client::new().post(format!("{}/api/v3/ping", app_url(&app))).send().unwrap();
    assert_eq!(post.status().as_u16(), 405, "GET and HEAD only, as every query endpoint");
    let server_time = get(&app_url(&app), "/api/v3/time").body["serverTime"].as_i64().unwrap();
    assert!((server_time - fake.now_ms()).abs() < 2_000, "the exchange's clock, not the local one");
    let faults = [
        "/api/v3/klines?interval=1m",
        "/api/v3/klines?symbol=&interval=1m",
        "/api/v3/klines?symbol=btcusdt&interval=1m",
        "/api/v3/klines?symbol=NOPEUSDT&interval=1m",
        "/api/v3/klines?symbol=BTCUSDT",
        "/api/v3/klines?symbol=BTCUSDT&interval=7m",
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=yesterday",
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=0",
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1001",
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=ten",
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=2000&endTime=1000",
        "/api/v3/klines?symbol=BTCUSDT&symbol=ETHUSDT&interval=1m",
        "/api/v3/klines?symbol=BTCUSDT&interval=1m&recvWindow=5000",
        "/api/v3/uiKlines?symbol=NOPEUSDT&interval=1m",
        "/api/v3/exchangeInfo?symbol=NOPEUSDT",
        "/api/v3/exchangeInfo?symbols=%5B%22BTCUSDT%22,%22NOPEUSDT%22%5D",
        "/api/v3/exchangeInfo?symbol=BTCUSDT&symbols=%5B%22BTCUSDT%22%5D",
        "/api/v3/exchangeInfo?symbol=btcusdt",
        "/api/v3/exchangeInfo?symbols=BTCUSDT",
        "/api/v3/exchangeInfo?symbol=BTCUSDT&symbol=ETHUSDT",
    ];
    for query in faults {
        let (expected, got) = (get(&fake.rest_url(), query), get(&app_url(&app), query));
        assert!(expected.status >= 400, "{query} is a fault on the fake: {}", expected.body);
        assert_eq!((got.status, &got.body), (expected.status, &expected.body), "{query}");
    }
    // -1003 at Binance's 6000 a minute: exchangeInfo (weight 20) until refused, then once more.
    let refused =
        (0..700).map(|_| get(&app_url(&app), "/api/v3/exchangeInfo?symbol=BTCUSDT")).find(|a| a.status != 200);
    let refused = refused.expect("6000 weight a minute is enforced");
    let banned = get(&app_url(&app), "/api/v3/ping");
    // The fake's own throttle, on klines only (candled's engine asks little else of it by now).
    let klines = "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1";
    fake.rest_rate_limit_klines(1, Duration::from_secs(30));
    let fake_refused = get(&fake.rest_url(), klines);
    std::thread::sleep(Duration::from_millis(150)); // past the fake's in-flight grace: the next one is a ban
    let fake_banned = get(&fake.rest_url(), klines);
    assert_eq!((refused.status, &refused.body), (fake_refused.status, &fake_refused.body));
    assert_eq!((banned.status, &banned.body), (fake_banned.status, &fake_banned.body));
}

/// Waits until the local wall clock is at least 5 s before the end of its minute (weights count per minute).
fn early_in_a_minute() {
    let early = wait_until(Duration::from_secs(10), || {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        (ms.rem_euclid(MINUTE) < MINUTE - 5_000).then_some(())
    });
    assert!(early.is_some());
}

#[test]
fn weight_is_reported_and_limited_and_read_through_can_be_off() {
    let (fake, app) = start("[api]\nweight_per_minute = 30\nread_through = false\n");
    early_in_a_minute();
    // Older than the store's history: with read-through off, the store's rows alone, and nothing asked upstream.
    let current = Interval::parse("1m").unwrap().open_time_at(fake.now_ms());
    let since = format!("startTime={}", current - 200 * MINUTE);
    let answer = get(&app_url(&app), &format!("/api/v3/klines?symbol=BTCUSDT&interval=1m&{since}&limit=3"));
    assert_eq!((answer.status, answer.weight), (200, Some(2)));
    let stored = stored_closed(&app.db(), "BTCUSDT", "1m");
    let opens: Vec<i64> = answer.body.as_array().unwrap().iter().map(|row| row[0].as_i64().unwrap()).collect();
    assert_eq!(opens, stored.iter().take(3).copied().collect::<Vec<_>>(), "the oldest stored rows");
    assert!(klines_requests(&fake, &[&since]).is_empty());
    let unknown = get(&app_url(&app), "/api/v3/klines?symbol=ETHUSDT&interval=5m");
    assert_eq!((unknown.status, unknown.body, unknown.weight), (200, serde_json::json!([]), Some(4)));
    // exchangeInfo states the local limit, not the exchange's.
    let info = get(&app_url(&app), "/api/v3/exchangeInfo?symbol=BTCUSDT");
    assert_eq!((info.status, info.weight), (200, Some(24)));
    assert_eq!(info.body["rateLimits"][0]["limit"], 30);
    // Weights add up per minute to the limit (2 + 2 + 20 + 1 * 6 = 30), then a 429 with Retry-After, then a ban.
    for used in 25..=30 {
        assert_eq!(get(&app_url(&app), "/api/v3/ping").weight, Some(used));
    }
    let limited = get(&app_url(&app), "/api/v3/ping");
    assert_eq!((limited.status, limited.body["code"].as_i64(), limited.weight), (429, Some(-1003), Some(30)));
    assert!(limited.retry_after.is_some_and(|secs| (1..=60).contains(&secs)), "Retry-After: {:?}", limited.retry_after);
    let banned = get(&app_url(&app), "/api/v3/time");
    assert_eq!((banned.status, banned.body["code"].as_i64()), (418, Some(-1003)));
    assert!(banned.retry_after.is_some_and(|secs| secs >= 60), "a ban outlasts the minute");
    assert_eq!(app.metric("candled_api_requests_total{endpoint=\"ping\",status=\"429\"}"), 1.0);
}

#[test]
fn a_disabled_api_is_not_found() {
    let fake = FakeExchange::start(FakeConfig::default());
    let app = spawn_app(
        &fake,
        AppOptions {
            symbols: vec!["BTCUSDT"],
            timeframes: vec!["1m"],
            history: 5,
            extra: "[api]\nenabled = false\n",
            ..Default::default()
        },
    );
    for path in ["/api/v3/ping", "/api/v3/klines?symbol=BTCUSDT&interval=1m", "/api/v3/exchangeInfo"] {
        assert_eq!(app.get(path).0, 404, "{path}");
    }
    assert_eq!(app.get("/health").0 / 100, 2, "the rest of the HTTP API still answers");
}

/// The fake's closed candles in `[from, to)` as Binance rows (the ground truth).
fn truth(fake: &FakeExchange, symbol: &str, interval: &str, from: i64, to: i64) -> Vec<Value> {
    let rows = fake.closed_candles(symbol, interval, from, to).iter().map(|k| k.rest_row_json()).collect::<Vec<_>>();
    serde_json::from_str(&format!("[{}]", rows.join(","))).unwrap()
}

fn run_python(python: &std::path::Path, script: &str, args: &[String]) -> Value {
    let output = std::process::Command::new(python).arg("-c").arg(script).args(args).output().expect("run python");
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

const PYTHON_BINANCE: &str = r#"
import json, sys
from binance.client import Client
base, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = Client(ping=False)
client.API_URL = base + "/api"
recent = client.get_klines(symbol="BTCUSDT", interval="1m", limit=5)
history = client.get_historical_klines("ETHUSDT", "1m", start, end)
print(json.dumps({"recent": recent, "history": history}))
"#;

const CCXT: &str = r#"
import json, sys
import ccxt
base, since = sys.argv[1], int(sys.argv[2])
exchange = ccxt.binance({"options": {"fetchMarkets": ["spot"], "fetchCurrencies": False}})
for key in list(exchange.urls["api"]):
    exchange.urls["api"][key] = base + "/api/v3"
pages, cursor = [], since
for _ in range(3):
    page = exchange.fetch_ohlcv("SOL/USDT", "15m", since=cursor, limit=400)
    pages.extend(page)
    cursor = page[-1][0] + 15 * 60 * 1000
print(json.dumps(pages))
"#;

#[test]
fn python_binance_and_ccxt_read_candled_as_binance() {
    let Some(python) = clients_python() else { return };
    let (fake, app) = start("");
    let current = Interval::parse("1m").unwrap().open_time_at(fake.now_ms());
    // python-binance: the newest 5 of a collected stream, and 2500 minutes of one candled does not collect (three
    // pages, all read-through).
    let (start, end) = (current - 3000 * MINUTE, current - 500 * MINUTE);
    let got = run_python(&python, PYTHON_BINANCE, &[app_url(&app), start.to_string(), end.to_string()]);
    let recent = got["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 5);
    // The four oldest are closed whenever the script ran; the newest was in progress.
    let oldest = recent[0][0].as_i64().unwrap();
    assert_eq!(recent[..4], truth(&fake, "BTCUSDT", "1m", oldest, oldest + 4 * MINUTE)[..]);
    assert_eq!(recent[4][0].as_i64(), Some(oldest + 4 * MINUTE));
    assert_eq!(got["history"], Value::Array(truth(&fake, "ETHUSDT", "1m", start, end + 1)));
    // ccxt: three pages of 400 from `since`, as floats: compared with the fake's strings parsed.
    let since = current - 2000 * 15 * MINUTE;
    let pages = run_python(&python, CCXT, &[app_url(&app), since.to_string()]);
    let expected: Vec<Value> = truth(&fake, "SOLUSDT", "15m", since, since + 1200 * 15 * MINUTE)
        .iter()
        .map(|row| {
            let number = |i: usize| row[i].as_str().unwrap().parse::<f64>().unwrap();
            serde_json::json!([row[0], number(1), number(2), number(3), number(4), number(5)])
        })
        .collect();
    assert_eq!(pages, Value::Array(expected));
}
