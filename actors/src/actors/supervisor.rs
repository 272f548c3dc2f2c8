//! The supervisor actor: owns the task table, starts every task in dependency order with the restart policy its
//! priority and auto-restart flag call for, and stops them in reverse order, flushing storage last. It probes every
//! task's actor twice a second: one that panicked (actix drops it silently) or stopped for good is counted and, under
//! its policy, replaced by a fresh actor behind the same [`Mailbox`] (so every holder reaches it), or marked failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::audit::{AuditActor, AuditSettings, AuditedStream};
use crate::actors::backfill::BackfillActor;
use crate::actors::connection::{ConnectionActor, ConnectionSettings, Reannounce, RoutedStream, Stop};
use crate::actors::health::{HealthActor, RegisterStream, RegisterTask};
use crate::actors::history::HistoryActor;
use crate::actors::indicator::IndicatorActor;
use crate::actors::messages::{Drain, HistoryLanded};
use crate::actors::storage::{Close, StorageActor, StorageSettings};
use crate::actors::subscription::{BackfillRestarted, SubscriptionActor, SubscriptionLinks, SubscriptionSettings};
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{BackoffPolicy, StreamId, StreamKey};
use crate::indicators::{IndicatorConfig, ProvisionalBoard};
use crate::metrics::Metrics;
use crate::registry::StreamRegistry;
use crate::rest::RestClient;
use crate::store::{CandleStore, StoreError};
use crate::streams::StreamHealth;
use crate::tasks::{
    Priority, RestartBudget, RestartDecision, RestartPolicy, RestartTracker, TaskKind, TaskSpec, TaskState, TaskStats,
};

/// Stop every task in reverse start order and flush storage. Answers when everything received is committed.
#[derive(Message)]
#[rtype(result = "Result<(), ShutdownError>")]
pub struct Shutdown;

/// Why a shutdown could not commit everything received.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("storage is gone: {0}")]
    StorageGone(#[from] MailboxError),
    #[error("storage could not commit at shutdown: {0}")]
    Storage(#[from] StoreError),
}

/// Apply a changed configuration to the running engine: streams added and removed, a changed indicator set, and
/// the `[supervisor]` and `[audit]` settings for the next restart or pass. Settings that cannot change while running
/// (exchange, storage) are ignored here: the caller refuses them. Answers once every change is under way.
#[derive(Message)]
#[rtype(result = "Result<Reconfigured, ReconfigureError>")]
pub struct Reconfigure(pub EngineSettings);

/// What a [`Reconfigure`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reconfigured {
    /// Streams added, in config order: `BTCUSDT 1m` as `BTCUSDT:1m`.
    pub added: Vec<String>,
    /// Streams removed. Their stored candles stay.
    pub removed: Vec<String>,
    /// The indicator set changed: every stream's indicators are being rebuilt.
    pub indicators_rebuilt: bool,
}

/// Why a [`Reconfigure`] or a [`RestartTask`] could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigureError {
    #[error("the engine is not running yet")]
    NotRunning,
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("no task is named {0:?}")]
    UnknownTask(String),
}

/// Restart one task now, by its name in the task table (an operator's request): a fresh actor replaces the
/// running one, as after a crash, and the restart is counted.
#[derive(Message)]
#[rtype(result = "Result<(), ReconfigureError>")]
pub struct RestartTask(pub String);

/// The priority and auto-restart flag of one kind of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPolicy {
    pub priority: Priority,
    pub auto_restart: bool,
}

/// How tasks are restarted: the mapping from task kind to priority, and the policies' limits.
#[derive(Debug, Clone)]
pub struct SupervisionSettings {
    pub tasks: HashMap<TaskKind, TaskPolicy>,
    pub budget: RestartBudget,
    pub backoff: BackoffPolicy,
    /// How long a run-once task may take (the history load).
    pub run_once_timeout: Duration,
}

impl SupervisionSettings {
    /// The built-in mapping: storage and connections are critical, the rest high or normal, history runs once.
    pub fn default_tasks() -> HashMap<TaskKind, TaskPolicy> {
        use Priority::*;
        use TaskKind::*;
        let policy = |priority, auto_restart| TaskPolicy { priority, auto_restart };
        HashMap::from([
            (Storage, policy(Critical, true)),
            (Connection, policy(Critical, true)),
            (Subscription, policy(High, true)),
            (Indicator, policy(Normal, true)),
            (Backfill, policy(High, true)),
            (History, policy(High, false)),
            (Audit, policy(High, true)),
        ])
    }
}

/// Everything the engine needs to run, already validated.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub streams: Vec<StreamKey>,
    pub connection: ConnectionSettings,
    pub max_streams_per_connection: usize,
    pub rest_url: String,
    pub storage: StorageSettings,
    /// Closed candles per stream loaded over REST at start.
    pub history: u32,
    pub backfill_concurrency: usize,
    pub subscription: SubscriptionSettings,
    pub audit: AuditSettings,
    /// The indicators computed on every stream (validated).
    pub indicators: IndicatorConfig,
    /// Where the indicator actors publish provisional values, shared with HTTP.
    pub provisional: ProvisionalBoard,
    /// The configured streams and their ids, shared with HTTP.
    pub registry: StreamRegistry,
    pub supervision: SupervisionSettings,
}

pub struct SupervisorActor {
    settings: EngineSettings,
    health: Addr<HealthActor>,
    metrics: Metrics,
    store: Option<CandleStore>,
    rest: RestClient,
    /// Storage and the audit block on SQLite: each runs on its own arbiter.
    arbiters: Vec<Arbiter>,
    running: Option<RunningTasks>,
    /// Set by [`Shutdown`]: from then on nothing is restarted.
    shutting_down: bool,
}

/// How often the supervisor looks whether every task's actor is still alive.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// One task the supervisor recreates when its actor is gone, by kind and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskRef {
    Storage,
    Backfill,
    Audit,
    /// Run once: when it is gone before it finished, it is marked failed, never restarted.
    History,
    Indicator(usize),
    Subscription(usize),
    Connection(usize),
}

/// Where a watched task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Alive,
    /// Its actor is gone and a restart is scheduled.
    RestartScheduled,
    /// Its restart policy gave up: it stays down.
    GivenUp,
}

/// A task whose actor the supervisor probes, with the tracker that applies its restart policy.
struct Watched {
    task: TaskRef,
    name: String,
    policy: RestartPolicy,
    stats: Arc<TaskStats>,
    tracker: RestartTracker,
    watch: Watch,
}

/// The addresses of the started tasks, and what is needed to recreate any of them.
struct RunningTasks {
    streams: Arc<[StreamKey]>,
    storage: Mailbox<StorageActor>,
    backfill: Mailbox<BackfillActor>,
    audit: Mailbox<AuditActor>,
    history: Option<Mailbox<HistoryActor>>,
    indicators: Vec<Mailbox<IndicatorActor>>,
    subscriptions: Vec<Mailbox<SubscriptionActor>>,
    connections: Vec<Mailbox<ConnectionActor>>,
    stream_health: Vec<Arc<StreamHealth>>,
    storage_arbiter: ArbiterHandle,
    audit_arbiter: ArbiterHandle,
    watched: Vec<Watched>,
    all_stats: Vec<Arc<TaskStats>>,
}

impl RunningTasks {
    /// The task's actor is still there (a panic drops it; so does a stop of an actor without actix supervision).
    fn is_alive(&self, task: TaskRef) -> bool {
        match task {
            TaskRef::Storage => self.storage.connected(),
            TaskRef::Backfill => self.backfill.connected(),
            TaskRef::Audit => self.audit.connected(),
            TaskRef::History => self.history.as_ref().is_none_or(Mailbox::connected),
            TaskRef::Indicator(i) => self.indicators[i].connected(),
            TaskRef::Subscription(i) => self.subscriptions[i].connected(),
            TaskRef::Connection(i) => self.connections[i].connected(),
        }
    }

    /// The connection that carries stream `index`.
    fn connection_of(&self, index: usize, per_connection: usize) -> &Mailbox<ConnectionActor> {
        &self.connections[index / per_connection]
    }

    fn audited(&self) -> Vec<AuditedStream> {
        audited_streams(&self.streams, &self.subscriptions, &self.stream_health)
    }
}

/// What the audit checks: every stream, with where its repairs go.
fn audited_streams(
    streams: &[StreamKey],
    subscriptions: &[Mailbox<SubscriptionActor>],
    stream_health: &[Arc<StreamHealth>],
) -> Vec<AuditedStream> {
    (streams.iter().zip(subscriptions).zip(stream_health).enumerate())
        .map(|(index, ((key, subscription), health))| AuditedStream {
            stream: StreamId(index as u32),
            key: key.clone(),
            subscription: subscription.clone(),
            health: health.clone(),
        })
        .collect()
}

impl SupervisorActor {
    /// `store` is the already opened database: opening it first makes a bad storage path fail at start.
    pub fn new(
        settings: EngineSettings,
        store: CandleStore,
        rest: RestClient,
        health: Addr<HealthActor>,
        metrics: Metrics,
    ) -> Self {
        Self {
            settings,
            health,
            metrics,
            store: Some(store),
            rest,
            arbiters: Vec::new(),
            running: None,
            shutting_down: false,
        }
    }

    fn per_connection(&self) -> usize {
        self.settings.max_streams_per_connection.max(1)
    }

    // The constructors of each task, used at start and at every restart.

    fn start_storage(
        &self,
        arbiter: &ArbiterHandle,
        store: CandleStore,
        stats: &Arc<TaskStats>,
        tracker: RestartTracker,
    ) -> Addr<StorageActor> {
        let (settings, metrics) = (self.settings.storage.clone(), self.metrics.clone());
        let streams = self.settings.registry.clone();
        let names = self.settings.provisional.names();
        let stats = stats.clone();
        Supervisor::start_in_arbiter(arbiter, move |_| {
            StorageActor::new(settings, streams, names, store, stats, tracker, metrics)
        })
    }

    fn start_backfill(&self, stats: &Arc<TaskStats>) -> Addr<BackfillActor> {
        BackfillActor::new(self.rest.clone(), self.settings.backfill_concurrency, stats.clone()).start()
    }

    fn start_indicator(
        &self,
        index: usize,
        key: &StreamKey,
        storage: &Mailbox<StorageActor>,
        stats: &Arc<TaskStats>,
    ) -> Addr<IndicatorActor> {
        let board = self.settings.provisional.clone();
        let config = &self.settings.indicators;
        IndicatorActor::new(StreamId(index as u32), key.clone(), config, storage.clone(), board, stats.clone()).start()
    }

    #[allow(clippy::too_many_arguments)]
    fn start_subscription(
        &self,
        index: usize,
        last_stored: Option<i64>,
        storage: &Mailbox<StorageActor>,
        indicator: &Mailbox<IndicatorActor>,
        backfill: &Mailbox<BackfillActor>,
        history: Option<Recipient<HistoryLanded>>,
        stats: &Arc<TaskStats>,
        health: &Arc<StreamHealth>,
    ) -> Addr<SubscriptionActor> {
        let links = SubscriptionLinks {
            load_history: history.is_some(),
            storage: storage.clone(),
            indicator: indicator.clone(),
            backfill: backfill.clone(),
            history,
            stats: stats.clone(),
            health: health.clone(),
            clock: self.rest.clock().clone(),
            metrics: self.metrics.clone(),
        };
        SubscriptionActor::new(StreamId(index as u32), last_stored, self.settings.subscription, links).start()
    }

    fn start_audit(
        &self,
        arbiter: &ArbiterHandle,
        audited: Vec<AuditedStream>,
        backfill: &Mailbox<BackfillActor>,
        stats: &Arc<TaskStats>,
        tracker: RestartTracker,
    ) -> Addr<AuditActor> {
        let (settings, rest, metrics) = (self.settings.audit.clone(), self.rest.clone(), self.metrics.clone());
        let (backfill, stats) = (backfill.clone(), stats.clone());
        Supervisor::start_in_arbiter(arbiter, move |_| {
            AuditActor::new(settings, audited, rest, backfill, stats, tracker, metrics)
        })
    }

    fn start_connection(
        &self,
        index: usize,
        streams: &[StreamKey],
        subscriptions: &[Mailbox<SubscriptionActor>],
        stats: &Arc<TaskStats>,
        tracker: RestartTracker,
    ) -> Addr<ConnectionActor> {
        let per_connection = self.per_connection();
        let routed = (index * per_connection..((index + 1) * per_connection).min(streams.len()))
            .map(|i| RoutedStream { key: streams[i].clone(), subscription: subscriptions[i].clone() })
            .collect();
        let mut settings = self.settings.connection.clone();
        settings.rotate_after += settings.rotate_stagger * index as u32;
        let (name, metrics, stats) = (format!("connection-{index}"), self.metrics.clone(), stats.clone());
        Supervisor::start(move |_| ConnectionActor::new(name, settings, routed, stats, tracker, metrics))
    }

    fn start_tasks(&mut self) -> Result<(), String> {
        let store = self.store.take().ok_or("the engine was already started")?;
        let last_closed = store.last_closed().map_err(|e| format!("cannot read the stored candles: {e}"))?;
        let exchange_gaps =
            store.exchange_gaps().map_err(|e| format!("cannot read the recorded exchange gaps: {e}"))?;
        let streams: Arc<[StreamKey]> = self.settings.streams.clone().into();
        let mut table = TaskTable::new(&self.settings.supervision);

        // Register the whole table first, so that /health shows every task from the start.
        let storage_task = table.add("storage".into(), TaskKind::Storage, None, vec![]);
        let backfill_task = table.add("backfill".into(), TaskKind::Backfill, None, vec![]);
        let stream_tasks: Vec<_> = streams
            .iter()
            .map(|key| {
                let name = format!("{}:{}", key.symbol, key.timeframe);
                let indicator = table.add(format!("indicator:{name}"), TaskKind::Indicator, Some(key), vec![]);
                let subscription = table.add(format!("subscription:{name}"), TaskKind::Subscription, Some(key), vec![]);
                (indicator, subscription)
            })
            .collect();
        let history_task = (self.settings.history > 0).then(|| {
            let meta = vec![("candles_per_stream".into(), self.settings.history.to_string())];
            table.add("history".into(), TaskKind::History, None, meta)
        });
        let audit_task = {
            let meta = vec![("interval_secs".into(), self.settings.audit.interval.as_secs().to_string())];
            table.add("audit".into(), TaskKind::Audit, None, meta)
        };
        let per_connection = self.per_connection();
        let connection_tasks: Vec<_> = (0..streams.len().div_ceil(per_connection))
            .map(|index| {
                let count = (streams.len() - index * per_connection).min(per_connection);
                let meta = vec![
                    ("url".into(), self.settings.connection.ws_base.clone()),
                    ("streams".into(), count.to_string()),
                ];
                table.add(format!("connection-{index}"), TaskKind::Connection, None, meta)
            })
            .collect();
        for (spec, stats) in &table.tasks {
            self.health.do_send(RegisterTask { spec: spec.clone(), stats: stats.clone() });
        }
        log::info!("Registered {} background task(s)", table.tasks.len());

        // Start in dependency order: storage, backfill, history, indicators, subscriptions, audit, connections.
        let mut watched = Vec::new();
        let storage_arbiter = Arbiter::new();
        let storage = {
            let (stats, tracker) = table.handle(storage_task);
            let addr = self.start_storage(&storage_arbiter.handle(), store, &stats, tracker);
            watched.push(table.watched(storage_task, TaskRef::Storage));
            Mailbox::new(addr, stats)
        };
        let backfill = {
            let (stats, _) = table.handle(backfill_task);
            watched.push(table.watched(backfill_task, TaskRef::Backfill));
            Mailbox::new(self.start_backfill(&stats), stats)
        };
        let history_mailbox = history_task.map(|task| {
            let (stats, _) = table.handle(task);
            let ids = (0..streams.len()).map(|index| StreamId(index as u32));
            let addr = HistoryActor::new(self.settings.supervision.run_once_timeout, ids, stats.clone()).start();
            watched.push(table.watched(task, TaskRef::History));
            Mailbox::new(addr, stats)
        });
        let history = history_mailbox.as_ref().map(|mailbox| mailbox.recipient::<HistoryLanded>());
        let mut indicators = Vec::new();
        let mut subscriptions = Vec::new();
        let mut stream_health = Vec::new();
        for (index, (key, (indicator_task, subscription_task))) in streams.iter().zip(stream_tasks).enumerate() {
            let id = self.settings.registry.activate(key);
            self.settings.provisional.add(id, key.clone());
            let (stats, _) = table.handle(indicator_task);
            let indicator = Mailbox::new(self.start_indicator(index, key, &storage, &stats), stats);
            watched.push(table.watched(indicator_task, TaskRef::Indicator(index)));
            let (stats, _) = table.handle(subscription_task);
            let stored_key = (key.symbol.clone(), key.timeframe);
            let health = StreamHealth::new(key.clone());
            health.record_exchange_gaps(exchange_gaps.get(&stored_key).map_or(&[], Vec::as_slice));
            self.health.do_send(RegisterStream(health.clone()));
            self.metrics.register_stream(key);
            let last_stored = last_closed.get(&stored_key).copied();
            let history = history.clone();
            let subscription =
                self.start_subscription(index, last_stored, &storage, &indicator, &backfill, history, &stats, &health);
            watched.push(table.watched(subscription_task, TaskRef::Subscription(index)));
            subscriptions.push(Mailbox::new(subscription, stats));
            indicators.push(indicator);
            stream_health.push(health);
        }
        let audit_arbiter = Arbiter::new();
        let audit = {
            let (stats, tracker) = table.handle(audit_task);
            let audited = audited_streams(&streams, &subscriptions, &stream_health);
            let addr = self.start_audit(&audit_arbiter.handle(), audited, &backfill, &stats, tracker);
            watched.push(table.watched(audit_task, TaskRef::Audit));
            Mailbox::new(addr, stats)
        };
        let mut connections = Vec::new();
        for (index, task) in connection_tasks.into_iter().enumerate() {
            let (stats, tracker) = table.handle(task);
            let addr = self.start_connection(index, &streams, &subscriptions, &stats, tracker);
            watched.push(table.watched(task, TaskRef::Connection(index)));
            connections.push(Mailbox::new(addr, stats));
        }
        log::info!("Started {} tasks", table.tasks.len());
        let all_stats = table.tasks.into_iter().map(|(_, stats)| stats).collect();
        self.running = Some(RunningTasks {
            streams,
            storage,
            backfill,
            audit,
            history: history_mailbox,
            indicators,
            subscriptions,
            connections,
            stream_health,
            storage_arbiter: storage_arbiter.handle(),
            audit_arbiter: audit_arbiter.handle(),
            watched,
            all_stats,
        });
        self.arbiters.push(storage_arbiter);
        self.arbiters.push(audit_arbiter);
        Ok(())
    }

    /// Looks whether every task's actor is still there. One that is gone (it panicked, or stopped while nothing is
    /// shutting down) is counted and restarted after its policy's back-off, or marked failed when the policy gives
    /// up.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let Some(running) = &mut self.running else { return };
        let alive: Vec<bool> = running.watched.iter().map(|w| running.is_alive(w.task)).collect();
        for (watched, alive) in running.watched.iter_mut().zip(alive) {
            if watched.watch != Watch::Alive {
                continue;
            }
            // A run-once task that finished is gone by design.
            if alive || watched.stats.state() == TaskState::Finished {
                // It has worked since its last restart: the next failure backs off from the start again.
                watched.tracker.on_healthy();
                continue;
            }
            watched.stats.record_restart();
            match watched.tracker.on_stop(Instant::now()) {
                RestartDecision::RestartAfter(delay) => {
                    log::error!(
                        "{}: the task's actor panicked or stopped; restarting it in {} ms",
                        watched.name,
                        delay.as_millis()
                    );
                    watched.watch = Watch::RestartScheduled;
                    let task = watched.task;
                    ctx.run_later(delay, move |act, _ctx| act.restart(task));
                }
                RestartDecision::GiveUp => {
                    let error = format!(
                        "the task's actor panicked or stopped, and its restart policy ({}) gave up",
                        watched.policy.describe()
                    );
                    log::error!("{}: {error}; it stays down", watched.name);
                    watched.stats.fail(error);
                    watched.watch = Watch::GivenUp;
                }
            }
        }
    }

    /// Starts a fresh actor for `task` and points every holder of its mailbox at it.
    fn restart(&mut self, task: TaskRef) {
        if self.shutting_down {
            return;
        }
        let Some(running) = self.running.take() else { return };
        let Some(at) = running.watched.iter().position(|w| w.task == task) else {
            self.running = Some(running);
            return;
        };
        let (name, policy, stats) = {
            let w = &running.watched[at];
            (w.name.clone(), w.policy, w.stats.clone())
        };
        let per_connection = self.per_connection();
        let restarted: Result<(), String> = match task {
            TaskRef::Storage => {
                // The panicked actor's pending rows are lost with it; the audit finds the holes and repairs them.
                match CandleStore::open(&self.settings.storage.path) {
                    Ok(store) => {
                        let tracker = RestartTracker::new(policy);
                        let arbiter = running.storage_arbiter.clone();
                        let addr = self.start_storage(&arbiter, store, &stats, tracker);
                        running.storage.repoint(addr);
                        Ok(())
                    }
                    Err(error) => Err(format!("cannot open the database: {error}")),
                }
            }
            TaskRef::Backfill => {
                running.backfill.repoint(self.start_backfill(&stats));
                // Their queued and in-flight fetches are lost: each stream asks again for what it waits for.
                for subscription in &running.subscriptions {
                    subscription.do_send(BackfillRestarted);
                }
                Ok(())
            }
            TaskRef::Audit => {
                let tracker = RestartTracker::new(policy);
                let arbiter = running.audit_arbiter.clone();
                let addr = self.start_audit(&arbiter, running.audited(), &running.backfill, &stats, tracker);
                running.audit.repoint(addr);
                Ok(())
            }
            // Its policy never restarts it: `probe` marked it failed.
            TaskRef::History => Err("a run-once task is not restarted".to_owned()),
            TaskRef::Indicator(index) => {
                // A fresh indicator actor rebuilds its state from the stored candles when it starts.
                let addr = self.start_indicator(index, &running.streams[index], &running.storage, &stats);
                running.indicators[index].repoint(addr);
                Ok(())
            }
            TaskRef::Subscription(index) => {
                // It continues from the newest stored closed candle and repairs from there once it is live. What
                // storage has not committed yet is fetched again, harmlessly. Its in-flight fetches answer the dead
                // actor and are lost; the new one asks again.
                let key = &running.streams[index];
                let last_stored = CandleStore::open_read_only(&self.settings.storage.path)
                    .and_then(|store| store.last_closed_of(key))
                    .unwrap_or_else(|error| {
                        log::warn!("{name}: cannot read the stored candles ({error}); the audit fills what is missed");
                        None
                    });
                // A stream whose history had not landed loads it (and reports it) again; the others only repair.
                let history = (running.history.as_ref())
                    .filter(|history| history.connected() && !running.stream_health[index].history_landed())
                    .map(Mailbox::recipient::<HistoryLanded>);
                let addr = self.start_subscription(
                    index,
                    last_stored,
                    &running.storage,
                    &running.indicators[index],
                    &running.backfill,
                    history,
                    &stats,
                    &running.stream_health[index],
                );
                running.subscriptions[index].repoint(addr);
                running.connection_of(index, per_connection).do_send(Reannounce { key: key.clone() });
                Ok(())
            }
            TaskRef::Connection(index) => {
                let tracker = RestartTracker::new(policy);
                let addr = self.start_connection(index, &running.streams, &running.subscriptions, &stats, tracker);
                running.connections[index].repoint(addr);
                Ok(())
            }
        };
        let mut running = running;
        match restarted {
            Ok(()) => log::info!("{name}: restarted"),
            // Still down: the next probe finds it gone and applies the policy again.
            Err(error) => {
                log::error!("{name}: restart failed: {error}");
                stats.record_error(error);
            }
        }
        running.watched[at].watch = Watch::Alive;
        self.running = Some(running);
    }
}

/// The task table while it is being built: each task's spec and counters.
struct TaskTable<'a> {
    supervision: &'a SupervisionSettings,
    tasks: Vec<(TaskSpec, Arc<TaskStats>)>,
}

impl<'a> TaskTable<'a> {
    fn new(supervision: &'a SupervisionSettings) -> Self {
        Self { supervision, tasks: Vec::new() }
    }

    /// Adds a task; returns its index in the table.
    fn add(&mut self, name: String, kind: TaskKind, key: Option<&StreamKey>, metadata: Vec<(String, String)>) -> usize {
        let s = self.supervision;
        let policy =
            s.tasks.get(&kind).copied().unwrap_or(TaskPolicy { priority: Priority::Normal, auto_restart: true });
        let timeout = s.run_once_timeout;
        let restart = RestartPolicy::for_task(policy.priority, policy.auto_restart, timeout, s.budget, s.backoff);
        let spec = TaskSpec {
            name,
            kind,
            symbol: key.map(|k| k.symbol.clone()),
            timeframe: key.map(|k| k.timeframe),
            priority: policy.priority,
            auto_restart: policy.auto_restart,
            policy: restart,
            timeout,
            metadata,
        };
        self.tasks.push((spec, TaskStats::new(MAILBOX_CAPACITY)));
        self.tasks.len() - 1
    }

    /// The counters and restart tracker of task `index`.
    fn handle(&self, index: usize) -> (Arc<TaskStats>, RestartTracker) {
        let (spec, stats) = &self.tasks[index];
        (stats.clone(), RestartTracker::new(spec.policy))
    }

    /// Task `index` as the supervisor watches it, with its own restart tracker.
    fn watched(&self, index: usize, task: TaskRef) -> Watched {
        let (spec, stats) = &self.tasks[index];
        Watched {
            task,
            name: spec.name.clone(),
            policy: spec.policy,
            stats: stats.clone(),
            tracker: RestartTracker::new(spec.policy),
            watch: Watch::Alive,
        }
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Err(error) = self.start_tasks() {
            log::error!("supervisor: cannot start the tasks: {error}");
            ctx.stop();
            return;
        }
        ctx.run_interval(PROBE_INTERVAL, |act, ctx| act.probe(ctx));
        #[cfg(feature = "fault-injection")]
        crate::fault_injection::register(ctx.address().recipient());
    }
}

impl Handler<Shutdown> for SupervisorActor {
    type Result = ResponseActFuture<Self, Result<(), ShutdownError>>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let Some(running) = self.running.take() else { return Box::pin(fut::ready(Ok(()))) };
        let frames_received = self.metrics.frames_received.get();
        let shutdown = async move {
            for connection in &running.connections {
                let _ = connection.send(Stop).await;
            }
            // Every mailbox is FIFO: once a Drain is answered, what was queued before it has been handled.
            for subscription in &running.subscriptions {
                let _ = subscription.send(Drain).await;
            }
            for indicator in &running.indicators {
                let _ = indicator.send(Drain).await;
            }
            let flushed = running.storage.send(Close).await?;
            for stats in &running.all_stats {
                if stats.state() == TaskState::Running {
                    stats.set_state(TaskState::Stopped);
                }
            }
            log::info!("Shut down after {frames_received} frame(s); storage flushed");
            flushed.map_err(ShutdownError::from)
        };
        Box::pin(shutdown.into_actor(self).map(|result, act, _ctx| {
            for arbiter in act.arbiters.drain(..) {
                arbiter.stop();
            }
            result
        }))
    }
}

impl Handler<Reconfigure> for SupervisorActor {
    type Result = Result<Reconfigured, ReconfigureError>;

    fn handle(&mut self, _msg: Reconfigure, _ctx: &mut Context<Self>) -> Self::Result {
        // Being built: the live stream set.
        Err(ReconfigureError::NotRunning)
    }
}

impl Handler<RestartTask> for SupervisorActor {
    type Result = Result<(), ReconfigureError>;

    fn handle(&mut self, RestartTask(name): RestartTask, _ctx: &mut Context<Self>) -> Self::Result {
        // Being built: the operator's restart.
        Err(ReconfigureError::UnknownTask(name))
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::InjectFault> for SupervisorActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: crate::fault_injection::InjectFault, _ctx: &mut Context<Self>) -> Self::Result {
        use crate::fault_injection::Inject;
        let running = self.running.as_ref().ok_or("the engine is not running")?;
        let task = running.watched.iter().find(|w| w.name == msg.task).map(|w| w.task);
        let inject = Inject(msg.fault);
        match task.ok_or_else(|| format!("no supervised task is named {:?}", msg.task))? {
            TaskRef::Storage => running.storage.do_send(inject),
            TaskRef::Backfill => running.backfill.do_send(inject),
            TaskRef::Audit => running.audit.do_send(inject),
            TaskRef::History => running.history.as_ref().ok_or("no history task")?.do_send(inject),
            TaskRef::Indicator(i) => running.indicators[i].do_send(inject),
            TaskRef::Subscription(i) => running.subscriptions[i].do_send(inject),
            TaskRef::Connection(i) => running.connections[i].do_send(inject),
        }
        log::warn!("{}: injecting {:?}", msg.task, msg.fault);
        Ok(())
    }
}
