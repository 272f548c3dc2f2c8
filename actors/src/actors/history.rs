//! The history task: a run-once task that follows every stream's start-up history load (each subscription fetches
//! its own) until all have landed. Its state follows the truth: `failed` while a load has failed or the timeout has
//! passed, and `finished` once every stream's history has landed, however late.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::messages::HistoryLanded;
use crate::domain::StreamId;
use crate::tasks::{TaskState, TaskStats};

/// These streams were removed from the config: their history is no longer waited for.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StreamsRemoved(pub Vec<StreamId>);

pub struct HistoryActor {
    timeout: Duration,
    pending: HashSet<StreamId>,
    streams: usize,
    stats: Arc<TaskStats>,
    started_at: Instant,
    /// Candles loaded for streams with nothing stored, and caught up for streams stored by an earlier run.
    loaded: usize,
    caught_up: usize,
}

impl HistoryActor {
    pub fn new(timeout: Duration, streams: impl IntoIterator<Item = StreamId>, stats: Arc<TaskStats>) -> Self {
        let pending: HashSet<StreamId> = streams.into_iter().collect();
        let streams = pending.len();
        Self { timeout, pending, streams, stats, started_at: Instant::now(), loaded: 0, caught_up: 0 }
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        let elapsed = self.started_at.elapsed().as_millis();
        let late = self.stats.state() == TaskState::Failed;
        log::info!(
            "History: loaded {} candle(s) and caught up {} candle(s) since the last run, for {} stream(s), in {elapsed} \
             ms{}",
            self.loaded,
            self.caught_up,
            self.streams,
            if late { "; every stream's history has landed after all, the history task is finished" } else { "" }
        );
        self.stats.set_state(TaskState::Finished);
        ctx.stop();
    }
}

impl Actor for HistoryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.started_at = Instant::now();
        if self.pending.is_empty() {
            return self.finish(ctx);
        }
        self.stats.set_state(TaskState::Running);
        ctx.run_later(self.timeout, |act, _ctx| {
            if act.pending.is_empty() {
                return;
            }
            let error = format!(
                "the history of {} stream(s) did not land within {}s; it lands when it arrives",
                act.pending.len(),
                act.timeout.as_secs()
            );
            log::error!("History: {error}");
            act.stats.fail(error);
        });
    }
}

impl Handler<HistoryLanded> for HistoryActor {
    type Result = ();

    fn handle(&mut self, msg: HistoryLanded, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        match msg.outcome {
            // The stream retries on its own (or has failed for good, and says so on its own task).
            Err(error) => self.stats.fail(error.to_string()),
            Ok(candles) => {
                if !self.pending.remove(&msg.stream) {
                    return;
                }
                if msg.caught_up {
                    self.caught_up += candles
                } else {
                    self.loaded += candles
                }
                if self.pending.is_empty() {
                    self.finish(ctx);
                }
            }
        }
    }
}

impl Handler<StreamsRemoved> for HistoryActor {
    type Result = ();

    fn handle(&mut self, StreamsRemoved(streams): StreamsRemoved, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        let waited = self.pending.len();
        for stream in streams {
            self.pending.remove(&stream);
        }
        if waited > 0 && self.pending.is_empty() {
            self.finish(ctx);
        }
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::Inject> for HistoryActor {
    type Result = ();

    fn handle(&mut self, fault: crate::fault_injection::Inject, ctx: &mut Context<Self>) {
        fault.apply::<Self>("history", ctx);
    }
}
