//! `candled backfill`: fetches an old range of one stream over REST, under the engine's weight budget, and stores
//! it by the live path's rules. Progress is the database itself: a run fetches only the candles the range still
//! lacks, so an interrupted run, started again, continues where it stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use candled_actors::domain::{Gap, StreamId, StreamKey, Timeframe, holes};
use candled_actors::lock::LockError;
use candled_actors::metrics::Metrics;
use candled_actors::rest::{RestClient, RestError};
use candled_actors::store::{Store, StoreError};
use candled_actors::tls::{self, TlsError};
use indicatif::{ProgressBar, ProgressStyle};

use super::range::{RangeError, StreamArgs, TimeRange, format_time, parse_time};
use crate::config::{BackendError, ConfigError, Settings};

/// Candles fetched (with one server-time request) and committed at a time: what an interruption can lose.
const CHUNK: u64 = 5_000;

/// Fetch a range of a stream over REST into the database: resumable, under the weight budget.
///
/// Works for any symbol the exchange lists, configured or not. Closed candles already stored are not fetched
/// again; a fetched candle that differs from a stored closed one is stored as a revision. Ranges the exchange has
/// no candles for (checked twice) are recorded as exchange gaps and not asked again. Refuses to run beside a
/// candled that holds the same database.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The first open time wanted: ms UTC, a date (2024-01-01) or an RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub from: i64,
    /// The open time the range stops before (excluded), in the same forms. Clipped to the last closed candle.
    #[arg(long, value_parser = parse_time)]
    pub to: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error(
        "{0}\nA backfill writes the database, so it does not run beside the candled that holds it, and a running \
         candled cannot take rows from another process (it has no way to, yet): stop candled, run the backfill, \
         then start candled again"
    )]
    InUse(LockError),
    #[error(transparent)]
    Lock(LockError),
    #[error("{0} is not listed on the exchange")]
    Unlisted(String),
    #[error("{store}: {source}")]
    Store { store: String, source: StoreError },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}; what was stored is kept: run the same command again to continue")]
    Rest(#[from] RestError),
}

impl BackfillError {
    /// 2 for what the user must change first (config, arguments, a running candled, an unlisted symbol), 1 for a
    /// failure on the way.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Backend(_) | Self::Range(_) | Self::InUse(_) | Self::Unlisted(_) => 2,
            _ => 1,
        }
    }
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backfilled {
    /// Candles the range lacked when the run started.
    pub missing: u64,
    pub fetched: u64,
    /// Rows written: new candles, or stored in-progress ones now closed.
    pub written: u64,
    pub revised: u64,
    /// Exchange gaps recorded (ranges the exchange has no candles for), and the candles they span.
    pub gaps: u64,
    pub gap_candles: u64,
}

/// Runs `candled backfill` with the store and exchange of the config at `config_path`; prints a summary line.
pub async fn run(args: &BackfillArgs, config_path: &Path) -> Result<(), BackfillError> {
    let settings = Settings::load(config_path)?;
    let range = TimeRange::new(Some(args.from), Some(args.to))?;
    let backend = settings.storage.backend()?;
    let _lock = backend.lock().map_err(|error| match error {
        LockError::InUse { .. } => BackfillError::InUse(error),
        LockError::Io { .. } | LockError::Folder { .. } => BackfillError::Lock(error),
    })?;
    let store_error = |source| BackfillError::Store { store: backend.describe(), source };
    let mut store = backend.open_writer().map_err(store_error)?;
    let metrics = Metrics::new();
    let tls = tls::client_config(settings.exchange.ca_file.as_deref())?;
    let rest = RestClient::new(&settings.exchange.rest_url, tls, metrics.clone())?;
    let key = args.stream.key();
    if !rest.unlisted_symbols(std::slice::from_ref(&key.symbol)).await?.is_empty() {
        return Err(BackfillError::Unlisted(key.symbol));
    }
    let started = Instant::now();
    let server_time = rest.server_time().await?;
    let plan = match span(key.timeframe, range, server_time) {
        Some((first, through)) => {
            let closed = store.stored_opens(&key, first, through).map_err(store_error)?.0;
            let known = store.exchange_gaps().map_err(store_error)?.remove(&(key.symbol.clone(), key.timeframe));
            holes(key.timeframe, first, through, &closed, &known.unwrap_or_default())
        }
        None => Vec::new(),
    };
    let mut fetch = Fetch::new(&key, &rest, store.as_mut(), &plan);
    let result = fetch.all(&plan).await;
    fetch.progress.finish_and_clear();
    let done = fetch.done;
    result.map_err(|error| match error {
        FetchFailure::Rest(error) => BackfillError::Rest(error),
        FetchFailure::Store(source) => store_error(source),
    })?;
    println!(
        "backfilled {} {} in [{}, {}): {} candles missing, {} fetched, {} written, {} revised, {} exchange gaps \
         ({} candles) recorded; {} REST requests in {:.1} s",
        key.symbol,
        key.timeframe,
        format_time(args.from),
        format_time(args.to),
        done.missing,
        done.fetched,
        done.written,
        done.revised,
        done.gaps,
        done.gap_candles,
        rest_requests(&metrics),
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// The first and last open times a backfill of `range` may fetch at the exchange's `server_time`: those in the
/// range whose candle has closed. `None` if there is none.
fn span(timeframe: Timeframe, range: TimeRange, server_time: i64) -> Option<(i64, i64)> {
    let (first, last) = range.opens(timeframe)?;
    let newest_closed = timeframe.previous_open(timeframe.open_time_containing(server_time));
    let through = last.min(newest_closed);
    (first <= through).then_some((first, through))
}

/// REST requests sent, whatever their answer.
fn rest_requests(metrics: &Metrics) -> u64 {
    let families = metrics.registry.gather();
    let family = families.iter().find(|family| family.name() == "candled_rest_requests_total");
    family.map_or(0, |family| family.get_metric().iter().map(|m| m.get_counter().get_value() as u64).sum())
}

#[derive(Debug)]
enum FetchFailure {
    Rest(RestError),
    Store(StoreError),
}

/// One backfill's fetching and storing, with its progress bar and counts.
struct Fetch<'a> {
    key: &'a StreamKey,
    rest: &'a RestClient,
    store: &'a mut dyn Store,
    progress: ProgressBar,
    done: Backfilled,
}

impl<'a> Fetch<'a> {
    fn new(key: &'a StreamKey, rest: &'a RestClient, store: &'a mut dyn Store, plan: &[Gap]) -> Self {
        let missing = plan.iter().map(|gap| key.timeframe.count_opens(gap.from_open, gap.to_open)).sum();
        let progress = ProgressBar::new(missing).with_prefix(format!("{} {}", key.symbol, key.timeframe));
        let style = ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} candles ({per_sec}, {eta} left)",
        );
        if let Ok(style) = style {
            progress.set_style(style);
        }
        progress.enable_steady_tick(Duration::from_millis(200));
        Self { key, rest, store, progress, done: Backfilled { missing, ..Backfilled::default() } }
    }

    /// Fetches every gap of `plan`, chunk by chunk, each committed before the next is asked for.
    async fn all(&mut self, plan: &[Gap]) -> Result<(), FetchFailure> {
        let timeframe = self.key.timeframe;
        for gap in plan {
            let last = timeframe.previous_open(gap.to_open);
            let mut from = gap.from_open;
            while from <= last {
                let through = chunk_end(timeframe, from, last, CHUNK);
                if !self.chunk(from, through).await? {
                    return Ok(());
                }
                self.progress.inc(timeframe.count_opens(from, timeframe.next_open(through)));
                from = timeframe.next_open(through);
            }
        }
        Ok(())
    }

    /// Fetches and stores `[from, through]`; a range the exchange answers without candles is asked once more and
    /// then recorded as an exchange gap. `false` when the exchange has not closed all of it yet.
    async fn chunk(&mut self, from: i64, through: i64) -> Result<bool, FetchFailure> {
        let found = self.rest.closed_range(self.key, from, Some(through)).await.map_err(FetchFailure::Rest)?;
        let mut candles = found.candles;
        let mut confirmed = Vec::new();
        for gap in &found.exchange_gaps {
            let last = self.key.timeframe.previous_open(gap.to_open);
            let again =
                self.rest.closed_range(self.key, gap.from_open, Some(last)).await.map_err(FetchFailure::Rest)?;
            candles.extend(again.candles);
            confirmed.extend(again.exchange_gaps);
        }
        candles.sort_by_key(|candle| candle.open_time);
        let rows: Vec<_> = candles.iter().map(|candle| (StreamId(0), *candle)).collect();
        let streams = std::slice::from_ref(self.key);
        let revisions_before = self.revisions()?;
        let written = self.store.write_candles(streams, &rows).map_err(FetchFailure::Store)? as u64;
        let revised = self.revisions()? - revisions_before;
        self.store.record_exchange_gaps(self.key, &confirmed).map_err(FetchFailure::Store)?;
        self.done.fetched += candles.len() as u64;
        self.done.written += written - revised;
        self.done.revised += revised;
        self.done.gaps += confirmed.len() as u64;
        self.done.gap_candles +=
            confirmed.iter().map(|gap| self.key.timeframe.count_opens(gap.from_open, gap.to_open)).sum::<u64>();
        Ok(found.through_open.is_some_and(|closed| closed >= through))
    }

    fn revisions(&self) -> Result<u64, FetchFailure> {
        self.store.revisions(&self.key.symbol, self.key.timeframe).map_err(FetchFailure::Store)
    }
}

/// The last open time of the chunk of at most `size` candles that starts at `from`, not past `last`.
fn chunk_end(timeframe: Timeframe, from: i64, last: i64, size: u64) -> i64 {
    let end = match timeframe.fixed_ms() {
        Some(ms) => from.saturating_add(ms.saturating_mul(size as i64 - 1)),
        None => (1..size).try_fold(from, |open, _| (open < last).then(|| timeframe.next_open(open))).unwrap_or(last),
    };
    end.min(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn the_span_is_the_range_clipped_to_the_closed_candles() {
        let range = |from, to| TimeRange::new(Some(from), Some(to)).unwrap();
        // TC0: a range wholly in the past, `to` excluded.
        assert_eq!(span(Timeframe::M1, range(0, 10 * MIN), 60 * MIN), Some((0, 9 * MIN)));
        // TC1: a range reaching into the present stops at the last closed candle (10:30.5 -> the 9th minute's).
        assert_eq!(span(Timeframe::M1, range(0, 60 * MIN), 10 * MIN + 30_500), Some((0, 9 * MIN)));
        // TC2: a range wholly after the last closed candle, or holding no open time, has nothing to fetch.
        assert_eq!(span(Timeframe::M1, range(10 * MIN, 20 * MIN), 10 * MIN + 30_500), None);
        assert_eq!(span(Timeframe::M1, range(1, MIN), 60 * MIN), None);
    }

    #[test]
    fn chunks_hold_at_most_size_candles_and_stop_at_the_last() {
        // TC0: a full chunk of fixed-size candles.
        assert_eq!(chunk_end(Timeframe::M1, 0, 100 * MIN, 10), 9 * MIN);
        // TC1: cut at the last open time.
        assert_eq!(chunk_end(Timeframe::M1, 95 * MIN, 100 * MIN, 10), 100 * MIN);
        // TC2: one candle per chunk.
        assert_eq!(chunk_end(Timeframe::M1, 5 * MIN, 100 * MIN, 1), 5 * MIN);
        // TC3: months step by the calendar: 2024-01-01 plus 2 months is 2024-03-01.
        let (jan, mar, dec) = (1_704_067_200_000, 1_709_251_200_000, 1_733_011_200_000);
        assert_eq!(chunk_end(Timeframe::Mo1, jan, dec, 3), mar);
        // TC4: months cut at the last.
        assert_eq!(chunk_end(Timeframe::Mo1, jan, mar, 12), mar);
    }
}
