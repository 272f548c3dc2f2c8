//! How the engine's actors are wired to each other: storage on its own arbiter, and each stream's indicator and
//! subscription actors with their links. The supervisor and the pipeline bench both build them here, so the bench
//! measures exactly what runs.

use std::sync::Arc;

use actix::prelude::*;

use crate::actors::Mailbox;
use crate::actors::backfill::BackfillActor;
use crate::actors::indicator::IndicatorActor;
use crate::actors::messages::HistoryLanded;
use crate::actors::storage::{StorageActor, StorageSettings};
use crate::actors::subscription::{SubscriptionActor, SubscriptionLinks, SubscriptionSettings};
use crate::domain::{ExchangeClock, StreamId, StreamKey};
use crate::in_progress::InProgressUpdates;
use crate::indicators::{IndicatorConfig, ProvisionalBoard};
use crate::metrics::Metrics;
use crate::registry::StreamRegistry;
use crate::store::Store;
use crate::streams::StreamHealth;
use crate::tasks::{RestartTracker, TaskStats};

/// Starts the storage actor on `arbiter`, under actix supervision (a failed commit restarts it in place).
#[allow(clippy::too_many_arguments)]
pub fn start_storage(
    arbiter: &ArbiterHandle,
    settings: StorageSettings,
    streams: StreamRegistry,
    indicator_names: Arc<[String]>,
    store: Box<dyn Store>,
    stats: Arc<TaskStats>,
    tracker: RestartTracker,
    metrics: Metrics,
) -> Addr<StorageActor> {
    Supervisor::start_in_arbiter(arbiter, move |_| {
        StorageActor::new(settings, streams, indicator_names, store, stats, tracker, metrics)
    })
}

/// What every stream's actors are linked to.
#[derive(Clone)]
pub struct StreamWiring {
    pub storage: Mailbox<StorageActor>,
    /// Where in-progress updates wait for storage (the same as storage's [`StorageSettings::in_progress`]).
    pub in_progress: InProgressUpdates,
    pub backfill: Mailbox<BackfillActor>,
    pub board: ProvisionalBoard,
    pub clock: Arc<ExchangeClock>,
    pub metrics: Metrics,
}

/// Where a stream's subscription starts from.
pub struct StreamStart {
    /// The newest closed candle stored, if any.
    pub last_stored: Option<i64>,
    /// Load the history before repairing (see [`SubscriptionLinks::load_history`]).
    pub load_history: bool,
    /// Told when the history has landed.
    pub history: Option<Recipient<HistoryLanded>>,
    pub health: Arc<StreamHealth>,
}

impl StreamWiring {
    pub fn start_indicator(
        &self,
        id: StreamId,
        key: &StreamKey,
        config: &IndicatorConfig,
        stats: &Arc<TaskStats>,
    ) -> Addr<IndicatorActor> {
        IndicatorActor::new(id, key.clone(), config, self.storage.clone(), self.board.clone(), stats.clone()).start()
    }

    pub fn start_subscription(
        &self,
        id: StreamId,
        start: StreamStart,
        settings: SubscriptionSettings,
        indicator: &Mailbox<IndicatorActor>,
        stats: &Arc<TaskStats>,
    ) -> Addr<SubscriptionActor> {
        let links = SubscriptionLinks {
            load_history: start.load_history && settings.history > 0,
            storage: self.storage.clone(),
            in_progress: self.in_progress.clone(),
            indicator: indicator.clone(),
            backfill: self.backfill.clone(),
            history: start.history,
            stats: stats.clone(),
            health: start.health,
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
        };
        SubscriptionActor::new(id, start.last_stored, settings, links).start()
    }
}
