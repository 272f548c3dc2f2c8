//! The storage actor: coalesces candle and indicator writes and commits them to the store (the config's
//! [`StoreBackend`]) in batches (candles, then the indicator values pending with them, in one transaction), by size
//! and by time. It also serves the closed candles an indicator rebuild replays, after committing everything sent
//! before. It notices when its SQLite file is deleted or replaced underneath it, and then restarts on a fresh
//! database at the same path. While the store is unreachable for a while (a database server restarting), it keeps
//! every pending row, retries with back-off and reports itself degraded, without restarting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::broadcast;

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::messages::Retire;
use crate::domain::{Backoff, BackoffPolicy, Candle, Gap, StreamId, StreamKey};
use crate::hub::{ClosedCandle, Hub};
use crate::indicators::IndicatorValue;
use crate::metrics::Metrics;
use crate::registry::StreamRegistry;
use crate::store::{IndicatorRow, Store, StoreBackend, StoreError};
use crate::tasks::{RestartTracker, TaskState, TaskStats};

/// Store one candle (in progress or closed).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StoreCandle {
    pub stream: StreamId,
    pub candle: Candle,
    /// `E` of the update that carried it, ms UTC, if it came live: feeds the event-to-commit latency histogram.
    pub event_time: Option<i64>,
}

/// Store closed candles fetched over REST.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StoreCandles {
    pub stream: StreamId,
    pub candles: Vec<Candle>,
}

/// Store indicator values of one stream: each is the value of one output on the closed candle opened at the time.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StoreIndicators {
    pub stream: StreamId,
    pub values: Vec<(i64, IndicatorValue)>,
    /// The live closed candle these values were computed on (they all open at its time): once they are committed,
    /// it goes to the hub's subscribers with them. `None` for a rebuild's values.
    pub closed: Option<Candle>,
}

/// Every closed candle stored for a stream, oldest first, after committing everything sent before this message.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Vec<Candle>, StoreError>")]
pub struct LoadClosedCandles {
    pub stream: StreamId,
}

/// Record ranges the exchange confirmed it has no candles for, so that no later run fetches them again.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RecordExchangeGaps {
    pub stream: StreamId,
    pub gaps: Vec<Gap>,
}

/// The indicator set changed: commit what is pending under the old output names, then name outputs by `names`.
/// Send it once the old set's indicator actors have stopped, and before the new ones start.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetIndicatorNames(pub Arc<[String]>);

/// Commit everything pending now. Answers once it is durable (or why not).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Flush;

/// Shutdown: commit everything pending and close the store durably (SQLite: fold the WAL into the main database
/// file, so that the `.db` file alone holds every candle).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Close;

/// How often the storage actor checks, between commits, that its file is still the one at the path.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the storage actor writes, and how it batches.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub backend: StoreBackend,
    /// Commit as soon as this many rows are pending.
    pub batch_size: usize,
    /// Commit at least this often while rows are pending.
    pub flush_interval: Duration,
    /// Where every commit's candles are published (the dashboard's server-sent events).
    pub committed: CommittedCandles,
    /// The waits between attempts while the store is unreachable (see [`StoreError::is_transient`]).
    pub retry: BackoffPolicy,
}

/// What the storage actor does after a failed commit or check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// The store is unreachable for now: keep the pending rows, stay up (degraded), and try again after the delay.
    /// Nothing is lost and no restart is spent.
    RetryAfter(Duration),
    /// Restart the actor (the restart policy counts it); the rows stay pending.
    Restart,
}

/// The retries of an unreachable store: the back-off, and when the next attempt is due.
#[derive(Debug, Clone)]
pub struct StoreRetry {
    backoff: Backoff,
    /// When the next commit may be attempted; `None` while the store answers.
    next_attempt: Option<Instant>,
}

impl StoreRetry {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self { backoff: Backoff::new(policy), next_attempt: None }
    }

    /// The decision after a failure at `now`: a transient one ([`StoreError::is_transient`]) waits for the next
    /// back-off delay, any other restarts.
    pub fn after_failure(&mut self, transient: bool, now: Instant) -> AfterFailure {
        if !transient {
            return AfterFailure::Restart;
        }
        let delay = self.backoff.next_delay();
        self.next_attempt = Some(now + delay);
        AfterFailure::RetryAfter(delay)
    }

    /// Whether commits wait at `now` for the next attempt.
    pub fn waiting(&self, now: Instant) -> bool {
        self.next_attempt.is_some_and(|at| now < at)
    }

    /// Whether an outage is under way (a transient failure and no success since).
    pub fn in_outage(&self) -> bool {
        self.next_attempt.is_some()
    }

    /// The store answered: the next outage backs off from the start. Returns the failed attempts of the outage that
    /// just ended, if one had.
    pub fn on_success(&mut self) -> Option<u32> {
        let failures = self.backoff.failures();
        self.backoff.reset();
        self.next_attempt.take().map(|_| failures)
    }
}

/// A candle as it was just committed, in progress or closed.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedCandle {
    pub key: StreamKey,
    pub candle: Candle,
}

/// The candles of one commit, in key order.
pub type CommitBatch = Arc<[CommittedCandle]>;

/// Commit batches held for a listener that has not read them yet; one more and it loses the oldest.
const COMMITTED_BACKLOG: usize = 256;

/// Publishes every commit's candles to whoever listens, after the commit. Cheap to clone: every clone shares one
/// channel. A broadcast channel: the storage actor never waits for a listener; a listener more than
/// [`COMMITTED_BACKLOG`] commits behind loses the oldest and is told how many it missed. Nothing is built while
/// nobody listens. Live closed candles also go to the [`Hub`], with their indicator values, once both are committed.
#[derive(Debug, Clone)]
pub struct CommittedCandles(broadcast::Sender<CommitBatch>, Hub);

impl Default for CommittedCandles {
    fn default() -> Self {
        Self::with_hub(Hub::default())
    }
}

impl CommittedCandles {
    /// Publishing to `hub` too.
    pub fn with_hub(hub: Hub) -> Self {
        Self(broadcast::Sender::new(COMMITTED_BACKLOG), hub)
    }

    /// The commits from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CommitBatch> {
        self.0.subscribe()
    }

    /// Hands committed closed candles and their values to the hub's subscribers of their streams.
    fn publish_closed(&self, streams: &StreamRegistry, names: &Arc<[String]>, closed: Vec<ClosedWithValues>) {
        for (stream, candle, values) in closed {
            let Some(key) = streams.key(stream) else { continue };
            self.1.publish_closed(ClosedCandle { key, candle, names: names.clone(), values });
        }
    }

    fn publish(&self, streams: &StreamRegistry, candles: &[(StreamId, Candle)]) {
        if self.0.receiver_count() == 0 || candles.is_empty() {
            return;
        }
        let batch: CommitBatch = streams.with_keys(|keys| {
            let keyed = candles.iter().filter_map(|(id, candle)| Some((keys.get(id.0 as usize)?, candle)));
            keyed.map(|(key, &candle)| CommittedCandle { key: key.clone(), candle }).collect()
        });
        // Fails only when the last listener left meanwhile.
        let _ = self.0.send(batch);
    }
}

/// Pending writes, coalesced per (stream, open time): a closed candle is never replaced by an in-progress one.
/// Indicator values are kept per (stream, open time), the store's indicator row, then per output: the latest value
/// wins.
#[derive(Debug, Default)]
pub struct PendingWrites {
    /// Each candle with the event time of the update it holds, if known.
    rows: HashMap<(StreamId, i64), (Candle, Option<i64>)>,
    /// The values of each candle's indicator row, by output (a handful each: searched in order).
    indicators: HashMap<(StreamId, i64), Vec<(u16, f64)>>,
    /// Live closed candles whose values are pending: published to the hub once committed.
    closed: Vec<ClosedWithValues>,
}

/// A live closed candle of a stream and the indicator values computed on it.
pub type ClosedWithValues = (StreamId, Candle, Vec<IndicatorValue>);

/// One batch taken from [`PendingWrites`], ordered by key so a batch walks the primary keys in order.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    pub candles: Vec<(StreamId, Candle)>,
    /// The event time of each of `candles`, in the same order.
    pub event_times: Vec<Option<i64>>,
    pub indicators: Vec<IndicatorRow>,
    /// Published to the hub once this batch is committed.
    pub closed: Vec<ClosedWithValues>,
}

impl PendingWrites {
    pub fn push(&mut self, stream: StreamId, candle: Candle, event_time: Option<i64>) {
        let slot = self.rows.entry((stream, candle.open_time)).or_insert((candle, event_time));
        if candle.is_closed || !slot.0.is_closed {
            *slot = (candle, event_time);
        }
    }

    /// Queues one indicator value. A non-finite one is left out with a warning: SQLite would store NaN as NULL (no
    /// value), and PostgreSQL would store it as a value no reader expects.
    pub fn push_indicator(&mut self, stream: StreamId, open_time: i64, value: IndicatorValue) {
        if !value.value.is_finite() {
            log::warn!("storage: indicator output {} at {open_time} is {}; not stored", value.output, value.value);
            return;
        }
        let row = self.indicators.entry((stream, open_time)).or_default();
        match row.iter_mut().find(|(output, _)| *output == value.output) {
            Some(slot) => slot.1 = value.value,
            None => row.push((value.output, value.value)),
        }
    }

    /// Queues a live closed candle, to be published with its values once they are committed.
    pub fn push_closed(&mut self, stream: StreamId, candle: Candle, values: Vec<IndicatorValue>) {
        self.closed.push((stream, candle, values));
    }

    /// Drops the pending indicator values (their output numbers are about to mean other names).
    pub fn forget_indicators(&mut self) {
        self.indicators.clear();
        self.closed.clear();
    }

    /// Pending rows as the store writes them: candle rows and indicator rows (one per candle with values).
    pub fn len(&self) -> usize {
        self.rows.len() + self.indicators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.indicators.is_empty() && self.closed.is_empty()
    }

    /// Takes every pending row.
    pub fn take(&mut self) -> Batch {
        let mut rows: Vec<_> = self.rows.drain().map(|((stream, _), (candle, at))| ((stream, candle), at)).collect();
        rows.sort_unstable_by_key(|((stream, candle), _)| (*stream, candle.open_time));
        let (candles, event_times) = rows.into_iter().unzip();
        let mut by_candle: Vec<_> = self.indicators.drain().collect();
        by_candle.sort_unstable_by_key(|(key, _)| *key);
        let mut indicators = Vec::with_capacity(by_candle.iter().map(|(_, values)| values.len()).sum());
        for ((stream, open_time), mut values) in by_candle {
            values.sort_unstable_by_key(|(output, _)| *output);
            indicators.extend(values.into_iter().map(|(output, value)| IndicatorRow {
                stream,
                open_time,
                output,
                value,
            }));
        }
        Batch { candles, event_times, indicators, closed: std::mem::take(&mut self.closed) }
    }

    /// Puts back rows whose commit failed, without overwriting anything newer that arrived meanwhile.
    pub fn restore(&mut self, batch: Batch) {
        for (stream, candle) in batch.candles {
            match self.rows.get(&(stream, candle.open_time)) {
                Some((newer, _)) if newer.is_closed || !candle.is_closed => {}
                _ => {
                    self.rows.insert((stream, candle.open_time), (candle, None));
                }
            }
        }
        for row in batch.indicators {
            let values = self.indicators.entry((row.stream, row.open_time)).or_default();
            if !values.iter().any(|(output, _)| *output == row.output) {
                values.push((row.output, row.value));
            }
        }
        let newer = std::mem::replace(&mut self.closed, batch.closed);
        self.closed.extend(newer);
    }
}

/// Owns the writing store connection. Runs on its own arbiter: its handlers block on the store.
pub struct StorageActor {
    settings: StorageSettings,
    /// Resolves the [`StreamId`]s of the writes.
    streams: StreamRegistry,
    /// The indicator output names ([`crate::indicators::IndicatorSet::names`]); `IndicatorValue::output` indexes it.
    indicator_names: Arc<[String]>,
    store: Option<Box<dyn Store>>,
    pending: PendingWrites,
    retry: StoreRetry,
    stats: Arc<TaskStats>,
    restarts: RestartTracker,
    metrics: Metrics,
    /// An injected outage ([`crate::fault_injection::Fault::Unreachable`]): commits fail as transient until then.
    #[cfg(feature = "fault-injection")]
    unreachable_until: Option<Instant>,
}

impl StorageActor {
    pub fn new(
        settings: StorageSettings,
        streams: StreamRegistry,
        indicator_names: Arc<[String]>,
        store: Box<dyn Store>,
        stats: Arc<TaskStats>,
        restarts: RestartTracker,
        metrics: Metrics,
    ) -> Self {
        Self {
            retry: StoreRetry::new(settings.retry),
            settings,
            streams,
            indicator_names,
            store: Some(store),
            pending: PendingWrites::default(),
            stats,
            restarts,
            metrics,
            #[cfg(feature = "fault-injection")]
            unreachable_until: None,
        }
    }

    /// The open connection, reopened after a failure.
    fn store(&mut self) -> Result<&mut dyn Store, StoreError> {
        let store = match self.store.take() {
            Some(store) => store,
            None => self.settings.backend.open_writer()?,
        };
        Ok(self.store.insert(store).as_mut())
    }

    /// The open connection, if its file is still the one at the path. When it is not (deleted, or replaced by
    /// another file), logs it once, counts it, and closes the connection, so that the next use opens the file now at
    /// the path (a fresh one if none is there). The pending rows stay pending.
    fn checked_store(&mut self) -> Result<&mut dyn Store, StoreError> {
        let Err(error) = self.store()?.check() else { return self.store() };
        if let (StoreError::FileChanged { .. }, Some(mut lost)) = (&error, self.store.take()) {
            self.metrics.storage_reopened.inc();
            log::error!(
                "storage: {error}; reopening the database at that path, keeping {} pending row(s)",
                self.pending.len()
            );
            // SQLite does not fold the WAL of a moved file in on close, and leaves it at the path, where opening the
            // file that replaced it would read it as that file's WAL. Emptied, it is harmless.
            if let Err(checkpoint) = lost.close() {
                log::warn!("storage: cannot empty the WAL of the lost database file: {checkpoint}");
            }
        }
        self.store = None;
        Err(error)
    }

    /// Commits everything pending. On failure the rows stay pending, to be written after the restart.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.checked_store()?;
        if self.pending.is_empty() {
            self.store_answered();
            return Ok(());
        }
        let batch = self.pending.take();
        let (streams, names) = (self.streams.clone(), self.indicator_names.clone());
        let started = Instant::now();
        let result = self.store().and_then(|store| {
            streams.with_keys(|keys| store.write_batch(keys, &names, &batch.candles, &batch.indicators))
        });
        match result {
            Ok(_) => {
                self.metrics.observe_commit(started.elapsed(), batch.candles.len());
                self.count_closed_per_stream(&batch.candles);
                let closed = batch.candles.iter().filter(|(_, c)| c.is_closed).count() as u64;
                let in_progress = batch.candles.len() as u64 - closed;
                self.metrics.candles_written.with_label_values(&["closed"]).inc_by(closed);
                self.metrics.candles_written.with_label_values(&["in_progress"]).inc_by(in_progress);
                let timed = batch.candles.iter().zip(&batch.event_times);
                self.metrics.observe_event_to_commit(timed.filter_map(|((_, c), at)| Some((c.is_closed, (*at)?))));
                self.settings.committed.publish(&self.streams, &batch.candles);
                self.settings.committed.publish_closed(&self.streams, &self.indicator_names, batch.closed);
                self.restarts.on_healthy();
                self.store_answered();
                Ok(())
            }
            Err(error) => {
                self.store = None;
                self.pending.restore(batch);
                Err(error)
            }
        }
    }

    /// Adds a committed batch's closed candles to their streams' `candled_stream_candles_written_total`.
    fn count_closed_per_stream(&self, candles: &[(StreamId, Candle)]) {
        if !self.metrics.per_stream() {
            return;
        }
        let mut closed: HashMap<StreamId, u64> = HashMap::new();
        for (stream, _) in candles.iter().filter(|(_, c)| c.is_closed) {
            *closed.entry(*stream).or_default() += 1;
        }
        for (stream, count) in closed {
            if let Some(key) = self.streams.key(stream) {
                self.metrics.stream_candles_written(&key).inc_by(count);
            }
        }
    }

    /// Commits what is pending, then reads the stream's closed candles.
    fn load_closed(&mut self, stream: StreamId) -> Result<Vec<Candle>, StoreError> {
        self.flush()?;
        let key = self.streams.key(stream).ok_or(StoreError::UnknownStream(stream))?;
        self.store()?.closed_candles(&key.symbol, key.timeframe)
    }

    /// Commits what is pending, unless an unreachable store's next attempt is not due yet.
    fn flush_or_restart(&mut self, ctx: &mut Context<Self>) {
        if self.retry.waiting(Instant::now()) {
            return;
        }
        #[cfg(feature = "fault-injection")]
        if self.unreachable_until.is_some_and(|until| Instant::now() < until) {
            if let AfterFailure::RetryAfter(delay) = self.retry.after_failure(true, Instant::now()) {
                self.degraded(&"an injected outage", delay);
            }
            return;
        }
        if let Err(error) = self.flush() {
            self.failed(&error, ctx);
        }
    }

    /// After a failed commit or check: a transient failure (the store unreachable for now) keeps the rows pending
    /// and is retried with back-off, the task degraded meanwhile; any other restarts the actor.
    fn failed(&mut self, error: &StoreError, ctx: &mut Context<Self>) {
        match self.retry.after_failure(error.is_transient(), Instant::now()) {
            AfterFailure::RetryAfter(delay) => self.degraded(error, delay),
            AfterFailure::Restart => self.restart(error, ctx),
        }
    }

    /// The store is unreachable for now (`why`): the rows stay pending, the task is degraded, and the next commit
    /// waits `delay`.
    fn degraded(&mut self, why: &dyn std::fmt::Display, delay: Duration) {
        if self.stats.state() != TaskState::Degraded {
            log::warn!(
                "storage: {} is unreachable ({why}); keeping {} pending row(s) and retrying with back-off",
                self.settings.backend.describe(),
                self.pending.len()
            );
            self.stats.set_state(TaskState::Degraded);
        } else {
            log::debug!("storage: still unreachable ({why}); next attempt in {} ms", delay.as_millis());
        }
        self.stats.record_error(format!("the store is unreachable, retrying: {why}"));
    }

    /// A commit or check succeeded: an outage under way is over.
    fn store_answered(&mut self) {
        if let Some(failures) = self.retry.on_success() {
            log::info!(
                "storage: {} answers again after {failures} failed attempt(s); nothing pending was lost",
                self.settings.backend.describe()
            );
            self.stats.set_state(TaskState::Running);
        }
    }

    /// Restarts after a failed commit or check: `/health` is 503 until the connection works again. A changed file
    /// was already logged.
    fn restart(&mut self, error: &StoreError, ctx: &mut Context<Self>) {
        if !matches!(error, StoreError::FileChanged { .. }) {
            log::error!("storage: commit of {} rows failed, restarting: {error}", self.pending.len());
        }
        ctx.stop();
    }

    fn accept(&mut self, stream: StreamId, candle: Candle, event_time: Option<i64>, ctx: &mut Context<Self>) {
        self.pending.push(stream, candle, event_time);
        self.flush_if_full(ctx);
    }

    fn flush_if_full(&mut self, ctx: &mut Context<Self>) {
        if self.pending.len() >= self.settings.batch_size {
            self.flush_or_restart(ctx);
        }
    }
}

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(resume) = self.restarts.resume_after() else { return };
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_later(resume, |act, ctx| {
            act.stats.set_state(TaskState::Running);
            act.flush_or_restart(ctx);
            ctx.run_interval(act.settings.flush_interval, |act, ctx| act.flush_or_restart(ctx));
            ctx.run_interval(FILE_CHECK_INTERVAL, |act, ctx| {
                // During an outage the retried commits do the checking.
                if act.retry.in_outage() {
                    return;
                }
                if let Err(error) = act.checked_store() {
                    act.failed(&error, ctx);
                }
            });
        });
    }
}

impl Supervised for StorageActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.restarts.restarting(&self.stats);
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

impl Handler<StoreIndicators> for StorageActor {
    type Result = ();

    fn handle(&mut self, msg: StoreIndicators, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        if let Some(candle) = msg.closed {
            self.pending.push_closed(msg.stream, candle, msg.values.iter().map(|(_, value)| *value).collect());
        }
        for (open_time, value) in msg.values {
            self.pending.push_indicator(msg.stream, open_time, value);
            self.flush_if_full(ctx);
        }
        self.flush_if_full(ctx);
    }
}

impl Handler<LoadClosedCandles> for StorageActor {
    type Result = Result<Vec<Candle>, StoreError>;

    fn handle(&mut self, msg: LoadClosedCandles, ctx: &mut Context<Self>) -> Self::Result {
        self.stats.record_handled();
        self.load_closed(msg.stream).inspect_err(|error| {
            if !self.pending.is_empty() || matches!(error, StoreError::FileChanged { .. }) || error.is_transient() {
                // The commit or the check failed: like any failed commit (the rows stay pending); the indicator
                // asks again.
                self.failed(error, ctx);
            }
        })
    }
}

impl Handler<Flush> for StorageActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        self.stats.record_handled();
        self.flush()
    }
}

impl Handler<Close> for StorageActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: Close, _ctx: &mut Context<Self>) -> Self::Result {
        self.stats.record_handled();
        // A file found deleted or replaced is closed by the first attempt; the second writes to the one at the path.
        let flushed = match self.flush() {
            Err(StoreError::FileChanged { .. }) => self.flush(),
            flushed => flushed,
        };
        flushed?;
        if let Some(mut store) = self.store.take() {
            store.close()?;
        }
        self.stats.set_state(TaskState::Stopped);
        Ok(())
    }
}

impl Handler<SetIndicatorNames> for StorageActor {
    type Result = ();

    fn handle(&mut self, SetIndicatorNames(names): SetIndicatorNames, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        self.flush_or_restart(ctx);
        // A failed commit keeps its rows pending under the old numbering: they are left out rather than misnamed. The
        // new indicator actors rebuild and store every value again.
        if !self.pending.is_empty() {
            self.pending.forget_indicators();
        }
        self.indicator_names = names;
    }
}

impl Handler<RecordExchangeGaps> for StorageActor {
    type Result = ();

    fn handle(&mut self, msg: RecordExchangeGaps, _ctx: &mut Context<Self>) {
        self.stats.record_handled();
        let Some(key) = self.streams.key(msg.stream) else { return };
        let recorded = self.store().and_then(|store| store.record_exchange_gaps(&key, &msg.gaps));
        if let Err(error) = recorded {
            // The gaps stay known in memory for this run; the next run's audit finds them again.
            log::warn!("{key}: cannot record exchange gaps: {error}");
            self.stats.record_error(format!("cannot record exchange gaps of {key}: {error}"));
        }
    }
}

impl Handler<Retire> for StorageActor {
    type Result = ();

    /// An operator's restart: commit what is pending, then restart on a fresh connection.
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        if let Err(error) = self.flush() {
            log::warn!("storage: commit before the restart failed ({error}); the rows stay pending");
        }
        self.store = None;
        ctx.stop();
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::Inject> for StorageActor {
    type Result = ();

    fn handle(&mut self, fault: crate::fault_injection::Inject, ctx: &mut Context<Self>) {
        use crate::fault_injection::{Fault, UNREACHABLE_FOR};
        match fault.0 {
            Fault::Unreachable => {
                log::warn!("fault injected: storage finds its store unreachable for {} s", UNREACHABLE_FOR.as_secs());
                self.unreachable_until = Some(Instant::now() + UNREACHABLE_FOR);
            }
            _ => fault.apply::<Self>("storage", ctx),
        }
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
        pending.push(s, candle(0, 1.5, false), None);
        pending.push(s, candle(0, 2.0, false), None);
        pending.push(s, candle(60_000, 1.0, false), None);
        assert_eq!(pending.len(), 2);
        pending.push(s, candle(0, 2.5, true), None);
        // A stale in-progress update does not replace the closed candle.
        pending.push(s, candle(0, 1.2, false), None);
        assert_eq!(pending.take().candles, [(s, candle(0, 2.5, true)), (s, candle(60_000, 1.0, false))]);
        assert!(pending.is_empty());
    }

    #[test]
    fn pending_writes_keep_the_event_time_of_the_update_they_hold() {
        let mut pending = PendingWrites::default();
        let s = StreamId(0);
        pending.push(s, candle(0, 1.5, false), Some(10));
        pending.push(s, candle(0, 2.0, false), Some(20));
        pending.push(s, candle(60_000, 1.0, true), Some(30));
        // A stale in-progress update neither replaces the closed candle nor its event time.
        pending.push(s, candle(60_000, 0.5, false), Some(40));
        let batch = pending.take();
        assert_eq!(batch.candles, [(s, candle(0, 2.0, false)), (s, candle(60_000, 1.0, true))]);
        assert_eq!(batch.event_times, [Some(20), Some(30)]);
    }

    #[test]
    fn restored_rows_never_overwrite_newer_pending_ones() {
        let mut pending = PendingWrites::default();
        let s = StreamId(0);
        pending.push(s, candle(0, 2.5, true), None);
        pending.push_indicator(s, 0, IndicatorValue { output: 0, value: 2.0 });
        let failed = Batch {
            candles: vec![(s, candle(0, 1.0, false)), (s, candle(60_000, 1.0, true))],
            event_times: vec![None, None],
            indicators: vec![
                IndicatorRow { stream: s, open_time: 0, output: 0, value: 1.0 },
                IndicatorRow { stream: s, open_time: 0, output: 1, value: 1.0 },
            ],
            closed: vec![],
        };
        pending.restore(failed);
        let batch = pending.take();
        assert_eq!(batch.candles, [(s, candle(0, 2.5, true)), (s, candle(60_000, 1.0, true))]);
        assert_eq!(
            batch.indicators,
            [
                IndicatorRow { stream: s, open_time: 0, output: 0, value: 2.0 },
                IndicatorRow { stream: s, open_time: 0, output: 1, value: 1.0 },
            ]
        );
    }

    #[test]
    fn commits_are_published_with_their_keys_to_listeners_only() {
        let btc = StreamKey::new("BTCUSDT", crate::domain::Timeframe::M1);
        let registry = StreamRegistry::new([&btc]);
        let committed = CommittedCandles::default();
        // TC0: nobody listens: nothing is built or kept.
        committed.publish(&registry, &[(StreamId(0), candle(0, 1.0, true))]);
        let mut listener = committed.subscribe();
        assert!(listener.try_recv().is_err());
        // TC1: a commit reaches the listener with its keys; an id the registry never gave is left out.
        committed.publish(&registry, &[(StreamId(0), candle(0, 1.5, false)), (StreamId(7), candle(0, 2.0, true))]);
        let batch = listener.try_recv().expect("a published commit");
        assert_eq!(&*batch, [CommittedCandle { key: btc, candle: candle(0, 1.5, false) }]);
        // TC2: a listener more than the backlog behind loses the oldest and is told how many.
        for _ in 0..COMMITTED_BACKLOG + 3 {
            committed.publish(&registry, &[(StreamId(0), candle(0, 1.0, true))]);
        }
        assert!(matches!(listener.try_recv(), Err(broadcast::error::TryRecvError::Lagged(3))));
    }

    #[test]
    fn an_unreachable_store_is_retried_with_back_off_and_anything_else_restarts() {
        let policy = BackoffPolicy { initial: Duration::from_millis(100), max: Duration::from_millis(400) };
        let mut retry = StoreRetry::new(policy);
        let start = Instant::now();
        // TC0: a lasting failure (SQLite's, a changed file) restarts, and starts no outage.
        let sqlite = StoreError::UnknownOutput(3);
        assert!(!sqlite.is_transient());
        assert_eq!(retry.after_failure(sqlite.is_transient(), start), AfterFailure::Restart);
        assert!(!retry.in_outage() && !retry.waiting(start));
        // TC1: a transient failure waits a jittered back-off, doubling up to the cap; commits wait meanwhile.
        let mut delays = Vec::new();
        for _ in 0..4 {
            let AfterFailure::RetryAfter(delay) = retry.after_failure(true, start) else { panic!("a retry") };
            delays.push(delay);
        }
        let ceilings = [100, 200, 400, 400].map(Duration::from_millis);
        for (delay, ceiling) in delays.iter().zip(ceilings) {
            assert!(*delay >= ceiling / 2 && *delay <= ceiling, "{delay:?} within [{:?}, {ceiling:?}]", ceiling / 2);
        }
        assert!(retry.in_outage() && retry.waiting(start));
        assert!(!retry.waiting(start + Duration::from_millis(400)), "due once the delay has passed");
        // TC2: a success ends the outage, counting its attempts, and the next one backs off from the start.
        assert_eq!(retry.on_success(), Some(4));
        assert!(!retry.in_outage() && !retry.waiting(start));
        assert_eq!(retry.on_success(), None, "no outage to end");
        let AfterFailure::RetryAfter(delay) = retry.after_failure(true, start) else { panic!("a retry") };
        assert!(delay <= Duration::from_millis(100));
    }

    #[test]
    fn indicator_values_coalesce_per_output_and_count_one_row_per_candle_towards_the_batch() {
        let mut pending = PendingWrites::default();
        let (a, b) = (StreamId(0), StreamId(1));
        pending.push(a, candle(0, 1.0, true), None);
        pending.push_indicator(b, 0, IndicatorValue { output: 1, value: 1.0 });
        pending.push_indicator(a, 0, IndicatorValue { output: 1, value: 1.0 });
        pending.push_indicator(a, 0, IndicatorValue { output: 1, value: 3.0 });
        pending.push_indicator(a, 0, IndicatorValue { output: 0, value: 2.0 });
        pending.push_indicator(a, 0, IndicatorValue { output: 2, value: f64::NAN });
        // One candle row and two indicator rows (a's and b's at 0), as the store writes them.
        assert_eq!(pending.len(), 3);
        let rows = pending.take().indicators;
        let keys: Vec<_> = rows.iter().map(|r| (r.stream, r.output, r.value)).collect();
        assert_eq!(keys, [(a, 0, 2.0), (a, 1, 3.0), (b, 1, 1.0)]);
    }
}
