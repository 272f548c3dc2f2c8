//! Sharded and replicated instances (`[cluster]`) against one fake exchange, each with its own SQLite database:
//! three shards store every configured stream exactly once between them, a replica stores what its primary stores
//! and carries on when the primary is killed, a shard killed and restarted repairs its gap, and a change of the shard
//! count in a running instance's `config.toml` drops the streams it no longer owns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use candled_actors::domain::{StreamKey, Timeframe, owner};

use crate::fake_exchange::{FakeConfig, FakeExchange};
use crate::helpers::{
    AppOptions, TestApp, assert_closed_candles_exact, assert_streams_complete_through, open_db, run_to_exit, spawn_app,
    spawn_in, stored_candles, stored_closed, wait_until,
};

/// 60 exchange ms per real ms: a 1m candle closes every second, a 5m one every 5 s.
const SPEED: f64 = 60.0;
const FIVE_MINUTES: i64 = 300_000;
/// The fake's default listing: every test here configures all of them.
const SYMBOLS: [&str; 8] = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "SHIBUSDT", "PAXGBTC"];
/// `[cluster]` for shard 0, 1 and 2 of 3.
const SHARDS_OF_3: [&str; 3] =
    ["[cluster]\nshard = 0\nshards = 3\n", "[cluster]\nshard = 1\nshards = 3\n", "[cluster]\nshard = 2\nshards = 3\n"];
/// How long a test waits for a table to catch up with the exchange.
const CATCH_UP: Duration = Duration::from_secs(45);
/// How soon a config edit must show: the bound for a live stream-set change.
const APPLIED_WITHIN: Duration = Duration::from_secs(5);

type Stream = (&'static str, &'static str);

fn options(timeframes: &[&'static str], extra: &'static str) -> AppOptions {
    AppOptions {
        symbols: SYMBOLS.to_vec(),
        timeframes: timeframes.to_vec(),
        history: 20,
        exchange_extra: "stall_timeout_secs = 2\nclose_grace_ms = 1000\nstream_stale_secs = 2",
        extra,
        ..AppOptions::default()
    }
}

fn configured(timeframes: &[&'static str]) -> Vec<Stream> {
    SYMBOLS.iter().flat_map(|&symbol| timeframes.iter().map(move |&timeframe| (symbol, timeframe))).collect()
}

/// The streams of `streams` that shard `shard` of `shards` owns, by the engine's hash.
fn owned_by(streams: &[Stream], shard: u32, shards: u32) -> Vec<Stream> {
    let key = |&(symbol, timeframe): &Stream| StreamKey::new(symbol, timeframe.parse::<Timeframe>().expect("valid"));
    streams.iter().copied().filter(|stream| owner(&key(stream), shards) == shard).collect()
}

/// Starts an instance and waits until each of `owned` is subscribed.
fn start(fake: &FakeExchange, options: AppOptions, owned: &[Stream]) -> TestApp {
    let mut app = spawn_app(fake, options);
    wait_subscribed(&mut app, owned);
    app
}

fn wait_subscribed(app: &mut TestApp, owned: &[Stream]) {
    for (symbol, timeframe) in owned {
        app.wait_for_log(&format!("Subscribed to {symbol} {timeframe} candles"), Duration::from_secs(30));
    }
}

/// The streams `/api/v1/streams` lists, and its `cluster` object.
fn listed(app: &TestApp) -> (BTreeSet<(String, String)>, serde_json::Value) {
    let (status, body) = app.get("/api/v1/streams");
    assert_eq!(status, 200, "{body}");
    let rows = body["streams"].as_array().unwrap_or_else(|| panic!("no streams in {body}"));
    let streams = rows
        .iter()
        .map(|row| {
            (row["symbol"].as_str().unwrap_or("").to_owned(), row["timeframe"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    (streams, body["cluster"].clone())
}

fn as_set(streams: &[Stream]) -> BTreeSet<(String, String)> {
    streams.iter().map(|&(symbol, timeframe)| (symbol.to_owned(), timeframe.to_owned())).collect()
}

/// Asserts what `/health`, `/api/v1/streams` and `/metrics` say of the instance's shard and its streams.
fn assert_cluster_shown(app: &TestApp, shard: u32, shards: u32, owned: &[Stream], configured: usize) {
    let (streams, cluster) = listed(app);
    assert_eq!(streams, as_set(owned), "shard {shard} of {shards} lists other streams than it owns");
    assert_eq!(cluster, serde_json::json!({ "shard": shard, "shards": shards }));
    let (_, health) = app.get("/health");
    let expected = serde_json::json!({
        "shard": shard, "shards": shards, "streams_owned": owned.len(), "streams_configured": configured,
    });
    assert_eq!(health["cluster"], expected, "{health}");
    assert_eq!(app.metric("candled_cluster_streams_owned"), owned.len() as f64);
    assert_eq!(app.metric(&format!("candled_cluster_info{{shard=\"{shard}\",shards=\"{shards}\"}}")), 1.0);
}

/// Every row (closed or not) stored per stream in the database at `path`.
fn rows_per_stream(path: &std::path::Path, streams: &[Stream]) -> BTreeMap<Stream, usize> {
    let db = open_db(path);
    streams
        .iter()
        .map(|&(symbol, timeframe)| ((symbol, timeframe), stored_candles(&db, symbol, timeframe).len()))
        .collect()
}

#[test]
fn three_shards_and_a_replica_store_every_stream_exactly_once_through_kills() {
    let timeframes = ["1m", "5m"];
    let all = configured(&timeframes);
    let owned: Vec<Vec<Stream>> = (0..3).map(|shard| owned_by(&all, shard, 3)).collect();
    assert!(owned.iter().all(|streams| !streams.is_empty()), "every shard must own a stream: {owned:?}");
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });

    let primary = start(&fake, options(&timeframes, SHARDS_OF_3[0]), &owned[0]);
    let replica = start(&fake, options(&timeframes, SHARDS_OF_3[0]), &owned[0]);
    let shard_1 = start(&fake, options(&timeframes, SHARDS_OF_3[1]), &owned[1]);
    let shard_2 = start(&fake, options(&timeframes, SHARDS_OF_3[2]), &owned[2]);

    // Each lists only its own streams and names its shard; between them, every configured stream once.
    for (app, shard) in [(&primary, 0), (&replica, 0), (&shard_1, 1), (&shard_2, 2)] {
        assert_cluster_shown(app, shard, 3, &owned[shard as usize], all.len());
    }
    let union: Vec<BTreeSet<_>> = [&primary, &shard_1, &shard_2].iter().map(|app| listed(app).0).collect();
    assert_eq!(union.iter().map(BTreeSet::len).sum::<usize>(), all.len(), "a stream is listed by two shards");
    assert_eq!(union.iter().flatten().cloned().collect::<BTreeSet<_>>(), as_set(&all), "a stream is in no shard");

    // A live 5m close in every instance, then kill -9 the shard-0 primary and shard 1 (which has no replica).
    let five_minute_closes = |app: &TestApp, streams: &[Stream]| {
        let db = app.db();
        streams.iter().filter(|s| s.1 == "5m").all(|&(symbol, tf)| stored_closed(&db, symbol, tf).len() >= 21)
    };
    let live = wait_until(CATCH_UP, || {
        [(&primary, 0), (&replica, 0), (&shard_1, 1), (&shard_2, 2)]
            .iter()
            .all(|(app, shard)| five_minute_closes(app, &owned[*shard]))
            .then_some(())
    });
    assert!(live.is_some(), "no live 5m close in every instance; shard 1's log:\n{}", shard_1.log_text());
    let primary_dir = primary.kill_9();
    let killed_at = fake.now_ms();
    let shard_1_dir = shard_1.kill_9();
    // Shard 1 stays down over a 5m close and several 1m ones: nothing replays them over the WebSocket.
    let down =
        wait_until(Duration::from_secs(15), || (fake.now_ms() > killed_at + FIVE_MINUTES + 60_000).then_some(()));
    assert!(down.is_some());
    let restarted_at = fake.now_ms();
    let mut shard_1 = spawn_in(shard_1_dir);
    wait_subscribed(&mut shard_1, &owned[1]);
    assert_cluster_shown(&shard_1, 1, 3, &owned[1], all.len());

    // Every shard's table equals the exchange's candles through a horizon past the kills, with no hole: the replica
    // for shard 0 (its primary is dead), the restarted shard 1 (its gap repaired), shard 2.
    let horizon = fake.now_ms() + FIVE_MINUTES;
    let mut checked = 0;
    for (app, shard) in [(&replica, 0), (&shard_1, 1), (&shard_2, 2)] {
        checked += assert_streams_complete_through(&fake, app, &owned[shard], horizon, CATCH_UP);
    }
    // Shard 1's gap: the 1m candles that closed while it was down are in its table (fetched, since the WebSocket
    // does not replay them).
    let shard_1_db = shard_1.db();
    for &(symbol, timeframe) in owned[1].iter().filter(|s| s.1 == "1m") {
        let gap = fake.closed_candles(symbol, timeframe, killed_at + 60_000, restarted_at - 60_000);
        assert!(gap.len() >= 4, "{symbol} {timeframe}: shard 1 must have been down over real closes");
        let stored = stored_closed(&shard_1_db, symbol, timeframe);
        assert!(gap.iter().all(|candle| stored.contains(&candle.open_time)), "{symbol} {timeframe}: gap not repaired");
    }

    // Exactly once: no database holds a row of a stream another shard owns.
    let primary_db = primary_dir.path().join("data/candles.db");
    let databases = [(&primary_db, 0usize), (&replica.db_path, 0), (&shard_1.db_path, 1), (&shard_2.db_path, 2)];
    for (path, shard) in databases {
        for ((symbol, timeframe), rows) in rows_per_stream(path, &all) {
            let ours = owned[shard].contains(&(symbol, timeframe));
            assert_eq!(rows > 0, ours, "shard {shard}'s database and {symbol} {timeframe}: {rows} row(s)");
        }
    }

    // The replica stored what the primary stored, candle for candle, while both ran; the primary's table was exact
    // up to its kill, so the replica lost nothing of it.
    let (primary_db, replica_db) = (open_db(&primary_db), replica.db());
    for &(symbol, timeframe) in &owned[0] {
        assert_closed_candles_exact(&fake, &primary_db, symbol, timeframe);
        let by_primary = stored_closed(&primary_db, symbol, timeframe);
        let by_replica = stored_closed(&replica_db, symbol, timeframe);
        let from = *by_primary.first().max(by_replica.first()).expect("both stored");
        let both = |stored: &BTreeSet<i64>| stored.range(from..).copied().collect::<Vec<_>>();
        let last = *by_primary.last().expect("stored");
        assert_eq!(
            both(&by_primary),
            both(&by_replica).into_iter().filter(|&open| open <= last).collect::<Vec<_>>(),
            "{symbol} {timeframe}: the replica differs from its primary"
        );
    }
    println!("{checked} closed candles checked over {} streams in 3 shards and a replica", all.len());
}

#[test]
fn a_shard_count_raised_from_1_to_2_drops_the_streams_shard_1_now_owns_within_5s() {
    let timeframes = ["1m"];
    let all = configured(&timeframes);
    let (shard_0, shard_1) = (owned_by(&all, 0, 2), owned_by(&all, 1, 2));
    assert!(!shard_0.is_empty() && !shard_1.is_empty(), "{shard_0:?} {shard_1:?}");
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let app = start(&fake, options(&timeframes, ""), &all);
    assert_cluster_shown(&app, 0, 1, &all, all.len());
    let stored_before = wait_until(Duration::from_secs(10), || {
        let rows = rows_per_stream(&app.db_path, &shard_1);
        rows.values().all(|&rows| rows > 20).then_some(rows)
    })
    .expect("shard 1's streams stored");

    let edited = Instant::now();
    app.edit_config(&fake, &options(&timeframes, "[cluster]\nshard = 0\nshards = 2\n"));
    let dropped = wait_until(APPLIED_WITHIN, || {
        let stats = fake.stats();
        (stats.ws_unsubscribe_messages_received >= 1
            && stats.ws_streams_per_connection == [shard_0.len()]
            && listed(&app).0 == as_set(&shard_0))
        .then_some(stats)
    });
    let stats = dropped.unwrap_or_else(|| {
        panic!("shard 1's streams not dropped within {APPLIED_WITHIN:?}: {:?}\nlog:\n{}", fake.stats(), app.log_text())
    });
    let dropped_in = edited.elapsed();
    assert_eq!(stats.ws_connections_accepted, 1, "the streams it keeps were not reconnected: {stats:?}");
    assert_cluster_shown(&app, 0, 2, &shard_0, all.len());
    // The dropped streams' candles stay.
    let stored_after = rows_per_stream(&app.db_path, &shard_1);
    assert!(stored_after.iter().all(|(stream, &rows)| rows >= stored_before[stream]), "{stored_after:?}");

    // Now shard 1 of 2: its streams arrive with their history, shard 0's leave, on the same connection.
    std::thread::sleep(Duration::from_secs(2));
    app.edit_config(&fake, &options(&timeframes, "[cluster]\nshard = 1\nshards = 2\n"));
    let moved = wait_until(APPLIED_WITHIN, || {
        (listed(&app).0 == as_set(&shard_1) && fake.stats().ws_streams_per_connection == [shard_1.len()]).then_some(())
    });
    assert!(moved.is_some(), "not moved to shard 1: {:?}\nlog:\n{}", listed(&app), app.log_text());
    assert_cluster_shown(&app, 1, 2, &shard_1, all.len());
    // What closed while they were away is filled: each table equals the exchange's through a later close.
    assert_streams_complete_through(&fake, &app, &shard_1, fake.now_ms(), CATCH_UP);
    println!("the streams shard 1 owns were unsubscribed {} ms after the edit", dropped_in.as_millis());
}

#[test]
fn check_config_names_the_shard_and_how_many_streams_it_owns() {
    let dir = tempfile::tempdir().unwrap();
    let symbols = SYMBOLS.map(|s| format!("{s:?}")).join(", ");
    let config = format!(
        "[exchange]\nws_url = \"ws://127.0.0.1:9\"\nrest_url = \"http://127.0.0.1:9\"\n\n\
         [market_data]\nsymbols = [{symbols}]\ntimeframes = [\"1m\"]\n\n[cluster]\nshard = 1\nshards = 2\n"
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let (status, stderr) = run_to_exit(dir.path(), &["--config", "config.toml", "check-config"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let owned = owned_by(&configured(&["1m"]), 1, 2).len();
    let verdict = format!("config file config.toml is valid: 8 streams of 8 symbol(s); shard 1 of 2 owns {owned}\n");
    assert!(stderr.ends_with(&verdict), "{stderr}");
}

#[test]
fn a_shard_that_owns_nothing_runs_healthy_and_collects_once_a_reload_gives_it_streams() {
    // BTCUSDT 1m alone, which shard 1 of 2 owns: shard 0 owns nothing.
    let btc: Vec<Stream> = vec![("BTCUSDT", "1m")];
    assert_eq!(owned_by(&btc, 0, 2), []);
    let fake = FakeExchange::start(FakeConfig { speed: SPEED, ..FakeConfig::default() });
    let only_btc = |extra| AppOptions { symbols: vec!["BTCUSDT"], ..options(&["1m"], extra) };
    let mut app = spawn_app(&fake, only_btc("[cluster]\nshard = 0\nshards = 2\n"));
    app.wait_for_log("owns none of the configured streams", Duration::from_secs(10));
    let healthy = wait_until(Duration::from_secs(10), || {
        let (status, health) = app.get("/health");
        (status == 200 && health["status"] == "healthy").then_some(())
    });
    assert!(healthy.is_some(), "{:?}\nlog:\n{}", app.get("/health"), app.log_text());
    assert_cluster_shown(&app, 0, 2, &[], 1);
    assert_eq!(fake.stats().ws_connections_accepted, 0, "a shard with no stream opens no connection");

    // One shard again: it owns the stream, loads its history and follows it.
    app.edit_config(&fake, &only_btc("[cluster]\nshard = 0\nshards = 1\n"));
    wait_subscribed(&mut app, &btc);
    assert_cluster_shown(&app, 0, 1, &btc, 1);
    assert_streams_complete_through(&fake, &app, &btc, fake.now_ms() + 60_000, CATCH_UP);
}
