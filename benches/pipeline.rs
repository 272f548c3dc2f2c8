//! The actor pipeline end to end: combined-stream WebSocket frames in, through the connection's `route_frame`,
//! `SubscriptionActor`, `IndicatorActor` and `StorageActor` (its own arbiter, a temp-file SQLite in WAL mode, the
//! production batch size and flush interval), to committed rows. An iteration ends when storage answers `Flush`
//! after every subscription and indicator drained, so everything fed is committed.
//!
//! Two cases: `closed` (every frame a distinct closed candle, every one must become a row) and `in_progress`
//! (100 updates per candle, coalesced to one row each). Beside each, the floor: the same parse, candle rules and
//! indicators (the library's `IndicatorSet`, default config) on a plain tokio mpsc chain (parse → channel → rules
//! and indicators → channel → a writer thread doing batched rusqlite upserts). The floor writes the same rows in the
//! same order as the store: each batch's candle rows, then its indicator rows (one per closed candle), each sorted by
//! (stream, open time), into the same schema's tables; a check before the timed runs compares both databases.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use actix::prelude::*;
use candled_actors::actors::backfill::BackfillActor;
use candled_actors::actors::indicator::IndicatorActor;
use candled_actors::actors::messages::Drain;
use candled_actors::actors::storage::{Flush, StorageActor, StorageSettings};
use candled_actors::actors::subscription::{KlineUpdate, SubscriptionActor, SubscriptionSettings};
use candled_actors::actors::{MAILBOX_CAPACITY, Mailbox};
use candled_actors::domain::route_frame;
use candled_actors::domain::{
    BackoffPolicy, Candle, CandleRules, Routed, Router, StreamId, StreamKey, Timeframe, Verdict,
};
use candled_actors::indicators::{IndicatorConfig, IndicatorSet, IndicatorValue, ProvisionalBoard};
use candled_actors::metrics::Metrics;
use candled_actors::registry::StreamRegistry;
use candled_actors::rest::RestClient;
use candled_actors::store::StoreBackend;
use candled_actors::store::sqlite::SCHEMA;
use candled_actors::streams::StreamHealth;
use candled_actors::tasks::{RestartPolicy, RestartTracker, TaskStats};
use candled_actors::wiring::{StreamStart, StreamWiring, start_storage};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

#[path = "support/floor.rs"]
mod floor;

const SYMBOLS: usize = 25;
const TIMEFRAMES: [Timeframe; 4] = [Timeframe::M1, Timeframe::M5, Timeframe::M15, Timeframe::H1];
/// Frames per stream and iteration: 100 streams × 100 = 10,000 frames per iteration.
const PER_STREAM: usize = 100;
/// Production defaults (`[storage]` in config.toml).
const BATCH_SIZE: usize = 1000;
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Frames fed between two yields to the runtime, so that actors run while frames arrive, as on a socket.
const FEED_CHUNK: usize = 256;
/// The production defaults of the subscriptions' watch (they never fire within an iteration).
const WATCH: SubscriptionSettings = SubscriptionSettings {
    close_grace: Duration::from_secs(5),
    stale_after: Duration::from_secs(30),
    replace_after: Duration::from_secs(30),
    recheck_empty: Duration::from_secs(600),
    history: 0,
};
/// 2023-11-14T22:00:00Z, on every timeframe's grid used here.
const BASE_OPEN: i64 = 1_699_999_200_000;

fn streams() -> Vec<StreamKey> {
    (0..SYMBOLS).flat_map(|s| TIMEFRAMES.map(|tf| StreamKey::new(format!("SYM{s:03}USDT"), tf))).collect()
}

/// A combined-stream kline frame, as `/stream?streams=` delivers it.
fn frame(key: &StreamKey, open: i64, update: usize, closed: bool) -> String {
    let tf = key.timeframe;
    let close_time = tf.close_time(open);
    let event_time = if closed { close_time + 2 } else { open + 1_000 + update as i64 };
    let open_price = 100.0 + (open / 60_000 % 997) as f64 * 0.01;
    let close_price = open_price + (update % 7) as f64 * 0.01;
    let (high, low) = (open_price.max(close_price) + 0.05, open_price.min(close_price) - 0.05);
    format!(
        r#"{{"stream":"{stream}","data":{{"e":"kline","E":{event_time},"s":"{symbol}","k":{{"t":{open},"T":{close_time},"s":"{symbol}","i":"{tf}","f":1054217725,"L":1054218306,"o":"{open_price:.8}","c":"{close_price:.8}","h":"{high:.8}","l":"{low:.8}","v":"12.26168000","n":582,"x":{closed},"q":"572337.21655380","V":"3.29093000","Q":"153606.31592330","B":"0"}}}}}}"#,
        stream = key.stream_name(),
        symbol = key.symbol,
    )
}

/// The frames of one iteration, interleaved across streams as a connection receives them. `round` makes every
/// iteration's candles new: closed candles continue each series, in-progress updates move to the next candle.
fn iteration_frames(streams: &[StreamKey], round: i64, closed: bool) -> Vec<String> {
    let step = |tf: Timeframe| tf.next_open(BASE_OPEN) - BASE_OPEN;
    (0..PER_STREAM)
        .flat_map(|k| {
            streams.iter().map(move |key| {
                if closed {
                    let open = BASE_OPEN + (round * PER_STREAM as i64 + k as i64) * step(key.timeframe);
                    frame(key, open, 0, true)
                } else {
                    frame(key, BASE_OPEN + round * step(key.timeframe), k, false)
                }
            })
        })
        .collect()
}

/// The engine's actors for `streams`, wired as the supervisor wires them.
struct Pipeline {
    router: Router,
    subscriptions: Vec<Mailbox<SubscriptionActor>>,
    indicators: Vec<Mailbox<IndicatorActor>>,
    storage: Mailbox<StorageActor>,
    _arbiter: Arbiter,
}

impl Pipeline {
    /// Must run inside the actix system.
    fn start(streams: &[StreamKey], db: &Path) -> Pipeline {
        let metrics = Metrics::new();
        let tracker = RestartTracker::new(RestartPolicy::Always(BackoffPolicy::default()));
        let config = IndicatorConfig::default();
        let board = ProvisionalBoard::new(IndicatorSet::new(&config).names().into());
        let arbiter = Arbiter::new();
        let storage = {
            let stats = TaskStats::new(MAILBOX_CAPACITY);
            let settings = StorageSettings {
                backend: StoreBackend::sqlite(db),
                batch_size: BATCH_SIZE,
                flush_interval: FLUSH_INTERVAL,
                committed: Default::default(),
                retry: BackoffPolicy::default(),
            };
            let store = settings.backend.open_writer().expect("open the bench database");
            let (registry, names) = (StreamRegistry::new(streams), board.names());
            let addr = start_storage(
                &arbiter.handle(),
                settings,
                registry,
                names,
                store,
                stats.clone(),
                tracker,
                metrics.clone(),
            );
            Mailbox::new(addr, stats)
        };
        let tls = candled_actors::tls::client_config(None).expect("TLS config");
        // Never called: the series stay contiguous and no stream goes live, so no repair is asked for.
        let rest = RestClient::new("http://127.0.0.1:9", tls, metrics.clone()).expect("REST client");
        let stats = TaskStats::new(MAILBOX_CAPACITY);
        let backfill = Mailbox::new(BackfillActor::new(rest, 1, stats.clone()).start(), stats);
        let wiring = StreamWiring { storage, backfill, board, clock: Default::default(), metrics };
        let (mut subscriptions, mut indicators) = (Vec::new(), Vec::new());
        for (index, key) in streams.iter().enumerate() {
            let id = StreamId(index as u32);
            wiring.board.add(id, key.clone());
            let stats = TaskStats::new(MAILBOX_CAPACITY);
            let indicator = Mailbox::new(wiring.start_indicator(id, key, &config, &stats), stats);
            let stats = TaskStats::new(MAILBOX_CAPACITY);
            let start = StreamStart {
                last_stored: None,
                load_history: false,
                history: None,
                health: StreamHealth::new(key.clone()),
            };
            let subscription = wiring.start_subscription(id, start, WATCH, &indicator, &stats);
            subscriptions.push(Mailbox::new(subscription, stats));
            indicators.push(indicator);
        }
        Pipeline { router: Router::new(streams), subscriptions, indicators, storage: wiring.storage, _arbiter: arbiter }
    }

    /// Feeds `frames` as the connection actor does, then waits until storage committed all of them.
    async fn run(&self, frames: &[String]) {
        for chunk in frames.chunks(FEED_CHUNK) {
            for text in chunk {
                match route_frame(&self.router, text) {
                    Ok(Routed::Kline { index, event_time, candle }) => {
                        self.subscriptions[index].do_send(KlineUpdate { candle, event_time })
                    }
                    other => unreachable!("every bench frame is a routed kline: {other:?}"),
                }
            }
            tokio::task::yield_now().await;
        }
        // Mailboxes are FIFO: once every Drain is answered, all their writes are queued at storage before Flush.
        for subscription in &self.subscriptions {
            subscription.send(Drain).await.expect("subscription alive");
        }
        for indicator in &self.indicators {
            indicator.send(Drain).await.expect("indicator alive");
        }
        self.storage.send(Flush).await.expect("storage alive").expect("commit");
    }
}

/// What travels down the floor's chain.
enum FloorMsg {
    Frame(String),
    Row(StreamId, Candle),
    /// The indicator values computed on a closed candle (its stream and open time).
    Values(StreamId, i64, Vec<IndicatorValue>),
    Flush(oneshot::Sender<()>),
}

/// The floor: the same parse, rules and indicators on a plain tokio mpsc chain, the writer on its own thread.
struct Floor {
    input: mpsc::UnboundedSender<FloorMsg>,
}

/// The floor's candle upsert: replace an in-progress row, keep everything else as is.
const FLOOR_UPSERT: &str = "INSERT INTO candle_rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
    ON CONFLICT (stream_id, timestamp) DO UPDATE SET open = excluded.open, high = excluded.high,
    low = excluded.low, close = excluded.close, volume = excluded.volume, quote_volume = excluded.quote_volume,
    trades = excluded.trades, taker_buy_base = excluded.taker_buy_base, taker_buy_quote = excluded.taker_buy_quote,
    is_closed = excluded.is_closed WHERE candle_rows.is_closed = 0";

/// The floor's indicator upsert of one candle's row: every output column, an absent value keeping what is stored.
fn floor_indicator_upsert(names: &[String]) -> String {
    let columns: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let params: Vec<String> = (0..names.len()).map(|i| format!("?{}", i + 3)).collect();
    let set: Vec<String> = columns.iter().map(|c| format!("{c} = COALESCE(excluded.{c}, {c})")).collect();
    format!(
        "INSERT INTO indicator_rows (stream_id, timestamp, {}) VALUES (?1, ?2, {}) \
         ON CONFLICT (stream_id, timestamp) DO UPDATE SET {}",
        columns.join(", "),
        params.join(", "),
        set.join(", ")
    )
}

/// The floor writer's pending rows: candles and indicator values, each by (stream, open time).
#[derive(Default)]
struct FloorPending {
    candles: HashMap<(StreamId, i64), Candle>,
    values: HashMap<(StreamId, i64), Vec<Option<f64>>>,
}

impl FloorPending {
    /// Rows to write: candle rows and indicator rows.
    fn len(&self) -> usize {
        self.candles.len() + self.values.len()
    }
}

impl Floor {
    /// Must run inside a tokio runtime (the parse and rules tasks are spawned on it).
    fn start(streams: &[StreamKey], db: &Path) -> Floor {
        let (input, mut frames) = mpsc::unbounded_channel::<FloorMsg>();
        let (to_rules, mut rules_in) = mpsc::unbounded_channel::<FloorMsg>();
        let (to_writer, mut writer_in) = mpsc::unbounded_channel::<FloorMsg>();
        let router = Router::new(streams);
        tokio::spawn(async move {
            while let Some(msg) = frames.recv().await {
                let routed = match msg {
                    FloorMsg::Frame(text) => match route_frame(&router, &text) {
                        Ok(Routed::Kline { index, candle, .. }) => FloorMsg::Row(StreamId(index as u32), candle),
                        other => unreachable!("every bench frame is a routed kline: {other:?}"),
                    },
                    other => other,
                };
                let _ = to_rules.send(routed);
            }
        });
        let config = IndicatorConfig::default();
        let names = IndicatorSet::new(&config).names().to_vec();
        let mut rules: Vec<CandleRules> = streams.iter().map(|k| CandleRules::new(k.timeframe, None)).collect();
        let mut sets: Vec<IndicatorSet> = streams.iter().map(|_| IndicatorSet::new(&config)).collect();
        tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(msg) = rules_in.recv().await {
                let mut values = None;
                if let FloorMsg::Row(stream, candle) = &msg
                    && rules[stream.0 as usize].apply(candle) == Verdict::Closed
                {
                    out.clear();
                    sets[stream.0 as usize].update(candle, &mut out);
                    if !out.is_empty() {
                        values = Some(FloorMsg::Values(*stream, candle.open_time, out.clone()));
                    }
                }
                let _ = to_writer.send(msg);
                if let Some(values) = values {
                    let _ = to_writer.send(values);
                }
            }
        });
        let mut conn = Connection::open(db).expect("open the floor database");
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        // Stream `i` is `streams` row `i + 1`; one column per output.
        for key in streams {
            let stream = [key.symbol.as_str(), key.timeframe.as_str()];
            conn.execute("INSERT INTO streams (symbol, timeframe) VALUES (?1, ?2)", stream).unwrap();
        }
        for name in &names {
            conn.execute_batch(&format!("ALTER TABLE indicator_rows ADD COLUMN \"{name}\" REAL")).unwrap();
        }
        let upsert_values = floor_indicator_upsert(&names);
        let outputs = names.len();
        std::thread::spawn(move || {
            let mut pending = FloorPending::default();
            while let Some(msg) = writer_in.blocking_recv() {
                match msg {
                    FloorMsg::Row(stream, candle) => {
                        let slot = pending.candles.entry((stream, candle.open_time)).or_insert(candle);
                        if candle.is_closed || !slot.is_closed {
                            *slot = candle;
                        }
                    }
                    FloorMsg::Values(stream, open_time, values) => {
                        let row = pending.values.entry((stream, open_time)).or_insert_with(|| vec![None; outputs]);
                        for value in values {
                            row[usize::from(value.output)] = Some(value.value);
                        }
                    }
                    FloorMsg::Flush(done) => {
                        floor_commit(&mut conn, &upsert_values, &mut pending);
                        let _ = done.send(());
                        continue;
                    }
                    FloorMsg::Frame(_) => unreachable!("frames are parsed upstream"),
                }
                if pending.len() >= BATCH_SIZE {
                    floor_commit(&mut conn, &upsert_values, &mut pending);
                }
            }
        });
        Floor { input }
    }

    async fn run(&self, frames: Vec<String>) {
        let mut frames = frames.into_iter();
        loop {
            let chunk: Vec<String> = frames.by_ref().take(FEED_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            for text in chunk {
                let _ = self.input.send(FloorMsg::Frame(text));
            }
            tokio::task::yield_now().await;
        }
        let (done, committed) = oneshot::channel();
        let _ = self.input.send(FloorMsg::Flush(done));
        committed.await.expect("the floor writer answers");
    }
}

/// Writes the pending candle rows, then the indicator rows, each sorted by (stream, open time), in one transaction.
fn floor_commit(conn: &mut Connection, upsert_values: &str, pending: &mut FloorPending) {
    let mut candles: Vec<_> = pending.candles.drain().collect();
    candles.sort_unstable_by_key(|(key, _)| *key);
    let mut values: Vec<_> = pending.values.drain().collect();
    values.sort_unstable_by_key(|(key, _)| *key);
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx.prepare_cached(FLOOR_UPSERT).unwrap();
        for ((stream, _), c) in candles {
            floor::execute_candle(&mut stmt, i64::from(stream.0) + 1, &c);
        }
        let mut stmt = tx.prepare_cached(upsert_values).unwrap();
        for ((stream, open_time), row) in values {
            stmt.raw_bind_parameter(1, i64::from(stream.0) + 1).unwrap();
            stmt.raw_bind_parameter(2, open_time).unwrap();
            for (index, value) in row.iter().enumerate() {
                stmt.raw_bind_parameter(index + 3, value).unwrap();
            }
            stmt.raw_execute().expect("the floor's indicator upsert");
        }
    }
    tx.commit().unwrap();
}

fn count_rows(db: &Path, closed: bool) -> i64 {
    let conn = Connection::open(db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM candle_rows WHERE is_closed = ?1", [closed], |r| r.get(0)).unwrap()
}

/// Asserts that two databases hold the same candle and indicator rows, stream by stream.
fn assert_same_rows(actors_db: &Path, floor_db: &Path) {
    let conn = Connection::open(actors_db).unwrap();
    conn.execute("ATTACH DATABASE ?1 AS floor", [floor_db.to_str().expect("a UTF-8 path")]).unwrap();
    let names = IndicatorSet::new(&IndicatorConfig::default()).names().to_vec();
    let outputs: String = names.iter().map(|n| format!(", r.\"{n}\"")).collect();
    let tables = [
        (
            "candle_rows",
            "r.timestamp, r.open, r.high, r.low, r.close, r.volume, r.close_time, r.quote_volume, \
                         r.trades, r.taker_buy_base, r.taker_buy_quote, r.is_closed"
                .to_owned(),
        ),
        ("indicator_rows", format!("r.timestamp{outputs}")),
    ];
    for (table, columns) in tables {
        let rows = |schema: &str| {
            format!(
                "SELECT s.symbol, s.timeframe, {columns} FROM {schema}.{table} r \
                 JOIN {schema}.streams s ON s.id = r.stream_id"
            )
        };
        let count = |sql: String| conn.query_row(&format!("SELECT COUNT(*) FROM ({sql})"), [], |r| r.get::<_, i64>(0));
        let (actors, floor) = (rows("main"), rows("floor"));
        let stored = count(actors.clone()).unwrap();
        assert_eq!(stored, count(floor.clone()).unwrap(), "{table}: as many rows on both paths");
        assert_eq!(count(format!("{actors} EXCEPT {floor}")).unwrap(), 0, "{table}: the same rows on both paths");
        assert!(stored > 0, "{table}: the check round wrote rows");
    }
}

/// Benchmarks `run` on a new iteration's frames per criterion iteration, from round `first_round` on, timing `run`
/// only. Returns the rounds run, counting the rounds before `first_round`.
fn bench_rounds(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    streams: &[StreamKey],
    closed: bool,
    first_round: i64,
    mut run: impl FnMut(Vec<String>),
) -> i64 {
    let mut rounds = first_round;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let frames = iteration_frames(streams, rounds, closed);
                rounds += 1;
                let start = Instant::now();
                run(frames);
                elapsed += start.elapsed();
            }
            elapsed
        })
    });
    rounds
}

/// Every closed candle fed is a committed row; in-progress updates coalesce to one row per candle.
fn expected_rows(rounds: i64, streams: &[StreamKey], closed: bool) -> i64 {
    let per_round = if closed { streams.len() * PER_STREAM } else { streams.len() };
    rounds * per_round as i64
}

fn pipeline(c: &mut Criterion) {
    let streams = streams();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let system = actix::System::new();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements((streams.len() * PER_STREAM) as u64));
    for (case, closed) in [("closed", true), ("in_progress", false)] {
        let (actors_db, floor_db) =
            (dir.path().join(format!("actors-{case}.db")), dir.path().join(format!("floor-{case}.db")));
        let actors = system.block_on(async { Pipeline::start(&streams, &actors_db) });
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let floor = runtime.block_on(async { Floor::start(&streams, &floor_db) });
        // Untimed: round 0 through both, which must write the same rows.
        system.block_on(actors.run(&iteration_frames(&streams, 0, closed)));
        runtime.block_on(floor.run(iteration_frames(&streams, 0, closed)));
        if closed {
            assert_same_rows(&actors_db, &floor_db);
        }

        let rounds = bench_rounds(&mut group, &format!("actors/{case}"), &streams, closed, 1, |frames| {
            system.block_on(actors.run(&frames))
        });
        let committed = count_rows(&actors_db, closed);
        assert_eq!(committed, expected_rows(rounds, &streams, closed), "actors/{case}: rows committed");

        let rounds = bench_rounds(&mut group, &format!("floor_mpsc_rusqlite/{case}"), &streams, closed, 1, |frames| {
            runtime.block_on(floor.run(frames))
        });
        assert_eq!(
            count_rows(&floor_db, closed),
            expected_rows(rounds, &streams, closed),
            "floor/{case}: rows committed"
        );
    }
    group.finish();
    // The process ends here. Dropping the system would drop the actors' contexts outside its runtime, and actix
    // 0.13 polls a live context once on drop: an actor that a filtered run started but never ran would then start
    // its timers with no reactor, and panic.
    std::mem::forget(system);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
