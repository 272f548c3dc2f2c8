//! The supervisor actor: owns the task table, starts every task in dependency order with the restart policy its
//! priority and auto-restart flag call for, and stops them in reverse order, flushing storage last.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::audit::{AuditActor, AuditSettings, AuditedStream};
use crate::actors::backfill::BackfillActor;
use crate::actors::connection::{ConnectionActor, ConnectionSettings, RoutedStream, Stop};
use crate::actors::health::{HealthActor, RegisterStream, RegisterTask};
use crate::actors::history::HistoryActor;
use crate::actors::indicator::IndicatorActor;
use crate::actors::messages::Drain;
use crate::actors::storage::{Close, StorageActor, StorageSettings};
use crate::actors::subscription::{SubscriptionActor, SubscriptionLinks, SubscriptionSettings};
use crate::actors::{MAILBOX_CAPACITY, Mailbox};
use crate::domain::{BackoffPolicy, StreamId, StreamKey};
use crate::indicators::{IndicatorConfig, ProvisionalBoard};
use crate::metrics::Metrics;
use crate::rest::RestClient;
use crate::store::{CandleStore, StoreError};
use crate::streams::StreamHealth;
use crate::tasks::{Priority, RestartBudget, RestartPolicy, RestartTracker, TaskKind, TaskSpec, TaskState, TaskStats};

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
    /// Where the indicator actors publish provisional values; built for `streams` and `indicators`, shared with
    /// HTTP.
    pub provisional: ProvisionalBoard,
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
}

/// The addresses of the started tasks, in start order.
struct RunningTasks {
    storage: Mailbox<StorageActor>,
    indicators: Vec<Mailbox<IndicatorActor>>,
    subscriptions: Vec<Mailbox<SubscriptionActor>>,
    connections: Vec<Mailbox<ConnectionActor>>,
    all_stats: Vec<Arc<TaskStats>>,
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
        Self { settings, health, metrics, store: Some(store), rest, arbiters: Vec::new(), running: None }
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
        let per_connection = self.settings.max_streams_per_connection.max(1);
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
        let storage_arbiter = Arbiter::new();
        let storage = {
            let (stats, tracker) = table.handle(storage_task);
            let (settings, streams, metrics) = (self.settings.storage.clone(), streams.clone(), self.metrics.clone());
            let names = self.settings.provisional.names().clone();
            let stats_for_actor = stats.clone();
            let addr = Supervisor::start_in_arbiter(&storage_arbiter.handle(), move |_| {
                StorageActor::new(settings, streams, names, store, stats_for_actor, tracker, metrics)
            });
            Mailbox::new(addr, stats)
        };
        self.arbiters.push(storage_arbiter);
        let backfill = {
            let (stats, _) = table.handle(backfill_task);
            let actor = BackfillActor::new(self.rest.clone(), self.settings.backfill_concurrency, stats.clone());
            Mailbox::new(actor.start(), stats)
        };
        let history = history_task.map(|task| {
            let (stats, _) = table.handle(task);
            let ids = (0..streams.len()).map(|index| StreamId(index as u32));
            HistoryActor::new(self.settings.supervision.run_once_timeout, ids, stats).start().recipient()
        });
        let mut indicators = Vec::new();
        let mut subscriptions = Vec::new();
        let mut audited = Vec::new();
        for (index, (key, (indicator_task, subscription_task))) in streams.iter().zip(stream_tasks).enumerate() {
            let (stats, _) = table.handle(indicator_task);
            let stream = StreamId(index as u32);
            let board = self.settings.provisional.clone();
            let config = &self.settings.indicators;
            let actor = IndicatorActor::new(stream, key.clone(), config, storage.clone(), board, stats.clone());
            let indicator = Mailbox::new(actor.start(), stats);
            let (stats, _) = table.handle(subscription_task);
            let stored_key = (key.symbol.clone(), key.timeframe);
            let health = StreamHealth::new(key.clone());
            health.record_exchange_gaps(exchange_gaps.get(&stored_key).map_or(&[], Vec::as_slice));
            self.health.do_send(RegisterStream(health.clone()));
            self.metrics.register_stream(key);
            let links = SubscriptionLinks {
                storage: storage.clone(),
                indicator: indicator.clone(),
                backfill: backfill.clone(),
                history: history.clone(),
                stats: stats.clone(),
                health: health.clone(),
                clock: self.rest.clock().clone(),
                metrics: self.metrics.clone(),
            };
            let last_stored = last_closed.get(&stored_key).copied();
            let subscription = SubscriptionActor::new(stream, last_stored, self.settings.subscription, links).start();
            audited.push(AuditedStream {
                stream,
                key: key.clone(),
                subscription: subscription.clone().recipient(),
                health,
            });
            subscriptions.push(Mailbox::new(subscription, stats));
            indicators.push(indicator);
        }
        {
            let (stats, tracker) = table.handle(audit_task);
            let audit_arbiter = Arbiter::new();
            let (settings, rest, metrics) = (self.settings.audit.clone(), self.rest.clone(), self.metrics.clone());
            let backfill = backfill.clone();
            Supervisor::start_in_arbiter(&audit_arbiter.handle(), move |_| {
                AuditActor::new(settings, audited, rest, backfill, stats, tracker, metrics)
            });
            self.arbiters.push(audit_arbiter);
        }
        let mut connections = Vec::new();
        for (index, task) in connection_tasks.into_iter().enumerate() {
            let (stats, tracker) = table.handle(task);
            let routed = (index * per_connection..((index + 1) * per_connection).min(streams.len()))
                .map(|i| RoutedStream { key: streams[i].clone(), subscription: subscriptions[i].clone() })
                .collect();
            let mut settings = self.settings.connection.clone();
            settings.rotate_after += settings.rotate_stagger * index as u32;
            let actor = ConnectionActor::new(
                format!("connection-{index}"),
                settings,
                routed,
                stats.clone(),
                tracker,
                self.metrics.clone(),
            );
            connections.push(Mailbox::new(Supervisor::start(move |_| actor), stats));
        }
        log::info!("Started {} tasks", table.tasks.len());
        let all_stats = table.tasks.into_iter().map(|(_, stats)| stats).collect();
        self.running = Some(RunningTasks { storage, indicators, subscriptions, connections, all_stats });
        Ok(())
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
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Err(error) = self.start_tasks() {
            log::error!("supervisor: cannot start the tasks: {error}");
            ctx.stop();
        }
    }
}

impl Handler<Shutdown> for SupervisorActor {
    type Result = ResponseActFuture<Self, Result<(), ShutdownError>>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
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
