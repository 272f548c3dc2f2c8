//! The audit actor: anti-entropy for the store. Once every stream's history has landed, then every `interval`,
//! and once more after each repair storm ends, it compares every stream's stored closed candles with the exchange's
//! grid (by the exchange's clock), and fetches whatever is missing or still stuck in progress. What it finds past
//! its repair deadline makes `/health` degraded until a later pass finds it repaired.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::backfill::{BackfillActor, FetchKlines};
use crate::actors::messages::{BackfillPurpose, FetchRange, Retire};
use crate::actors::subscription::SubscriptionActor;
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{Gap, StreamId, StreamKey, audit_through, holes};
use crate::metrics::Metrics;
use crate::rest::{FetchError, RestClient};
use crate::store::{StoreBackend, StoreError};
use crate::streams::{DataIssue, StreamHealth, describe_gaps};
use crate::tasks::{RestartTracker, TaskState, TaskStats};

/// How the audit runs.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The time between two passes (`[audit] interval_secs`).
    pub interval: Duration,
    /// How late a close may be before the forward path fetches it: a pass leaves the newest `2 × close_grace` to
    /// it, and a hole is overdue `2 × close_grace + interval` after its close.
    pub close_grace: Duration,
    /// `market_data.history`: the window every stream holds at least, even when the store lost it.
    pub history: u32,
    /// The store the passes read.
    pub store: StoreBackend,
}

/// One stream the audit checks, and where its repairs go.
pub struct AuditedStream {
    pub stream: StreamId,
    pub key: StreamKey,
    /// Re-pointed by the supervisor when the subscription is restarted.
    pub subscription: Mailbox<SubscriptionActor>,
    pub health: Arc<StreamHealth>,
}

/// The configured streams changed, or the `[audit]` settings: the next pass checks these streams, and the next
/// pass is due `interval` after the last one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AuditStreams {
    pub streams: Vec<AuditedStream>,
    pub interval: Duration,
}

/// How often the audit looks at its schedule and at the repair activity.
const TICK: Duration = Duration::from_secs(1);
/// A repair storm is over when no repair happened for this long (or one interval, if shorter).
const STORM_QUIET: Duration = Duration::from_secs(5);

pub struct AuditActor {
    settings: AuditSettings,
    streams: Vec<AuditedStream>,
    rest: RestClient,
    backfill: Mailbox<BackfillActor>,
    stats: Arc<TaskStats>,
    restarts: RestartTracker,
    metrics: Metrics,
    last_pass: Option<Instant>,
    pass_in_flight: bool,
    /// The streams' repair activity as last seen, and when it last moved.
    activity_seen: u64,
    activity_moved: Option<Instant>,
    /// Holes already logged (stream, first open): each repair is logged once.
    logged: HashSet<(StreamId, i64)>,
    /// The oldest closed candle each stream has held during this run: a store that lost candles (a database file
    /// deleted underneath) is refilled from there, not from whatever it holds now.
    first_seen: HashMap<StreamId, i64>,
    /// The holes each stream had at the previous pass: one still there a pass later has outlived a repair.
    previous_holes: HashMap<StreamId, Vec<Gap>>,
}

impl AuditActor {
    pub fn new(
        settings: AuditSettings,
        streams: Vec<AuditedStream>,
        rest: RestClient,
        backfill: Mailbox<BackfillActor>,
        stats: Arc<TaskStats>,
        restarts: RestartTracker,
        metrics: Metrics,
    ) -> Self {
        Self {
            settings,
            streams,
            rest,
            backfill,
            stats,
            restarts,
            metrics,
            last_pass: None,
            pass_in_flight: false,
            activity_seen: 0,
            activity_moved: None,
            logged: HashSet::new(),
            first_seen: HashMap::new(),
            previous_holes: HashMap::new(),
        }
    }

    /// Starts a pass when one is due: the first once every stream's history has landed, then every interval, and
    /// one when a repair storm has ended.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let activity: u64 = self.streams.iter().map(|s| s.health.repair_activity()).sum();
        if activity != self.activity_seen {
            self.activity_seen = activity;
            self.activity_moved = Some(Instant::now());
        }
        let quiet = STORM_QUIET.min(self.settings.interval);
        let storm_over = self.activity_moved.is_some_and(|at| at.elapsed() >= quiet);
        let due = match self.last_pass {
            Some(at) => at.elapsed() >= self.settings.interval,
            None => self.streams.iter().all(|s| s.health.history_landed() || s.health.is_refused()),
        };
        if (due || storm_over) && !self.pass_in_flight {
            self.activity_moved = None;
            self.start_pass(ctx);
        }
    }

    /// A pass asks the exchange's clock first: what is due is decided on it, never on ours.
    fn start_pass(&mut self, ctx: &mut Context<Self>) {
        self.pass_in_flight = true;
        self.last_pass = Some(Instant::now());
        let rest = self.rest.clone();
        let clock = async move { rest.server_time().await };
        ctx.spawn(clock.into_actor(self).map(|result, act, _ctx| {
            act.pass_in_flight = false;
            match result.map_err(FetchError::from) {
                // Storage reports (and repairs) its own trouble; the next pass looks again.
                Ok(exchange_now) => {
                    if let Err(error) = act.pass(exchange_now) {
                        log::warn!("audit: cannot read the store, the pass is skipped: {error}");
                        act.stats.record_error(format!("cannot read the store: {error}"));
                    }
                }
                Err(error) => {
                    log::warn!("audit: cannot read the exchange's clock, the pass is skipped: {error}");
                    act.stats.record_error(format!("cannot read the exchange's clock: {error}"));
                }
            }
        }));
    }

    /// One pass over every stream whose history has landed. A stream the exchange refused is checked, not fetched.
    fn pass(&mut self, exchange_now: i64) -> Result<(), StoreError> {
        // Opened for each pass: a database file replaced underneath is read as it is now.
        let store = self.settings.store.open_reader()?;
        let grace = self.settings.close_grace.as_millis() as i64;
        let deadline = 2 * grace + self.settings.interval.as_millis() as i64;
        for audited in &self.streams {
            if !audited.health.history_landed() {
                continue;
            }
            let (key, timeframe) = (&audited.key, audited.key.timeframe);
            let through = audit_through(timeframe, exchange_now, 2 * grace);
            let history_from = (self.settings.history > 0)
                .then(|| crate::domain::history_start(key.timeframe, exchange_now, self.settings.history));
            let seen = self.first_seen.get(&audited.stream).copied();
            let Some(from) = [store.first_closed(key)?, seen, history_from].into_iter().flatten().min() else {
                continue;
            };
            self.first_seen.insert(audited.stream, from);
            let (closed, in_progress) = store.stored_opens(key, from, through)?;
            let found = holes(timeframe, from, through, &closed, &audited.health.gaps_not_to_fetch());
            // A data issue is a hole past its repair deadline that the previous pass found too: one the forward
            // path or the audit's own fetch filled in between is not.
            let previous = self.previous_holes.insert(audited.stream, found.clone()).unwrap_or_default();
            let outlived = |hole: &&Gap| {
                timeframe.close_time(hole.from_open) + deadline < exchange_now
                    && previous.iter().any(|p| p.overlaps(hole))
            };
            let issue = found.iter().find(outlived).map(|hole| {
                let stuck = in_progress.iter().any(|&open| hole.contains(open));
                DataIssue {
                    problem: if stuck { "stuck_in_progress" } else { "missing" },
                    from_open: hole.from_open,
                    candles: found.iter().map(|g| timeframe.count_opens(g.from_open, g.to_open)).sum(),
                }
            });
            audited.health.record_audit_pass(found.len(), issue);
            self.metrics.audit_passes(key).inc();
            self.metrics.audit_holes_found(key).inc_by(found.len() as u64);
            if found.is_empty() {
                self.logged.retain(|(stream, _)| *stream != audited.stream);
                continue;
            }
            // The exchange refused this stream for good: its holes are reported, never fetched.
            if audited.health.is_refused() {
                continue;
            }
            let fresh: Vec<Gap> =
                found.iter().copied().filter(|hole| self.logged.insert((audited.stream, hole.from_open))).collect();
            if !fresh.is_empty() {
                let stuck = in_progress.iter().filter(|&&open| fresh.iter().any(|hole| hole.contains(open)));
                log::warn!(
                    "{key}: the audit found {} missing from the store ({} of them stored still in progress); fetching",
                    describe_gaps(timeframe, &fresh),
                    stuck.count()
                );
            }
            for hole in found {
                self.backfill.do_send(FetchKlines {
                    stream: audited.stream,
                    key: key.clone(),
                    range: FetchRange::Between { from: hole.from_open, to: timeframe.previous_open(hole.to_open) },
                    purpose: BackfillPurpose::Audit,
                    reply: audited.subscription.recipient(),
                });
            }
        }
        Ok(())
    }
}

impl Actor for AuditActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(resume) = self.restarts.resume_after() else { return };
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_later(resume, |act, ctx| {
            act.stats.set_state(TaskState::Running);
            ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        });
    }
}

impl Supervised for AuditActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.pass_in_flight = false;
        self.restarts.restarting(&self.stats);
    }
}

impl Handler<AuditStreams> for AuditActor {
    type Result = ();

    fn handle(&mut self, msg: AuditStreams, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
        let kept: HashSet<StreamId> = msg.streams.iter().map(|s| s.stream).collect();
        self.first_seen.retain(|stream, _| kept.contains(stream));
        self.previous_holes.retain(|stream, _| kept.contains(stream));
        self.streams = msg.streams;
        self.settings.interval = msg.interval;
    }
}

impl Handler<Retire> for AuditActor {
    type Result = ();

    /// An operator's restart: actix supervision starts it again in place.
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        ctx.stop();
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::Inject> for AuditActor {
    type Result = ();

    fn handle(&mut self, fault: crate::fault_injection::Inject, ctx: &mut Context<Self>) {
        fault.apply::<Self>("audit", ctx);
    }
}
