//! Process-wide Prometheus metrics: frames, rejects, candles written, backfills, reconnects, audit findings, storage
//! commits and REST rate limits, and the per-stream counters the actors push (the values read at scrape time are
//! built by the `/metrics` handler).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::domain::{RejectReason, StreamKey};

/// The counters every actor shares. Cloning is cheap: one `Arc` (every stream's subscription holds a clone).
#[derive(Clone)]
pub struct Metrics(Arc<MetricsInner>);

impl std::ops::Deref for Metrics {
    type Target = MetricsInner;

    fn deref(&self) -> &MetricsInner {
        &self.0
    }
}

/// What [`Metrics`] shares.
pub struct MetricsInner {
    pub registry: Registry,
    pub frames_received: IntCounter,
    frames_rejected: IntCounterVec,
    pub candles_written: IntCounterVec,
    pub stale_updates_ignored: IntCounter,
    pub in_progress_coalesced: IntCounter,
    pub candles_backfilled: IntCounter,
    pub rest_requests: IntCounterVec,
    pub reconnects: IntCounter,
    /// Zombie connections (pinging, but delivering no data after a resubscribe) replaced.
    pub connection_replacements: IntCounter,
    /// Times storage found its database file deleted or replaced, and reopened the file at the path.
    pub storage_reopened: IntCounter,
    pub tasks: IntGaugeVec,
    pub mailbox_depth: IntGauge,
    /// Exchange event time (`E`) to SQLite commit, per committed live row, by kind (`closed`, `in_progress`).
    event_to_commit: HistogramVec,
    /// Whether the per-stream series (labelled `symbol` and `timeframe`) exist: `[metrics] per_stream`.
    per_stream: bool,
    /// The streams whose per-stream series exist, with their counters ([`STREAM_COUNTER_FAMILIES`]). A counter
    /// asked for a stream not in it (removed, or a late write for it) is an unexposed one, so that a removed
    /// stream's series never come back. Not `prometheus` series: those took about 2 KB per stream, and as much
    /// again at every scrape; the `/metrics` handler writes these itself ([`Metrics::stream_counts`]).
    registered: Arc<Mutex<HashMap<StreamKey, Arc<StreamSeries>>>>,
    /// Time of one storage commit (a batch of rows and their indicator values).
    commit_seconds: Histogram,
    /// Candle rows in one storage commit.
    commit_rows: Histogram,
    /// The exchange's `X-MBX-USED-WEIGHT-1M` on its last REST answer.
    pub rest_weight_used: IntGauge,
    /// REST answers 429 (slow down) and 418 (banned), by status.
    rest_rate_limited: IntCounterVec,
    /// The fan-out hub's series (local WebSocket clients, subscriptions, events sent, slow ones cut).
    pub hub: crate::hub::HubMetrics,
    /// The local Binance API (`/api/v3/*`): requests answered, by `endpoint` and `status`.
    pub api_requests: IntCounterVec,
    /// The local Binance API's kline answers, by `source`: `store`, `cache`, `exchange` (read-through).
    pub api_klines_answered: IntCounterVec,
    /// Bytes held by the local Binance API's read-through cache.
    pub api_cache_bytes: IntGauge,
    /// The NATS JetStream publisher's series.
    pub nats: NatsMetrics,
}

/// The NATS JetStream publisher's series (`candled_nats_*`).
#[derive(Clone)]
pub struct NatsMetrics {
    /// Closed candles JetStream acknowledged (a duplicate the server dropped by its message id counts too).
    pub published: IntCounter,
    /// Publications that failed or were not acknowledged in time (each is read from the store again).
    pub failures: IntCounter,
    /// Closed candles published from the store by a catch-up (at start, after an outage or a full buffer).
    pub catch_up_candles: IntCounter,
    /// Entries waiting in the publisher's buffer.
    pub buffer_depth: IntGauge,
    /// Closed candles the full buffer dropped (their streams catch up from the store).
    pub buffer_dropped: IntCounter,
    /// 1 while the publisher is connected to the broker.
    pub connected: IntGauge,
    /// In-progress updates sent to the core NATS `live` subjects.
    pub live_published: IntCounter,
}

impl NatsMetrics {
    fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        Self {
            published: counter("nats_published_total", "Closed candles JetStream acknowledged"),
            failures: counter("nats_publish_failures_total", "JetStream publications failed or not acknowledged"),
            catch_up_candles: counter(
                "nats_catch_up_candles_total",
                "Closed candles published from the store by a catch-up (start, outage, full buffer)",
            ),
            buffer_depth: gauge("nats_buffer_depth", "Entries waiting in the NATS publisher's buffer"),
            buffer_dropped: counter(
                "nats_buffer_dropped_total",
                "Closed candles the full NATS buffer dropped (their streams catch up from the store)",
            ),
            connected: gauge("nats_connected", "1 while the NATS publisher is connected to the broker"),
            live_published: counter("nats_live_published_total", "In-progress updates sent to core NATS"),
        }
    }
}

/// Upper bounds of the event-to-commit histogram, in seconds.
const EVENT_TO_COMMIT_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds of the commit latency histogram, in seconds.
const COMMIT_SECONDS_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the rows-per-commit histogram.
const COMMIT_ROWS_BUCKETS: [f64; 13] =
    [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0];
/// The REST statuses that mean the request weight was overused: 429 (back off) and 418 (banned for a while).
pub const RATE_LIMIT_STATUSES: [u16; 2] = [429, 418];

impl Metrics {
    /// The metrics with the per-stream series on.
    pub fn new() -> Self {
        Self::with_per_stream(true)
    }

    /// The metrics, with the per-stream series (`symbol`/`timeframe` labels) on or off (`[metrics] per_stream`).
    /// Off, the per-stream counters still count but are never registered, so `/metrics` shows none of them.
    pub fn with_per_stream(per_stream: bool) -> Self {
        let registry = Registry::new_custom(Some("candled".into()), None).expect("a valid prefix");
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let metric = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        let metrics = MetricsInner {
            frames_received: counter("frames_received_total", "WebSocket text frames received"),
            frames_rejected: counter_vec("frames_rejected_total", "Frames dropped as malformed, by reason", "reason"),
            candles_written: counter_vec("candles_written_total", "Candle rows written to SQLite", "kind"),
            stale_updates_ignored: counter("stale_updates_ignored_total", "In-progress updates of closed candles"),
            in_progress_coalesced: counter(
                "in_progress_coalesced_total",
                "In-progress updates replaced by a newer one because a consumer fell behind",
            ),
            candles_backfilled: counter("candles_backfilled_total", "Closed candles fetched over REST"),
            rest_requests: counter_vec("rest_requests_total", "REST requests, by HTTP status", "status"),
            reconnects: counter("reconnects_total", "WebSocket reconnects"),
            connection_replacements: counter(
                "connection_replacements_total",
                "Connections replaced because their streams stayed silent after a resubscribe",
            ),
            storage_reopened: counter(
                "storage_reopened_total",
                "Database file found deleted or replaced while open, and opened again at its path",
            ),
            tasks: {
                let metric = IntGaugeVec::new(Opts::new("tasks", "Tasks by state"), &["state"]).expect("valid");
                registry.register(Box::new(metric.clone())).expect("registered once");
                metric
            },
            mailbox_depth: {
                let metric = IntGauge::new("mailbox_depth", "Messages queued in all mailboxes").expect("valid");
                registry.register(Box::new(metric.clone())).expect("registered once");
                metric
            },
            event_to_commit: {
                let opts = HistogramOpts::new("event_to_commit_seconds", "Exchange event time to SQLite commit")
                    .buckets(EVENT_TO_COMMIT_BUCKETS.to_vec());
                let metric = HistogramVec::new(opts, &["kind"]).expect("valid metric");
                registry.register(Box::new(metric.clone())).expect("registered once");
                metric
            },
            per_stream,
            registered: Arc::default(),
            commit_seconds: {
                let opts = HistogramOpts::new("storage_commit_seconds", "Time of one SQLite commit of a batch")
                    .buckets(COMMIT_SECONDS_BUCKETS.to_vec());
                let metric = Histogram::with_opts(opts).expect("valid metric");
                registry.register(Box::new(metric.clone())).expect("registered once");
                metric
            },
            commit_rows: {
                let opts = HistogramOpts::new("storage_commit_rows", "Candle rows in one SQLite commit")
                    .buckets(COMMIT_ROWS_BUCKETS.to_vec());
                let metric = Histogram::with_opts(opts).expect("valid metric");
                registry.register(Box::new(metric.clone())).expect("registered once");
                metric
            },
            rest_weight_used: {
                let metric = IntGauge::new(
                    "rest_weight_used",
                    "Request weight used in the current minute, as the exchange's X-MBX-USED-WEIGHT-1M last said",
                )
                .expect("valid metric");
                registry.register(Box::new(metric.clone())).expect("registered once");
                metric
            },
            rest_rate_limited: counter_vec(
                "rest_rate_limited_total",
                "REST answers 429 (slow down) and 418 (IP banned for a while), by status",
                "status",
            ),
            hub: crate::hub::HubMetrics::register(&registry),
            api_requests: {
                let opts = Opts::new("api_requests_total", "Local Binance API requests, by endpoint and HTTP status");
                let metric = IntCounterVec::new(opts, &["endpoint", "status"]).expect("valid metric");
                registry.register(Box::new(metric.clone())).expect("registered once");
                metric
            },
            api_klines_answered: counter_vec(
                "api_klines_answered_total",
                "Local Binance API kline answers, by source: store, cache or exchange (read-through)",
                "source",
            ),
            api_cache_bytes: {
                let metric =
                    IntGauge::new("api_cache_bytes", "Bytes held by the local Binance API's read-through cache")
                        .expect("valid metric");
                registry.register(Box::new(metric.clone())).expect("registered once");
                metric
            },
            nats: NatsMetrics::register(&registry),
            registry,
        };
        for source in ["store", "cache", "exchange"] {
            metrics.api_klines_answered.with_label_values(&[source]);
        }
        for status in RATE_LIMIT_STATUSES {
            metrics.rest_rate_limited.with_label_values(&[&status.to_string()]);
        }
        for kind in ["closed", "in_progress"] {
            metrics.event_to_commit.with_label_values(&[kind]);
        }
        for reason in RejectReason::ALL {
            metrics.frames_rejected.with_label_values(&[reason.label()]);
        }
        Self(Arc::new(metrics))
    }

    pub fn record_rejected(&self, reason: RejectReason) {
        self.frames_rejected.with_label_values(&[reason.label()]).inc();
    }

    /// Records, for rows just committed, the time from their exchange event (`(is_closed, E in ms)`) to now.
    pub fn observe_event_to_commit(&self, rows: impl Iterator<Item = (bool, i64)>) {
        let now = crate::tasks::unix_ms();
        let closed = self.event_to_commit.with_label_values(&["closed"]);
        let in_progress = self.event_to_commit.with_label_values(&["in_progress"]);
        for (is_closed, event_time) in rows {
            let seconds = (now - event_time).max(0) as f64 / 1000.0;
            if is_closed { closed.observe(seconds) } else { in_progress.observe(seconds) }
        }
    }

    /// Whether the per-stream series are exposed (`[metrics] per_stream`).
    pub fn per_stream(&self) -> bool {
        self.per_stream
    }

    /// Creates a stream's per-stream series, so that they show from the start (at zero). Nothing when the
    /// per-stream series are off.
    pub fn register_stream(&self, key: &StreamKey) {
        if !self.per_stream {
            return;
        }
        self.registered_streams().entry(key.clone()).or_default();
    }

    /// Removes a stream's per-stream series: it is no longer configured.
    pub fn unregister_stream(&self, key: &StreamKey) {
        self.registered_streams().remove(key);
    }

    fn registered_streams(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, Arc<StreamSeries>>> {
        self.registered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `family`'s counter of `key` while the stream is registered, else an unexposed one (per-stream series off,
    /// or the stream removed).
    fn stream_counter(&self, family: StreamFamily, key: &StreamKey) -> StreamCounter {
        StreamCounter { series: self.registered_streams().get(key).cloned(), family }
    }

    pub fn audit_passes(&self, key: &StreamKey) -> StreamCounter {
        self.stream_counter(StreamFamily::AuditPasses, key)
    }

    pub fn audit_holes_found(&self, key: &StreamKey) -> StreamCounter {
        self.stream_counter(StreamFamily::AuditHolesFound, key)
    }

    pub fn audit_candles_repaired(&self, key: &StreamKey) -> StreamCounter {
        self.stream_counter(StreamFamily::AuditCandlesRepaired, key)
    }

    /// Closed candles of `key` committed to SQLite.
    pub fn stream_candles_written(&self, key: &StreamKey) -> StreamCounter {
        self.stream_counter(StreamFamily::StreamCandlesWritten, key)
    }

    /// Malformed frames of `key`: a frame is attributed to a stream when its combined-stream envelope
    /// (`{"stream":"btcusdt@kline_1m","data":...}`) parses and names a stream its connection carries, while its
    /// payload fails validation. A frame that is not JSON, or names no carried stream, has no known stream: it is
    /// counted only in `candled_frames_rejected_total{reason}`, like every rejected frame.
    pub fn stream_frames_rejected(&self, key: &StreamKey) -> StreamCounter {
        self.stream_counter(StreamFamily::StreamFramesRejected, key)
    }

    /// Every registered stream's counters, indexed like [`STREAM_COUNTER_FAMILIES`], in no particular order.
    pub fn stream_counts(&self) -> Vec<(StreamKey, [u64; STREAM_COUNTERS])> {
        let registered = self.registered_streams();
        registered.iter().map(|(key, series)| (key.clone(), series.values())).collect()
    }

    /// Records one storage commit: its duration and the candle rows it wrote.
    pub fn observe_commit(&self, elapsed: std::time::Duration, rows: usize) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        self.commit_rows.observe(rows as f64);
    }

    /// Records a REST answer's status and the weight it reported used (`X-MBX-USED-WEIGHT-1M`), if any.
    pub fn record_rest_answer(&self, status: u16, weight_used: Option<i64>) {
        self.rest_requests.with_label_values(&[&status.to_string()]).inc();
        if RATE_LIMIT_STATUSES.contains(&status) {
            self.rest_rate_limited.with_label_values(&[&status.to_string()]).inc();
        }
        if let Some(weight) = weight_used {
            self.rest_weight_used.set(weight);
        }
    }

    /// Rejected frames so far, by reason label.
    pub fn rejected(&self) -> Vec<(&'static str, u64)> {
        RejectReason::ALL
            .iter()
            .map(|r| (r.label(), self.frames_rejected.with_label_values(&[r.label()]).get()))
            .collect()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// How many counters each stream has.
pub const STREAM_COUNTERS: usize = 5;

/// The per-stream counter families, `(name without the candled_ prefix, help)`, sorted by name; index
/// [`Metrics::stream_counts`]' values. Each has the labels `symbol` and `timeframe`.
pub const STREAM_COUNTER_FAMILIES: [(&str, &str); STREAM_COUNTERS] = [
    ("audit_candles_repaired_total", "Closed candles the audit's fetches brought back"),
    ("audit_holes_found_total", "Ranges of missing or stuck closed candles the audit found in the store"),
    ("audit_passes_total", "Audit passes over the stream"),
    ("stream_candles_written_total", "Closed candles of the stream committed to SQLite (first writes and re-writes)"),
    (
        "stream_frames_rejected_total",
        "Malformed frames dropped whose envelope named the stream (unattributable ones count only in \
         candled_frames_rejected_total)",
    ),
];

/// A position in [`STREAM_COUNTER_FAMILIES`].
#[derive(Debug, Clone, Copy)]
enum StreamFamily {
    AuditCandlesRepaired = 0,
    AuditHolesFound = 1,
    AuditPasses = 2,
    StreamCandlesWritten = 3,
    StreamFramesRejected = 4,
}

/// One stream's counters.
#[derive(Debug, Default)]
struct StreamSeries([AtomicU64; STREAM_COUNTERS]);

impl StreamSeries {
    fn values(&self) -> [u64; STREAM_COUNTERS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// One per-stream counter. Unexposed (counts nothing) when the stream's series do not exist: per-stream series
/// off, or the stream removed.
#[derive(Debug, Clone)]
pub struct StreamCounter {
    series: Option<Arc<StreamSeries>>,
    family: StreamFamily,
}

impl StreamCounter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, count: u64) {
        if let Some(series) = &self.series {
            series.0[self.family as usize].fetch_add(count, Ordering::Relaxed);
        }
    }

    /// The count so far (0 when unexposed).
    pub fn get(&self) -> u64 {
        self.series.as_ref().map_or(0, |series| series.0[self.family as usize].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timeframe;

    /// The exposition text of `metrics`.
    fn text(metrics: &Metrics) -> String {
        let mut body = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &metrics.registry.gather(), &mut body)
            .expect("encodes");
        String::from_utf8(body).expect("UTF-8")
    }

    #[test]
    fn per_stream_series_come_and_go_with_their_stream() {
        let btc = StreamKey::new("BTCUSDT", Timeframe::M1);
        let metrics = Metrics::new();
        // TC0: registered: every per-stream family shows the stream, at zero.
        metrics.register_stream(&btc);
        assert_eq!(metrics.stream_counts(), vec![(btc.clone(), [0; STREAM_COUNTERS])]);
        // TC1: counted, each in its own family.
        metrics.stream_candles_written(&btc).inc_by(3);
        metrics.audit_passes(&btc).inc();
        let written = STREAM_COUNTER_FAMILIES.iter().position(|(name, _)| *name == "stream_candles_written_total");
        let passes = STREAM_COUNTER_FAMILIES.iter().position(|(name, _)| *name == "audit_passes_total");
        let counts = metrics.stream_counts()[0].1;
        assert_eq!((counts[written.unwrap()], counts[passes.unwrap()], counts.iter().sum::<u64>()), (3, 1, 4));
        // TC2: unregistered: gone, and a late count does not bring it back.
        let held = metrics.audit_holes_found(&btc);
        metrics.unregister_stream(&btc);
        metrics.stream_candles_written(&btc).inc();
        metrics.audit_passes(&btc).inc();
        held.inc();
        assert!(metrics.stream_counts().is_empty());
        // TC3: registered again: from zero.
        metrics.register_stream(&btc);
        assert_eq!(metrics.stream_counts(), vec![(btc.clone(), [0; STREAM_COUNTERS])]);
        // TC4: per-stream series off: registering shows nothing, counting neither; nothing is in the registry.
        let off = Metrics::with_per_stream(false);
        off.register_stream(&btc);
        off.stream_frames_rejected(&btc).inc();
        assert!(off.stream_counts().is_empty() && !text(&off).contains("BTCUSDT") && !text(&metrics).contains("BTC"));
    }

    #[test]
    fn rest_answers_count_rate_limits_and_keep_the_weight() {
        let metrics = Metrics::new();
        let limited = |status: &str| metrics.rest_rate_limited.with_label_values(&[status]).get();
        // TC0: both statuses show from the start, at zero.
        assert!(text(&metrics).contains(r#"candled_rest_rate_limited_total{status="418"} 0"#));
        // TC1: a 200 with its weight.
        metrics.record_rest_answer(200, Some(42));
        assert_eq!((limited("429"), limited("418"), metrics.rest_weight_used.get()), (0, 0, 42));
        // TC2: a 429 without the header: counted, the weight kept.
        metrics.record_rest_answer(429, None);
        assert_eq!((limited("429"), limited("418"), metrics.rest_weight_used.get()), (1, 0, 42));
        // TC3: a 418.
        metrics.record_rest_answer(418, Some(6001));
        assert_eq!((limited("429"), limited("418"), metrics.rest_weight_used.get()), (1, 1, 6001));
        assert_eq!(metrics.rest_requests.with_label_values(&["429"]).get(), 1);
    }
}
