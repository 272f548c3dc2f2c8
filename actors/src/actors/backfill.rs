//! The backfill actor: fetches closed candles over REST for history loads and repairs, a few at a time, under the
//! REST client's shared weight budget.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::subscription::{BackfillPurpose, Backfilled};
use crate::domain::{StreamId, StreamKey};
use crate::rest::{ClosedRange, RestClient, RestError, history_start};
use crate::tasks::{TaskState, TaskStats};

/// Where a fetch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStart {
    /// At this open time.
    From(i64),
    /// Everything after `after` (the newest closed candle already stored), however old; or, with nothing stored,
    /// the last `count` closed candles.
    History { count: u32, after: Option<i64> },
}

/// Fetch every closed candle of `key` from `start` to the exchange's present, and send them to `reply`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct FetchKlines {
    pub stream: StreamId,
    pub key: StreamKey,
    pub start: FetchStart,
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
            let (key, start) = (job.key.clone(), job.start);
            let fetch = async move { fetch(&client, &key, start).await };
            ctx.spawn(fetch.into_actor(self).map(move |result, act, ctx| {
                act.in_flight -= 1;
                let reply = match result {
                    Ok(range) => Backfilled {
                        stream: job.stream,
                        purpose: job.purpose,
                        candles: range.candles,
                        through_open: range.through_open,
                        exchange_gaps: range.exchange_gaps,
                        error: None,
                    },
                    Err(error) => Backfilled::failed(job.stream, job.purpose, error.to_string()),
                };
                job.reply.do_send(reply);
                act.start_next(ctx);
            }));
        }
    }
}

/// One fetch: the exchange's clock is asked once, and decides both where a history starts and which rows are closed.
async fn fetch(client: &RestClient, key: &StreamKey, start: FetchStart) -> Result<ClosedRange, RestError> {
    let server_time = client.server_time().await?;
    let from = match start {
        FetchStart::From(open) => open,
        FetchStart::History { after: Some(after), .. } => key.timeframe.next_open(after),
        FetchStart::History { count, after: None } => history_start(key, server_time, count),
    };
    client.closed_since(key, from, server_time).await
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
