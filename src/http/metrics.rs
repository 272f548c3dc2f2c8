//! `GET /metrics`: Prometheus text exposition. The registry the actors update, plus the series read at scrape time:
//! per task from the health actor's task table, and per stream from its stream counters and the store (values
//! that are cheap to read now are not pushed on every candle). A removed task or stream is no longer in either, so
//! its series leave with it.

use actix_web::{HttpResponse, web};
use candled_actors::actors::health::{GetHealth, GetStreams, TaskStatus};
use candled_actors::domain::StreamKey;
use candled_actors::streams::StreamCounters;
use candled_actors::tasks::{TaskState, unix_ms};
use prometheus::core::Collector as _;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::AppState;
use super::client_errors::CLIENT_ERRORS;
use super::error::ApiError;
use super::params::read;
use candled_actors::store::{StoredRange, StoredRanges};

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Asking for the health report also refreshes the task-state and mailbox gauges of the registry.
    let report = state.health.send(GetHealth).await.ok();
    let per_stream = state.metrics.per_stream();
    let mut families = state.metrics.registry.gather();
    families.extend(CLIENT_ERRORS.collect());
    let streams = state.health.send(GetStreams).await.unwrap_or_default();
    if let Some(report) = &report {
        families.extend(task_families(&report.task_list, per_stream));
        families.extend(stream_count_families(&streams, report.data_issues.len()));
    }
    if per_stream {
        // Without the store, the series read from it are left out rather than shown wrong; the rest still show.
        let stored = read(&state, |store| store.stored_ranges())
            .await
            .inspect_err(|error| log::warn!("/metrics: cannot read the stored ranges: {error}"))
            .ok();
        // Ages are judged on the exchange's clock, like every deadline (the local one until it is known).
        let now_ms = unix_ms();
        let now_ms = state.exchange_clock.at(now_ms).unwrap_or(now_ms);
        families.extend(stream_families(now_ms, &streams, stored.as_ref()));
    }
    let mut body = Vec::new();
    TextEncoder::new().encode(&families, &mut body)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body))
}

/// A registry for series built for one scrape, under the `candled_` prefix like the process-wide one.
fn scrape_registry() -> Registry {
    Registry::new_custom(Some("candled".into()), None).expect("a valid prefix")
}

/// Registers a metric built for one scrape: names are fixed here, so a failure is a bug caught by the tests.
fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("a valid metric, registered once");
    metric
}

/// Per task (`task`, `kind`): its state (one series per state, 1 for the current one), restarts and mailbox depth.
/// With the per-stream series off, the tasks of one stream (subscription, indicator) are left out too.
fn task_families(tasks: &[TaskStatus], per_stream: bool) -> Vec<MetricFamily> {
    let registry = scrape_registry();
    let labels = ["task", "kind"];
    let state = registered(
        &registry,
        IntGaugeVec::new(
            Opts::new("task_state", "Task state: 1 for the state the task is in, 0 for the others"),
            &["task", "kind", "state"],
        )
        .expect("valid"),
    );
    let restarts = registered(
        &registry,
        IntCounterVec::new(Opts::new("task_restarts_total", "Restarts of the task since candled started"), &labels)
            .expect("valid"),
    );
    let mailbox = registered(
        &registry,
        IntGaugeVec::new(Opts::new("task_mailbox_depth", "Messages queued in the task's mailbox"), &labels)
            .expect("valid"),
    );
    for task in tasks.iter().filter(|task| per_stream || task.symbol.is_none()) {
        let (name, kind) = (task.name.as_str(), task.kind.as_str());
        for candidate in TaskState::ALL {
            let value = i64::from(candidate == task.counters.state);
            state.with_label_values(&[name, kind, candidate.as_str()]).set(value);
        }
        restarts.with_label_values(&[name, kind]).inc_by(task.counters.restarts);
        mailbox.with_label_values(&[name, kind]).set(task.counters.mailbox_depth as i64);
    }
    registry.gather()
}

/// Streams stale, and streams with a data issue (closed candles missing or stuck past their repair deadline, as
/// `/health` reports): what the per-stream series tell, as two series that stay when those are off.
fn stream_count_families(streams: &[(StreamKey, StreamCounters)], data_issues: usize) -> Vec<MetricFamily> {
    let registry = scrape_registry();
    let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help).expect("valid"));
    let stale = gauge("streams_stale", "Streams delivering no event past their stale limit");
    stale.set(streams.iter().filter(|(_, counters)| counters.stale).count() as i64);
    let issues =
        gauge("streams_with_data_issue", "Streams with closed candles missing or stuck past their repair deadline");
    issues.set(data_issues as i64);
    registry.gather()
}

/// Per stream (`symbol`, `timeframe`) at `now_ms` (exchange time): the age of the last stored closed candle (since its close), stale,
/// missing and overdue candles, repairs and revisions. `stored` is `None` when the store could not be read: the
/// series read from it (age, missing, revisions) are then left out.
fn stream_families(
    now_ms: i64,
    streams: &[(StreamKey, StreamCounters)],
    stored: Option<&StoredRanges>,
) -> Vec<MetricFamily> {
    let registry = scrape_registry();
    let labels = ["symbol", "timeframe"];
    let gauge = |name: &str, help: &str| {
        registered(&registry, IntGaugeVec::new(Opts::new(name, help), &labels).expect("valid"))
    };
    let counter = |name: &str, help: &str| {
        registered(&registry, IntCounterVec::new(Opts::new(name, help), &labels).expect("valid"))
    };
    let age = registered(
        &registry,
        GaugeVec::new(
            Opts::new(
                "stream_last_closed_age_seconds",
                "Seconds since the close of the last closed candle stored (absent while none is stored)",
            ),
            &labels,
        )
        .expect("valid"),
    );
    let stale = gauge("stream_stale", "1 while the stream delivers no event past its stale limit, else 0");
    let missing = gauge(
        "stream_missing_candles",
        "Closed candles between the first and last stored that are neither stored nor a known exchange gap",
    );
    let overdue = gauge(
        "stream_overdue_candles",
        "Closed candles the last audit found missing or stuck past their repair deadline (the /health data issue)",
    );
    let repairs = counter("stream_repairs_total", "REST repairs completed (after reconnects, gaps, missed closes)");
    let revisions = counter("stream_revisions_total", "Stored closed candles the exchange later revised");
    for (key, counters) in streams {
        let values = [key.symbol.as_str(), key.timeframe.as_str()];
        stale.with_label_values(&values).set(i64::from(counters.stale));
        overdue.with_label_values(&values).set(counters.data_issue.as_ref().map_or(0, |issue| issue.candles as i64));
        repairs.with_label_values(&values).inc_by(counters.repairs);
        let Some(stored) = stored else { continue };
        let range = StoredRange::of(stored, key);
        let (_, absent) = range.expected_and_missing(key.timeframe, &counters.exchange_gaps);
        missing.with_label_values(&values).set(absent as i64);
        revisions.with_label_values(&values).inc_by(range.revisions);
        if let Some(last) = range.last_closed {
            let closed_at = key.timeframe.next_open(last);
            age.with_label_values(&values).set((now_ms - closed_at).max(0) as f64 / 1000.0);
        }
    }
    registry.gather()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candled_actors::domain::Timeframe;
    use candled_actors::streams::{DataIssue, ExchangeGap, StreamHealth};
    use candled_actors::tasks::{Priority, TaskKind, TaskStats};

    use super::*;

    /// The exposition text of `families`.
    fn text(families: &[MetricFamily]) -> String {
        let mut body = Vec::new();
        TextEncoder::new().encode(families, &mut body).expect("encodes");
        String::from_utf8(body).expect("UTF-8")
    }

    /// The value of the sample line starting with `series`, if present.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn stream_series_are_read_from_the_counters_and_the_store() {
        let minute = 60_000;
        let start = 1_700_000_040_000 - 1_700_000_040_000 % minute;
        let btc = StreamKey::new("BTCUSDT", Timeframe::M1);
        let eth = StreamKey::new("ETHUSDT", Timeframe::M1);
        let mut btc_counters = StreamHealth::new(btc.clone()).snapshot();
        btc_counters.repairs = 3;
        // One candle of the hole below is a known exchange gap: it is not missing.
        btc_counters.exchange_gaps = vec![ExchangeGap { from_open: start + 2 * minute, to_open: start + 3 * minute }];
        let mut eth_counters = StreamHealth::new(eth.clone()).snapshot();
        eth_counters.stale = true;
        eth_counters.data_issue = Some(DataIssue { problem: "missing", from_open: start, candles: 4 });
        let streams = [(btc.clone(), btc_counters), (eth.clone(), eth_counters)];
        // BTC: ten opens from `start`, seven stored (three absent, one a known gap), two revisions.
        let range =
            StoredRange { first_closed: Some(start), last_closed: Some(start + 9 * minute), present: 7, revisions: 2 };
        let stored: StoredRanges = HashMap::from([(("BTCUSDT".to_owned(), "1m".to_owned()), range)]);
        let btc_closed_at = start + 10 * minute;
        let at = |stored: Option<&StoredRanges>, now_ms: i64| text(&stream_families(now_ms, &streams, stored));
        let btc_labels = r#"{symbol="BTCUSDT",timeframe="1m"}"#;
        let eth_labels = r#"{symbol="ETHUSDT",timeframe="1m"}"#;
        let series = |name: &str, labels: &str| format!("candled_{name}{labels}");

        // TC0: 2.5 s after the last close: its age, the absent candles less the known gap, the counters.
        let now = at(Some(&stored), btc_closed_at + 2_500);
        assert_eq!(sample(&now, &series("stream_last_closed_age_seconds", btc_labels)), Some(2.5));
        assert_eq!(sample(&now, &series("stream_missing_candles", btc_labels)), Some(2.0));
        assert_eq!(sample(&now, &series("stream_revisions_total", btc_labels)), Some(2.0));
        assert_eq!(sample(&now, &series("stream_repairs_total", btc_labels)), Some(3.0));
        assert_eq!(sample(&now, &series("stream_stale", btc_labels)), Some(0.0));
        assert_eq!(sample(&now, &series("stream_overdue_candles", btc_labels)), Some(0.0));
        // TC1: a stream with nothing stored has no age, and nothing missing; its stale flag and data issue show.
        assert_eq!(sample(&now, &series("stream_last_closed_age_seconds", eth_labels)), None);
        assert_eq!(sample(&now, &series("stream_missing_candles", eth_labels)), Some(0.0));
        assert_eq!(sample(&now, &series("stream_stale", eth_labels)), Some(1.0));
        assert_eq!(sample(&now, &series("stream_overdue_candles", eth_labels)), Some(4.0));
        // TC2: the age grows with the clock.
        let later = at(Some(&stored), btc_closed_at + 95_000);
        assert_eq!(sample(&later, &series("stream_last_closed_age_seconds", btc_labels)), Some(95.0));
        // TC3: a clock behind the last close reads 0, never a negative age.
        let early = at(Some(&stored), btc_closed_at - 1_000);
        assert_eq!(sample(&early, &series("stream_last_closed_age_seconds", btc_labels)), Some(0.0));
        // TC4: the store unreadable: its series are left out, the counters' stay.
        let blind = at(None, btc_closed_at);
        assert_eq!(sample(&blind, &series("stream_missing_candles", btc_labels)), None);
        assert_eq!(sample(&blind, &series("stream_last_closed_age_seconds", btc_labels)), None);
        assert_eq!(sample(&blind, &series("stream_repairs_total", btc_labels)), Some(3.0));
        // TC5: no stream, no per-stream series.
        assert!(text(&stream_families(btc_closed_at, &[], Some(&stored))).lines().all(|l| l.starts_with('#')));
    }

    #[test]
    fn stale_streams_and_data_issues_are_counted() {
        let stream = |symbol: &str, stale: bool| {
            let mut counters = StreamHealth::new(StreamKey::new(symbol, Timeframe::M1)).snapshot();
            counters.stale = stale;
            (StreamKey::new(symbol, Timeframe::M1), counters)
        };
        // TC0: nothing stale, no issue.
        let calm = text(&stream_count_families(&[stream("BTCUSDT", false)], 0));
        assert_eq!(
            (sample(&calm, "candled_streams_stale"), sample(&calm, "candled_streams_with_data_issue")),
            (Some(0.0), Some(0.0))
        );
        // TC1: two of three stale, one issue.
        let streams = [stream("BTCUSDT", true), stream("ETHUSDT", false), stream("SOLUSDT", true)];
        let stormy = text(&stream_count_families(&streams, 1));
        assert_eq!(
            (sample(&stormy, "candled_streams_stale"), sample(&stormy, "candled_streams_with_data_issue")),
            (Some(2.0), Some(1.0))
        );
    }

    #[test]
    fn task_series_show_every_state_and_follow_the_per_stream_switch() {
        let task = |name: &str, kind: TaskKind, symbol: Option<&str>, state: TaskState, restarts: u64| {
            let stats = TaskStats::new(8);
            stats.set_state(state);
            let mut counters = stats.snapshot();
            counters.restarts = restarts;
            counters.mailbox_depth = 5;
            TaskStatus {
                name: name.to_owned(),
                kind,
                symbol: symbol.map(str::to_owned),
                timeframe: symbol.map(|_| "1m".to_owned()),
                priority: Priority::Normal,
                auto_restart: true,
                restart_policy: String::new(),
                timeout_secs: None,
                counters,
                metadata: serde_json::Map::new(),
            }
        };
        let tasks = [
            task("storage", TaskKind::Storage, None, TaskState::Running, 0),
            task("subscription-BTCUSDT-1m", TaskKind::Subscription, Some("BTCUSDT"), TaskState::Failed, 4),
        ];
        // Labels show sorted by name.
        let storage = r#"kind="storage",task="storage""#;
        let subscription = r#"kind="subscription",task="subscription-BTCUSDT-1m""#;
        let state = |kind: &str, task: &str, state: &str| {
            format!(r#"candled_task_state{{kind="{kind}",state="{state}",task="{task}"}}"#)
        };

        // TC0: one series per state, 1 for the current one; restarts and mailbox depth.
        let all = text(&task_families(&tasks, true));
        assert_eq!(sample(&all, &state("storage", "storage", "running")), Some(1.0));
        assert_eq!(sample(&all, &state("storage", "storage", "failed")), Some(0.0));
        assert_eq!(sample(&all, &state("subscription", "subscription-BTCUSDT-1m", "failed")), Some(1.0));
        let per_task = all.lines().filter(|l| l.starts_with("candled_task_state{") && l.contains(r#"task="storage""#));
        assert_eq!(per_task.count(), TaskState::ALL.len());
        assert_eq!(sample(&all, &format!("candled_task_restarts_total{{{subscription}}}")), Some(4.0));
        assert_eq!(sample(&all, &format!("candled_task_mailbox_depth{{{storage}}}")), Some(5.0));
        // TC1: per-stream series off: the stream's tasks are left out, the others stay.
        let shared = text(&task_families(&tasks, false));
        assert_eq!(sample(&shared, &state("storage", "storage", "running")), Some(1.0));
        assert!(!shared.contains("subscription-BTCUSDT-1m"));
    }
}
