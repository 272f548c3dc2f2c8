//! The indicator actor: one per (symbol, timeframe), fed its stream's candles in order by its subscription. A thin
//! shell around [`StreamIndicators`]: closed candles advance the indicators and their values go to storage (which
//! commits them with the candles); in-progress candles only give provisional values, published on the
//! [`ProvisionalBoard`] for HTTP and never stored. At start, and whenever a late or revised closed candle lands
//! inside what was already consumed, the state is rebuilt from the stored closed candles.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::storage::{LoadClosedCandles, StorageActor, StoreIndicators};
use crate::actors::subscription::Drain;
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{Candle, StreamId};
use crate::indicators::{IndicatorConfig, IndicatorValue, ProvisionalBoard, StreamIndicators};
use crate::tasks::{TaskState, TaskStats};

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
    state: StreamIndicators,
    storage: Mailbox<StorageActor>,
    board: ProvisionalBoard,
    stats: Arc<TaskStats>,
}

impl IndicatorActor {
    pub fn new(
        stream: StreamId,
        config: &IndicatorConfig,
        storage: Mailbox<StorageActor>,
        board: ProvisionalBoard,
        stats: Arc<TaskStats>,
    ) -> Self {
        Self { stream, state: StreamIndicators::new(config), storage, board, stats }
    }

    fn store(&self, values: Vec<(i64, IndicatorValue)>) {
        if !values.is_empty() {
            self.storage.do_send(StoreIndicators { stream: self.stream, values });
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
            let result = result.map_err(|e| format!("storage did not answer: {e}")).and_then(|loaded| loaded);
            act.loaded(result, ctx);
        }));
    }

    fn loaded(&mut self, result: Result<Vec<Candle>, String>, ctx: &mut Context<Self>) {
        let candles = match result {
            Ok(candles) => candles,
            Err(error) => {
                log::warn!(
                    "indicators of stream {}: rebuild failed, retrying in {:?}: {error}",
                    self.stream.0,
                    RELOAD_RETRY
                );
                self.state.load_failed();
                ctx.run_later(RELOAD_RETRY, |act, ctx| act.load(ctx));
                return;
            }
        };
        let mut chunk = Vec::with_capacity(REBUILD_CHUNK);
        let mut stored = 0;
        let (storage, stream) = (&self.storage, self.stream);
        let again = self.state.rebuilt(&candles, |open_time, values| {
            chunk.extend(values.iter().map(|v| (open_time, *v)));
            if chunk.len() >= REBUILD_CHUNK {
                stored += chunk.len();
                storage.do_send(StoreIndicators { stream, values: std::mem::take(&mut chunk) });
            }
        });
        stored += chunk.len();
        self.store(chunk);
        log::info!("indicators of stream {}: rebuilt from {} candles, {stored} values stored", stream.0, candles.len());
        if again {
            self.load(ctx);
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
            self.board.publish(self.stream, candle.open_time, self.state.provisional(&candle));
            return;
        }
        self.board.closed(self.stream, candle.open_time);
        if let Some(values) = self.state.closed(&candle) {
            let values = values.iter().map(|v| (candle.open_time, *v)).collect();
            self.store(values);
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
            log::info!("indicators of stream {}: stopping during a rebuild; the next start rebuilds", self.stream.0);
        }
    }
}
