//! The subscription actor: one per (symbol, timeframe). Applies the candle rules to live and fetched candles,
//! sends them to storage and to its indicator actor, loads its history, and repairs from REST after every
//! (re)connect, gap, missed close deadline and silent spell. A range the exchange answers empty is looked at again
//! before it is recorded as an exchange gap.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::backfill::{BackfillActor, FetchKlines};
use crate::actors::indicator::{IndicatorActor, IndicatorCandle, Rebuild};
use crate::actors::messages::{BackfillPurpose, Backfilled, Drain, FetchRange, HistoryLanded, Retire, StreamSilent};
use crate::actors::storage::{RecordExchangeGaps, StorageActor, StoreCandle, StoreCandles};
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{Candle, CandleRules, ExchangeClock, Gap, SilenceStep, SilenceWatch, StreamId, StreamKey, Verdict};
use crate::metrics::Metrics;
use crate::rest::FetchError;
use crate::streams::{StreamHealth, describe_gaps};
use crate::tasks::{TaskState, TaskStats, unix_ms};

/// A kline update for this stream, parsed once by its connection.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct KlineUpdate {
    pub candle: Candle,
    /// `E`: when the exchange sent it, ms UTC.
    pub event_time: i64,
}

/// The stream is subscribed on a live connection: events flow from now on, and whatever closed while it was not
/// live must be fetched over REST. `connection` takes the stream's requests when it goes silent.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StreamLive {
    pub connection: Recipient<StreamSilent>,
}

/// The backfill task was restarted: the fetches it had queued or in flight are lost. A history load or repair
/// that was waiting for its answer is asked again.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct BackfillRestarted;

/// How a subscription watches its stream.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionSettings {
    /// How late a candle's `x:true` may be, after its close time, before it is fetched over REST.
    pub close_grace: Duration,
    /// How long a live stream may stay silent before it is marked stale and resubscribed. Binance sends an update
    /// every 2 s per stream.
    pub stale_after: Duration,
    /// How long a stream may stay silent after a resubscribe before its connection is replaced.
    pub replace_after: Duration,
    /// How long to wait before looking again at a range the exchange answered empty.
    pub recheck_empty: Duration,
    /// Closed candles to load when nothing is stored yet (`market_data.history`); 0 loads none.
    pub history: u32,
}

/// How long to wait before retrying a failed fetch.
const REPAIR_RETRY: Duration = Duration::from_secs(5);
/// How often the silence and close-deadline checks run.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// What a subscription is wired to.
pub struct SubscriptionLinks {
    pub storage: Mailbox<StorageActor>,
    pub indicator: Mailbox<IndicatorActor>,
    pub backfill: Mailbox<BackfillActor>,
    /// Load the history (the last `history` closed candles, or the catch-up since the newest stored one) before
    /// repairing.
    pub load_history: bool,
    /// Told when the history has landed, if anyone follows it.
    pub history: Option<Recipient<HistoryLanded>>,
    pub stats: Arc<TaskStats>,
    pub health: Arc<StreamHealth>,
    pub clock: Arc<ExchangeClock>,
    pub metrics: Metrics,
}

pub struct SubscriptionActor {
    stream: StreamId,
    key: StreamKey,
    rules: CandleRules,
    settings: SubscriptionSettings,
    links: SubscriptionLinks,
    connection: Option<Recipient<StreamSilent>>,
    /// The newest closed candle stored when the process started: where the history load starts.
    stored_at_start: Option<i64>,
    /// The history has landed (or there is none to load): repairs may run.
    history_done: bool,
    /// A repair should run as soon as possible.
    repair_wanted: bool,
    repair_in_flight: bool,
    silence: SilenceWatch,
    /// The newest in-progress candle storage had no room for; a later update or the close replaces it.
    deferred: Option<StoreCandle>,
    /// The earliest late closed candle applied since the last `Rebuild` was sent to the indicator actor.
    late_from: Option<i64>,
    /// Ranges the exchange answered empty, waiting for their re-check.
    rechecks: BTreeSet<(i64, i64)>,
    /// The exchange refused this stream's requests for good: nothing more is asked for it.
    refused: bool,
}

impl SubscriptionActor {
    pub fn new(
        stream: StreamId,
        last_stored_closed: Option<i64>,
        settings: SubscriptionSettings,
        links: SubscriptionLinks,
    ) -> Self {
        let key = links.health.key.clone();
        let loads_history = links.load_history;
        let rules = match last_stored_closed {
            None if loads_history => CandleRules::awaiting_history(key.timeframe),
            stored => CandleRules::new(key.timeframe, stored),
        };
        if !loads_history {
            links.health.set_history_landed();
        }
        Self {
            stream,
            rules,
            key,
            connection: None,
            stored_at_start: last_stored_closed,
            history_done: !loads_history,
            repair_wanted: false,
            repair_in_flight: false,
            silence: SilenceWatch::new(settings.stale_after, settings.replace_after, Instant::now()),
            deferred: None,
            late_from: None,
            rechecks: BTreeSet::new(),
            refused: false,
            settings,
            links,
        }
    }

    /// Applies the rules to one candle; returns it if it must be stored.
    fn apply(&mut self, candle: Candle) -> Option<Candle> {
        match self.rules.apply(&candle) {
            Verdict::InProgress => {
                // Provisional values only: when the indicator falls behind, this update is coalesced away.
                let _ = self.links.indicator.try_send(IndicatorCandle(candle));
                Some(candle)
            }
            Verdict::Closed => {
                self.links.indicator.do_send(IndicatorCandle(candle));
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
                self.links.metrics.stale_updates_ignored.inc();
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
            self.links.storage.do_send(msg);
        } else if let Err(SendError::Full(msg) | SendError::Closed(msg)) = self.links.storage.try_send(msg)
            && self.deferred.replace(msg).is_some()
        {
            self.links.metrics.in_progress_coalesced.inc();
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
            self.links.indicator.do_send(Rebuild { from });
        }
    }

    fn fetch(&self, range: FetchRange, purpose: BackfillPurpose, ctx: &mut Context<Self>) {
        if self.refused {
            return;
        }
        self.links.backfill.do_send(FetchKlines {
            stream: self.stream,
            key: self.key.clone(),
            range,
            purpose,
            reply: ctx.address().recipient(),
        });
    }

    fn maybe_repair(&mut self, ctx: &mut Context<Self>) {
        if !(self.history_done && self.repair_wanted) || self.repair_in_flight || self.refused {
            return;
        }
        self.repair_wanted = false;
        let Some(from) = self.rules.repair_from() else { return };
        self.repair_in_flight = true;
        self.fetch(FetchRange::From(from), BackfillPurpose::Repair, ctx);
    }

    /// Loads the history: everything after what was stored at start, or the last `history` closed candles when
    /// nothing was. Live closes that arrive meanwhile come back as replays.
    fn fetch_history(&mut self, ctx: &mut Context<Self>) {
        let range = FetchRange::History { count: self.settings.history, after: self.stored_at_start };
        self.fetch(range, BackfillPurpose::History, ctx);
    }

    /// The periodic checks: a silent stream climbs its escalation ladder, an overdue close is fetched, a deferred
    /// update retried.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        self.retry_deferred();
        if self.refused {
            return;
        }
        if let Some(connection) = &self.connection
            && let Some(step) = self.silence.check(Instant::now())
        {
            if self.links.health.set_stale(true) {
                log::warn!("{}: no update for {:?}, resubscribing", self.key, self.settings.stale_after);
                self.links.stats.set_state(TaskState::Stale);
            } else if step == SilenceStep::ReplaceConnection {
                log::debug!("{}: still silent after resubscribing; asking for a new connection", self.key);
            }
            connection.do_send(StreamSilent { key: self.key.clone(), step });
        }
        let grace = self.settings.close_grace.as_millis() as i64;
        if let Some(open) = self.links.clock.at(unix_ms()).and_then(|now| self.rules.overdue_close(now, grace))
            && !self.repair_in_flight
            && !self.repair_wanted
            && self.history_done
        {
            log::info!(
                "{}: the close of the candle opened at {} is overdue, fetching it",
                self.key,
                crate::streams::utc(open)
            );
            self.links.health.record_missed_close();
            self.repair_wanted = true;
        }
        self.maybe_repair(ctx);
    }

    /// Ranges a fetch found empty. A first empty answer is only a suspicion (the exchange may have answered from a
    /// lagging replica): the range is asked again after `recheck_empty`. A second empty answer is recorded.
    fn on_empty_ranges(&mut self, purpose: BackfillPurpose, gaps: &[Gap], ctx: &mut Context<Self>) {
        if purpose == BackfillPurpose::Recheck {
            log::warn!(
                "{}: the exchange has no candles for {}; confirmed by a re-check, recorded as an exchange gap",
                self.key,
                describe_gaps(self.key.timeframe, gaps)
            );
            self.links.health.record_exchange_gaps(gaps);
            self.links.storage.do_send(RecordExchangeGaps { stream: self.stream, gaps: gaps.to_vec() });
            return;
        }
        let fresh: Vec<Gap> = gaps.iter().copied().filter(|g| self.rechecks.insert((g.from_open, g.to_open))).collect();
        if fresh.is_empty() {
            return;
        }
        log::info!(
            "{}: the exchange answered no candles for {}; looking again in {}s",
            self.key,
            describe_gaps(self.key.timeframe, &fresh),
            self.settings.recheck_empty.as_secs()
        );
        for gap in fresh {
            self.links.health.set_suspected_gap(gap, true);
            ctx.run_later(self.settings.recheck_empty, move |act, ctx| act.recheck(gap, ctx));
        }
    }

    fn recheck(&mut self, gap: Gap, ctx: &mut Context<Self>) {
        let range = FetchRange::Between { from: gap.from_open, to: self.key.timeframe.previous_open(gap.to_open) };
        self.fetch(range, BackfillPurpose::Recheck, ctx);
    }

    /// The exchange refused this stream's requests for good: the task fails, and nothing more is asked for it.
    fn refuse(&mut self, error: &FetchError) {
        if std::mem::replace(&mut self.refused, true) {
            return;
        }
        log::error!("{}: {error}; no more requests are made for this stream", self.key);
        self.links.health.set_refused();
        self.links.stats.fail(error.to_string());
    }

    fn on_fetch_failed(&mut self, msg: &Backfilled, error: &FetchError, ctx: &mut Context<Self>) {
        if !error.is_transient() {
            self.refuse(error);
            return;
        }
        self.links.stats.record_error(error.to_string());
        let retry = REPAIR_RETRY;
        log::warn!("{}: {} failed, retrying in {}s: {error}", self.key, msg.purpose.describe(), retry.as_secs());
        match msg.purpose {
            BackfillPurpose::History => {
                ctx.run_later(retry, |act, ctx| act.fetch_history(ctx));
            }
            BackfillPurpose::Repair => {
                ctx.run_later(retry, |act, ctx| {
                    act.repair_wanted = true;
                    act.maybe_repair(ctx);
                });
            }
            BackfillPurpose::Recheck => {
                let range = msg.range;
                ctx.run_later(retry, move |act, ctx| act.fetch(range, BackfillPurpose::Recheck, ctx));
            }
            // The next audit pass looks again.
            BackfillPurpose::Audit => {}
        }
    }

    fn history_landed(&mut self, result: Result<usize, FetchError>) {
        if let Some(history) = &self.links.history {
            history.do_send(HistoryLanded {
                stream: self.stream,
                outcome: result,
                caught_up: self.stored_at_start.is_some(),
            });
        }
    }
}

impl Actor for SubscriptionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.links.stats.set_state(TaskState::Running);
        if !self.history_done {
            self.fetch_history(ctx);
        }
        ctx.run_interval(WATCH_INTERVAL, |act, ctx| act.watch(ctx));
    }
}

impl Handler<KlineUpdate> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: KlineUpdate, ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        let now = Instant::now();
        self.silence.on_update(now);
        self.links.clock.observe(msg.event_time, unix_ms());
        if self.links.health.set_stale(false) {
            log::info!("{}: updates flow again", self.key);
            if !self.refused {
                self.links.stats.set_state(TaskState::Running);
            }
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
        self.links.stats.record_handled();
        log::info!("Subscribed to {} {} candles", self.key.symbol, self.key.timeframe);
        self.connection = Some(msg.connection);
        self.silence.on_live(Instant::now());
        self.repair_wanted = true;
        self.maybe_repair(ctx);
    }
}

impl Handler<Backfilled> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: Backfilled, ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        let fetched = msg.candles.len();
        let succeeded = msg.error.is_none();
        self.links.health.record_backfill(fetched, msg.purpose == BackfillPurpose::Repair && succeeded);
        if msg.purpose == BackfillPurpose::Audit {
            self.links.health.record_audit_repaired(fetched);
            self.links.metrics.audit_candles_repaired(&self.key).inc_by(fetched as u64);
        }
        let candles: Vec<Candle> = msg.candles.iter().filter_map(|&c| self.apply(c)).collect();
        if !candles.is_empty() {
            self.links.storage.do_send(StoreCandles { stream: self.stream, candles });
        }
        self.rebuild_indicators();
        if msg.purpose == BackfillPurpose::Recheck
            && msg.error.is_none()
            && let FetchRange::Between { from, to } = msg.range
        {
            let gap = Gap { from_open: from, to_open: self.key.timeframe.next_open(to) };
            self.rechecks.remove(&(gap.from_open, gap.to_open));
            self.links.health.set_suspected_gap(gap, false);
        }
        if !msg.exchange_gaps.is_empty() {
            self.on_empty_ranges(msg.purpose, &msg.exchange_gaps, ctx);
        }
        // A fetch from where the series is contiguous (or a history load) shows what exists up to its end. One of
        // a hole further on says nothing of the ranges before it, which the forward path may still be repairing.
        let from_contiguous = match msg.range {
            FetchRange::Between { from, .. } => self.rules.repair_from().is_some_and(|next| from <= next),
            FetchRange::From(_) | FetchRange::History { .. } => true,
        };
        if let Some(through) = msg.through_open.filter(|_| from_contiguous) {
            self.rules.backfilled_through(through);
        }
        if msg.purpose == BackfillPurpose::Repair {
            self.repair_in_flight = false;
        }
        match &msg.error {
            None if msg.purpose == BackfillPurpose::History => {
                self.history_done = true;
                self.links.health.set_history_landed();
                self.history_landed(Ok(fetched));
            }
            None => {}
            Some(error) => {
                if msg.purpose == BackfillPurpose::History {
                    self.history_landed(Err(error.clone()));
                }
                self.on_fetch_failed(&msg, error, ctx);
            }
        }
        self.maybe_repair(ctx);
    }
}

impl Handler<BackfillRestarted> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: BackfillRestarted, ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        if !self.history_done {
            self.fetch_history(ctx);
        } else if std::mem::take(&mut self.repair_in_flight) {
            self.repair_wanted = true;
            self.maybe_repair(ctx);
        }
    }
}

impl Handler<Drain> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        // Shutting down: what storage had no room for is written now.
        if let Some(msg) = self.deferred.take() {
            self.links.storage.do_send(msg);
        }
    }
}

impl Handler<Retire> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        // What storage had no room for is written before the actor goes.
        if let Some(msg) = self.deferred.take() {
            self.links.storage.do_send(msg);
        }
        ctx.stop();
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::Inject> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, fault: crate::fault_injection::Inject, ctx: &mut Context<Self>) {
        fault.apply::<Self>(&format!("subscription {}", self.key), ctx);
    }
}
