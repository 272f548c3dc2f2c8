//! The subscription actor: one per (symbol, timeframe). Applies the candle rules to live and fetched candles,
//! sends them to storage and to its indicator actor, loads its history, and repairs from REST after every
//! (re)connect, gap, missed close deadline and silent spell. A range the exchange answers empty is looked at again
//! before it is recorded as an exchange gap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::backfill::{BackfillActor, FetchKlines};
use crate::actors::indicator::{IndicatorActor, IndicatorCandle, Rebuild};
use crate::actors::messages::{BackfillPurpose, Backfilled, Drain, HistoryLanded, Retire, StreamSilent};
use crate::actors::storage::{RecordExchangeGaps, StorageActor, StoreCandle, StoreCandles};
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{
    Candle, ExchangeClock, FailedFetch, Fetch, FetchAnswer, FetchFailure, Gap, PendingUpdate, SilenceStep,
    SilenceWatch, StreamId, StreamKey, StreamRepair, Verdict,
};
use crate::in_progress::InProgressUpdates;
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

/// What a subscription is wired to.
pub struct SubscriptionLinks {
    pub storage: Mailbox<StorageActor>,
    /// Where the in-progress updates wait for storage's next commit.
    pub in_progress: InProgressUpdates,
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

/// A thin shell: [`StreamRepair`] decides, the actor sends what it says and keeps the books (health, stats, logs).
///
/// Its checks (silence, overdue closes) run on one timer set for the first thing that can fall due
/// ([`StreamRepair::next_watch`]), not on a fixed tick: an update only delays a silence step, so the hot path never
/// touches the timer, except when a new candle starts (its close may be due before the timer).
pub struct SubscriptionActor {
    stream: StreamId,
    key: StreamKey,
    settings: SubscriptionSettings,
    links: SubscriptionLinks,
    /// Where the stream's silence steps go, once it is live on a connection.
    connection: Option<Recipient<StreamSilent>>,
    repair: StreamRepair,
    /// The pending check, and when it runs.
    watch_timer: Option<(SpawnHandle, Instant)>,
    /// The open time of the newest candle seen live.
    newest_open: i64,
}

impl SubscriptionActor {
    pub fn new(
        stream: StreamId,
        last_stored_closed: Option<i64>,
        settings: SubscriptionSettings,
        links: SubscriptionLinks,
    ) -> Self {
        let key = links.health.key.clone();
        let history = links.load_history.then_some(settings.history);
        if !links.load_history {
            links.health.set_history_landed();
        }
        let silence = SilenceWatch::new(settings.stale_after, settings.replace_after, Instant::now());
        let repair = StreamRepair::new(key.timeframe, last_stored_closed, history, settings.close_grace, silence);
        Self { stream, key, settings, links, connection: None, repair, watch_timer: None, newest_open: i64::MIN }
    }

    /// Applies the rules to one candle and feeds the indicators; returns it if it must be stored.
    fn apply(&mut self, candle: Candle) -> Option<Candle> {
        match self.repair.apply(&candle) {
            Verdict::InProgress => {
                // Provisional values only: when the indicator falls behind, this update is coalesced away.
                let _ = self.links.indicator.try_send(IndicatorCandle(candle));
                Some(candle)
            }
            Verdict::Closed => {
                self.links.indicator.do_send(IndicatorCandle(candle));
                Some(candle)
            }
            Verdict::LateClosed { .. } => Some(candle),
            Verdict::StaleInProgress => {
                self.links.metrics.stale_updates_ignored.inc();
                None
            }
        }
    }

    /// Sends a candle to storage. Closed candles are sent, never dropped; an in-progress one waits for storage's
    /// next commit, replacing the stream's update that waits there, if any (coalesced).
    fn store(&mut self, candle: Candle, event_time: Option<i64>) {
        if candle.is_closed {
            self.links.in_progress.closed(self.stream, candle.open_time);
            self.links.storage.do_send(StoreCandle { stream: self.stream, candle, event_time });
        } else if self.links.in_progress.put(self.stream, PendingUpdate { candle, event_time }) {
            self.links.metrics.in_progress_coalesced.inc();
        }
    }

    /// Late closed candles were applied and sent to storage: the indicators rebuild from the earliest one (one
    /// `Rebuild` per message handled). It is sent after the candles, so the rebuild's load from storage sees them.
    fn rebuild_indicators(&mut self) {
        if let Some(from) = self.repair.take_rebuild() {
            self.links.indicator.do_send(Rebuild { from });
        }
    }

    fn fetch(&self, fetch: Option<Fetch>, ctx: &mut Context<Self>) {
        let Some(Fetch { range, purpose }) = fetch else { return };
        self.links.backfill.do_send(FetchKlines {
            stream: self.stream,
            key: self.key.clone(),
            range,
            purpose,
            reply: ctx.address().recipient(),
        });
    }

    /// Sets the check for the first thing that can fall due from now, replacing the pending one.
    fn arm_watch(&mut self, ctx: &mut Context<Self>) {
        if let Some((timer, _)) = self.watch_timer.take() {
            ctx.cancel_future(timer);
        }
        let now = Instant::now();
        let exchange_now = self.links.clock.at(unix_ms());
        let Some(wait) = self.repair.next_watch(now, exchange_now, self.connection.is_some()) else { return };
        let timer = ctx.run_later(wait, |act, ctx| {
            act.watch_timer = None;
            act.watch(ctx);
            act.arm_watch(ctx);
        });
        self.watch_timer = Some((timer, now + wait));
    }

    /// A new candle started: its close may fall due before the pending check (a stream with nothing closed yet had
    /// no close to await).
    fn on_new_candle(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let exchange_now = self.links.clock.at(unix_ms());
        let Some(wait) = self.repair.next_watch(now, exchange_now, self.connection.is_some()) else { return };
        if self.watch_timer.is_none_or(|(_, at)| now + wait < at) {
            self.arm_watch(ctx);
        }
    }

    /// The checks: a silent stream climbs its escalation ladder, an overdue close is fetched.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        let exchange_now = self.links.clock.at(unix_ms());
        let outcome = self.repair.watch(Instant::now(), exchange_now, self.connection.is_some());
        if let Some(connection) = &self.connection
            && let Some(step) = outcome.silence
        {
            if self.links.health.set_stale(true) {
                log::warn!("{}: no update for {:?}, resubscribing", self.key, self.settings.stale_after);
                self.links.stats.set_state(TaskState::Stale);
            } else if step == SilenceStep::ReplaceConnection {
                log::debug!("{}: still silent after resubscribing; asking for a new connection", self.key);
            }
            connection.do_send(StreamSilent { key: self.key.clone(), step });
        }
        if let Some(open) = outcome.overdue_close {
            log::info!(
                "{}: the close of the candle opened at {} is overdue, fetching it",
                self.key,
                crate::streams::utc(open)
            );
            self.links.health.record_missed_close();
        }
        self.fetch(outcome.fetch, ctx);
    }

    /// Ranges fetches found empty: confirmed ones are recorded as exchange gaps, suspected ones looked at again
    /// after `recheck_empty`.
    fn on_empty_ranges(&mut self, confirmed: &[Gap], suspected: &[Gap], ctx: &mut Context<Self>) {
        if !confirmed.is_empty() {
            log::warn!(
                "{}: the exchange has no candles for {}; confirmed by a re-check, recorded as an exchange gap",
                self.key,
                describe_gaps(self.key.timeframe, confirmed)
            );
            self.links.health.record_exchange_gaps(confirmed);
            self.links.storage.do_send(RecordExchangeGaps { stream: self.stream, gaps: confirmed.to_vec() });
        }
        if suspected.is_empty() {
            return;
        }
        log::info!(
            "{}: the exchange answered no candles for {}; looking again in {}s",
            self.key,
            describe_gaps(self.key.timeframe, suspected),
            self.settings.recheck_empty.as_secs()
        );
        for &gap in suspected {
            self.links.health.set_suspected_gap(gap, true);
            ctx.run_later(self.settings.recheck_empty, move |act, ctx| {
                act.fetch(act.repair.recheck(gap), ctx);
                act.arm_watch(ctx);
            });
        }
    }

    fn on_fetch_failed(
        &mut self,
        purpose: BackfillPurpose,
        error: &FetchError,
        failed: FailedFetch,
        ctx: &mut Context<Self>,
    ) {
        match failed {
            FailedFetch::Refused { first: false } => {}
            FailedFetch::Refused { first: true } => {
                log::error!("{}: {error}; no more requests are made for this stream", self.key);
                self.links.health.set_refused();
                self.links.stats.fail(error.to_string());
            }
            FailedFetch::Retry { after, fetch } => {
                self.links.stats.record_error(error.to_string());
                log::warn!("{}: {} failed, retrying in {}s: {error}", self.key, purpose.describe(), after.as_secs());
                if let Some(failed) = fetch {
                    ctx.run_later(after, move |act, ctx| {
                        let retry = act.repair.retry(failed);
                        act.fetch(retry, ctx);
                        act.arm_watch(ctx);
                    });
                }
            }
        }
    }

    fn history_landed(&mut self, result: Result<usize, FetchError>) {
        if let Some(history) = &self.links.history {
            history.do_send(HistoryLanded {
                stream: self.stream,
                outcome: result,
                caught_up: self.repair.catching_up(),
            });
        }
    }
}

impl Actor for SubscriptionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.links.stats.set_state(TaskState::Running);
        self.fetch(self.repair.start(), ctx);
        self.arm_watch(ctx);
    }
}

impl Handler<KlineUpdate> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: KlineUpdate, ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        self.repair.on_update(Instant::now());
        self.links.clock.observe(msg.event_time, unix_ms());
        if self.links.health.set_stale(false) {
            log::info!("{}: updates flow again", self.key);
            if !self.repair.refused() {
                self.links.stats.set_state(TaskState::Running);
            }
        }
        if let Some(candle) = self.apply(msg.candle) {
            self.store(candle, Some(msg.event_time));
        }
        self.rebuild_indicators();
        let repair = self.repair.next_repair();
        self.fetch(repair, ctx);
        if msg.candle.open_time > self.newest_open {
            self.newest_open = msg.candle.open_time;
            self.on_new_candle(ctx);
        }
    }
}

impl Handler<StreamLive> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, msg: StreamLive, ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        log::info!("Subscribed to {} {} candles", self.key.symbol, self.key.timeframe);
        self.connection = Some(msg.connection);
        let repair = self.repair.on_live(Instant::now());
        self.fetch(repair, ctx);
        self.arm_watch(ctx);
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
        let failure = msg.error.as_ref().map(|error| match error.is_transient() {
            true => FetchFailure::Transient,
            false => FetchFailure::Permanent,
        });
        let landing = self.repair.on_fetched(FetchAnswer {
            fetch: Fetch { range: msg.range, purpose: msg.purpose },
            through_open: msg.through_open,
            exchange_gaps: &msg.exchange_gaps,
            failure,
        });
        if let Some(gap) = landing.no_longer_suspected {
            self.links.health.set_suspected_gap(gap, false);
        }
        self.on_empty_ranges(&landing.confirmed_gaps, &landing.suspected_gaps, ctx);
        if landing.history_landed {
            self.links.health.set_history_landed();
            self.history_landed(Ok(fetched));
        }
        if let Some(error) = &msg.error {
            if msg.purpose == BackfillPurpose::History {
                self.history_landed(Err(error.clone()));
            }
            if let Some(failed) = landing.failed {
                self.on_fetch_failed(msg.purpose, error, failed, ctx);
            }
        }
        self.fetch(landing.next, ctx);
        self.arm_watch(ctx);
    }
}

impl Handler<BackfillRestarted> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: BackfillRestarted, ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        let again = self.repair.on_backfill_restarted();
        self.fetch(again, ctx);
        self.arm_watch(ctx);
    }
}

impl Handler<Drain> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        // Shutting down: the in-progress update waiting is taken by storage's last commit.
    }
}

impl Handler<Retire> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.links.stats.record_handled();
        // Its in-progress update waiting, if any, is taken by storage's next commit.
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
