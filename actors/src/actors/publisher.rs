//! The NATS JetStream publisher: every committed closed candle, with its indicator values, goes to JetStream
//! (`<prefix>.<SYMBOL>.<timeframe>`, `Nats-Msg-Id` `<SYMBOL>:<timeframe>:<open_time>`), and optionally every
//! in-progress update to core NATS (`<prefix>.live.<SYMBOL>.<timeframe>`).
//!
//! A slow or down broker never blocks ingestion: the hub hands candles to a bounded [`PublishQueue`] that drops its
//! oldest entry when full, and the stream whose candle was dropped catches up from the store. At start (and for a
//! stream added later) the last message JetStream holds on the stream's subject says where to continue, so a
//! restart or a replica goes on exactly where the stream is; the message ids make the server drop overlaps. The
//! bookkeeping is the pure [`Ledger`]; this actor is the shell that talks to the broker and the store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::jetstream::{self, message::PublishMessage, stream::LastRawMessageErrorKind};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::broadcast::error::TryRecvError;

use crate::actors::MAILBOX_CAPACITY;
use crate::actors::messages::Retire;
use crate::actors::storage::{CommitBatch, CommittedCandles};
use crate::domain::{Candle, StreamKey};
use crate::hub::{Feed, Hub, HubMessage};
use crate::metrics::NatsMetrics;
use crate::publish::queue::{Queued, Taken};
use crate::publish::{CandlePayload, Decision, Ledger, PublishQueue, Subjects, msg_id};
use crate::registry::StreamRegistry;
use crate::store::{StoreBackend, StoreError, Window};
use crate::tasks::{RestartTracker, TaskState, TaskStats};

/// How long a publication may wait for JetStream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Publications awaiting their acknowledgement at once.
const MAX_IN_FLIGHT: usize = 512;
/// How often the publisher looks at the queue, the commits and the configured streams when nothing wakes it.
const TICK: Duration = Duration::from_millis(200);
/// How long a commit that did not come through the hub (a REST fill) waits before it is caught up from the store:
/// time for its indicator values to be committed too.
const SETTLE: Duration = Duration::from_secs(2);
/// Closed candles one catch-up read takes from the store, per stream.
const CATCH_UP_PAGE: usize = 1000;
/// Streams one round of catch-up reads.
const CATCH_UP_STREAMS_PER_ROUND: usize = 64;
/// Waits between connection attempts, and after failed publications.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// The wait before a catch-up reads again from a store it could not read.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Last-message look-ups at once when streams are seeded.
const SEED_CONCURRENCY: usize = 32;

/// The `[nats]` settings the publisher runs with.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    pub url: String,
    /// The JetStream stream's name.
    pub stream: String,
    pub subjects: Subjects,
    /// Retention: the oldest message age kept (`None`: unlimited).
    pub max_age: Option<Duration>,
    /// Retention: the stream's size in bytes (`None`: unlimited).
    pub max_bytes: Option<i64>,
    pub duplicate_window: Duration,
    /// Whether in-progress updates go to core NATS.
    pub in_progress: bool,
    /// The bounded buffer between the hub and the publisher, in entries.
    pub buffer: usize,
    /// The store the catch-ups read.
    pub store: StoreBackend,
}

/// `url` as it may be shown (logs, `/api/v1/config`): credentials (`nats://user:password@host`) left out.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[credentials]@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The queues the hub fills for the publisher. Made once, they outlive the publisher's restarts.
#[derive(Debug, Clone)]
pub struct PublisherFeed {
    closed: PublishQueue,
    live: PublishQueue,
}

impl PublisherFeed {
    /// Taps `hub` for every committed closed candle (and, with `in_progress`, every in-progress update) of every
    /// stream, into queues of `buffer` entries each.
    pub fn tap(hub: &Hub, buffer: usize, in_progress: bool) -> Self {
        let feed = Self { closed: PublishQueue::new(buffer), live: PublishQueue::new(buffer) };
        let (closed, live) = (feed.closed.clone(), feed.live.clone());
        let taps = if in_progress { Feed::ALL } else { Feed::CLOSED };
        hub.tap(
            taps,
            Arc::new(move |message| match message {
                HubMessage::Closed(candle) => closed.push(Queued::Closed(candle.clone())),
                HubMessage::Event(event) if !event.candle.is_closed => {
                    live.push(Queued::Live(event.key.clone(), event.candle))
                }
                _ => {}
            }),
        );
        feed
    }
}

pub struct PublisherActor {
    settings: PublisherSettings,
    feed: PublisherFeed,
    committed: CommittedCandles,
    registry: StreamRegistry,
    stats: Arc<TaskStats>,
    restarts: RestartTracker,
    metrics: NatsMetrics,
}

impl PublisherActor {
    pub fn new(
        settings: PublisherSettings,
        feed: PublisherFeed,
        committed: CommittedCandles,
        registry: StreamRegistry,
        stats: Arc<TaskStats>,
        restarts: RestartTracker,
        metrics: NatsMetrics,
    ) -> Self {
        Self { settings, feed, committed, registry, stats, restarts, metrics }
    }
}

impl Actor for PublisherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(resume) = self.restarts.resume_after() else { return };
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_later(resume, |act, ctx| {
            act.stats.set_state(TaskState::Running);
            let run = Run {
                settings: act.settings.clone(),
                feed: act.feed.clone(),
                commits: act.committed.subscribe(),
                registry: act.registry.clone(),
                stats: act.stats.clone(),
                metrics: act.metrics.clone(),
                ledger: Ledger::default(),
                in_flight: FuturesUnordered::new(),
                failed_since_connected: false,
            };
            ctx.spawn(run.run().into_actor(act).map(|result, act, ctx| {
                if let Err(error) = result {
                    log::error!("publisher: {error}; restarting");
                    act.stats.record_error(error);
                }
                act.metrics.connected.set(0);
                ctx.stop();
            }));
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.connected.set(0);
    }
}

impl Supervised for PublisherActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.restarts.restarting(&self.stats);
    }
}

impl Handler<Retire> for PublisherActor {
    type Result = ();

    /// An operator's restart: actix supervision starts it again in place.
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.stats.record_handled();
        ctx.stop();
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::fault_injection::Inject> for PublisherActor {
    type Result = ();

    fn handle(&mut self, fault: crate::fault_injection::Inject, ctx: &mut Context<Self>) {
        fault.apply::<Self>("publisher", ctx);
    }
}

/// Why a publication could not be sent or was not acknowledged.
#[derive(Debug, thiserror::Error)]
enum PublishFailure {
    #[error("publish: {0}")]
    Send(#[from] jetstream::context::PublishError),
}

type AckFuture = futures_util::future::BoxFuture<'static, (StreamKey, i64, Result<(), String>)>;

/// One closed candle read from the store for a catch-up, with its indicator values by name.
type StoredClosed = (Candle, BTreeMap<String, f64>);

/// A catch-up page of one stream: the closed candles read, and the open time read through (`None`: to the end).
struct Page {
    key: StreamKey,
    from: i64,
    candles: Vec<StoredClosed>,
    through: Option<i64>,
}

/// One run of the publisher: from connecting until the actor stops.
struct Run {
    settings: PublisherSettings,
    feed: PublisherFeed,
    commits: tokio::sync::broadcast::Receiver<CommitBatch>,
    registry: StreamRegistry,
    stats: Arc<TaskStats>,
    metrics: NatsMetrics,
    ledger: Ledger,
    in_flight: FuturesUnordered<AckFuture>,
    /// A publication failed since the broker was last seen connected: wait for it before sending more.
    failed_since_connected: bool,
}

impl Run {
    async fn run(mut self) -> Result<(), String> {
        let client = self.connect().await;
        let js = jetstream::ContextBuilder::new().timeout(ACK_TIMEOUT).build(client.clone());
        let stream = self.ensure_stream(&js, &client).await;
        log::info!(
            "publisher: connected to {}; publishing to JetStream stream {} ({})",
            shown_url(&self.settings.url),
            self.settings.stream,
            self.settings.subjects.stream_filter()
        );
        let mut last_sync = None::<Instant>;
        let mut retry = RETRY_MIN;
        loop {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            self.metrics.connected.set(i64::from(connected));
            if connected && self.failed_since_connected && self.in_flight.is_empty() {
                self.failed_since_connected = false;
            }
            if last_sync.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                match self.sync_streams(&stream).await {
                    Ok(()) => last_sync = Some(Instant::now()),
                    Err(error) => {
                        log::warn!("publisher: cannot read the last published candles: {error}");
                        self.stats.record_error(format!("cannot read the last published candles: {error}"));
                    }
                }
            }
            self.drain_commits();
            self.metrics.buffer_depth.set((self.feed.closed.depth() + self.feed.live.depth()) as i64);
            let taken = self.feed.closed.take();
            self.take_live(&client).await;
            let can_send = connected && !self.failed_since_connected;
            self.publish_live_candles(&js, taken, can_send).await;
            if can_send {
                self.catch_up(&js).await?;
            }
            let failures_before = self.metrics.failures.get();
            // While a catch-up has more to read, the next round starts at once; else wait for work or a tick.
            let wait = if can_send && self.ledger.has_catch_up() { Duration::ZERO } else { TICK };
            self.collect_acks(Some(wait)).await;
            if self.metrics.failures.get() > failures_before {
                self.failed_since_connected = true;
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            } else {
                retry = RETRY_MIN;
            }
            self.stats.record_activity();
        }
    }

    /// Connects, retrying with back-off until the broker answers.
    async fn connect(&self) -> async_nats::Client {
        let mut retry = RETRY_MIN;
        loop {
            let options = async_nats::ConnectOptions::new()
                .name("candled")
                .connection_timeout(Duration::from_secs(5))
                .retry_on_initial_connect();
            match options.connect(&self.settings.url).await {
                Ok(client) => {
                    // `retry_on_initial_connect` returns at once: wait until it actually is connected.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while client.connection_state() != async_nats::connection::State::Connected
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if client.connection_state() == async_nats::connection::State::Connected {
                        self.metrics.connected.set(1);
                        return client;
                    }
                    let error = format!("cannot connect to NATS at {}", shown_url(&self.settings.url));
                    log::warn!("publisher: {error}; retrying in {retry:?}");
                    self.stats.record_error(error);
                }
                Err(error) => {
                    let url = shown_url(&self.settings.url);
                    log::warn!("publisher: cannot connect to NATS at {url}: {error}; retrying");
                    self.stats.record_error(format!("cannot connect to NATS: {error}"));
                }
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// The JetStream stream, created if missing, retrying until the broker answers.
    async fn ensure_stream(&self, js: &jetstream::Context, client: &async_nats::Client) -> jetstream::stream::Stream {
        let config = jetstream::stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![self.settings.subjects.stream_filter()],
            max_age: self.settings.max_age.unwrap_or_default(),
            max_bytes: self.settings.max_bytes.unwrap_or(-1),
            duplicate_window: self.settings.duplicate_window,
            ..Default::default()
        };
        let mut retry = RETRY_MIN;
        loop {
            match js.get_or_create_stream(config.clone()).await {
                Ok(stream) => return stream,
                Err(error) => {
                    let error = format!("cannot create or find the JetStream stream {}: {error}", config.name);
                    log::warn!("publisher: {error}; retrying");
                    self.stats.record_error(error);
                    let connected = client.connection_state() == async_nats::connection::State::Connected;
                    self.metrics.connected.set(i64::from(connected));
                }
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    /// Seeds the streams configured since the last look (from the last message JetStream holds on each one's
    /// subject), and forgets the removed ones.
    async fn sync_streams(&mut self, stream: &jetstream::stream::Stream) -> Result<(), String> {
        let active = self.registry.active();
        let configured: HashSet<&StreamKey> = active.iter().collect();
        let gone: Vec<StreamKey> = self.ledger.keys().filter(|k| !configured.contains(k)).cloned().collect();
        for key in gone {
            self.ledger.forget(&key);
        }
        let new: Vec<StreamKey> = active.iter().filter(|k| !self.ledger.knows(k)).cloned().collect();
        if new.is_empty() {
            return Ok(());
        }
        let subjects = &self.settings.subjects;
        let lookups = new.into_iter().map(|key| async move {
            let last = last_published(stream, &subjects.closed(&key)).await;
            (key, last)
        });
        let mut lookups = futures_util::stream::iter(lookups).buffer_unordered(SEED_CONCURRENCY);
        let mut first_error = None;
        while let Some((key, last)) = lookups.next().await {
            match last {
                Ok(floor) => self.ledger.seed(key, floor),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Notes the closed candles committed since the last look; those that do not come through the hub are caught
    /// up after [`SETTLE`].
    fn drain_commits(&mut self) {
        let now = Instant::now();
        loop {
            match self.commits.try_recv() {
                Ok(batch) => {
                    for committed in batch.iter().filter(|c| c.candle.is_closed) {
                        self.ledger.committed(&committed.key, &committed.candle, now);
                    }
                }
                Err(TryRecvError::Lagged(missed)) => {
                    log::warn!("publisher: {missed} commits passed unseen; every stream catches up from the store");
                    self.ledger.catch_up_all();
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        self.ledger.settle(now, SETTLE);
    }

    /// Sends the queued in-progress updates to core NATS (no acknowledgement, no persistence).
    async fn take_live(&mut self, client: &async_nats::Client) {
        let Taken { entries, .. } = self.feed.live.take();
        if entries.is_empty() {
            return;
        }
        // Only the newest update of each candle matters.
        let mut latest: BTreeMap<(String, &'static str, i64), (StreamKey, Candle)> = BTreeMap::new();
        for entry in entries {
            if let Queued::Live(key, candle) = entry {
                latest.insert((key.symbol.clone(), key.timeframe.as_str(), candle.open_time), (key, candle));
            }
        }
        for (key, candle) in latest.into_values() {
            let payload = CandlePayload::new(&key, &candle, 0, BTreeMap::new()).to_json();
            let subject = self.settings.subjects.live(&key);
            if client.publish(subject, payload.into()).await.is_ok() {
                self.metrics.live_published.inc();
            }
        }
    }

    /// Publishes the closed candles the hub delivered, in order, unless their stream is catching up.
    async fn publish_live_candles(&mut self, js: &jetstream::Context, taken: Taken, can_send: bool) {
        self.metrics.buffer_dropped.inc_by(taken.dropped.len() as u64);
        for (key, open_time) in taken.dropped {
            self.ledger.catch_up(&key, open_time);
        }
        for entry in taken.entries {
            let Queued::Closed(closed) = entry else { continue };
            if !can_send {
                // The broker is away: the store has it, the catch-up publishes it once the broker is back.
                self.ledger.catch_up(&closed.key, closed.candle.open_time);
                continue;
            }
            match self.ledger.decide(&closed.key, &closed.candle, true) {
                Decision::Skip => {}
                Decision::Defer => self.ledger.catch_up(&closed.key, closed.candle.open_time),
                Decision::Publish { revision } => {
                    let indicators = (closed.values.iter())
                        .filter_map(|v| Some((closed.names.get(usize::from(v.output))?.clone(), v.value)))
                        .collect();
                    let payload = CandlePayload::new(&closed.key, &closed.candle, revision, indicators);
                    self.send(js, &closed.key, &closed.candle, revision, payload).await;
                }
            }
        }
    }

    /// One round of catch-up: a page of the store for each of the first streams marked, published in order.
    async fn catch_up(&mut self, js: &jetstream::Context) -> Result<(), String> {
        let marked: Vec<(StreamKey, i64)> =
            self.ledger.catching_up().into_iter().take(CATCH_UP_STREAMS_PER_ROUND).collect();
        if marked.is_empty() {
            return Ok(());
        }
        let store = self.settings.store.clone();
        let pages = tokio::task::spawn_blocking(move || read_pages(&store, marked))
            .await
            .map_err(|e| format!("the catch-up read stopped: {e}"))?;
        let pages = match pages {
            Ok(pages) => pages,
            Err(error) => {
                // The store is briefly unreadable (being replaced, say): the marks stay, the next round retries.
                log::warn!("publisher: cannot read the store for a catch-up: {error}");
                self.stats.record_error(format!("cannot read the store for a catch-up: {error}"));
                tokio::time::sleep(STORE_RETRY).await;
                return Ok(());
            }
        };
        for page in pages {
            for (candle, indicators) in page.candles {
                if let Decision::Publish { revision } = self.ledger.decide(&page.key, &candle, false) {
                    let payload = CandlePayload::new(&page.key, &candle, revision, indicators);
                    self.send(js, &page.key, &candle, revision, payload).await;
                    self.metrics.catch_up_candles.inc();
                }
            }
            match page.through {
                Some(through) => self.ledger.caught_up_through(&page.key, page.from, through),
                None => self.ledger.caught_up(&page.key, page.from),
            }
        }
        Ok(())
    }

    /// Sends one closed candle; its acknowledgement is awaited among [`MAX_IN_FLIGHT`] others.
    async fn send(
        &mut self,
        js: &jetstream::Context,
        key: &StreamKey,
        candle: &Candle,
        revision: u32,
        payload: CandlePayload,
    ) {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.collect_acks(None).await;
        }
        let publish = PublishMessage::build().payload(payload.to_json().into()).message_id(msg_id(
            key,
            candle.open_time,
            revision,
        ));
        self.ledger.record(key, candle, revision);
        let sent: Result<_, PublishFailure> =
            js.send_publish(self.settings.subjects.closed(key), publish).await.map_err(Into::into);
        let (key, open_time) = (key.clone(), candle.open_time);
        match sent {
            Ok(ack) => self.in_flight.push(Box::pin(async move {
                let acked = ack.await.map(|_| ()).map_err(|e| e.to_string());
                (key, open_time, acked)
            })),
            Err(error) => {
                self.metrics.failures.inc();
                self.stats.record_error(error.to_string());
                self.ledger.failed(&key, open_time);
            }
        }
    }

    /// Handles the acknowledgements that came: every one when `wait` is `None` and at least one is pending (at
    /// least one then), else those that come within `wait`.
    async fn collect_acks(&mut self, wait: Option<Duration>) {
        let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
        loop {
            let next = match deadline {
                Some(deadline) if self.in_flight.is_empty() => {
                    tokio::select! {
                        _ = self.feed.closed.pushed() => return,
                        _ = tokio::time::sleep_until(deadline) => return,
                    }
                }
                Some(deadline) => tokio::select! {
                    next = self.in_flight.next() => next,
                    _ = tokio::time::sleep_until(deadline) => return,
                },
                None => self.in_flight.next().await,
            };
            let Some((key, open_time, acked)) = next else { return };
            match acked {
                Ok(()) => self.metrics.published.inc(),
                Err(error) => {
                    self.metrics.failures.inc();
                    log::debug!("publisher: {key} at {open_time} not acknowledged: {error}");
                    self.stats.record_error(format!("not acknowledged: {error}"));
                    self.ledger.failed(&key, open_time);
                }
            }
            if deadline.is_none() {
                return;
            }
        }
    }
}

/// The open time of the last candle JetStream holds on `subject` (`None`: nothing yet).
async fn last_published(stream: &jetstream::stream::Stream, subject: &str) -> Result<Option<i64>, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
            let payload: CandlePayload = serde_json::from_slice(&message.payload)
                .map_err(|e| format!("the last message on {subject} is not a candle: {e}"))?;
            Ok(Some(payload.open_time))
        }
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(error) => Err(format!("{subject}: {error}")),
    }
}

/// Reads a catch-up page for each marked stream: the closed candles from its mark on, with their indicator values.
fn read_pages(store: &StoreBackend, marked: Vec<(StreamKey, i64)>) -> Result<Vec<Page>, StoreError> {
    let store = store.open_reader()?;
    let mut pages = Vec::with_capacity(marked.len());
    for (key, from) in marked {
        let rows = store.candles_window(&key.symbol, key.timeframe, from, i64::MAX, CATCH_UP_PAGE, Window::Oldest)?;
        let through = (rows.len() >= CATCH_UP_PAGE).then(|| rows.last().map(|c| c.open_time)).flatten();
        let closed: Vec<Candle> = rows.into_iter().filter(|c| c.is_closed).collect();
        let mut values: BTreeMap<i64, BTreeMap<String, f64>> = BTreeMap::new();
        if let (Some(first), Some(last)) = (closed.first(), closed.last()) {
            store.for_each_indicator_value(&key, first.open_time, last.open_time, &mut |open, name, value| {
                values.entry(open).or_default().insert(name.to_owned(), value);
            })?;
        }
        let candles = closed.into_iter().map(|c| (c, values.remove(&c.open_time).unwrap_or_default())).collect();
        pages.push(Page { key, from, candles, through });
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_shown_url_leaves_credentials_out() {
        let cases = [
            // TC0: none to leave out.
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            // TC1: user and password.
            ("nats://candled:s3cret@nats.local:4222", "nats://[credentials]@nats.local:4222"),
            // TC2: a token, and a path after the authority.
            ("tls://tok@host:4222/x@y", "tls://[credentials]@host:4222/x@y"),
        ];
        for (i, (url, shown)) in cases.iter().enumerate() {
            assert_eq!(super::shown_url(url), *shown, "TC{i}");
        }
    }
}
