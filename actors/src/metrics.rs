//! Process-wide Prometheus metrics: frames, rejects, candles written, backfills, reconnects, audit findings.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::domain::{RejectReason, StreamKey};

/// The counters every actor shares. Cloning is cheap (each metric is an `Arc`).
#[derive(Clone)]
pub struct Metrics {
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
    /// Per stream (`symbol`, `timeframe`): audit passes, holes found, candles the audit's fetches brought back.
    audit_passes: IntCounterVec,
    audit_holes_found: IntCounterVec,
    audit_candles_repaired: IntCounterVec,
    /// Times storage found its database file deleted or replaced, and reopened the file at the path.
    pub storage_reopened: IntCounter,
    pub tasks: IntGaugeVec,
    pub mailbox_depth: IntGauge,
    /// Exchange event time (`E`) to SQLite commit, per committed live row, by kind (`closed`, `in_progress`).
    event_to_commit: HistogramVec,
}

/// Upper bounds of the event-to-commit histogram, in seconds.
const EVENT_TO_COMMIT_BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Metrics {
    pub fn new() -> Self {
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
        let stream_counter_vec = |name: &str, help: &str| {
            let metric = IntCounterVec::new(Opts::new(name, help), &["symbol", "timeframe"]).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("registered once");
            metric
        };
        let metrics = Self {
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
            audit_passes: stream_counter_vec("audit_passes_total", "Audit passes over the stream"),
            audit_holes_found: stream_counter_vec(
                "audit_holes_found_total",
                "Ranges of missing or stuck closed candles the audit found in the store",
            ),
            audit_candles_repaired: stream_counter_vec(
                "audit_candles_repaired_total",
                "Closed candles the audit's fetches brought back",
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
            registry,
        };
        for kind in ["closed", "in_progress"] {
            metrics.event_to_commit.with_label_values(&[kind]);
        }
        for reason in RejectReason::ALL {
            metrics.frames_rejected.with_label_values(&[reason.label()]);
        }
        metrics
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

    /// Creates a stream's per-stream series, so that they show from the start (at zero).
    pub fn register_stream(&self, key: &StreamKey) {
        self.audit_passes(key);
        self.audit_holes_found(key);
        self.audit_candles_repaired(key);
    }

    /// Removes a stream's per-stream series: it is no longer configured.
    pub fn unregister_stream(&self, key: &StreamKey) {
        let labels = [key.symbol.as_str(), key.timeframe.as_str()];
        for family in [&self.audit_passes, &self.audit_holes_found, &self.audit_candles_repaired] {
            // Absent only if never created: nothing to remove.
            let _ = family.remove_label_values(&labels);
        }
    }

    pub fn audit_passes(&self, key: &StreamKey) -> IntCounter {
        self.audit_passes.with_label_values(&[key.symbol.as_str(), key.timeframe.as_str()])
    }

    pub fn audit_holes_found(&self, key: &StreamKey) -> IntCounter {
        self.audit_holes_found.with_label_values(&[key.symbol.as_str(), key.timeframe.as_str()])
    }

    pub fn audit_candles_repaired(&self, key: &StreamKey) -> IntCounter {
        self.audit_candles_repaired.with_label_values(&[key.symbol.as_str(), key.timeframe.as_str()])
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
