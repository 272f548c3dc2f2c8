//! The backfill actor: fetches closed candles over REST for history loads, repairs, audits and re-checks, a few at
//! a time, under the REST client's shared weight budget.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::messages::{BackfillPurpose, Backfilled, FetchRange, Retire};
use crate::domain::{StreamId, StreamKey};
use crate::rest::{FetchError, RestClient};
use crate::tasks::{TaskState, TaskStats};

/// Fetch the closed candles of `key` in `range`, and send them to `reply`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct FetchKlines {
    pub stream: StreamId,
    pub key: StreamKey,
    pub range: FetchRange,
    pub purpose: BackfillPurpose,
    pub reply: Recipient<Backfilled>,
}

pub struct BackfillActor {
    client: RestClient,
    queue: VecDeque<FetchKlines>,
    in_flight: usize,
    max_in_flight: usize,
    stats: Arc<TaskStats>,
}

impl BackfillActor {
    pub fn new(client: RestClient, max_in_flight: usize, stats: Arc<TaskStats>) -> Self {
        Self { client, queue: VecDeque::new(), in_flight: 0, max_in_flight: max_in_flight.max(1), stats }
    }

    fn start_next(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight < self.max_in_flight {
            let Some(job) = self.queue.pop_front() else { return };
            self.in_flight += 1;
            let client = self.client.clone();
            let (key, range) = (job.key.clone(), job.range);
            let fetch = async move { client.fetch_range(&key, range).await };
            ctx.spawn(fetch.into_actor(self).map(move |result, act, ctx| {
                act.in_flight -= 1;
                let reply = match result {
                    Ok(found) => Backfilled {
                        stream: job.stream,
                        purpose: job.purpose,
                        range: job.range,
                        candles: found.candles,
                        through_open: found.through_open,
                        exchange_gaps: found.exchange_gaps,
                        error: None,
                    },
                    Err(error) => {
                        let error = FetchError::from(error);
                        act.stats.record_error(format!("{} {}: {error}", job.key, job.purpose.describe()));
                        Backfilled::failed(job.stream, job.purpose, job.range, error)
                    }
                };
                job.reply.do_send(reply);
                act.start_next(ctx);
            }));
        }
    }
}

impl Actor for BackfillActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.stats.set_state(TaskState::Running);
    }
}

impl Handler<FetchKlines> for BackfillActor {
    type Result = ();

    fn handle(&mut self, msg: FetchKlines, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        self.queue.push_back(msg);
        self.start_next(ctx);
    }
}

impl Handler<Retire> for BackfillActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        ctx.stop();
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::Inject> for BackfillActor {
    type Result = ();

    fn handle(&mut self, fault: crate::fault_injection::Inject, ctx: &mut Context<Self>) {
        fault.apply::<Self>("backfill", ctx);
    }
}
