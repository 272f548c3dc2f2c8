//! The indicator actor: one per (symbol, timeframe), fed its stream's candles in order by its subscription. A thin
//! shell around [`StreamIndicators`]: closed candles advance the indicators and their values go to storage (which
//! commits them with the candles); in-progress candles only give provisional values, published on the
//! [`ProvisionalBoard`] for HTTP and never stored. At start, and whenever a late or revised closed candle lands
//! inside what was already consumed, the state is rebuilt from the stored closed candles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::messages::{Drain, Retire};
use crate::actors::storage::{LoadClosedCandles, StorageActor, StoreIndicators};
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{Candle, StreamId, StreamKey};
use crate::indicators::{IndicatorConfig, IndicatorValue, ProvisionalBoard, StreamIndicators};
use crate::store::StoreError;
use crate::tasks::{TaskState, TaskStats};

/// Why a rebuild could not load the stream's closed candles (it is retried).
#[derive(Debug, thiserror::Error)]
enum LoadFailed {
    #[error("storage did not answer: {0}")]
    Storage(#[from] MailboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A candle of this stream: closed ones advance the indicators, in-progress ones only give provisional values.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct IndicatorCandle(pub Candle);

/// A closed candle opened at `from` was stored after newer ones were fed (a backfill, a replay or a revision):
/// rebuild from storage and re-store the values from `from` on. Send it after the candle went to storage.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Rebuild {
    pub from: i64,
}

/// How long to wait before retrying a failed load of the stored candles.
const RELOAD_RETRY: Duration = Duration::from_secs(5);
/// Indicator values per storage message while a rebuild re-stores them.
const REBUILD_CHUNK: usize = 4096;

pub struct IndicatorActor {
    stream: StreamId,
    /// The stream's name, for logs.
    key: StreamKey,
    state: StreamIndicators,
    /// Live closed candles queued behind a rebuild: published to the hub with their values once it is applied.
    awaiting: Vec<Candle>,
    /// Their values as the rebuild passes computed them (a later pass overwrites what it recomputes).
    awaited_values: HashMap<i64, Vec<IndicatorValue>>,
    storage: Mailbox<StorageActor>,
    board: ProvisionalBoard,
    stats: Arc<TaskStats>,
}

impl IndicatorActor {
    pub fn new(
        stream: StreamId,
        key: StreamKey,
        config: &IndicatorConfig,
        storage: Mailbox<StorageActor>,
        board: ProvisionalBoard,
        stats: Arc<TaskStats>,
    ) -> Self {
        Self {
            stream,
            key,
            state: StreamIndicators::new(config),
            awaiting: Vec::new(),
            awaited_values: HashMap::new(),
            storage,
            board,
            stats,
        }
    }

    fn store(&self, values: Vec<(i64, IndicatorValue)>) {
        if !values.is_empty() {
            self.storage.do_send(StoreIndicators { stream: self.stream, values, closed: None });
        }
    }

    /// Sends the pending rebuild's load, unless it is already in flight.
    fn load(&mut self, ctx: &mut Context<Self>) {
        if !self.state.start_load() {
            return;
        }
        let (storage, stream) = (self.storage.clone(), self.stream);
        let load = async move { storage.send(LoadClosedCandles { stream }).await };
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| {
            let result = result.map_err(LoadFailed::from).and_then(|loaded| loaded.map_err(LoadFailed::from));
            act.loaded(result, ctx);
        }));
    }

    fn loaded(&mut self, result: Result<Vec<Candle>, LoadFailed>, ctx: &mut Context<Self>) {
        let candles = match result {
            Ok(candles) => candles,
            Err(error) => {
                log::warn!("{}: indicator rebuild failed, retrying in {RELOAD_RETRY:?}: {error}", self.key);
                self.state.load_failed();
                ctx.run_later(RELOAD_RETRY, |act, ctx| act.load(ctx));
                return;
            }
        };
        let mut chunk = Vec::with_capacity(REBUILD_CHUNK);
        let mut stored = 0;
        let (storage, stream) = (&self.storage, self.stream);
        let (awaiting, awaited_values) = (&self.awaiting, &mut self.awaited_values);
        let again = self.state.rebuilt(&candles, |open_time, values| {
            if awaiting.iter().any(|candle| candle.open_time == open_time) {
                awaited_values.insert(open_time, values.to_vec());
            }
            chunk.extend(values.iter().map(|v| (open_time, *v)));
            if chunk.len() >= REBUILD_CHUNK {
                stored += chunk.len();
                storage.do_send(StoreIndicators { stream, values: std::mem::take(&mut chunk), closed: None });
            }
        });
        stored += chunk.len();
        self.store(chunk);
        log::info!("{}: indicators rebuilt from {} candles, {stored} values stored", self.key, candles.len());
        if !again {
            let mut awaited_values = std::mem::take(&mut self.awaited_values);
            for candle in std::mem::take(&mut self.awaiting) {
                let values = awaited_values.remove(&candle.open_time).unwrap_or_default();
                let values = values.into_iter().map(|value| (candle.open_time, value)).collect();
                self.storage.do_send(StoreIndicators { stream, values, closed: Some(candle) });
            }
        }
        if again {
            self.load(ctx);
        } else if let Some((open_time, values)) = self.state.provisional() {
            self.board.publish(stream, open_time, values);
        }
    }
}

impl Actor for IndicatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.stats.set_state(TaskState::Running);
        // Nothing is known about what is stored: start from a full rebuild.
        self.load(ctx);
    }
}

impl Handler<IndicatorCandle> for IndicatorActor {
    type Result = ();

    fn handle(&mut self, IndicatorCandle(candle): IndicatorCandle, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
        if !candle.is_closed {
            if let Some(values) = self.state.in_progress(&candle) {
                self.board.publish(self.stream, candle.open_time, values);
            }
            return;
        }
        self.board.closed(self.stream, candle.open_time);
        match self.state.closed(&candle) {
            Some(values) => {
                // Sent even without values (warming up): storage publishes the candle to the hub after the commit.
                let values = values.iter().map(|v| (candle.open_time, *v)).collect();
                self.storage.do_send(StoreIndicators { stream: self.stream, values, closed: Some(candle) });
            }
            // Queued behind a rebuild: its values come with it.
            None => self.awaiting.push(candle),
        }
    }
}

impl Handler<Rebuild> for IndicatorActor {
    type Result = ();

    fn handle(&mut self, Rebuild { from }: Rebuild, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        if self.state.request_rebuild(from) {
            self.load(ctx);
        }
    }
}

impl Handler<Drain> for IndicatorActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
        if self.state.is_rebuilding() {
            log::info!("{}: stopping during an indicator rebuild; the next start rebuilds", self.key);
        }
    }
}

impl Handler<Retire> for IndicatorActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        ctx.stop();
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::Inject> for IndicatorActor {
    type Result = ();

    fn handle(&mut self, fault: crate::fault_injection::Inject, ctx: &mut Context<Self>) {
        fault.apply::<Self>(&format!("indicator {}", self.key), ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::actors::storage::{CommittedCandles, Flush, StorageSettings, StoreCandles};
    use crate::domain::{StreamKey, Timeframe};
    use crate::hub::{Feed, Hub, HubMessage};
    use crate::indicators::{IndicatorSet, recompute};
    use crate::metrics::Metrics;
    use crate::registry::StreamRegistry;
    use crate::store::{SqliteStore, Store};
    use crate::tasks::{RestartPolicy, RestartTracker};

    fn candle(minute: i64, is_closed: bool) -> Candle {
        let open_time = minute * 60_000;
        let close = 100.0 + ((minute * 7919) % 17) as f64;
        Candle {
            open_time,
            close_time: open_time + 59_999,
            open: close - 0.5,
            high: close + 1.0,
            low: close - 1.0,
            close,
            volume: 2.0,
            quote_volume: 2.0 * close,
            trades: 3,
            taker_buy_base: 1.0,
            taker_buy_quote: close,
            is_closed,
        }
    }

    /// Indicator values by (open time, output name).
    type Values = BTreeMap<(i64, String), f64>;

    /// The stored table and a clean recomputation over the stored closed candles, as comparable maps.
    fn table_and_recomputation(path: &Path) -> (Values, Values) {
        let store = SqliteStore::open_read_only(path).expect("db");
        let mut stmt = store.connection().prepare("SELECT timestamp, name, value FROM indicators").expect("sql");
        let rows = stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?))).expect("query");
        let table = rows.collect::<Result<_, _>>().expect("rows");
        let closed = store.closed_candles("BTCUSDT", Timeframe::M1).expect("candles");
        let clean = recompute(&IndicatorConfig::default(), &closed).into_iter().map(|(t, n, v)| ((t, n), v)).collect();
        (table, clean)
    }

    #[actix::test]
    async fn stored_values_equal_a_clean_recomputation_after_a_late_candle() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("candles.db");
        let config = IndicatorConfig::default();
        let key = StreamKey::new("BTCUSDT", Timeframe::M1);
        let streams = StreamRegistry::new([&key]);
        let names: Arc<[String]> = IndicatorSet::new(&config).names().into();
        let hub = Hub::default();
        let backend = crate::store::StoreBackend::sqlite(&path);
        let settings = StorageSettings {
            backend: backend.clone(),
            batch_size: 64,
            flush_interval: Duration::from_millis(10),
            committed: CommittedCandles::with_hub(hub.clone()),
            retry: crate::domain::BackoffPolicy::default(),
            in_progress: Default::default(),
        };
        let mut closed_candles = hub.subscribe(Feed::CLOSED);
        closed_candles.subscribe(std::slice::from_ref(&key));
        let store = backend.open_writer().expect("db");
        let (tracker, metrics) = (RestartTracker::new(RestartPolicy::Never), Metrics::new());
        let stats = TaskStats::new(MAILBOX_CAPACITY);
        let storage =
            StorageActor::new(settings, streams.clone(), names.clone(), store, stats.clone(), tracker, metrics).start();
        let storage = Mailbox::new(storage, stats);
        let stream = StreamId(0);
        let store_candles = |minutes: &mut dyn Iterator<Item = i64>| {
            storage.do_send(StoreCandles { stream, candles: minutes.map(|m| candle(m, true)).collect() })
        };

        // TC0: history stored before the actor starts is picked up by the start-up rebuild.
        store_candles(&mut (0..30));
        let board = ProvisionalBoard::new(names);
        board.add(stream, key.clone());
        let stats = TaskStats::new(MAILBOX_CAPACITY);
        let actor = IndicatorActor::new(
            stream,
            StreamKey::new("BTCUSDT", Timeframe::M1),
            &config,
            storage.clone(),
            board.clone(),
            stats.clone(),
        )
        .start();
        let indicator = Mailbox::new(actor, stats);
        // TC1: live candles (stored first, as the subscription does), with minute 40 missed.
        for minute in (30..40).chain(41..50) {
            store_candles(&mut std::iter::once(minute));
            indicator.do_send(IndicatorCandle(candle(minute, true)));
        }
        // TC2: minute 40 arrives late from a backfill, then a live close and an in-progress update.
        store_candles(&mut std::iter::once(40));
        indicator.do_send(Rebuild { from: 40 * 60_000 });
        store_candles(&mut std::iter::once(50));
        indicator.do_send(IndicatorCandle(candle(50, true)));
        indicator.do_send(IndicatorCandle(candle(51, false)));

        let mut equal = None;
        for _ in 0..200 {
            indicator.send(Drain).await.expect("indicator alive");
            storage.send(Flush).await.expect("storage alive").expect("flushed");
            let (table, clean) = table_and_recomputation(&path);
            if !clean.is_empty() && table == clean {
                equal = Some(clean);
                break;
            }
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        let clean = equal.expect("the indicators table never matched a clean recomputation");
        // TC3: every live close reached the hub once, in order, after commit, with its values: those queued behind
        // the start-up rebuild and the late candle's rebuild too (minute 40 came from a backfill: not live).
        let mut published = Vec::new();
        while let Some(HubMessage::Closed(closed)) = closed_candles.try_recv() {
            published.push(closed);
        }
        let minutes: Vec<i64> = published.iter().map(|c| c.candle.open_time / 60_000).collect();
        assert_eq!(minutes, (30..40).chain(41..51).collect::<Vec<_>>());
        for closed in &published {
            let Some(sma) = closed.indicator("sma_20") else {
                panic!("minute {}: no sma_20: {:?}", closed.candle.open_time / 60_000, closed.values)
            };
            assert_eq!(
                Some(&sma),
                clean.get(&(closed.candle.open_time, "sma_20".to_owned())),
                "{}",
                closed.candle.open_time
            );
        }
        let provisional = board.get("BTCUSDT", Timeframe::M1).expect("provisional values");
        assert_eq!(provisional.open_time, 51 * 60_000);
        assert!(provisional.values.iter().any(|(name, _)| name == "sma_20"));
    }
}
