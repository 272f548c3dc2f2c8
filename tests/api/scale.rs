//! Scale: connection pooling and SUBSCRIBE pacing with thousands of streams, and (ignored, long) the resource use
//! and event-to-commit latency of 2,000 live streams at Binance's cadence, and the start-up of 12,000 streams.
//!
//! Run the long ones with `cargo test --release --test api scale -- --ignored --nocapture`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::fake_exchange::{FakeConfig, FakeExchange, FakeStats};
use crate::helpers::{AppOptions, TestApp, open_db, spawn_app, wait_until};

/// Binance's limits, which the fake enforces (`max_streams_per_connection`, `max_messages_per_second`).
pub(crate) const STREAMS_PER_CONNECTION: usize = 1024;
/// `STREAMS_PER_MESSAGE` in `src/startup.rs`: streams in the connect URL and in each SUBSCRIBE.
const STREAMS_PER_MESSAGE: usize = 100;

/// `count` distinct upper-case symbols; leaked because the app options take `&'static str`.
pub(crate) fn symbols(count: usize) -> Vec<&'static str> {
    (0..count).map(|i| &*Box::leak(format!("SC{i:04}USDT").into_boxed_str())).collect()
}

fn fake_for(symbols: &[&str], speed: f64, update_every: Duration, origin_ms: Option<i64>) -> FakeExchange {
    let defaults = FakeConfig::default();
    FakeExchange::start(FakeConfig {
        speed,
        update_every,
        origin_ms: origin_ms.unwrap_or(defaults.origin_ms),
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        ..defaults
    })
}

/// SUBSCRIBE messages the pacing needs for `streams` streams spread over full connections.
fn expected_subscribes(streams: usize) -> u64 {
    (0..streams.div_ceil(STREAMS_PER_CONNECTION))
        .map(|c| (streams - c * STREAMS_PER_CONNECTION).min(STREAMS_PER_CONNECTION))
        .map(|n| n.saturating_sub(STREAMS_PER_MESSAGE).div_ceil(STREAMS_PER_MESSAGE) as u64)
        .sum()
}

/// Waits until the fake carries `streams` subscribed streams; returns the stats then.
pub(crate) fn wait_subscribed(fake: &FakeExchange, app: &TestApp, streams: usize, timeout: Duration) -> FakeStats {
    wait_until(timeout, || {
        let stats = fake.stats();
        (stats.ws_streams_per_connection.iter().sum::<usize>() == streams).then_some(stats)
    })
    .unwrap_or_else(|| panic!("not all {streams} streams subscribed: {:?}; log tail:\n{}", fake.stats(), tail(app)))
}

pub(crate) fn tail(app: &TestApp) -> String {
    let lines = app.log_lines();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn assert_pooled(stats: &FakeStats, streams: usize) {
    let connections = streams.div_ceil(STREAMS_PER_CONNECTION);
    assert_eq!(stats.ws_connections_accepted, connections as u64, "{stats:?}");
    assert_eq!(stats.ws_open_connections, connections, "{stats:?}");
    assert!(stats.ws_streams_per_connection.iter().all(|&n| n <= STREAMS_PER_CONNECTION), "{stats:?}");
    assert_eq!(stats.ws_rate_limit_closes, 0, "a connection was closed with 1008: {stats:?}");
    assert_eq!(stats.ws_control_errors_sent, 0, "{stats:?}");
    assert_eq!(stats.ws_subscribe_messages_received, expected_subscribes(streams), "{stats:?}");
}

#[test]
fn streams_are_pooled_1024_per_connection_and_subscribed_within_the_message_rate() {
    const TIMEFRAMES: [&str; 4] = ["1m", "3m", "5m", "15m"];
    let symbols = symbols(625);
    let streams = symbols.len() * TIMEFRAMES.len();
    // 600 exchange ms per real ms: every stream closes a candle at least every 1.5 s. Updates once a second.
    let fake = fake_for(&symbols, 600.0, Duration::from_secs(1), None);
    assert!(fake.config().enforce_message_rate && fake.config().max_messages_per_second == 5);
    let app = spawn_app(
        &fake,
        AppOptions { symbols: symbols.clone(), timeframes: TIMEFRAMES.to_vec(), history: 0, ..AppOptions::default() },
    );

    let started = Instant::now();
    let stats = wait_subscribed(&fake, &app, streams, Duration::from_secs(30));
    let subscribed_in = started.elapsed();
    assert_pooled(&stats, streams);
    assert_eq!(stats.ws_streams_per_connection.len(), 3, "{stats:?}");

    // Every stream delivers closed candles to storage.
    let db_path = app.db_path.clone();
    let stored = wait_until(Duration::from_secs(40), || {
        let db = open_db(&db_path);
        let mut query = db.prepare("SELECT DISTINCT symbol, timeframe FROM candles WHERE is_closed = 1").ok()?;
        let pairs: HashSet<(String, String)> =
            query.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).ok()?.collect::<Result<_, _>>().ok()?;
        (pairs.len() == streams).then_some(pairs)
    });
    let stored = stored.unwrap_or_else(|| panic!("not every stream stored a closed candle; log:\n{}", tail(&app)));
    for symbol in &symbols {
        for timeframe in TIMEFRAMES {
            assert!(stored.contains(&(symbol.to_string(), timeframe.to_string())), "{symbol} {timeframe}");
        }
    }
    // Still within the rules after the streams have been running a while.
    let stats = fake.stats();
    assert_pooled(&stats, streams);
    println!(
        "{streams} streams: {:?} per connection, all subscribed after {subscribed_in:?}",
        stats.ws_streams_per_connection
    );
}

#[test]
fn two_thousand_streams_added_by_an_edit_fill_the_open_connection_then_one_more_within_the_message_rate() {
    const TIMEFRAMES: [&str; 10] = ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h"];
    let symbols = symbols(200);
    let streams = symbols.len() * TIMEFRAMES.len();
    assert_eq!(streams, 2000);
    let fake = fake_for(&symbols, 600.0, Duration::from_secs(1), None);
    let one = AppOptions { symbols: symbols[..1].to_vec(), timeframes: vec!["1m"], ..AppOptions::default() };
    let app = spawn_app(&fake, one);
    wait_subscribed(&fake, &app, 1, Duration::from_secs(20));

    let all = AppOptions { symbols: symbols.clone(), timeframes: TIMEFRAMES.to_vec(), ..AppOptions::default() };
    let edited = Instant::now();
    app.edit_config(&fake, &all);
    let stats = wait_subscribed(&fake, &app, streams, Duration::from_secs(30));
    let subscribed_in = edited.elapsed();
    // The open connection takes 1,023 more (11 SUBSCRIBEs of up to 100); the new one names 100 in its URL and
    // SUBSCRIBEs the other 876 (9 more). Both are paced under the fake's 5 messages a second: no 1008.
    assert_eq!(stats.ws_streams_per_connection, [STREAMS_PER_CONNECTION, streams - STREAMS_PER_CONNECTION]);
    assert_eq!(stats.ws_connections_accepted, 2, "{stats:?}");
    assert_eq!(stats.ws_rate_limit_closes, 0, "a connection was closed with 1008: {stats:?}");
    assert_eq!(stats.ws_control_errors_sent, 0, "{stats:?}");
    assert_eq!(stats.ws_subscribe_messages_received, 11 + 9, "{stats:?}");
    let (_, tasks) = app.get("/api/v1/tasks/status");
    let subscriptions =
        tasks["tasks"].as_array().map_or(0, |t| t.iter().filter(|t| t["kind"] == "subscription").count());
    assert_eq!(subscriptions, streams);
    println!(
        "{streams} streams added by an edit: all subscribed {subscribed_in:?} after it, {:?} per connection, {} \
         SUBSCRIBEs, no 1008",
        stats.ws_streams_per_connection, stats.ws_subscribe_messages_received
    );
}

/// `/proc/<pid>/stat` utime + stime, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("candled is running");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let output = std::process::Command::new("getconf").arg("CLK_TCK").output();
    output.ok().and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(100.0)
}

/// A `kB` field of `/proc/<pid>/status`, such as `VmHWM` (peak RSS).
pub(crate) fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("candled is running");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad {line}"))
}

/// Cumulative bucket counts `(le, count)` of `candled_event_to_commit_seconds{kind}`, `+Inf` last.
pub(crate) fn latency_buckets(app: &TestApp, kind: &str) -> Vec<(f64, f64)> {
    let (_, body) = app.get("/metrics");
    let prefix = format!("candled_event_to_commit_seconds_bucket{{kind=\"{kind}\",le=\"");
    body.as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of the samples between two snapshots, interpolated within its bucket (as Prometheus'
/// `histogram_quantile` does). Returns the sample count too.
pub(crate) fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> (f64, f64) {
    let window: Vec<(f64, f64)> = after.iter().zip(before).map(|(&(le, a), &(_, b))| (le, a - b)).collect();
    let total = window.last().map_or(0.0, |&(_, n)| n);
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &window {
        if count >= rank && count > 0.0 {
            if le.is_infinite() {
                return (lower.0, total);
            }
            let share = if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 1.0 };
            return (lower.0 + (le - lower.0) * share, total);
        }
        lower = (le, count);
    }
    (f64::NAN, total)
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
#[ignore = "long: 60 s of 2,000 live streams; run with --release --ignored --nocapture"]
fn two_thousand_live_streams_resource_use_and_event_to_commit_latency() {
    const TIMEFRAMES: [&str; 4] = ["1m", "5m", "15m", "1h"];
    const WINDOW: Duration = Duration::from_secs(60);
    let symbols = symbols(500);
    let streams = symbols.len() * TIMEFRAMES.len();
    // Real time on the wall clock's origin, so that `E` and the commit time compare; Binance's 2 s cadence.
    let fake = fake_for(&symbols, 1.0, Duration::from_secs(2), Some(unix_ms()));
    let app = spawn_app(
        &fake,
        AppOptions { symbols: symbols.clone(), timeframes: TIMEFRAMES.to_vec(), history: 0, ..AppOptions::default() },
    );
    let started = Instant::now();
    let stats = wait_subscribed(&fake, &app, streams, Duration::from_secs(60));
    let subscribed_in = started.elapsed();
    assert_pooled(&stats, streams);
    wait_warm(&app, streams, Duration::from_secs(30));

    let LiveWindow {
        cpu_share,
        peak_rss_mb,
        closed: (closed_p50, closed_p99, closed_n),
        in_progress: (progress_p50, progress_p99, progress_n),
        ..
    } = measure_live_window(&app, WINDOW);
    let stats = fake.stats();

    println!("--- {streams} live streams, {WINDOW:?} window, fake speed 1.0, updates every 2 s ---");
    println!("subscribed in          {subscribed_in:?}");
    println!(
        "connections            {} accepted, streams per connection {:?}",
        stats.ws_connections_accepted, stats.ws_streams_per_connection
    );
    println!("1008 closes            {}", stats.ws_rate_limit_closes);
    println!("candled CPU            {:.2}% of one core", cpu_share * 100.0);
    println!("candled peak RSS       {peak_rss_mb:.1} MB (VmHWM)");
    println!(
        "event→commit closed    p50 {:.1} ms, p99 {:.1} ms over {closed_n} rows",
        closed_p50 * 1e3,
        closed_p99 * 1e3
    );
    println!(
        "event→commit updates   p50 {:.1} ms, p99 {:.1} ms over {progress_n} rows",
        progress_p50 * 1e3,
        progress_p99 * 1e3
    );

    assert_pooled(&stats, streams);
    assert!(closed_n >= symbols.len() as f64, "a minute boundary passed: every 1m stream closed a candle");
    assert!(progress_n > 0.0);
    assert!(cpu_share <= 0.05, "CPU {:.2}% of one core > 5%", cpu_share * 100.0);
    assert!(peak_rss_mb <= 100.0, "peak RSS {peak_rss_mb:.1} MB > 100 MB");
    assert!(progress_p99 <= 0.1, "in-progress event→commit p99 {:.1} ms > 100 ms", progress_p99 * 1e3);
}

#[test]
#[ignore = "long: starts 12,000 streams; run with --release --ignored --nocapture"]
fn twelve_thousand_streams_start_within_the_connection_budget() {
    const TIMEFRAMES: [&str; 4] = ["1m", "5m", "15m", "1h"];
    let symbols = symbols(3000);
    let streams = symbols.len() * TIMEFRAMES.len();
    let fake = fake_for(&symbols, 1.0, Duration::from_secs(2), Some(unix_ms()));
    let started = Instant::now();
    let app = spawn_app(
        &fake,
        AppOptions { symbols: symbols.clone(), timeframes: TIMEFRAMES.to_vec(), history: 0, ..AppOptions::default() },
    );
    let listening_in = started.elapsed();
    let stats = wait_subscribed(&fake, &app, streams, Duration::from_secs(120));
    let subscribed_in = started.elapsed();
    assert_pooled(&stats, streams);
    // Stay a while: no reconnect, no 1008, no new connection attempt.
    let steady = Instant::now();
    while steady.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(1));
    }
    let stats = fake.stats();
    assert_pooled(&stats, streams);
    assert_eq!(app.metric("candled_reconnects_total"), 0.0);
    assert_eq!(stats.rest_429s + stats.rest_418s, 0, "{stats:?}");
    println!("--- {streams} streams ---");
    println!("HTTP listening after   {listening_in:?}");
    println!("all subscribed after   {subscribed_in:?} (from process start)");
    println!(
        "connections            {} accepted, {:?} streams each",
        stats.ws_connections_accepted, stats.ws_streams_per_connection
    );
    println!(
        "SUBSCRIBE messages     {}, 1008 closes {}",
        stats.ws_subscribe_messages_received, stats.ws_rate_limit_closes
    );
}

/// Waits until about one in-progress update per stream has been committed: a measuring window opens then.
pub(crate) fn wait_warm(app: &TestApp, streams: usize, timeout: Duration) {
    let warm = wait_until(timeout, || {
        let committed = latency_buckets(app, "in_progress").last().map_or(0.0, |&(_, n)| n);
        (committed >= streams as f64).then_some(())
    });
    assert!(warm.is_some(), "updates are not being committed; log:\n{}", tail(app));
}

/// What a window of live streams shows: candled's CPU share of one core, its peak RSS, and the event-to-commit
/// latency of the rows committed in the window, as (p50, p99, rows) in seconds.
pub(crate) struct LiveWindow {
    pub elapsed_secs: f64,
    pub cpu_share: f64,
    pub peak_rss_mb: f64,
    pub closed: (f64, f64, f64),
    pub in_progress: (f64, f64, f64),
}

/// Measures `window` of live streams from now, checking every second that candled still runs.
pub(crate) fn measure_live_window(app: &TestApp, window: Duration) -> LiveWindow {
    let pid = app.pid();
    let (cpu_before, start) = (cpu_seconds(pid), Instant::now());
    let (closed_before, progress_before) = (latency_buckets(app, "closed"), latency_buckets(app, "in_progress"));
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1));
        assert!(std::fs::metadata(format!("/proc/{pid}")).is_ok(), "candled exited; log:\n{}", tail(app));
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let cpu_share = (cpu_seconds(pid) - cpu_before) / elapsed_secs;
    let latency = |before: &[(f64, f64)], kind: &str| {
        let after = latency_buckets(app, kind);
        let (p50, rows) = quantile(before, &after, 0.50);
        (p50, quantile(before, &after, 0.99).0, rows)
    };
    LiveWindow {
        elapsed_secs,
        cpu_share,
        peak_rss_mb: status_kb(pid, "VmHWM") as f64 / 1024.0,
        closed: latency(&closed_before, "closed"),
        in_progress: latency(&progress_before, "in_progress"),
    }
}
