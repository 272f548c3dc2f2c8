//! The subscription actor: one per (symbol, timeframe). Applies the candle rules to live and backfilled candles,
//! sends them to storage and to its indicator actor, and asks for REST repairs after every (re)connect and gap.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::Mailbox;
use crate::actors::backfill::{BackfillActor, FetchKlines, FetchStart};
use crate::actors::indicator::{IndicatorActor, IndicatorCandle};
use crate::actors::storage::{StorageActor, StoreCandle, StoreCandles};
use crate::domain::{Candle, CandleRules, StreamId, StreamKey, Verdict};
use crate::metrics::Metrics;
use crate::tasks::{TaskState, TaskStats};

/// A kline update for this stream, parsed once by its connection.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct KlineUpdate {
    pub candle: Candle,
    /// `E`: when the exchange sent it, ms UTC.
    pub event_time: i64,
}

/// The stream is subscribed on a live connection: events flow from now on, and whatever closed while it was not
/// live must be fetched over REST.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StreamLive;

/// Why candles were fetched over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillPurpose {
    /// The start-up history load.
    History,
    /// A repair after a (re)connect or a gap.
    Repair,
}

/// Closed candles fetched over REST for this stream.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Backfilled {
    pub stream: StreamId,
    pub purpose: BackfillPurpose,
    pub candles: Vec<Candle>,
    /// Every closed candle up to this open time was fetched; missing ones do not exist on the exchange.
    pub through_open: Option<i64>,
    /// Why the fetch failed, if it did. It is retried later.
    pub error: Option<String>,
}

/// Answers once every message queued before it was handled (used to drain before shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Drain;

/// How long to wait before retrying a failed repair.
const REPAIR_RETRY: Duration = Duration::from_secs(5);

pub struct SubscriptionActor {
    stream: StreamId,
    key: StreamKey,
    rules: CandleRules,
    storage: Mailbox<StorageActor>,
    indicator: Mailbox<IndicatorActor>,
    backfill: Mailbox<BackfillActor>,
    stats: Arc<TaskStats>,
    metrics: Metrics,
    /// The start-up history has been applied (or there is none to load).
    history_done: bool,
    /// A repair should run as soon as possible.
    repair_wanted: bool,
    repair_in_flight: bool,
}

impl SubscriptionActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stream: StreamId,
        key: StreamKey,
        last_stored_closed: Option<i64>,
        loads_history: bool,
        storage: Mailbox<StorageActor>,
        indicator: Mailbox<IndicatorActor>,
        backfill: Mailbox<BackfillActor>,
        stats: Arc<TaskStats>,
        metrics: Metrics,
    ) -> Self {
        Self {
            stream,
            rules: CandleRules::new(key.timeframe, last_stored_closed),
            key,
            storage,
            indicator,
            backfill,
            stats,
            metrics,
            history_done: !loads_history,
            repair_wanted: false,
            repair_in_flight: false,
        }
    }

    /// Applies the rules to one candle; returns it if it must be stored.
    fn apply(&mut self, candle: Candle) -> Option<Candle> {
        match self.rules.apply(&candle) {
            Verdict::InProgress => {
                self.indicator.do_send(IndicatorCandle(candle));
                Some(candle)
            }
            Verdict::Closed => {
                self.indicator.do_send(IndicatorCandle(candle));
                if self.rules.first_gap().is_some() {
                    self.repair_wanted = true;
                }
                Some(candle)
            }
            Verdict::LateClosed => Some(candle),
            Verdict::StaleInProgress => {
                self.metrics.stale_updates_ignored.inc();
                None
            }
        }
    }

    fn maybe_repair(&mut self, ctx: &mut Context<Self>) {
        if !(self.history_done && self.repair_wanted) || self.repair_in_flight {
            return;
        }
        self.repair_wanted = false;
        let Some(from) = self.rules.repair_from() else { return };
        self.repair_in_flight = true;
        self.backfill.do_send(FetchKlines {
            stream: self.stream,
            key: self.key.clone(),
            start: FetchStart::From(from),
            purpose: BackfillPurpose::Repair,
            reply: ctx.address().recipient(),
        });
    }
}

impl Actor for SubscriptionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.stats.set_state(TaskState::Running);
    }
}

impl Handler<KlineUpdate> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: KlineUpdate, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        if let Some(candle) = self.apply(msg.candle) {
            self.storage.do_send(StoreCandle { stream: self.stream, candle, event_time: Some(msg.event_time) });
        }
        self.maybe_repair(ctx);
    }
}

impl Handler<StreamLive> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: StreamLive, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        log::info!("Subscribed to {} {} candles", self.key.symbol, self.key.timeframe);
        self.repair_wanted = true;
        self.maybe_repair(ctx);
    }
}

impl Handler<Backfilled> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: Backfilled, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        let candles: Vec<Candle> = msg.candles.into_iter().filter_map(|c| self.apply(c)).collect();
        if !candles.is_empty() {
            self.storage.do_send(StoreCandles { stream: self.stream, candles });
        }
        if let Some(through) = msg.through_open {
            self.rules.backfilled_through(through);
        }
        match msg.purpose {
            BackfillPurpose::History => self.history_done = true,
            BackfillPurpose::Repair => self.repair_in_flight = false,
        }
        if let Some(error) = msg.error {
            log::warn!("{}: REST backfill failed, retrying in {}s: {error}", self.key, REPAIR_RETRY.as_secs());
            ctx.run_later(REPAIR_RETRY, |act, ctx| {
                act.repair_wanted = true;
                act.maybe_repair(ctx);
            });
        }
        self.maybe_repair(ctx);
    }
}

impl Handler<Drain> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
    }
}
