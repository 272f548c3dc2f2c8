//! The storage actor: coalesces candle writes and commits them to SQLite in batches, by size and by time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actors::MAILBOX_CAPACITY;
use crate::domain::{Candle, StreamId, StreamKey};
use crate::metrics::Metrics;
use crate::store::{CandleStore, StoreError};
use crate::tasks::{RestartDecision, RestartTracker, TaskState, TaskStats};

/// Store one candle (in progress or closed).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StoreCandle {
    pub stream: StreamId,
    pub candle: Candle,
    /// `E` of the update that carried it, ms UTC: feeds the event-to-commit latency histogram.
    pub event_time: Option<i64>,
}

/// Store closed candles fetched over REST.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StoreCandles {
    pub stream: StreamId,
    pub candles: Vec<Candle>,
}

/// Commit everything pending now. Answers once it is durable (or why not).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), String>")]
pub struct Flush;

/// How the storage actor batches.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub path: PathBuf,
    /// Commit as soon as this many rows are pending.
    pub batch_size: usize,
    /// Commit at least this often while rows are pending.
    pub flush_interval: Duration,
}

/// Pending writes, coalesced per (stream, open time): a closed candle is never replaced by an in-progress one.
/// Each row keeps the event time of the update it holds, if known.
#[derive(Debug, Default)]
pub struct PendingWrites {
    rows: HashMap<(StreamId, i64), (Candle, Option<i64>)>,
}

impl PendingWrites {
    pub fn push(&mut self, stream: StreamId, candle: Candle) {
        self.push_timed(stream, candle, None);
    }

    /// Like `push`, remembering the event time of the update that carried `candle`.
    pub fn push_timed(&mut self, stream: StreamId, candle: Candle, event_time: Option<i64>) {
        let slot = self.rows.entry((stream, candle.open_time)).or_insert((candle, event_time));
        if candle.is_closed || !slot.0.is_closed {
            *slot = (candle, event_time);
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Takes every pending row, ordered by key so a batch walks the primary key in order.
    pub fn take(&mut self) -> Vec<(StreamId, Candle)> {
        self.take_timed().0
    }

    /// Like `take`, with each row's event time beside it (same order).
    pub fn take_timed(&mut self) -> (Vec<(StreamId, Candle)>, Vec<Option<i64>>) {
        let mut rows: Vec<_> = self.rows.drain().map(|((stream, _), (candle, at))| (stream, candle, at)).collect();
        rows.sort_unstable_by_key(|(stream, candle, _)| (*stream, candle.open_time));
        rows.into_iter().map(|(stream, candle, at)| ((stream, candle), at)).unzip()
    }

    /// Puts back rows whose commit failed, without overwriting anything newer that arrived meanwhile.
    pub fn restore(&mut self, rows: Vec<(StreamId, Candle)>) {
        for (stream, candle) in rows {
            match self.rows.get(&(stream, candle.open_time)) {
                Some((newer, _)) if newer.is_closed || !candle.is_closed => {}
                _ => {
                    self.rows.insert((stream, candle.open_time), (candle, None));
                }
            }
        }
    }
}

/// Owns the writing SQLite connection. Runs on its own arbiter: its handlers block on SQLite.
pub struct StorageActor {
    settings: StorageSettings,
    streams: Arc<[StreamKey]>,
    store: Option<CandleStore>,
    pending: PendingWrites,
    stats: Arc<TaskStats>,
    restarts: RestartTracker,
    restart_delay: Duration,
    failed: bool,
    metrics: Metrics,
}

impl StorageActor {
    pub fn new(
        settings: StorageSettings,
        streams: Arc<[StreamKey]>,
        store: CandleStore,
        stats: Arc<TaskStats>,
        restarts: RestartTracker,
        metrics: Metrics,
    ) -> Self {
        Self {
            settings,
            streams,
            store: Some(store),
            pending: PendingWrites::default(),
            stats,
            restarts,
            restart_delay: Duration::ZERO,
            failed: false,
            metrics,
        }
    }

    /// Commits everything pending. On failure the rows stay pending, to be written after the restart.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let store = match self.store.take() {
            Some(store) => store,
            None => CandleStore::open(&self.settings.path)?,
        };
        let store = self.store.insert(store);
        let (rows, event_times) = self.pending.take_timed();
        match store.write_candles(&self.streams, &rows) {
            Ok(_) => {
                self.metrics.observe_event_to_commit(
                    rows.iter().zip(&event_times).filter_map(|((_, c), at)| Some((c.is_closed, (*at)?))),
                );
                let closed = rows.iter().filter(|(_, c)| c.is_closed).count() as u64;
                self.metrics.candles_written.with_label_values(&["closed"]).inc_by(closed);
                self.metrics.candles_written.with_label_values(&["in_progress"]).inc_by(rows.len() as u64 - closed);
                self.restarts.on_healthy();
                Ok(())
            }
            Err(error) => {
                self.store = None;
                self.pending.restore(rows);
                Err(error)
            }
        }
    }

    fn flush_or_restart(&mut self, ctx: &mut Context<Self>) {
        if let Err(error) = self.flush() {
            log::error!("storage: commit of {} rows failed, restarting: {error}", self.pending.len());
            ctx.stop();
        }
    }

    fn accept(&mut self, stream: StreamId, candle: Candle, event_time: Option<i64>, ctx: &mut Context<Self>) {
        self.pending.push_timed(stream, candle, event_time);
        if self.pending.len() >= self.settings.batch_size {
            self.flush_or_restart(ctx);
        }
    }
}

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let resume = self.restart_delay;
        ctx.run_later(resume, |act, ctx| {
            act.stats.set_state(TaskState::Running);
            act.flush_or_restart(ctx);
            ctx.run_interval(act.settings.flush_interval, |act, ctx| act.flush_or_restart(ctx));
        });
    }
}

impl Supervised for StorageActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.stats.record_restart();
        match self.restarts.on_stop(Instant::now()) {
            RestartDecision::RestartAfter(delay) => self.restart_delay = delay,
            RestartDecision::GiveUp => {
                self.failed = true;
                self.stats.set_state(TaskState::Failed);
            }
        }
    }
}

impl Handler<StoreCandle> for StorageActor {
    type Result = ();

    fn handle(&mut self, msg: StoreCandle, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        self.accept(msg.stream, msg.candle, msg.event_time, ctx);
    }
}

impl Handler<StoreCandles> for StorageActor {
    type Result = ();

    fn handle(&mut self, msg: StoreCandles, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        for candle in msg.candles {
            self.accept(msg.stream, candle, None, ctx);
        }
    }
}

impl Handler<Flush> for StorageActor {
    type Result = Result<(), String>;

    fn handle(&mut self, _: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        self.stats.record_handled();
        let pending = self.pending.len();
        self.flush().map_err(|error| format!("flush of {pending} rows failed: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(open_time: i64, close: f64, is_closed: bool) -> Candle {
        Candle {
            open_time,
            close_time: open_time + 59_999,
            open: 1.0,
            high: 3.0,
            low: 1.0,
            close,
            volume: 1.0,
            quote_volume: 1.0,
            trades: 1,
            taker_buy_base: 0.0,
            taker_buy_quote: 0.0,
            is_closed,
        }
    }

    #[test]
    fn pending_writes_coalesce_to_the_latest_and_keep_closed_final() {
        let mut pending = PendingWrites::default();
        let s = StreamId(0);
        pending.push(s, candle(0, 1.5, false));
        pending.push(s, candle(0, 2.0, false));
        pending.push(s, candle(60_000, 1.0, false));
        assert_eq!(pending.len(), 2);
        pending.push(s, candle(0, 2.5, true));
        // A stale in-progress update does not replace the closed candle.
        pending.push(s, candle(0, 1.2, false));
        assert_eq!(pending.take(), [(s, candle(0, 2.5, true)), (s, candle(60_000, 1.0, false))]);
        assert!(pending.is_empty());
    }

    #[test]
    fn pending_writes_keep_the_event_time_of_the_update_they_hold() {
        let mut pending = PendingWrites::default();
        let s = StreamId(0);
        pending.push_timed(s, candle(0, 1.5, false), Some(10));
        pending.push_timed(s, candle(0, 2.5, true), Some(20));
        // A stale in-progress update changes neither the row nor its event time.
        pending.push_timed(s, candle(0, 1.2, false), Some(30));
        pending.push(s, candle(60_000, 1.0, false));
        let (rows, times) = pending.take_timed();
        assert_eq!(rows, [(s, candle(0, 2.5, true)), (s, candle(60_000, 1.0, false))]);
        assert_eq!(times, [Some(20), None]);
    }

    #[test]
    fn restored_rows_never_overwrite_newer_pending_ones() {
        let mut pending = PendingWrites::default();
        let s = StreamId(0);
        pending.push(s, candle(0, 2.5, true));
        pending.restore(vec![(s, candle(0, 1.0, false)), (s, candle(60_000, 1.0, true))]);
        assert_eq!(pending.take(), [(s, candle(0, 2.5, true)), (s, candle(60_000, 1.0, true))]);
    }
}
