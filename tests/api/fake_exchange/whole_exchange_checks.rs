//! The fake as a whole exchange: the 16 intervals' open-time grids (`3d` on the epoch grid, `1w` from Monday, `1M`
//! by calendar month), every interval served over WebSocket and REST, the midnight where all of them close, spread
//! in-progress updates and the REST weight limit.

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Timelike, Utc, Weekday};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket, stream::MaybeTlsStream};

use super::{ALL_INTERVALS, ALL_INTERVALS_CLOSE_MS, FakeConfig, FakeExchange, Interval};

fn utc_ms(year: i32, month: u32, day: u32, hour: u32) -> i64 {
    Utc.with_ymd_and_hms(year, month, day, hour, 0, 0).unwrap().timestamp_millis()
}

fn interval(name: &str) -> Interval {
    Interval::parse(name).unwrap_or_else(|| panic!("{name} is served"))
}

#[test]
fn all_sixteen_intervals_parse_in_binance_order() {
    let names: Vec<&str> = Interval::all().map(Interval::name).collect();
    assert_eq!(names, ALL_INTERVALS);
    assert!(Interval::parse("1mo").is_none() && Interval::parse("2M").is_none() && Interval::parse("1W").is_none());
}

#[test]
fn a_month_candle_opens_on_the_first_at_midnight_utc_and_lasts_its_calendar_month() {
    let month = interval("1M");
    // Leap February 2024: 29 days.
    let inside = utc_ms(2024, 2, 29, 15);
    assert_eq!(month.open_time_at(inside), utc_ms(2024, 2, 1, 0));
    assert_eq!(month.next_open(utc_ms(2024, 2, 1, 0)), utc_ms(2024, 3, 1, 0));
    assert_eq!(month.length_at(utc_ms(2024, 2, 1, 0)), 29 * 86_400_000);
    assert_eq!(month.length_at(utc_ms(2023, 2, 1, 0)), 28 * 86_400_000);
    assert_eq!(month.length_at(utc_ms(2024, 12, 1, 0)), 31 * 86_400_000);
    // Across a year boundary, both ways.
    assert_eq!(month.previous_open(utc_ms(2024, 1, 1, 0)), utc_ms(2023, 12, 1, 0));
    assert_eq!(month.next_open(utc_ms(2023, 12, 1, 0)), utc_ms(2024, 1, 1, 0));
    assert_eq!(month.candles_between(utc_ms(2023, 12, 1, 0), utc_ms(2024, 3, 1, 0)), 3);
    // The last millisecond of a month is still in it; the first of the next month opens the next candle.
    assert_eq!(month.open_time_at(utc_ms(2024, 3, 1, 0) - 1), utc_ms(2024, 2, 1, 0));
    assert_eq!(month.first_open_at_or_after(utc_ms(2024, 2, 1, 0) + 1), utc_ms(2024, 3, 1, 0));
    assert!(month.is_aligned(utc_ms(2024, 3, 1, 0)) && !month.is_aligned(utc_ms(2024, 3, 2, 0)));
}

#[test]
fn a_week_opens_on_monday_and_three_days_on_the_epoch_grid() {
    let (week, three_days) = (interval("1w"), interval("3d"));
    let mut time = utc_ms(2025, 12, 24, 13);
    for _ in 0..40 {
        let open = Utc.timestamp_millis_opt(week.open_time_at(time)).unwrap();
        assert_eq!((open.weekday(), open.hour(), open.minute()), (Weekday::Mon, 0, 0), "{open}");
        assert!(week.open_time_at(time) <= time && time < week.next_open(time));
        let three = three_days.open_time_at(time);
        assert_eq!(three % (3 * 86_400_000), 0, "3d candles open on the grid counted from 1970-01-01");
        assert!(three <= time && time < three + 3 * 86_400_000);
        time += 37 * 3_600_000;
    }
    // The week of Thursday 2026-01-01 opened on Monday 2025-12-29; 2026-01-01 is day 20,454 = 3 × 6,818 since the
    // epoch, so a 3d candle opens on it and the one before on 2025-12-29.
    assert_eq!(week.open_time_at(utc_ms(2026, 1, 1, 12)), utc_ms(2025, 12, 29, 0));
    assert_eq!(three_days.open_time_at(utc_ms(2026, 1, 2, 12)), utc_ms(2026, 1, 1, 0));
    assert_eq!(three_days.previous_open(utc_ms(2026, 1, 1, 0)), utc_ms(2025, 12, 29, 0));
}

#[test]
fn every_interval_closes_at_the_whole_exchange_midnight() {
    let midnight = Utc.timestamp_millis_opt(ALL_INTERVALS_CLOSE_MS).unwrap();
    assert_eq!((midnight.weekday(), midnight.day(), midnight.hour()), (Weekday::Mon, 1, 0));
    for interval in Interval::all() {
        assert!(interval.is_aligned(ALL_INTERVALS_CLOSE_MS), "{}", interval.name());
        let closing = interval.previous_open(ALL_INTERVALS_CLOSE_MS);
        assert_eq!(interval.next_open(closing), ALL_INTERVALS_CLOSE_MS, "{}", interval.name());
    }
}

#[test]
fn a_month_candle_is_in_progress_until_its_last_millisecond_then_closed() {
    let symbols = vec!["BTCUSDT".to_owned()];
    let market = super::Market::new(&symbols, super::DEFAULT_LISTING_MS);
    let month = interval("1M");
    let open = utc_ms(2026, 2, 1, 0);
    let closed = market.closed_candle("BTCUSDT", month, open).expect("a closed February");
    assert_eq!(closed.close_time, utc_ms(2026, 3, 1, 0) - 1);
    let partial = market.candle_at("BTCUSDT", month, open, closed.close_time).expect("in progress");
    assert!(!partial.is_closed);
    assert_eq!(market.candle_at("BTCUSDT", month, open, closed.close_time + 1), Some(closed));
    let year = market.closed_candles("BTCUSDT", month, utc_ms(2025, 1, 1, 0), utc_ms(2026, 1, 1, 0));
    let opens: Vec<i64> = year.iter().map(|k| k.open_time).collect();
    assert_eq!(opens, (1..=12).map(|m| utc_ms(2025, m, 1, 0)).collect::<Vec<_>>());
}

fn get(fake: &FakeExchange, path_and_query: &str) -> (u16, Option<String>, Value) {
    // reqwest is built without a default TLS provider, even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::blocking::get(format!("{}{path_and_query}", fake.rest_url())).expect("GET the fake");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, retry_after, response.json().expect("a JSON body"))
}

#[test]
fn rest_serves_every_interval_on_its_grid() {
    let fake = FakeExchange::start(FakeConfig { origin_ms: ALL_INTERVALS_CLOSE_MS - 1_000, ..FakeConfig::default() });
    for name in ALL_INTERVALS {
        let (status, _, rows) = get(&fake, &format!("/api/v3/klines?symbol=BTCUSDT&interval={name}&limit=3"));
        assert_eq!(status, 200, "{name}: {rows}");
        let rows = rows.as_array().expect("rows");
        assert_eq!(rows.len(), 3, "{name}");
        let interval = interval(name);
        let opens: Vec<i64> = rows.iter().map(|row| row[0].as_i64().unwrap()).collect();
        // The newest row is the candle that closes at the midnight, in progress one second before it.
        assert_eq!(interval.next_open(opens[2]), ALL_INTERVALS_CLOSE_MS, "{name}");
        for pair in opens.windows(2) {
            assert_eq!(interval.next_open(pair[0]), pair[1], "{name}: consecutive candles");
        }
        for (row, open) in rows.iter().zip(&opens) {
            assert_eq!(row[6].as_i64(), Some(interval.next_open(*open) - 1), "{name}: close time");
        }
    }
}

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(fake: &FakeExchange, streams: &[String]) -> Client {
    let url = format!("{}/stream?streams={}", fake.ws_url(), streams.join("/"));
    let (client, _) = tungstenite::connect(url).expect("connect to the fake");
    if let MaybeTlsStream::Plain(tcp) = client.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_millis(50))).expect("a read timeout");
    }
    client
}

/// Kline events `(stream, k)` read for `period`.
fn read_klines(client: &mut Client, period: Duration) -> Vec<(String, Value)> {
    let deadline = Instant::now() + period;
    let mut events = Vec::new();
    while Instant::now() < deadline {
        match client.read() {
            Ok(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if let Some(stream) = frame["stream"].as_str() {
                    events.push((stream.to_owned(), frame["data"]["k"].clone()));
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("the connection ended: {e}"),
        }
    }
    events
}

#[test]
fn websocket_serves_every_interval_and_closes_all_of_them_at_the_midnight() {
    // Exchange time starts 1.5 s before the midnight where all 16 intervals close; real speed.
    let fake = FakeExchange::start(FakeConfig {
        origin_ms: ALL_INTERVALS_CLOSE_MS - 1_500,
        update_every: Duration::from_millis(200),
        ..FakeConfig::default()
    });
    let streams: Vec<String> = ALL_INTERVALS.iter().map(|name| format!("btcusdt@kline_{name}")).collect();
    let mut client = connect(&fake, &streams);
    let mut events = Vec::new();
    let closed_all = |events: &[(String, Value)]| {
        let closed: HashSet<&str> = events
            .iter()
            .filter(|(_, k)| k["x"] == true && k["T"].as_i64() == Some(ALL_INTERVALS_CLOSE_MS - 1))
            .map(|(stream, _)| stream.as_str())
            .collect();
        closed.len() == streams.len()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !closed_all(&events) && Instant::now() < deadline {
        events.extend(read_klines(&mut client, Duration::from_millis(200)));
    }
    assert!(closed_all(&events), "every interval closes at the midnight: {:?}", events.len());
    for stream in &streams {
        let name = stream.rsplit('_').next().unwrap();
        let interval = interval(name);
        let closing_open = interval.previous_open(ALL_INTERVALS_CLOSE_MS);
        let of_stream: Vec<&Value> = events.iter().filter(|(s, _)| s == stream).map(|(_, k)| k).collect();
        assert!(of_stream.iter().any(|k| k["x"] == false), "{stream}: an in-progress update before the close");
        let closed = of_stream.iter().find(|k| k["x"] == true && k["t"].as_i64() == Some(closing_open));
        let closed = closed.unwrap_or_else(|| panic!("{stream}: the candle opening at {closing_open} closed"));
        let truth = fake.closed_candle("BTCUSDT", name, closing_open);
        assert_eq!((closed["i"].as_str(), closed["c"].as_str()), (Some(name), Some(truth.close.as_str())), "{stream}");
    }
}

#[test]
fn spread_updates_reach_each_stream_once_per_period_on_staggered_ticks() {
    // 10 streams over 5 slots of a 1 s period: each tick carries 2 of them, each stream updates once a second.
    let fake = FakeExchange::start(FakeConfig {
        update_every: Duration::from_secs(1),
        update_slots: 5,
        ..FakeConfig::default()
    });
    let symbols = ["btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt"];
    let streams: Vec<String> =
        symbols.iter().flat_map(|s| [format!("{s}@kline_1h"), format!("{s}@kline_4h")]).collect();
    let mut client = connect(&fake, &streams);
    let started = Instant::now();
    let mut arrivals: Vec<(String, Duration)> = Vec::new();
    while started.elapsed() < Duration::from_millis(3_100) {
        for (stream, _) in read_klines(&mut client, Duration::from_millis(20)) {
            arrivals.push((stream, started.elapsed()));
        }
    }
    let mut per_stream: HashMap<&str, usize> = HashMap::new();
    for (stream, _) in &arrivals {
        *per_stream.entry(stream.as_str()).or_default() += 1;
    }
    assert_eq!(per_stream.len(), streams.len(), "{per_stream:?}");
    assert!(per_stream.values().all(|&n| (3..=4).contains(&n)), "about one update a second each: {per_stream:?}");
    // Not in lockstep: the first updates of the streams arrive over several distinct ticks.
    let mut first: Vec<Duration> =
        streams.iter().map(|s| arrivals.iter().find(|(a, _)| a == s).map(|(_, at)| *at).unwrap()).collect();
    first.sort();
    let spread = first[first.len() - 1] - first[0];
    assert!(spread >= Duration::from_millis(600), "first updates spread over the period: {first:?}");
}

#[test]
fn the_rest_weight_limit_answers_429_with_retry_after_once_the_minute_is_spent() {
    let fake = FakeExchange::start(FakeConfig { rest_weight_limit_per_minute: Some(10), ..FakeConfig::default() });
    for _ in 0..5 {
        let (status, _, body) = get(&fake, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000");
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry_after, body) = get(&fake, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000");
    assert_eq!((status, body["code"].as_i64()), (429, Some(-1003)), "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let stats = fake.stats();
    assert_eq!((stats.rest_429s, stats.rest_weight_limit_429s, stats.rest_used_weight_1m), (1, 1, 10), "{stats:?}");
}
