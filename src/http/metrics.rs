//! `GET /metrics`: Prometheus text exposition. The registry the actors update, plus the series read at scrape time:
//! per task from the health actor's task table, and per stream from its stream counters and the store (values
//! that are cheap to read now are not pushed on every candle). A removed task or stream is no longer in either, so
//! its series leave with it.

use actix_web::{HttpResponse, web};
use candled_actors::actors::health::{GetHealth, GetStreams, TaskStatus};
use candled_actors::domain::StreamKey;
use candled_actors::metrics::{STREAM_COUNTER_FAMILIES, STREAM_COUNTERS};
use candled_actors::streams::StreamCounters;
use candled_actors::tasks::{TaskState, unix_ms};
use futures_util::StreamExt as _;
use prometheus::core::Collector as _;
use prometheus::{Encoder, TextEncoder};

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
    let mut head = Vec::new();
    TextEncoder::new().encode(&families, &mut head)?;
    drop(families);
    let streams = state.health.send(GetStreams).await.unwrap_or_default();
    let mut stream_read = None;
    if per_stream {
        // Without the store, the series read from it are left out rather than shown wrong; the rest still show.
        let stored = read(&state, |store| store.stored_ranges())
            .await
            .inspect_err(|error| log::warn!("/metrics: cannot read the stored ranges: {error}"))
            .ok();
        // Ages are judged on the exchange's clock, like every deadline (the local one until it is known).
        let now_ms = unix_ms();
        let now_ms = state.exchange_clock.at(now_ms).unwrap_or(now_ms);
        stream_read = Some((now_ms, stored, state.metrics.stream_counts()));
    }
    // The per-task and per-stream series are written while the client reads them, a chunk at a time: with tens of
    // thousands of streams the whole text is tens of megabytes, which a scrape would otherwise hold at once (twice,
    // while it grows).
    let (sink, chunks) = tokio::sync::mpsc::channel::<web::Bytes>(CHUNKS_AHEAD);
    actix_web::rt::task::spawn_blocking(move || {
        let mut text = Exposition::streaming(sink);
        if let Some(report) = &report {
            task_series(&mut text, &report.task_list, per_stream);
            stream_count_series(&mut text, &streams, report.data_issues.len());
        }
        if let Some((now_ms, stored, mut counts)) = stream_read {
            stream_series(&mut text, now_ms, &streams, stored.as_ref());
            stream_counter_series(&mut text, &mut counts);
        }
        text.finish();
    });
    let rest = futures_util::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), chunks))
    });
    let body = futures_util::stream::once(async move { Ok(web::Bytes::from(head)) }).chain(rest);
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").streaming(body))
}

/// Bytes of text per chunk of a streamed scrape, and chunks written ahead of the client.
const CHUNK_BYTES: usize = 64 * 1024;
const CHUNKS_AHEAD: usize = 4;

/// The series built for one scrape, written straight as Prometheus text, as `TextEncoder` writes them (families
/// by name, series by label values, labels by name, empty families left out), under the `candled_` prefix. With
/// tens of thousands of streams these are hundreds of thousands of series: built as `prometheus` metrics and
/// gathered, each took about a kilobyte for the scrape, a gigabyte for 24,000 streams.
#[derive(Default)]
struct Exposition {
    text: String,
    /// Where full chunks go, when streamed; `None` keeps the whole text (for tests).
    sink: Option<tokio::sync::mpsc::Sender<web::Bytes>>,
    /// The client went away: nothing more is written.
    gone: bool,
}

/// One family being written: its header goes out with its first sample.
struct Family<'a> {
    text: &'a mut Exposition,
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    headed: bool,
}

impl Exposition {
    fn streaming(sink: tokio::sync::mpsc::Sender<web::Bytes>) -> Self {
        Self { text: String::with_capacity(CHUNK_BYTES + 1024), sink: Some(sink), gone: false }
    }

    /// Sends the text written so far when it fills a chunk (or `always`), blocking while the client is behind.
    fn flush(&mut self, always: bool) {
        let Some(sink) = &self.sink else { return };
        if self.gone || (self.text.len() < CHUNK_BYTES && !always) || self.text.is_empty() {
            return;
        }
        let chunk = std::mem::replace(&mut self.text, String::with_capacity(CHUNK_BYTES + 1024));
        self.gone = sink.blocking_send(web::Bytes::from(chunk)).is_err();
        if self.gone {
            self.text = String::new();
        }
    }

    /// Sends what is left.
    fn finish(mut self) {
        self.flush(true);
    }

    fn family(&mut self, name: &'static str, kind: &'static str, help: &'static str) -> Family<'_> {
        Family { text: self, name, help, kind, headed: false }
    }
}

/// Escapes a help text (`\` and newlines) or a label value (and `"`), as the text format wants.
fn escaped(text: &str, quotes: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c == '\\' || c == '\n' || (quotes && c == '"');
    if !text.contains(special) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if special(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

impl Family<'_> {
    /// One sample; `labels` sorted by name.
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        use std::fmt::Write as _;
        if self.text.gone {
            return;
        }
        let out = &mut self.text.text;
        if !self.headed {
            self.headed = true;
            let _ = writeln!(out, "# HELP candled_{} {}", self.name, escaped(self.help, false));
            let _ = writeln!(out, "# TYPE candled_{} {}", self.name, self.kind);
        }
        out.push_str("candled_");
        out.push_str(self.name);
        for (index, (label, value)) in labels.iter().enumerate() {
            out.push_str(if index == 0 { "{" } else { "," });
            let _ = write!(out, "{label}=\"{}\"", escaped(value, true));
        }
        if !labels.is_empty() {
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
        self.text.flush(false);
    }
}

/// Per task (`task`, `kind`): its state (one series per state, 1 for the current one), restarts and mailbox depth.
/// With the per-stream series off, the tasks of one stream (subscription, indicator) are left out too.
fn task_series(text: &mut Exposition, tasks: &[TaskStatus], per_stream: bool) {
    let mut shown: Vec<&TaskStatus> = tasks.iter().filter(|task| per_stream || task.symbol.is_none()).collect();
    shown.sort_by(|a, b| (a.kind.as_str(), a.name.as_str()).cmp(&(b.kind.as_str(), b.name.as_str())));
    fn labels(task: &TaskStatus) -> [(&str, &str); 2] {
        [("kind", task.kind.as_str()), ("task", task.name.as_str())]
    }
    let mut mailbox = text.family("task_mailbox_depth", "gauge", "Messages queued in the task's mailbox");
    for task in &shown {
        mailbox.sample(&labels(task), task.counters.mailbox_depth as f64);
    }
    let mut restarts = text.family("task_restarts_total", "counter", "Restarts of the task since candled started");
    for task in &shown {
        restarts.sample(&labels(task), task.counters.restarts as f64);
    }
    let mut states: Vec<TaskState> = TaskState::ALL.to_vec();
    states.sort_by_key(|state| state.as_str());
    let mut state = text.family("task_state", "gauge", "Task state: 1 for the state the task is in, 0 for the others");
    for task in &shown {
        for candidate in &states {
            let value = f64::from(u8::from(*candidate == task.counters.state));
            state.sample(&[("kind", task.kind.as_str()), ("state", candidate.as_str()), ("task", &task.name)], value);
        }
    }
}

/// Streams stale, and streams with a data issue (closed candles missing or stuck past their repair deadline, as
/// `/health` reports): what the per-stream series tell, as two series that stay when those are off.
fn stream_count_series(text: &mut Exposition, streams: &[(StreamKey, StreamCounters)], data_issues: usize) {
    let stale = streams.iter().filter(|(_, counters)| counters.stale).count();
    text.family("streams_stale", "gauge", "Streams delivering no event past their stale limit")
        .sample(&[], stale as f64);
    text.family(
        "streams_with_data_issue",
        "gauge",
        "Streams with closed candles missing or stuck past their repair deadline",
    )
    .sample(&[], data_issues as f64);
}

/// Per stream (`symbol`, `timeframe`) at `now_ms` (exchange time): the age of the last stored closed candle (since
/// its close), stale, missing and overdue candles, repairs and revisions. `stored` is `None` when the store could not
/// be read: the series read from it (age, missing, revisions) are then left out.
fn stream_series(
    text: &mut Exposition,
    now_ms: i64,
    streams: &[(StreamKey, StreamCounters)],
    stored: Option<&StoredRanges>,
) {
    let mut sorted: Vec<&(StreamKey, StreamCounters)> = streams.iter().collect();
    sorted.sort_by(|(a, _), (b, _)| (&a.symbol, a.timeframe.as_str()).cmp(&(&b.symbol, b.timeframe.as_str())));
    fn labels(key: &StreamKey) -> [(&str, &str); 2] {
        [("symbol", key.symbol.as_str()), ("timeframe", key.timeframe.as_str())]
    }
    // What the store says of each stream: (age in seconds, missing, revisions).
    let read: Vec<Option<(Option<f64>, u64, u64)>> = (sorted.iter())
        .map(|(key, counters)| {
            let range = StoredRange::of(stored?, key);
            let (_, absent) = range.expected_and_missing(key.timeframe, &counters.exchange_gaps);
            let age = range.last_closed.map(|last| (now_ms - key.timeframe.next_open(last)).max(0) as f64 / 1000.0);
            Some((age, absent, range.revisions))
        })
        .collect();
    let mut age = text.family(
        "stream_last_closed_age_seconds",
        "gauge",
        "Seconds since the close of the last closed candle stored (absent while none is stored)",
    );
    for ((key, _), read) in sorted.iter().zip(&read) {
        if let Some((Some(seconds), _, _)) = read {
            age.sample(&labels(key), *seconds);
        }
    }
    let mut missing = text.family(
        "stream_missing_candles",
        "gauge",
        "Closed candles between the first and last stored that are neither stored nor a known exchange gap",
    );
    for ((key, _), read) in sorted.iter().zip(&read) {
        if let Some((_, absent, _)) = read {
            missing.sample(&labels(key), *absent as f64);
        }
    }
    let mut overdue = text.family(
        "stream_overdue_candles",
        "gauge",
        "Closed candles the last audit found missing or stuck past their repair deadline (the /health data issue)",
    );
    for (key, counters) in &sorted {
        overdue.sample(&labels(key), counters.data_issue.as_ref().map_or(0, |issue| issue.candles) as f64);
    }
    let mut repairs = text.family(
        "stream_repairs_total",
        "counter",
        "REST repairs completed (after reconnects, gaps, missed closes)",
    );
    for (key, counters) in &sorted {
        repairs.sample(&labels(key), counters.repairs as f64);
    }
    let mut revisions =
        text.family("stream_revisions_total", "counter", "Stored closed candles the exchange later revised");
    for ((key, _), read) in sorted.iter().zip(&read) {
        if let Some((_, _, revised)) = read {
            revisions.sample(&labels(key), *revised as f64);
        }
    }
    let mut stale =
        text.family("stream_stale", "gauge", "1 while the stream delivers no event past its stale limit, else 0");
    for (key, counters) in &sorted {
        stale.sample(&labels(key), f64::from(u8::from(counters.stale)));
    }
}

/// The per-stream counters the actors push (audit passes, holes found, candles repaired, candles written, frames
/// rejected), one family each, series sorted by label values.
fn stream_counter_series(text: &mut Exposition, counts: &mut [(StreamKey, [u64; STREAM_COUNTERS])]) {
    counts.sort_by(|(a, _), (b, _)| (&a.symbol, a.timeframe.as_str()).cmp(&(&b.symbol, b.timeframe.as_str())));
    for (index, (name, help)) in STREAM_COUNTER_FAMILIES.into_iter().enumerate() {
        let mut family = text.family(name, "counter", help);
        for (key, values) in counts.iter() {
            family.sample(
                &[("symbol", key.symbol.as_str()), ("timeframe", key.timeframe.as_str())],
                values[index] as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candled_actors::domain::Timeframe;
    use candled_actors::streams::{DataIssue, ExchangeGap, StreamHealth};
    use candled_actors::tasks::{Priority, TaskKind, TaskStats};

    use super::*;

    /// The exposition text written.
    fn text(written: &str) -> String {
        written.to_owned()
    }

    fn written(write: impl FnOnce(&mut Exposition)) -> String {
        let mut text = Exposition::default();
        write(&mut text);
        text.text
    }

    fn stream_families(now_ms: i64, streams: &[(StreamKey, StreamCounters)], stored: Option<&StoredRanges>) -> String {
        written(|text| stream_series(text, now_ms, streams, stored))
    }

    fn stream_count_families(streams: &[(StreamKey, StreamCounters)], data_issues: usize) -> String {
        written(|text| stream_count_series(text, streams, data_issues))
    }

    fn task_families(tasks: &[TaskStatus], per_stream: bool) -> String {
        written(|text| task_series(text, tasks, per_stream))
    }

    #[test]
    fn written_series_read_as_the_prometheus_encoder_writes_them() {
        // The same series through `prometheus` and through `Exposition`: byte for byte equal.
        let registry = prometheus::Registry::new_custom(Some("candled".into()), None).expect("a valid prefix");
        let opts = prometheus::Opts::new("stream_stale", "1 while \\ stale,\nelse \"0\"");
        let vec = prometheus::GaugeVec::new(opts, &["timeframe", "symbol"]).expect("valid");
        registry.register(Box::new(vec.clone())).expect("registered");
        vec.with_label_values(&["1m", "ETH\"USDT"]).set(2.5);
        vec.with_label_values(&["1m", "BTC\\USDT\n"]).set(0.0);
        vec.with_label_values(&["15m", "BTC\\USDT\n"]).set(-1.0);
        let mut expected = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut expected).expect("encodes");
        let ours = written(|text| {
            let mut family = text.family("stream_stale", "gauge", "1 while \\ stale,\nelse \"0\"");
            family.sample(&[("symbol", "BTC\\USDT\n"), ("timeframe", "15m")], -1.0);
            family.sample(&[("symbol", "BTC\\USDT\n"), ("timeframe", "1m")], 0.0);
            family.sample(&[("symbol", "ETH\"USDT"), ("timeframe", "1m")], 2.5);
            text.family("never_sampled", "gauge", "left out");
        });
        assert_eq!(ours, String::from_utf8(expected).expect("UTF-8"));
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
