//! The subscription actor: one per (symbol, timeframe). Applies the candle rules to live and backfilled candles,
//! sends them to storage and to its indicator actor, and repairs from REST after every (re)connect, gap, missed
//! close deadline and stale spell.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::backfill::{BackfillActor, FetchKlines, FetchStart};
use crate::actors::connection::Resubscribe;
use crate::actors::indicator::{IndicatorActor, IndicatorCandle, Rebuild};
use crate::actors::storage::{StorageActor, StoreCandle, StoreCandles};
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{Candle, CandleRules, Gap, StreamId, StreamKey, Verdict};
use crate::metrics::Metrics;
use crate::streams::StreamHealth;
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
/// live must be fetched over REST. `connection` takes resubscribe requests for it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StreamLive {
    pub connection: Recipient<Resubscribe>,
}

/// Why candles were fetched over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillPurpose {
    /// The start-up history load.
    History,
    /// A repair after a (re)connect, a gap, a missed close or a stale spell.
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
    /// Ranges the exchange has no candles for.
    pub exchange_gaps: Vec<Gap>,
    /// Why the fetch failed, if it did. It is retried later.
    pub error: Option<String>,
}

impl Backfilled {
    /// A fetch that failed: nothing learned, to be retried.
    pub fn failed(stream: StreamId, purpose: BackfillPurpose, error: String) -> Self {
        Self { stream, purpose, candles: Vec::new(), through_open: None, exchange_gaps: Vec::new(), error: Some(error) }
    }
}

/// Answers once every message queued before it was handled (used to drain before shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Drain;

/// How a subscription watches its stream.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionSettings {
    /// How late a candle's `x:true` may be, after its close time, before it is fetched over REST.
    pub close_grace: Duration,
    /// How long a live stream may stay silent before it is marked stale and resubscribed. Binance sends an update
    /// every 2 s per stream.
    pub stale_after: Duration,
    /// Closed candles to load when nothing is stored yet (`market_data.history`): a failed history load is retried.
    pub history: u32,
}

/// How long to wait before retrying a failed repair.
const REPAIR_RETRY: Duration = Duration::from_secs(5);
/// How often the stale and close-deadline checks run.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

pub struct SubscriptionActor {
    stream: StreamId,
    key: StreamKey,
    rules: CandleRules,
    settings: SubscriptionSettings,
    storage: Mailbox<StorageActor>,
    indicator: Mailbox<IndicatorActor>,
    backfill: Mailbox<BackfillActor>,
    connection: Option<Recipient<Resubscribe>>,
    stats: Arc<TaskStats>,
    health: Arc<StreamHealth>,
    metrics: Metrics,
    /// The newest closed candle stored when the process started: where a retried history load starts.
    stored_at_start: Option<i64>,
    /// The start-up history has been applied (or there is none to load).
    history_done: bool,
    /// A repair should run as soon as possible.
    repair_wanted: bool,
    repair_in_flight: bool,
    /// The exchange's clock as last seen (`E`), and when we saw it.
    exchange_clock: Option<(i64, Instant)>,
    last_update: Instant,
    /// The newest in-progress candle storage had no room for; a later update or the close replaces it.
    deferred: Option<StoreCandle>,
    /// The earliest late closed candle applied since the last `Rebuild` was sent to the indicator actor.
    late_from: Option<i64>,
}

/// What a subscription is wired to.
pub struct SubscriptionLinks {
    pub storage: Mailbox<StorageActor>,
    pub indicator: Mailbox<IndicatorActor>,
    pub backfill: Mailbox<BackfillActor>,
    pub stats: Arc<TaskStats>,
    pub health: Arc<StreamHealth>,
    pub metrics: Metrics,
}

impl SubscriptionActor {
    pub fn new(
        stream: StreamId,
        last_stored_closed: Option<i64>,
        loads_history: bool,
        settings: SubscriptionSettings,
        links: SubscriptionLinks,
    ) -> Self {
        let key = links.health.key.clone();
        Self {
            stream,
            rules: CandleRules::new(key.timeframe, last_stored_closed),
            key,
            settings,
            storage: links.storage,
            indicator: links.indicator,
            backfill: links.backfill,
            connection: None,
            stats: links.stats,
            health: links.health,
            metrics: links.metrics,
            stored_at_start: last_stored_closed,
            history_done: !loads_history,
            repair_wanted: false,
            repair_in_flight: false,
            exchange_clock: None,
            last_update: Instant::now(),
            deferred: None,
            late_from: None,
        }
    }

    /// Applies the rules to one candle; returns it if it must be stored.
    fn apply(&mut self, candle: Candle) -> Option<Candle> {
        match self.rules.apply(&candle) {
            Verdict::InProgress => {
                // Provisional values only: when the indicator falls behind, this update is coalesced away.
                let _ = self.indicator.try_send(IndicatorCandle(candle));
                Some(candle)
            }
            Verdict::Closed => {
                self.indicator.do_send(IndicatorCandle(candle));
                if self.rules.first_gap().is_some() {
                    self.repair_wanted = true;
                }
                Some(candle)
            }
            Verdict::LateClosed { changes } => {
                if changes {
                    self.late_from = Some(self.late_from.map_or(candle.open_time, |t| t.min(candle.open_time)));
                }
                Some(candle)
            }
            Verdict::StaleInProgress => {
                self.metrics.stale_updates_ignored.inc();
                None
            }
        }
    }

    /// Sends a candle to storage. Closed candles are never dropped; an in-progress one waits in `deferred` (only
    /// the newest) while storage's mailbox is full.
    fn store(&mut self, candle: Candle, event_time: Option<i64>) {
        let msg = StoreCandle { stream: self.stream, candle, event_time };
        if candle.is_closed {
            if self.deferred.is_some_and(|d| d.candle.open_time == candle.open_time) {
                self.deferred = None;
            }
            self.storage.do_send(msg);
        } else if let Err(msg) = self.storage.try_send(msg)
            && self.deferred.replace(msg).is_some()
        {
            self.metrics.in_progress_coalesced.inc();
        }
    }

    fn retry_deferred(&mut self) {
        if let Some(msg) = self.deferred.take() {
            self.store(msg.candle, msg.event_time);
        }
    }

    /// Late closed candles were applied and sent to storage: the indicators rebuild from the earliest one (one
    /// `Rebuild` per message handled). It is sent after the candles, so the rebuild's load from storage sees them.
    fn rebuild_indicators(&mut self) {
        if let Some(from) = self.late_from.take() {
            self.indicator.do_send(Rebuild { from });
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

    /// Fetches the start-up history again (after the first attempt failed): everything after what was stored at
    /// start, or the last `history` closed candles when nothing was. Live closes since then come back as replays.
    fn fetch_history(&mut self, ctx: &mut Context<Self>) {
        self.backfill.do_send(FetchKlines {
            stream: self.stream,
            key: self.key.clone(),
            start: FetchStart::History { count: self.settings.history, after: self.stored_at_start },
            purpose: BackfillPurpose::History,
            reply: ctx.address().recipient(),
        });
    }

    /// The exchange's clock now, estimated from the last event time seen.
    fn exchange_now(&self) -> Option<i64> {
        self.exchange_clock.map(|(event_time, seen)| event_time + seen.elapsed().as_millis() as i64)
    }

    /// The periodic checks: a stale stream is resubscribed, an overdue close is fetched, a deferred update retried.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        self.retry_deferred();
        if let Some(connection) = &self.connection
            && self.last_update.elapsed() > self.settings.stale_after
        {
            if self.health.set_stale(true) {
                log::warn!("{}: no update for {:?}, resubscribing", self.key, self.settings.stale_after);
                self.stats.set_state(TaskState::Stale);
            }
            connection.do_send(Resubscribe { key: self.key.clone() });
            self.last_update = Instant::now();
        }
        let grace = self.settings.close_grace.as_millis() as i64;
        if let Some(open) = self.exchange_now().and_then(|now| self.rules.overdue_close(now, grace))
            && !self.repair_in_flight
            && !self.repair_wanted
        {
            log::warn!("{}: the close of the candle opened at {open} is overdue, fetching it", self.key);
            self.health.record_missed_close();
            self.repair_wanted = true;
        }
        self.maybe_repair(ctx);
    }
}

impl Actor for SubscriptionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.stats.set_state(TaskState::Running);
        ctx.run_interval(WATCH_INTERVAL, |act, ctx| act.watch(ctx));
    }
}

impl Handler<KlineUpdate> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: KlineUpdate, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        self.last_update = Instant::now();
        self.exchange_clock = Some((msg.event_time, self.last_update));
        if self.health.set_stale(false) {
            log::info!("{}: updates flow again", self.key);
            self.stats.set_state(TaskState::Running);
        }
        if let Some(candle) = self.apply(msg.candle) {
            self.store(candle, Some(msg.event_time));
        }
        self.rebuild_indicators();
        self.maybe_repair(ctx);
    }
}

impl Handler<StreamLive> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: StreamLive, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        log::info!("Subscribed to {} {} candles", self.key.symbol, self.key.timeframe);
        self.connection = Some(msg.connection);
        self.last_update = Instant::now();
        self.repair_wanted = true;
        self.maybe_repair(ctx);
    }
}

impl Handler<Backfilled> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: Backfilled, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        self.health.record_backfill(msg.candles.len(), msg.purpose == BackfillPurpose::Repair && msg.error.is_none());
        let candles: Vec<Candle> = msg.candles.into_iter().filter_map(|c| self.apply(c)).collect();
        if !candles.is_empty() {
            self.storage.do_send(StoreCandles { stream: self.stream, candles });
        }
        if !msg.exchange_gaps.is_empty() {
            log::warn!(
                "{}: the exchange has no candles for {:?}; reported, not fetched again",
                self.key,
                msg.exchange_gaps
            );
            self.health.record_exchange_gaps(&msg.exchange_gaps);
        }
        self.rebuild_indicators();
        if let Some(through) = msg.through_open {
            self.rules.backfilled_through(through);
        }
        match (msg.purpose, &msg.error) {
            (BackfillPurpose::History, None) => self.history_done = true,
            (BackfillPurpose::History, Some(error)) => {
                log::warn!("{}: history load failed, retrying in {}s: {error}", self.key, REPAIR_RETRY.as_secs());
                ctx.run_later(REPAIR_RETRY, |act, ctx| act.fetch_history(ctx));
            }
            (BackfillPurpose::Repair, error) => {
                self.repair_in_flight = false;
                if let Some(error) = error {
                    log::warn!("{}: REST repair failed, retrying in {}s: {error}", self.key, REPAIR_RETRY.as_secs());
                    ctx.run_later(REPAIR_RETRY, |act, ctx| {
                        act.repair_wanted = true;
                        act.maybe_repair(ctx);
                    });
                }
            }
        }
        self.maybe_repair(ctx);
    }
}

impl Handler<Drain> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
        // Shutting down: what storage had no room for is written now.
        if let Some(msg) = self.deferred.take() {
            self.storage.do_send(msg);
        }
    }
}
