//! The real binary on `[storage] backend = "postgres"`, against the real PostgreSQL on 127.0.0.1:5432 (skipped, with
//! a note, when it does not answer; a failure under `CI=true`). Each test has a fresh schema of its own, dropped at
//! the end. What PostgreSQL holds must equal the fake exchange's ground truth: read directly, over HTTP, and with the
//! README's `psql` queries; across an outage of the server (a TCP proxy on loopback, cut and restored); and from three
//! shards and a replica sharing one schema through `kill -9`s.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use candled_actors::store::test_support::TestSchema;
use serde_json::Value;

use crate::cluster::{self, Stream};
use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{
    AppOptions, CandleRow, CandleSource, PgTables, Proxy, TestApp, assert_closed_candles_exact,
    assert_streams_complete_in, spawn_app, spawn_in, stored_candles, stored_closed, task_row, wait_until,
};

const SYMBOLS: [&str; 2] = ["BTCUSDT", "ETHUSDT"];
const TIMEFRAMES: [&str; 2] = ["1m", "5m"];
/// 120 exchange ms per real ms: a 1m candle closes every 0.5 s.
const SPEED: f64 = 120.0;
const PATIENCE: Duration = Duration::from_secs(30);

fn streams() -> Vec<Stream> {
    SYMBOLS.into_iter().flat_map(|s| TIMEFRAMES.into_iter().map(move |tf| (s, tf))).collect()
}

/// The app's options, storing into `pg` through `url`.
fn options(pg: &PgTables, url: &str) -> AppOptions {
    AppOptions {
        symbols: SYMBOLS.to_vec(),
        timeframes: TIMEFRAMES.to_vec(),
        history: 30,
        storage_backend: Some(pg.storage_section(url)),
        ..AppOptions::default()
    }
}

fn wait_subscribed(app: &mut TestApp) {
    for (symbol, timeframe) in streams() {
        app.wait_for_log(&format!("Subscribed to {symbol} {timeframe} candles"), PATIENCE);
    }
}

/// Waits until the fake has closed `more` further 1m candles of BTCUSDT live.
fn wait_for_live_closes(fake: &FakeExchange, more: usize) {
    let stream = crate::helpers::stream_name("BTCUSDT", "1m");
    let target = fake.published_closed_open_times(&stream).len() + more;
    let closed = wait_until(PATIENCE, || (fake.published_closed_open_times(&stream).len() >= target).then_some(()));
    assert!(closed.is_some(), "the fake did not close {more} more candles");
}

/// A candle of `/api/v1/candles` (named as the columns) or `/api/v3/klines` (Binance's array), as a [`CandleRow`].
fn row_of(json: &Value) -> CandleRow {
    let num = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).expect("a number");
    let int = |v: &Value| v.as_i64().expect("an integer");
    if let Some(k) = json.as_array() {
        return CandleRow {
            timestamp: int(&k[0]),
            open: num(&k[1]),
            high: num(&k[2]),
            low: num(&k[3]),
            close: num(&k[4]),
            volume: num(&k[5]),
            close_time: int(&k[6]),
            quote_volume: num(&k[7]),
            trades: int(&k[8]),
            taker_buy_base: num(&k[9]),
            taker_buy_quote: num(&k[10]),
            is_closed: true,
        };
    }
    CandleRow {
        timestamp: int(&json["timestamp"]),
        open: num(&json["open"]),
        high: num(&json["high"]),
        low: num(&json["low"]),
        close: num(&json["close"]),
        volume: num(&json["volume"]),
        close_time: int(&json["close_time"]),
        quote_volume: num(&json["quote_volume"]),
        trades: int(&json["trades"]),
        taker_buy_base: num(&json["taker_buy_base"]),
        taker_buy_quote: num(&json["taker_buy_quote"]),
        is_closed: json["is_closed"].as_bool().expect("is_closed"),
    }
}

/// Runs `sql` through the real `psql` on the schema (`PGOPTIONS=-csearch_path=<schema>`), as the README says: its
/// rows, unaligned. Panics with psql's message if the query fails.
fn psql(url: &str, schema: &str, sql: &str) -> Vec<String> {
    let output = Command::new("psql")
        .args(["-d", url, "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .env("PGOPTIONS", format!("-csearch_path={schema}"))
        .output()
        .expect("run psql (the PostgreSQL client)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.is_empty(), "psql -c {sql:?} failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

/// The `psql` queries of README "Scaling out" → PostgreSQL, as written there (without `psql candles -c`).
fn readme_psql_queries() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("the README");
    let section = readme.split("### PostgreSQL").nth(1).expect("README has a PostgreSQL section");
    let section = section.split("\n### ").next().unwrap_or(section);
    let queries: Vec<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("psql candles -c \"")?.strip_suffix('"').map(str::to_owned))
        .collect();
    assert_eq!(queries.len(), 6, "the README's psql queries: {queries:?}");
    queries
}

#[test]
fn the_postgres_backend_stores_the_ground_truth_and_serves_it_over_http() {
    let test = "the_postgres_backend_stores_the_ground_truth_and_serves_it_over_http";
    let Some(schema) = TestSchema::create(test) else { return };
    let pg = PgTables::connect(schema.url(), schema.name());
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let mut app = spawn_app(&fake, options(&pg, schema.url()));
    wait_subscribed(&mut app);
    wait_for_live_closes(&fake, 6);

    // The closed candles in PostgreSQL equal the exchange's, every field, with no hole.
    let horizon = fake.now_ms();
    let checked = assert_streams_complete_in(&fake, &pg, &|| app.log_text(), &streams(), horizon, PATIENCE);

    // /api/v1/candles: the stored rows (the closed ones; the in-progress one moves).
    let (status, body) = app.get("/api/v1/candles?symbol=BTCUSDT&timeframe=1m&limit=5000");
    assert_eq!(status, 200, "{body}");
    let served: Vec<CandleRow> =
        body.as_array().expect("an array").iter().map(row_of).filter(|row| row.is_closed).collect();
    let last = served.last().expect("closed candles served").timestamp;
    let stored: Vec<CandleRow> =
        pg.candles_of("BTCUSDT", "1m").into_iter().filter(|row| row.is_closed && row.timestamp <= last).collect();
    assert!(served.len() >= 30, "{} candles served", served.len());
    assert_eq!(served, stored, "/api/v1/candles differs from the candles table");

    // /api/v3/klines: the exchange's candles (the local API completes what is stored from upstream when asked for
    // more): every stored one among them, and every one closed before the request equal to the exchange's.
    let closed_before = stored_closed(&pg, "BTCUSDT", "1m");
    let requested_at = fake.now_ms();
    let (status, body) = app.get("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000");
    assert_eq!(status, 200, "{body}");
    let klines: Vec<CandleRow> = body.as_array().expect("an array").iter().map(row_of).collect();
    let served: BTreeSet<i64> = klines.iter().map(|k| k.timestamp).collect();
    assert!(closed_before.is_subset(&served), "/api/v3/klines leaves out stored candles");
    let settled: Vec<&CandleRow> = klines.iter().filter(|k| k.close_time < requested_at).collect();
    assert!(settled.len() + 1 >= klines.len(), "{} klines, {} closed", klines.len(), settled.len());
    for kline in settled {
        let truth = CandleRow::from_fake(&fake.closed_candle("BTCUSDT", "1m", kline.timestamp));
        assert_eq!(*kline, truth, "/api/v3/klines differs from the exchange");
    }

    // /api/v1/indicators: the stored series. Retried: a rebuild (a repair filling a late candle) may rewrite values
    // between the HTTP read and the table's.
    let mut disagreement = None;
    let agreed = wait_until(Duration::from_secs(10), || {
        disagreement = indicators_disagreement(&app, &pg);
        disagreement.is_none().then_some(())
    });
    assert!(agreed.is_some(), "/api/v1/indicators differs from the table: {}", disagreement.unwrap_or_default());
    // /api/v1/streams: present and missing counts agree with the table (retried: candles keep closing).
    let mut last_seen = String::new();
    let agreed = wait_until(Duration::from_secs(10), || {
        let (_, body) = app.get("/api/v1/streams");
        let rows = body["streams"].as_array().cloned().unwrap_or_default();
        let all_agree = rows.len() == 4
            && rows.iter().all(|row| {
                let (symbol, timeframe) = (row["symbol"].as_str().unwrap(), row["timeframe"].as_str().unwrap());
                let closed = stored_closed(&pg, symbol, timeframe);
                row["present"].as_u64() == Some(closed.len() as u64)
                    && row["missing"] == 0
                    && row["expected"].as_u64() == Some(closed.len() as u64)
                    && row["first_closed"].as_i64() == closed.first().copied()
                    && row["last_closed"].as_i64() == closed.last().copied()
                    && row["revisions"] == 0
            });
        last_seen = body.to_string();
        all_agree.then_some(())
    });
    assert!(agreed.is_some(), "/api/v1/streams disagrees with the table: {last_seen}");

    // Stopped, the tables hold still: the README's psql queries, through the real psql, give the expected counts.
    let (status, _dir, log) = app.terminate();
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    let queries = readme_psql_queries();
    let run = |i: usize| psql(schema.url(), schema.name(), &queries[i]);
    let rows_of = |symbol| TIMEFRAMES.iter().map(|tf| stored_candles(&pg, symbol, tf).len()).sum::<usize>();
    assert_eq!(run(0), [rows_of("BTCUSDT").to_string()], "{}", queries[0]);
    let per_stream = run(1);
    assert_eq!(per_stream.len(), 4, "{per_stream:?}");
    for line in &per_stream {
        let fields: Vec<&str> = line.split('|').collect();
        let closed = stored_closed(&pg, fields[0], fields[1]).len();
        assert_eq!(fields[2], closed.to_string(), "{line}");
    }
    assert_eq!(run(2).len(), 5, "{}", queries[2]);
    assert_eq!(run(3).len() as i64, pg.count("SELECT COUNT(*) FROM exchange_gaps"), "{}", queries[3]);
    assert_eq!(run(4), Vec::<String>::new(), "no revision: {}", queries[4]);
    let per_name =
        pg.rows("SELECT COUNT(*) FROM indicators WHERE symbol = 'BTCUSDT' AND timeframe = '1m' GROUP BY name", &[]);
    let expected: i64 = per_name.iter().map(|row| row.get::<_, i64>(0).min(10)).sum();
    assert!(expected >= 50, "indicators stored: {expected}");
    assert_eq!(run(5).len() as i64, expected, "{}", queries[5]);
    println!("PostgreSQL: {checked} closed candles equal the exchange's; HTTP and the README's psql queries agree");
}

/// `url` split around its `host:port`: what comes before, the `host:port` (with the default port), what follows.
fn split_host(url: &str) -> (&str, String, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let start = url[after_scheme..].find('@').map_or(after_scheme, |i| after_scheme + i + 1);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let host = &url[start..end];
    let host = if host.contains(':') { host.to_owned() } else { format!("{host}:5432") };
    (&url[..start], host, &url[end..])
}

fn storage_task(app: &TestApp) -> Value {
    task_row(app, "storage").expect("a storage task")
}

#[test]
fn a_postgres_outage_degrades_storage_and_loses_nothing() {
    let test = "a_postgres_outage_degrades_storage_and_loses_nothing";
    let Some(schema) = TestSchema::create(test) else { return };
    let pg = PgTables::connect(schema.url(), schema.name());
    let (before, server, after) = split_host(schema.url());
    let proxy = Proxy::start(&server);
    let proxied = format!("{before}{}{after}", proxy.addr());
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let mut app = spawn_app(&fake, options(&pg, &proxied));
    wait_subscribed(&mut app);
    wait_for_live_closes(&fake, 4);
    let healthy = || {
        let (status, body) = app.get("/health");
        (status == 200 && body["status"] == "healthy").then_some(())
    };
    assert!(wait_until(PATIENCE, healthy).is_some(), "{:?}\nlog:\n{}", app.get("/health"), app.log_text());
    let connections_before = proxy.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(connections_before >= 1, "candled reaches PostgreSQL through the proxy");

    // Cut for ~7 s: the live connections break and new ones are refused.
    let cut_at = Instant::now();
    let outage_from = fake.now_ms();
    proxy.cut();
    let degraded = wait_until(Duration::from_secs(6), || {
        let (status, body) = app.get("/health");
        (status == 200 && body["status"] == "degraded").then_some(body)
    });
    let health = degraded.unwrap_or_else(|| panic!("not degraded: {:?}\nlog:\n{}", app.get("/health"), app.log_text()));
    let degraded_after = cut_at.elapsed();
    let task = storage_task(&app);
    assert_eq!((task["state"].as_str(), task["restarts"].as_u64()), (Some("degraded"), Some(0)), "{task} {health}");
    assert!(task["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{task}");
    let until = cut_at + Duration::from_secs(7);
    while Instant::now() < until {
        let task = storage_task(&app);
        assert_eq!(task["restarts"].as_u64(), Some(0), "no restart while PostgreSQL is away: {task}");
        assert_eq!(app.get("/health").1["status"], "degraded");
        std::thread::sleep(Duration::from_millis(250));
    }
    proxy.restore();
    let outage_to = fake.now_ms();

    // Healthy again, nothing restarted, and the table is the exchange's with no hole and no duplicate.
    let restored_at = Instant::now();
    assert!(wait_until(PATIENCE, healthy).is_some(), "{:?}\nlog:\n{}", app.get("/health"), app.log_text());
    let healthy_after = restored_at.elapsed();
    let task = storage_task(&app);
    assert_eq!((task["state"].as_str(), task["restarts"].as_u64()), (Some("running"), Some(0)), "{task}");
    wait_for_live_closes(&fake, 4);
    let horizon = fake.now_ms();
    let checked = assert_streams_complete_in(&fake, &pg, &|| app.log_text(), &streams(), horizon, PATIENCE);
    let in_outage = fake.closed_candles("BTCUSDT", "1m", outage_from, outage_to);
    assert!(in_outage.len() >= 10, "the outage spans closes: {}", in_outage.len());
    let stored = stored_closed(&pg, "BTCUSDT", "1m");
    assert!(in_outage.iter().all(|k| stored.contains(&k.open_time)), "a candle of the outage is missing");
    let duplicates = pg.count(
        "SELECT COUNT(*) FROM (SELECT 1 FROM candles GROUP BY symbol, timeframe, timestamp HAVING COUNT(*) > 1) d",
    );
    assert_eq!(duplicates, 0);
    assert_eq!(pg.count("SELECT COUNT(*) FROM candle_revisions"), 0);
    println!(
        "a {:?} PostgreSQL outage: degraded after {} ms, healthy {} ms after the restore; {checked} closed candles exact",
        until - cut_at,
        degraded_after.as_millis(),
        healthy_after.as_millis()
    );
}

#[test]
fn three_shards_and_a_replica_on_one_postgres_store_every_candle_exactly_once() {
    use cluster::{CATCH_UP, FIVE_MINUTES, SHARDS_OF_3, assert_cluster_shown, configured, owned_by, start};

    let test = "three_shards_and_a_replica_on_one_postgres_store_every_candle_exactly_once";
    let Some(schema) = TestSchema::create(test) else { return };
    let pg = PgTables::connect(schema.url(), schema.name());
    let timeframes = ["1m", "5m"];
    let all = configured(&timeframes);
    let owned: Vec<Vec<Stream>> = (0..3).map(|shard| owned_by(&all, shard, 3)).collect();
    let fake = FakeExchange::start(FakeConfig { speed: cluster::SPEED, ..FakeConfig::default() });
    let on_pg = |shard: usize| AppOptions {
        storage_backend: Some(pg.storage_section(schema.url())),
        ..cluster::options(&timeframes, SHARDS_OF_3[shard])
    };

    let primary = start(&fake, on_pg(0), &owned[0]);
    let replica = start(&fake, on_pg(0), &owned[0]);
    let shard_1 = start(&fake, on_pg(1), &owned[1]);
    let shard_2 = start(&fake, on_pg(2), &owned[2]);
    for (app, shard) in [(&primary, 0), (&replica, 0), (&shard_1, 1), (&shard_2, 2)] {
        assert_cluster_shown(app, shard, 3, &owned[shard as usize], all.len());
    }

    // A live 5m close of every stream, then kill -9 the shard-0 primary and shard 1 (which has no replica).
    let live = wait_until(CATCH_UP, || {
        all.iter().filter(|s| s.1 == "5m").all(|&(symbol, tf)| stored_closed(&pg, symbol, tf).len() >= 21).then_some(())
    });
    assert!(live.is_some(), "no live 5m close of every stream; shard 1's log:\n{}", shard_1.log_text());
    let _primary_dir = primary.kill_9();
    let killed_at = fake.now_ms();
    let shard_1_dir = shard_1.kill_9();
    let down =
        wait_until(Duration::from_secs(15), || (fake.now_ms() > killed_at + FIVE_MINUTES + 60_000).then_some(()));
    assert!(down.is_some());
    let restarted_at = fake.now_ms();
    let mut shard_1 = spawn_in(shard_1_dir);
    cluster::wait_subscribed(&mut shard_1, &owned[1]);

    // The one table equals the exchange's candles of every stream through a horizon past the kills, no hole.
    let horizon = fake.now_ms() + FIVE_MINUTES;
    let logs = || [&replica, &shard_1, &shard_2].map(|app| app.log_text()).join("\n-----\n");
    let checked = assert_streams_complete_in(&fake, &pg, &logs, &all, horizon, CATCH_UP);
    for &(symbol, timeframe) in owned[1].iter().filter(|s| s.1 == "1m") {
        let gap = fake.closed_candles(symbol, timeframe, killed_at + 60_000, restarted_at - 60_000);
        assert!(gap.len() >= 4, "{symbol} {timeframe}: shard 1 must have been down over real closes");
        let stored = stored_closed(&pg, symbol, timeframe);
        assert!(gap.iter().all(|candle| stored.contains(&candle.open_time)), "{symbol} {timeframe}: gap not repaired");
    }

    // Exactly once: only the configured streams, each candle one row, and no revision (the replicas' identical
    // writes change nothing).
    let streams: BTreeSet<(String, String)> = pg
        .rows("SELECT DISTINCT symbol, timeframe FROM candles", &[])
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let configured: BTreeSet<(String, String)> = all.iter().map(|&(s, tf)| (s.to_owned(), tf.to_owned())).collect();
    assert_eq!(streams, configured);
    let duplicates = pg.count(
        "SELECT COUNT(*) FROM (SELECT 1 FROM candles GROUP BY symbol, timeframe, timestamp HAVING COUNT(*) > 1) d",
    );
    assert_eq!(duplicates, 0);
    let revisions = pg.rows("SELECT symbol, timeframe, timestamp FROM candle_revisions", &[]);
    let revisions: Vec<(String, String, i64)> = revisions.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert!(revisions.is_empty(), "revisions recorded: {revisions:?}");
    for &(symbol, timeframe) in &all {
        assert_closed_candles_exact(&fake, &pg, symbol, timeframe);
    }
    println!("{checked} closed candles of {} streams stored once in one schema by 3 shards and a replica", all.len());
}

/// How the newest 5 points of `/api/v1/indicators` differ from the `indicators` view, or `None` when they agree.
fn indicators_disagreement(app: &TestApp, pg: &PgTables) -> Option<String> {
    let (status, body) = app.get("/api/v1/indicators?symbol=BTCUSDT&timeframe=1m&limit=5");
    assert_eq!(status, 200, "{body}");
    let series = body["series"].as_array().unwrap_or_else(|| panic!("no series: {body}"));
    assert_eq!(series.len(), 5, "{body}");
    for point in series {
        let timestamp = point["timestamp"].as_i64().expect("a timestamp");
        let rows = pg.rows(
            "SELECT name, value FROM indicators WHERE symbol = 'BTCUSDT' AND timeframe = '1m' AND timestamp = $1",
            &[&timestamp],
        );
        let stored: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let values = point["values"].as_object().expect("values");
        if stored.len() < 5 || stored.len() != values.len() {
            return Some(format!("{timestamp}: {stored:?} vs {values:?}"));
        }
        for (name, value) in stored {
            // serde_json parses without `float_roundtrip` here: the last bit may differ.
            let served = values[&name].as_f64().unwrap_or(f64::NAN);
            if (served - value).abs() > value.abs() * 1e-15 {
                return Some(format!("{timestamp} {name}: {served} != {value}"));
            }
        }
    }
    None
}
