//! The history task: a run-once task that loads the configured number of closed candles for every stream at
//! start-up, so the table and the indicators start warm. It must finish within its timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::Mailbox;
use crate::actors::backfill::{BackfillActor, FetchKlines, FetchStart};
use crate::actors::subscription::{BackfillPurpose, Backfilled, SubscriptionActor};
use crate::domain::{StreamId, StreamKey};
use crate::tasks::{TaskState, TaskStats};

/// One stream to load: its key, subscription and newest stored closed candle.
pub struct HistoryStream {
    pub stream: StreamId,
    pub key: StreamKey,
    pub last_stored_closed: Option<i64>,
    pub subscription: Mailbox<SubscriptionActor>,
}

pub struct HistoryActor {
    count: u32,
    timeout: Duration,
    pending: HashMap<StreamId, HistoryStream>,
    backfill: Mailbox<BackfillActor>,
    stats: Arc<TaskStats>,
    started_at: Instant,
    loaded: usize,
    /// Streams whose history fetch failed (their subscriptions retry it).
    failed: usize,
}

impl HistoryActor {
    pub fn new(
        count: u32,
        timeout: Duration,
        streams: Vec<HistoryStream>,
        backfill: Mailbox<BackfillActor>,
        stats: Arc<TaskStats>,
    ) -> Self {
        let pending = streams.into_iter().map(|s| (s.stream, s)).collect();
        Self { count, timeout, pending, backfill, stats, started_at: Instant::now(), loaded: 0, failed: 0 }
    }
}

impl Actor for HistoryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.stats.set_state(TaskState::Running);
        self.started_at = Instant::now();
        for stream in self.pending.values() {
            self.backfill.do_send(FetchKlines {
                stream: stream.stream,
                key: stream.key.clone(),
                start: FetchStart::History { count: self.count, after: stream.last_stored_closed },
                purpose: BackfillPurpose::History,
                reply: ctx.address().recipient(),
            });
        }
        ctx.run_later(self.timeout, |act, _ctx| {
            if act.pending.is_empty() {
                return;
            }
            let missing: Vec<String> = act.pending.values().map(|s| s.key.to_string()).collect();
            log::error!(
                "History load did not finish within {}s; still loading: {}. It lands when it arrives.",
                act.timeout.as_secs(),
                missing.join(", ")
            );
            act.stats.set_state(TaskState::Failed);
        });
    }
}

impl Handler<Backfilled> for HistoryActor {
    type Result = ();

    fn handle(&mut self, msg: Backfilled, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        let Some(stream) = self.pending.remove(&msg.stream) else { return };
        match &msg.error {
            Some(error) => {
                // The subscription retries it on its own; this run-once task has failed.
                log::warn!("History of {} failed, its subscription retries: {error}", stream.key);
                self.failed += 1;
            }
            None => self.loaded += msg.candles.len(),
        }
        stream.subscription.do_send(msg);
        if self.pending.is_empty() {
            let elapsed = self.started_at.elapsed();
            log::info!("Loaded {} history candle(s) in {} ms", self.loaded, elapsed.as_millis());
            if self.failed == 0 && elapsed <= self.timeout {
                self.stats.set_state(TaskState::Finished);
            } else {
                self.stats.set_state(TaskState::Failed);
            }
            ctx.stop();
        }
    }
}
