//! The supervisor actor: owns the task table, starts every task in dependency order with the restart policy its
//! priority and auto-restart flag call for, and stops them in reverse order, flushing storage last. It probes every
//! task's actor twice a second: one that panicked (actix drops it silently) or stopped for good is counted and, under
//! its policy, replaced by a fresh actor behind the same [`Mailbox`] (so every holder reaches it), or marked failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::audit::{AuditActor, AuditSettings, AuditStreams, AuditedStream};
use crate::actors::backfill::BackfillActor;
use crate::actors::connection::{
    AddStreams, ConnectionActor, ConnectionSettings, Reannounce, RemoveStreams, RoutedStream, Stop,
};
use crate::actors::health::{HealthActor, RegisterStream, RegisterTask, UnregisterStreams, UnregisterTasks};
use crate::actors::history::{HistoryActor, StreamsRemoved};
use crate::actors::indicator::{IndicatorActor, Rebuild};
use crate::actors::messages::{Drain, HistoryLanded, Retire};
use crate::actors::publisher::{PublisherActor, PublisherFeed, PublisherSettings};
use crate::actors::storage::{Close, SetIndicatorNames, StorageActor, StorageSettings, StoreCandles};
use crate::actors::subscription::{BackfillRestarted, SubscriptionActor, SubscriptionSettings};
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{BackoffPolicy, Candle, Gap, StreamChanges, StreamId, StreamKey, Timeframe, place};
use crate::hub::UpstreamDemand;
use crate::indicators::{IndicatorConfig, IndicatorSet, ProvisionalBoard};
use crate::metrics::Metrics;
use crate::registry::StreamRegistry;
use crate::rest::RestClient;
use crate::store::{Store, StoreBackend, StoreError};
use crate::streams::StreamHealth;
use crate::tasks::{
    Priority, RestartBudget, RestartDecision, RestartPolicy, RestartTracker, TaskKind, TaskSpec, TaskState, TaskStats,
};
use crate::wiring::{self, StreamStart, StreamWiring};

/// Store closed candles the local Binance API fetched from the exchange for `key`, and rebuild the stream's
/// indicators from the oldest of them. Answers whether they went to storage: only for a configured stream of a
/// running engine; in-progress candles are dropped, so that a fetched row never overwrites newer live data.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct StoreFetched {
    pub key: StreamKey,
    pub candles: Vec<Candle>,
}

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
    #[error("{0} runs once: it is not restarted")]
    RunOnce(String),
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
#[derive(Debug, Clone, PartialEq)]
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
            (Publisher, policy(High, true)),
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
    /// The NATS JetStream publisher, when `[nats] enabled`: its settings and the hub's feed of it.
    pub publisher: Option<(PublisherSettings, PublisherFeed)>,
}

pub struct SupervisorActor {
    settings: EngineSettings,
    health: Addr<HealthActor>,
    metrics: Metrics,
    store: Option<Box<dyn Store>>,
    rest: RestClient,
    /// Storage and the audit block on the store: each runs on its own arbiter.
    arbiters: Vec<Arbiter>,
    running: Option<RunningTasks>,
    /// Set by [`Shutdown`]: from then on nothing is restarted.
    shutting_down: bool,
}

/// How often the supervisor looks whether every task's actor is still alive.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// One task the supervisor recreates when its actor is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskRef {
    Storage,
    Backfill,
    Audit,
    Publisher,
    /// Run once: when it is gone before it finished, it is marked failed, never restarted.
    History,
    Indicator(StreamId),
    Subscription(StreamId),
    /// By connection number (its name is `connection-<number>`).
    Connection(u32),
}

/// Where a watched task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Alive,
    /// Its actor is gone and a restart is scheduled.
    RestartScheduled,
    /// Its restart policy gave up: it stays down.
    GivenUp,
    /// Being replaced on purpose (a new indicator set): its actor's end is no failure.
    Replacing,
}

/// A task whose actor the supervisor probes, with the tracker that applies its restart policy.
struct Watched {
    task: TaskRef,
    /// Shared with the health actor's task table.
    spec: Arc<TaskSpec>,
    stats: Arc<TaskStats>,
    tracker: RestartTracker,
    watch: Watch,
    /// The task's mailbox, for a stream's tasks: probed directly, without finding the stream among thousands.
    mailbox: Option<Box<dyn Probed>>,
}

/// A mailbox the probe asks whether its actor is still there.
trait Probed {
    fn alive(&self) -> bool;
}

impl<A: Actor> Probed for Mailbox<A> {
    fn alive(&self) -> bool {
        self.connected()
    }
}

/// One configured stream's tasks.
struct StreamTasks {
    key: StreamKey,
    subscription: Mailbox<SubscriptionActor>,
    indicator: Mailbox<IndicatorActor>,
    health: Arc<StreamHealth>,
    /// The number of the connection carrying it.
    connection: u32,
}

/// One connection task and how many streams it carries.
struct ConnectionTask {
    mailbox: Mailbox<ConnectionActor>,
    streams: usize,
}

/// The addresses of the started tasks, and what is needed to recreate any of them.
struct RunningTasks {
    /// Storage, backfill and what else every stream is linked to.
    wiring: StreamWiring,
    audit: Mailbox<AuditActor>,
    publisher: Option<Mailbox<PublisherActor>>,
    history: Option<Mailbox<HistoryActor>>,
    /// By id: the order streams were first configured in.
    streams: BTreeMap<StreamId, StreamTasks>,
    connections: BTreeMap<u32, ConnectionTask>,
    /// Streams that local subscribers (the hub) watch now.
    demanded: HashSet<StreamKey>,
    /// Streams no configured pair covers, carried for local subscribers only: the connection carrying each.
    on_demand: HashMap<StreamKey, u32>,
    storage_arbiter: ArbiterHandle,
    audit_arbiter: ArbiterHandle,
    watched: Vec<Watched>,
}

impl RunningTasks {
    /// The task's actor is still there (a panic drops it; so does a stop of an actor without actix supervision).
    fn is_alive(&self, task: TaskRef) -> bool {
        match task {
            TaskRef::Storage => self.wiring.storage.connected(),
            TaskRef::Backfill => self.wiring.backfill.connected(),
            TaskRef::Audit => self.audit.connected(),
            TaskRef::Publisher => self.publisher.as_ref().is_none_or(Mailbox::connected),
            TaskRef::History => self.history.as_ref().is_none_or(Mailbox::connected),
            TaskRef::Indicator(id) => self.streams.get(&id).is_some_and(|s| s.indicator.connected()),
            TaskRef::Subscription(id) => self.streams.get(&id).is_some_and(|s| s.subscription.connected()),
            TaskRef::Connection(n) => self.connections.get(&n).is_some_and(|c| c.mailbox.connected()),
        }
    }

    /// What the audit checks: every stream, with where its repairs go.
    fn audited(&self) -> Vec<AuditedStream> {
        audited_streams(&self.streams)
    }

    /// The streams a connection carries, with where their events go (the on-demand ones to the hub alone).
    fn routed(&self, connection: u32) -> Vec<RoutedStream> {
        let configured = (self.streams.values().filter(|s| s.connection == connection))
            .map(|s| RoutedStream { key: s.key.clone(), subscription: Some(s.subscription.clone()) });
        let on_demand = (self.on_demand.iter().filter(|(_, n)| **n == connection))
            .map(|(key, _)| RoutedStream { key: key.clone(), subscription: None });
        configured.chain(on_demand).collect()
    }

    fn is_configured(&self, key: &StreamKey) -> bool {
        self.streams.values().any(|s| &s.key == key)
    }

    fn carried(&self) -> Vec<StreamKey> {
        self.streams.values().map(|s| s.key.clone()).collect()
    }
}

fn audited_streams(streams: &BTreeMap<StreamId, StreamTasks>) -> Vec<AuditedStream> {
    (streams.iter())
        .map(|(&stream, tasks)| AuditedStream {
            stream,
            key: tasks.key.clone(),
            subscription: tasks.subscription.clone(),
            health: tasks.health.clone(),
        })
        .collect()
}

/// A stream's task names: `subscription:BTCUSDT:1m` and `indicator:BTCUSDT:1m`.
fn stream_task_name(kind: &str, key: &StreamKey) -> String {
    format!("{kind}:{}:{}", key.symbol, key.timeframe)
}

fn connection_name(number: u32) -> String {
    format!("connection-{number}")
}

/// What the stored candles say about streams about to start: the newest closed candle of each, and the ranges the
/// exchange is known to lack.
struct StoredState {
    last_closed: HashMap<(String, Timeframe), i64>,
    exchange_gaps: HashMap<(String, Timeframe), Vec<Gap>>,
}

impl StoredState {
    fn read(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(Self { last_closed: store.last_closed()?, exchange_gaps: store.exchange_gaps()? })
    }

    /// Read on a connection of its own (the storage actor owns the writing one). Unreadable, it says nothing: the
    /// streams then load their history, and the audit finds what that misses.
    fn read_fresh(backend: &StoreBackend) -> Self {
        backend.open_reader().and_then(|store| Self::read(store.as_ref())).unwrap_or_else(|error| {
            log::warn!("cannot read the stored candles ({error}); new streams load their history");
            Self { last_closed: HashMap::new(), exchange_gaps: HashMap::new() }
        })
    }
}

impl SupervisorActor {
    /// `store` is the already opened writer of `settings.storage.backend`: opening it first makes a bad storage
    /// path or an unreachable database fail at start.
    pub fn new(
        settings: EngineSettings,
        store: Box<dyn Store>,
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

    /// A task's spec under the current `[supervisor]` settings.
    fn spec(&self, name: String, kind: TaskKind, key: Option<&StreamKey>, metadata: Vec<(String, String)>) -> TaskSpec {
        let s = &self.settings.supervision;
        let policy =
            s.tasks.get(&kind).copied().unwrap_or(TaskPolicy { priority: Priority::Normal, auto_restart: true });
        let timeout = s.run_once_timeout;
        TaskSpec {
            name,
            kind,
            symbol: key.map(|k| k.symbol.clone()),
            timeframe: key.map(|k| k.timeframe),
            priority: policy.priority,
            auto_restart: policy.auto_restart,
            policy: RestartPolicy::for_task(policy.priority, policy.auto_restart, timeout, s.budget, s.backoff),
            timeout,
            metadata,
        }
    }

    /// Adds a task to the health table; returns it as watched, with fresh counters.
    fn register(&self, task: TaskRef, spec: TaskSpec) -> Watched {
        let stats = TaskStats::new(MAILBOX_CAPACITY);
        let spec = Arc::new(spec);
        self.health.do_send(RegisterTask { spec: spec.clone(), stats: stats.clone() });
        Watched { task, tracker: RestartTracker::new(spec.policy), spec, stats, watch: Watch::Alive, mailbox: None }
    }

    fn connection_spec(&self, number: u32, streams: usize) -> TaskSpec {
        let meta =
            vec![("url".into(), self.settings.connection.ws_base.clone()), ("streams".into(), streams.to_string())];
        self.spec(connection_name(number), TaskKind::Connection, None, meta)
    }

    // The constructors of each task, used at start and at every restart.

    fn start_storage(
        &self,
        arbiter: &ArbiterHandle,
        store: Box<dyn Store>,
        stats: &Arc<TaskStats>,
        tracker: RestartTracker,
    ) -> Addr<StorageActor> {
        let (settings, streams) = (self.settings.storage.clone(), self.settings.registry.clone());
        let names = self.settings.provisional.names();
        wiring::start_storage(arbiter, settings, streams, names, store, stats.clone(), tracker, self.metrics.clone())
    }

    fn start_backfill(&self, stats: &Arc<TaskStats>) -> Addr<BackfillActor> {
        BackfillActor::new(self.rest.clone(), self.settings.backfill_concurrency, stats.clone()).start()
    }

    /// A stream's subscription, starting from `start`, under the current settings.
    fn start_subscription(
        &self,
        wiring: &StreamWiring,
        id: StreamId,
        start: StreamStart,
        indicator: &Mailbox<IndicatorActor>,
        stats: &Arc<TaskStats>,
    ) -> Addr<SubscriptionActor> {
        wiring.start_subscription(id, start, self.settings.subscription, indicator, stats)
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

    fn start_publisher(
        &self,
        arbiter: &ArbiterHandle,
        stats: &Arc<TaskStats>,
        tracker: RestartTracker,
    ) -> Option<Addr<PublisherActor>> {
        let (settings, feed) = self.settings.publisher.clone()?;
        let (committed, registry) = (self.settings.storage.committed.clone(), self.settings.registry.clone());
        let (stats, metrics) = (stats.clone(), self.metrics.nats.clone());
        Some(Supervisor::start_in_arbiter(arbiter, move |_| {
            PublisherActor::new(settings, feed, committed, registry, stats, tracker, metrics)
        }))
    }

    fn start_connection(
        &self,
        number: u32,
        routed: Vec<RoutedStream>,
        stats: &Arc<TaskStats>,
        tracker: RestartTracker,
    ) -> Addr<ConnectionActor> {
        let mut settings = self.settings.connection.clone();
        settings.rotate_after += settings.rotate_stagger * number;
        let (name, metrics, stats) = (connection_name(number), self.metrics.clone(), stats.clone());
        Supervisor::start(move |_| ConnectionActor::new(name, settings, routed, stats, tracker, metrics))
    }

    /// Starts storage, backfill and the history, then every configured stream with its connections, then the audit.
    fn start_tasks(&mut self) -> Result<(), String> {
        let store = self.store.take().ok_or("the engine was already started")?;
        let stored = StoredState::read(store.as_ref()).map_err(|e| format!("cannot read the stored candles: {e}"))?;
        // Two tasks per stream, one per connection, and the shared ones: allocated once, not grown by doubling.
        let streams = self.settings.streams.len();
        let mut watched = Vec::with_capacity(2 * streams + streams.div_ceil(self.per_connection()) + 8);

        let storage_arbiter = Arbiter::new();
        let storage = {
            let w = self.register(TaskRef::Storage, self.spec("storage".into(), TaskKind::Storage, None, vec![]));
            let tracker = RestartTracker::new(w.spec.policy);
            let addr = self.start_storage(&storage_arbiter.handle(), store, &w.stats, tracker);
            let mailbox = Mailbox::new(addr, w.stats.clone());
            watched.push(w);
            mailbox
        };
        let backfill = {
            let w = self.register(TaskRef::Backfill, self.spec("backfill".into(), TaskKind::Backfill, None, vec![]));
            let mailbox = Mailbox::new(self.start_backfill(&w.stats), w.stats.clone());
            watched.push(w);
            mailbox
        };
        let keys = self.settings.streams.clone();
        let ids: Vec<StreamId> = keys.iter().map(|key| self.settings.registry.activate(key)).collect();
        let history = (self.settings.history > 0).then(|| {
            let meta = vec![("candles_per_stream".into(), self.settings.history.to_string())];
            let w = self.register(TaskRef::History, self.spec("history".into(), TaskKind::History, None, meta));
            let timeout = self.settings.supervision.run_once_timeout;
            let addr = HistoryActor::new(timeout, ids.iter().copied(), w.stats.clone()).start();
            let mailbox = Mailbox::new(addr, w.stats.clone());
            watched.push(w);
            mailbox
        });

        let mut streams = BTreeMap::new();
        let mut connections = BTreeMap::new();
        let wiring = StreamWiring {
            storage,
            in_progress: self.settings.storage.in_progress.clone(),
            backfill,
            board: self.settings.provisional.clone(),
            clock: self.rest.clock().clone(),
            metrics: self.metrics.clone(),
        };
        let history_recipient = history.as_ref().map(Mailbox::recipient::<HistoryLanded>);
        let (started, new_connections) = self.start_streams(
            &keys,
            &HashMap::new(),
            &stored,
            &wiring,
            history_recipient,
            &mut connections,
            &mut watched,
        );
        streams.extend(started);
        for (number, routed) in new_connections {
            self.add_connection(number, routed, &mut connections, &mut watched);
        }

        let audit_arbiter = Arbiter::new();
        let audit = {
            let meta = vec![("interval_secs".into(), self.settings.audit.interval.as_secs().to_string())];
            let w = self.register(TaskRef::Audit, self.spec("audit".into(), TaskKind::Audit, None, meta));
            let tracker = RestartTracker::new(w.spec.policy);
            let audited = audited_streams(&streams);
            let addr = self.start_audit(&audit_arbiter.handle(), audited, &wiring.backfill, &w.stats, tracker);
            let mailbox = Mailbox::new(addr, w.stats.clone());
            watched.push(w);
            mailbox
        };
        let publisher =
            self.settings.publisher.as_ref().map(|(publisher, _)| publisher.clone()).and_then(|publisher| {
                let meta = vec![
                    ("stream".into(), publisher.stream.clone()),
                    ("url".into(), crate::actors::publisher::shown_url(&publisher.url)),
                ];
                let w =
                    self.register(TaskRef::Publisher, self.spec("publisher".into(), TaskKind::Publisher, None, meta));
                let tracker = RestartTracker::new(w.spec.policy);
                let addr = self.start_publisher(&audit_arbiter.handle(), &w.stats, tracker)?;
                let mailbox = Mailbox::new(addr, w.stats.clone());
                watched.push(w);
                Some(mailbox)
            });
        log::info!("Registered {} background task(s)", watched.len());
        log::info!("Started {} tasks", watched.len());
        self.running = Some(RunningTasks {
            wiring,
            audit,
            publisher,
            history,
            streams,
            connections,
            demanded: HashSet::new(),
            on_demand: HashMap::new(),
            storage_arbiter: storage_arbiter.handle(),
            audit_arbiter: audit_arbiter.handle(),
            watched,
        });
        self.arbiters.push(storage_arbiter);
        self.arbiters.push(audit_arbiter);
        Ok(())
    }

    /// Starts the indicator and subscription tasks of each of `keys`, and places each on a connection: a key in
    /// `carried_for_hub` stays on the connection that already carries it for local subscribers (it is only routed
    /// anew), the others go to the existing connections with room first (they are told to subscribe), then to new
    /// ones, returned with their streams for the caller to start.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn start_streams(
        &self,
        keys: &[StreamKey],
        carried_for_hub: &HashMap<StreamKey, u32>,
        stored: &StoredState,
        wiring: &StreamWiring,
        history: Option<Recipient<HistoryLanded>>,
        connections: &mut BTreeMap<u32, ConnectionTask>,
        watched: &mut Vec<Watched>,
    ) -> (Vec<(StreamId, StreamTasks)>, Vec<(u32, Vec<RoutedStream>)>) {
        let carried: BTreeMap<u32, usize> = connections.iter().map(|(&n, c)| (n, c.streams)).collect();
        let fresh = keys.iter().filter(|key| !carried_for_hub.contains_key(key)).count();
        let placement = place(&carried, fresh, self.per_connection());
        let mut numbers = placement.iter().flat_map(|&(number, count)| std::iter::repeat_n(number, count));
        let mut started = Vec::with_capacity(keys.len());
        let mut routed: BTreeMap<u32, Vec<RoutedStream>> = BTreeMap::new();
        // Per connection: the streams new to it (the ones it carried for the hub already count).
        let mut added: BTreeMap<u32, usize> = BTreeMap::new();
        for key in keys {
            let connection = match carried_for_hub.get(key) {
                Some(&number) => number,
                None => {
                    let Some(number) = numbers.next() else { break };
                    *added.entry(number).or_default() += 1;
                    number
                }
            };
            let id = self.settings.registry.activate(key);
            self.settings.provisional.add(id, key.clone());
            let stored_key = (key.symbol.clone(), key.timeframe);

            let w = self.register(
                TaskRef::Indicator(id),
                self.spec(stream_task_name("indicator", key), TaskKind::Indicator, Some(key), vec![]),
            );
            let addr = wiring.start_indicator(id, key, &self.settings.indicators, &w.stats);
            let indicator = Mailbox::new(addr, w.stats.clone());
            watched.push(Watched { mailbox: Some(Box::new(indicator.clone())), ..w });

            let health = StreamHealth::new(key.clone());
            health.record_exchange_gaps(stored.exchange_gaps.get(&stored_key).map_or(&[], Vec::as_slice));
            self.health.do_send(RegisterStream(health.clone()));
            self.metrics.register_stream(key);
            let w = self.register(
                TaskRef::Subscription(id),
                self.spec(stream_task_name("subscription", key), TaskKind::Subscription, Some(key), vec![]),
            );
            let start = StreamStart {
                last_stored: stored.last_closed.get(&stored_key).copied(),
                load_history: true,
                history: history.clone(),
                health: health.clone(),
            };
            let addr = self.start_subscription(wiring, id, start, &indicator, &w.stats);
            let subscription = Mailbox::new(addr, w.stats.clone());
            watched.push(Watched { mailbox: Some(Box::new(subscription.clone())), ..w });

            routed
                .entry(connection)
                .or_default()
                .push(RoutedStream { key: key.clone(), subscription: Some(subscription.clone()) });
            started.push((id, StreamTasks { key: key.clone(), subscription, indicator, health, connection }));
        }
        let mut new_connections = Vec::new();
        for (number, streams) in routed {
            match connections.get_mut(&number) {
                Some(connection) => {
                    connection.streams += added.get(&number).copied().unwrap_or_default();
                    self.health.do_send(RegisterTask {
                        spec: self.connection_spec(number, connection.streams).into(),
                        stats: connection.mailbox.stats().clone(),
                    });
                    connection.mailbox.do_send(AddStreams(streams));
                }
                None => new_connections.push((number, streams)),
            }
        }
        (started, new_connections)
    }

    /// Registers and starts a new connection carrying `routed`.
    fn add_connection(
        &self,
        number: u32,
        routed: Vec<RoutedStream>,
        connections: &mut BTreeMap<u32, ConnectionTask>,
        watched: &mut Vec<Watched>,
    ) {
        let streams = routed.len();
        let w = self.register(TaskRef::Connection(number), self.connection_spec(number, streams));
        let tracker = RestartTracker::new(w.spec.policy);
        let mailbox = Mailbox::new(self.start_connection(number, routed, &w.stats, tracker), w.stats.clone());
        watched.push(w);
        connections.insert(number, ConnectionTask { mailbox, streams });
    }

    /// Adds streams to the running engine: their tasks, their history, and their place on a connection.
    fn add_streams(&self, running: &mut RunningTasks, keys: &[StreamKey]) {
        if keys.is_empty() {
            return;
        }
        // A stream carried for local subscribers already becomes a configured one where it is: no second SUBSCRIBE.
        let carried_for_hub: HashMap<StreamKey, u32> =
            keys.iter().filter_map(|key| Some((key.clone(), running.on_demand.remove(key)?))).collect();
        let stored = StoredState::read_fresh(&self.settings.storage.backend);
        let (started, new_connections) = self.start_streams(
            keys,
            &carried_for_hub,
            &stored,
            &running.wiring,
            None,
            &mut running.connections,
            &mut running.watched,
        );
        running.streams.extend(started);
        for (number, routed) in new_connections {
            self.add_connection(number, routed, &mut running.connections, &mut running.watched);
        }
    }

    /// Removes streams from the running engine: they are unsubscribed, their tasks stopped and removed from every
    /// report. Their stored candles stay. A connection left with no stream closes.
    fn remove_streams(&self, running: &mut RunningTasks, keys: &[StreamKey]) {
        let mut unsubscribed: BTreeMap<u32, Vec<StreamKey>> = BTreeMap::new();
        let mut task_names = Vec::new();
        let mut gone = Vec::new();
        for key in keys {
            let Some((&id, _)) = running.streams.iter().find(|(_, s)| &s.key == key) else { continue };
            let Some(tasks) = running.streams.remove(&id) else { continue };
            self.settings.registry.deactivate(id);
            self.settings.provisional.remove(id);
            self.metrics.unregister_stream(key);
            tasks.subscription.do_send(Retire);
            tasks.indicator.do_send(Retire);
            task_names.push(stream_task_name("subscription", key));
            task_names.push(stream_task_name("indicator", key));
            gone.push(TaskRef::Subscription(id));
            gone.push(TaskRef::Indicator(id));
            if running.demanded.contains(key) {
                // Local subscribers still watch it: it stays subscribed upstream, for the hub alone.
                log::info!("{key}: left the config but local subscribers watch it; kept upstream for them");
                running.on_demand.insert(key.clone(), tasks.connection);
                if let Some(connection) = running.connections.get(&tasks.connection) {
                    connection.mailbox.do_send(AddStreams(vec![RoutedStream { key: key.clone(), subscription: None }]));
                }
                continue;
            }
            unsubscribed.entry(tasks.connection).or_default().push(key.clone());
        }
        self.release_from_connections(running, unsubscribed, &mut task_names, &mut gone);
        running.watched.retain(|w| !gone.contains(&w.task));
        if let Some(history) = running.history.as_ref().filter(|history| history.connected()) {
            let removed = gone.iter().filter_map(|task| match task {
                TaskRef::Subscription(id) => Some(*id),
                _ => None,
            });
            history.do_send(StreamsRemoved(removed.collect()));
        }
        self.health.do_send(UnregisterStreams(keys.to_vec()));
        self.health.do_send(UnregisterTasks(task_names));
    }

    /// Applies what local subscribers want upstream: a stream wanted that no configured pair covers (and that is not
    /// carried for them already) is placed on a connection with room, routed to the hub alone; a released one
    /// carried for them only is unsubscribed. Configured streams are untouched either way.
    fn apply_demand(&mut self, UpstreamDemand { wanted, released }: UpstreamDemand) {
        if self.shutting_down {
            return;
        }
        let Some(mut running) = self.running.take() else { return };
        let mut unsubscribed: BTreeMap<u32, Vec<StreamKey>> = BTreeMap::new();
        for key in released {
            running.demanded.remove(&key);
            if let Some(number) = running.on_demand.remove(&key) {
                log::info!("{key}: no local subscriber left; unsubscribed upstream");
                unsubscribed.entry(number).or_default().push(key);
            }
        }
        let (mut task_names, mut gone) = (Vec::new(), Vec::new());
        self.release_from_connections(&mut running, unsubscribed, &mut task_names, &mut gone);
        running.watched.retain(|w| !gone.contains(&w.task));
        self.health.do_send(UnregisterTasks(task_names));

        let mut fresh = Vec::new();
        for key in wanted {
            let new = running.demanded.insert(key.clone());
            if new && !running.is_configured(&key) && !running.on_demand.contains_key(&key) && !fresh.contains(&key) {
                fresh.push(key);
            }
        }
        if !fresh.is_empty() {
            let carried: BTreeMap<u32, usize> = running.connections.iter().map(|(&n, c)| (n, c.streams)).collect();
            let placement = place(&carried, fresh.len(), self.per_connection());
            let mut keys = fresh.into_iter();
            for (number, count) in placement {
                let routed: Vec<RoutedStream> =
                    (keys.by_ref().take(count)).map(|key| RoutedStream { key, subscription: None }).collect();
                for stream in &routed {
                    log::info!("{}: wanted by local subscribers; subscribed upstream on demand", stream.key);
                    running.on_demand.insert(stream.key.clone(), number);
                }
                match running.connections.get_mut(&number) {
                    Some(connection) => {
                        connection.streams += routed.len();
                        self.health.do_send(RegisterTask {
                            spec: self.connection_spec(number, connection.streams).into(),
                            stats: connection.mailbox.stats().clone(),
                        });
                        connection.mailbox.do_send(AddStreams(routed));
                    }
                    None => self.add_connection(number, routed, &mut running.connections, &mut running.watched),
                }
            }
        }
        self.running = Some(running);
    }

    /// Unsubscribes `unsubscribed` from their connections; a connection left with no stream closes (its task is
    /// added to `task_names` and `gone`).
    fn release_from_connections(
        &self,
        running: &mut RunningTasks,
        unsubscribed: BTreeMap<u32, Vec<StreamKey>>,
        task_names: &mut Vec<String>,
        gone: &mut Vec<TaskRef>,
    ) {
        for (number, keys) in unsubscribed {
            let Some(connection) = running.connections.get_mut(&number) else { continue };
            connection.streams = connection.streams.saturating_sub(keys.len());
            if connection.streams == 0 {
                log::info!("{}: no stream left, closing it", connection_name(number));
                connection.mailbox.do_send(Stop);
                running.connections.remove(&number);
                task_names.push(connection_name(number));
                gone.push(TaskRef::Connection(number));
            } else {
                self.health.do_send(RegisterTask {
                    spec: self.connection_spec(number, connection.streams).into(),
                    stats: connection.mailbox.stats().clone(),
                });
                connection.mailbox.do_send(RemoveStreams(keys));
            }
        }
    }

    /// A new indicator set: every indicator actor is replaced by one computing the new set, which rebuilds from the
    /// stored candles. The old ones finish what they were sent (their values go to storage under the old names)
    /// before storage switches names and the new ones start.
    fn replace_indicators(&mut self, ctx: &mut Context<Self>) {
        let Some(running) = &mut self.running else { return };
        let mut retiring = Vec::new();
        for w in &mut running.watched {
            if let TaskRef::Indicator(id) = w.task
                && let Some(tasks) = running.streams.get(&id)
            {
                w.watch = Watch::Replacing;
                retiring.push(tasks.indicator.addr());
            }
        }
        log::info!("The indicator set changed: rebuilding the indicators of {} stream(s)", retiring.len());
        let retired = async move {
            for old in retiring {
                // Gone already (a panic): nothing to wait for.
                let _ = old.send(Retire).await;
            }
        };
        ctx.wait(retired.into_actor(self).map(|(), act, _ctx| act.start_new_indicators()));
    }

    fn start_new_indicators(&mut self) {
        let Some(running) = self.running.take() else { return };
        let names: Arc<[String]> = IndicatorSet::new(&self.settings.indicators).names().into();
        running.wiring.storage.do_send(SetIndicatorNames(names.clone()));
        self.settings.provisional.set_names(names);
        let mut running = running;
        for w in running.watched.iter_mut().filter(|w| w.watch == Watch::Replacing) {
            let TaskRef::Indicator(id) = w.task else { continue };
            if let Some(tasks) = running.streams.get(&id) {
                let addr = running.wiring.start_indicator(id, &tasks.key, &self.settings.indicators, &w.stats);
                tasks.indicator.repoint(addr);
            }
            w.watch = Watch::Alive;
        }
        self.running = Some(running);
    }

    /// New `[supervisor]` settings: every task's policy is recomputed, for its next restart.
    fn apply_supervision(&mut self) {
        let Some(mut running) = self.running.take() else { return };
        for w in &mut running.watched {
            let spec = self.spec(w.spec.name.clone(), w.spec.kind, None, w.spec.metadata.clone());
            if spec.policy != w.spec.policy || spec.priority != w.spec.priority {
                let spec = Arc::new(TaskSpec { symbol: w.spec.symbol.clone(), timeframe: w.spec.timeframe, ..spec });
                w.tracker = RestartTracker::new(spec.policy);
                self.health.do_send(RegisterTask { spec: spec.clone(), stats: w.stats.clone() });
                w.spec = spec;
            }
        }
        self.running = Some(running);
    }

    /// Looks whether every task's actor is still there. One that is gone (it panicked, or stopped while nothing is
    /// shutting down) is counted and restarted after its policy's back-off, or marked failed when the policy gives
    /// up.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let Some(running) = &mut self.running else { return };
        let alive: Vec<bool> = (running.watched.iter())
            .map(|w| w.mailbox.as_ref().map_or_else(|| running.is_alive(w.task), |mailbox| mailbox.alive()))
            .collect();
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
                        watched.spec.name,
                        delay.as_millis()
                    );
                    watched.watch = Watch::RestartScheduled;
                    let task = watched.task;
                    ctx.run_later(delay, move |act, _ctx| act.restart(task));
                }
                RestartDecision::GiveUp => {
                    let error = format!(
                        "the task's actor panicked or stopped, and its restart policy ({}) gave up",
                        watched.spec.policy.describe()
                    );
                    log::error!("{}: {error}; it stays down", watched.spec.name);
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
        let Some(mut running) = self.running.take() else { return };
        // A task removed meanwhile (its stream left the config) is not restarted.
        let Some(at) = running.watched.iter().position(|w| w.task == task) else {
            self.running = Some(running);
            return;
        };
        let (name, policy, stats) = {
            let w = &running.watched[at];
            (w.spec.name.clone(), w.spec.policy, w.stats.clone())
        };
        let restarted = self.start_again(&running, task, &name, policy, &stats);
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

    fn start_again(
        &self,
        running: &RunningTasks,
        task: TaskRef,
        name: &str,
        policy: RestartPolicy,
        stats: &Arc<TaskStats>,
    ) -> Result<(), String> {
        match task {
            TaskRef::Storage => {
                // The panicked actor's pending rows are lost with it; the audit finds the holes and repairs them.
                let backend = &self.settings.storage.backend;
                let store = backend.open_writer().map_err(|e| format!("cannot open {}: {e}", backend.describe()))?;
                let addr = self.start_storage(&running.storage_arbiter, store, stats, RestartTracker::new(policy));
                running.wiring.storage.repoint(addr);
            }
            TaskRef::Backfill => {
                running.wiring.backfill.repoint(self.start_backfill(stats));
                // Their queued and in-flight fetches are lost: each stream asks again for what it waits for.
                for tasks in running.streams.values() {
                    tasks.subscription.do_send(BackfillRestarted);
                }
            }
            TaskRef::Audit => {
                let tracker = RestartTracker::new(policy);
                let addr = self.start_audit(
                    &running.audit_arbiter,
                    running.audited(),
                    &running.wiring.backfill,
                    stats,
                    tracker,
                );
                running.audit.repoint(addr);
            }
            TaskRef::Publisher => {
                let tracker = RestartTracker::new(policy);
                let addr = self.start_publisher(&running.audit_arbiter, stats, tracker).ok_or("NATS is not enabled")?;
                running.publisher.as_ref().ok_or("NATS is not enabled")?.repoint(addr);
            }
            // Its policy never restarts it: `probe` marked it failed.
            TaskRef::History => return Err("a run-once task is not restarted".to_owned()),
            TaskRef::Indicator(id) => {
                let tasks = running.streams.get(&id).ok_or("its stream is gone")?;
                // A fresh indicator actor rebuilds its state from the stored candles when it starts.
                let addr = running.wiring.start_indicator(id, &tasks.key, &self.settings.indicators, stats);
                tasks.indicator.repoint(addr);
            }
            TaskRef::Subscription(id) => {
                let tasks = running.streams.get(&id).ok_or("its stream is gone")?;
                // It continues from the newest stored closed candle and repairs from there once it is live. What
                // storage has not committed yet is fetched again, harmlessly. Its in-flight fetches answer the dead
                // actor and are lost; the new one asks again.
                let last_stored = (self.settings.storage.backend.open_reader())
                    .and_then(|store| store.last_closed_of(&tasks.key))
                    .unwrap_or_else(|error| {
                        log::warn!("{name}: cannot read the stored candles ({error}); the audit fills what is missed");
                        None
                    });
                // A stream whose history had not landed loads it (and reports it) again; the others only repair.
                let load_history = !tasks.health.history_landed();
                let history = (running.history.as_ref())
                    .filter(|history| history.connected() && load_history)
                    .map(Mailbox::recipient::<HistoryLanded>);
                let start = StreamStart { last_stored, load_history, history, health: tasks.health.clone() };
                let addr = self.start_subscription(&running.wiring, id, start, &tasks.indicator, stats);
                tasks.subscription.repoint(addr);
                if let Some(connection) = running.connections.get(&tasks.connection) {
                    connection.mailbox.do_send(Reannounce { key: tasks.key.clone() });
                }
            }
            TaskRef::Connection(number) => {
                let connection = running.connections.get(&number).ok_or("the connection was closed")?;
                let addr = self.start_connection(number, running.routed(number), stats, RestartTracker::new(policy));
                connection.mailbox.repoint(addr);
            }
        }
        Ok(())
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
        // Streams local subscribers wanted before the engine ran are subscribed now; later changes arrive as messages.
        let wanted = self.settings.connection.hub.attach_upstream(ctx.address().recipient());
        self.apply_demand(UpstreamDemand { wanted, released: Vec::new() });
        #[cfg(feature = "fault-injection")]
        crate::fault_injection::register(ctx.address().recipient());
    }
}

impl Handler<UpstreamDemand> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, demand: UpstreamDemand, _ctx: &mut Context<Self>) {
        self.apply_demand(demand);
    }
}

impl Handler<Reconfigure> for SupervisorActor {
    type Result = Result<Reconfigured, ReconfigureError>;

    fn handle(&mut self, Reconfigure(new): Reconfigure, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Err(ReconfigureError::ShuttingDown);
        }
        let mut running = self.running.take().ok_or(ReconfigureError::NotRunning)?;
        let changes = StreamChanges::between(&running.carried(), &new.streams);
        let indicators_rebuilt = new.indicators != self.settings.indicators;
        let supervision_changed = new.supervision != self.settings.supervision;
        self.settings.streams = new.streams;
        self.settings.indicators = new.indicators;
        self.settings.supervision = new.supervision;
        self.settings.history = new.history;
        self.settings.audit.interval = new.audit.interval;
        self.settings.audit.history = new.audit.history;
        self.settings.subscription = new.subscription;

        self.remove_streams(&mut running, &changes.removed);
        self.add_streams(&mut running, &changes.added);
        running.audit.do_send(AuditStreams { streams: running.audited(), interval: self.settings.audit.interval });
        let describe = |keys: &[StreamKey]| keys.iter().map(|k| format!("{}:{}", k.symbol, k.timeframe)).collect();
        let report =
            Reconfigured { added: describe(&changes.added), removed: describe(&changes.removed), indicators_rebuilt };
        if !changes.is_empty() {
            log::info!(
                "Streams changed: {} added, {} removed, {} carried",
                changes.added.len(),
                changes.removed.len(),
                running.streams.len()
            );
        }
        self.running = Some(running);
        if supervision_changed {
            self.apply_supervision();
        }
        if indicators_rebuilt {
            self.replace_indicators(ctx);
        }
        Ok(report)
    }
}

impl Handler<RestartTask> for SupervisorActor {
    type Result = Result<(), ReconfigureError>;

    fn handle(&mut self, RestartTask(name): RestartTask, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Err(ReconfigureError::ShuttingDown);
        }
        let running = self.running.as_ref().ok_or(ReconfigureError::NotRunning)?;
        let watched = running.watched.iter().find(|w| w.spec.name == name);
        let (task, stats) =
            watched.map(|w| (w.task, w.stats.clone())).ok_or(ReconfigureError::UnknownTask(name.clone()))?;
        log::info!("{name}: restart requested");
        // Storage, the audit and connections are under actix supervision: each restarts itself in place, and counts
        // it. For the others, a fresh actor takes over the mailbox, and the old one finishes what it holds and stops.
        let (actor, in_place): (Recipient<Retire>, bool) = match task {
            TaskRef::History => return Err(ReconfigureError::RunOnce(name)),
            TaskRef::Storage => (running.wiring.storage.recipient(), true),
            TaskRef::Audit => (running.audit.recipient(), true),
            TaskRef::Publisher => match &running.publisher {
                Some(publisher) => (publisher.recipient(), true),
                None => return Err(ReconfigureError::UnknownTask(name)),
            },
            TaskRef::Connection(n) => (running.connections[&n].mailbox.recipient(), true),
            TaskRef::Backfill => (running.wiring.backfill.recipient(), false),
            TaskRef::Indicator(id) => (running.streams[&id].indicator.recipient(), false),
            TaskRef::Subscription(id) => (running.streams[&id].subscription.recipient(), false),
        };
        if !in_place {
            stats.record_restart();
            self.restart(task);
        }
        actor.do_send(Retire);
        Ok(())
    }
}

impl Handler<StoreFetched> for SupervisorActor {
    type Result = bool;

    fn handle(&mut self, StoreFetched { key, candles }: StoreFetched, _ctx: &mut Context<Self>) -> bool {
        let Some(running) = self.running.as_ref().filter(|_| !self.shutting_down) else { return false };
        let Some((&stream, _)) = running.streams.iter().find(|(_, tasks)| tasks.key == key) else { return false };
        let candles: Vec<Candle> = candles.into_iter().filter(|c| c.is_closed).collect();
        let Some(from) = candles.iter().map(|c| c.open_time).min() else { return true };
        running.wiring.storage.do_send(StoreCandles { stream, candles });
        // Older candles than those the indicators were fed: recompute from the oldest (after the store, which the
        // rebuild's load waits for).
        running.streams[&stream].indicator.do_send(Rebuild { from });
        true
    }
}

impl Handler<Shutdown> for SupervisorActor {
    type Result = ResponseActFuture<Self, Result<(), ShutdownError>>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let Some(running) = self.running.take() else { return Box::pin(fut::ready(Ok(()))) };
        let frames_received = self.metrics.frames_received.get();
        let shutdown = async move {
            for connection in running.connections.values() {
                let _ = connection.mailbox.send(Stop).await;
            }
            // Every mailbox is FIFO: once a Drain is answered, what was queued before it has been handled.
            for tasks in running.streams.values() {
                let _ = tasks.subscription.send(Drain).await;
            }
            for tasks in running.streams.values() {
                let _ = tasks.indicator.send(Drain).await;
            }
            let flushed = running.wiring.storage.send(Close).await?;
            for watched in &running.watched {
                if watched.stats.state() == TaskState::Running {
                    watched.stats.set_state(TaskState::Stopped);
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

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::InjectFault> for SupervisorActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: crate::fault_injection::InjectFault, _ctx: &mut Context<Self>) -> Self::Result {
        use crate::fault_injection::Inject;
        let running = self.running.as_ref().ok_or("the engine is not running")?;
        let task = running.watched.iter().find(|w| w.spec.name == msg.task).map(|w| w.task);
        let inject = Inject(msg.fault);
        let gone = || format!("{} is gone", msg.task);
        match task.ok_or_else(|| format!("no supervised task is named {:?}", msg.task))? {
            TaskRef::Storage => running.wiring.storage.do_send(inject),
            TaskRef::Backfill => running.wiring.backfill.do_send(inject),
            TaskRef::Audit => running.audit.do_send(inject),
            TaskRef::Publisher => running.publisher.as_ref().ok_or("no publisher task")?.do_send(inject),
            TaskRef::History => running.history.as_ref().ok_or("no history task")?.do_send(inject),
            TaskRef::Indicator(id) => running.streams.get(&id).ok_or_else(gone)?.indicator.do_send(inject),
            TaskRef::Subscription(id) => running.streams.get(&id).ok_or_else(gone)?.subscription.do_send(inject),
            TaskRef::Connection(n) => running.connections.get(&n).ok_or_else(gone)?.mailbox.do_send(inject),
        }
        log::warn!("{}: injecting {:?}", msg.task, msg.fault);
        Ok(())
    }
}
