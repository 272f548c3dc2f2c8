//! Where candles and indicator values are kept: the [`Store`] that the storage actor writes through and every reader
//! (HTTP, the audit, rebuilds, the CLI) reads through, its rules, its implementations (SQLite, the embedded
//! default, in [`sqlite`]), and the [`StoreBackend`] the config picks, which opens them.
//!
//! Every implementation keeps the same rules: an in-progress candle is replaced by any newer update; a closed candle
//! is final, an identical duplicate changes nothing, and a differing closed candle is a recorded revision.
//! PostgreSQL, for instances sharing one database, is in [`postgres`]; both pass the suite in `conformance`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::domain::{Candle, Gap, StreamId, StreamKey, Timeframe};
use crate::streams::ExchangeGap;

pub mod backend;
#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;
#[cfg(any(test, feature = "fault-injection"))]
pub mod test_support;

pub use backend::StoreBackend;
pub use postgres::{PostgresBackend, PostgresConfig, PostgresStore};
pub use sqlite::SqliteStore;

/// One handle on the candle store. Every method is blocking: the storage actor calls it on its own thread, readers on
/// a blocking pool.
pub trait Store: Send {
    /// Upserts a batch in one transaction: the candles, then the indicator values (named by `names`, indexed by
    /// [`IndicatorRow::output`]), under the store's rules. Returns the rows changed.
    fn write_batch(
        &mut self,
        streams: &[StreamKey],
        names: &[String],
        candles: &[(StreamId, Candle)],
        indicators: &[IndicatorRow],
    ) -> Result<usize, StoreError>;

    /// Upserts a batch of candles in one transaction. Returns the rows changed.
    fn write_candles(&mut self, streams: &[StreamKey], rows: &[(StreamId, Candle)]) -> Result<usize, StoreError> {
        self.write_batch(streams, &[], rows, &[])
    }

    /// Records ranges `[from_open, to_open)` the exchange confirmed it has no candles for.
    fn record_exchange_gaps(&mut self, key: &StreamKey, gaps: &[Gap]) -> Result<(), StoreError>;

    /// The newest closed open time stored for each stream.
    fn last_closed(&self) -> Result<HashMap<(String, Timeframe), i64>, StoreError>;

    /// Stored candles of one stream with `start <= open time < end`, oldest first: the oldest or the newest
    /// `limit` of them.
    fn candles_window(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        start: i64,
        end: i64,
        limit: usize,
        window: Window,
    ) -> Result<Vec<Candle>, StoreError>;

    /// Every closed candle of one stream, oldest first: what the indicators are recomputed from.
    fn closed_candles(&self, symbol: &str, timeframe: Timeframe) -> Result<Vec<Candle>, StoreError>;

    /// The stored indicator values of the newest `limit` candles that have any, oldest first, names sorted.
    fn indicator_series(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        limit: usize,
    ) -> Result<Vec<IndicatorPoint>, StoreError>;

    /// The number of revisions recorded for a stream.
    fn revisions(&self, symbol: &str, timeframe: Timeframe) -> Result<u64, StoreError>;

    /// Every recorded exchange gap, by stream, oldest first.
    fn exchange_gaps(&self) -> Result<HashMap<(String, Timeframe), Vec<Gap>>, StoreError>;

    /// The oldest closed open time stored for a stream.
    fn first_closed(&self, key: &StreamKey) -> Result<Option<i64>, StoreError>;

    /// The newest closed open time stored for a stream.
    fn last_closed_of(&self, key: &StreamKey) -> Result<Option<i64>, StoreError>;

    /// The open times stored for a stream in `[from, to]`, oldest first: closed ones, and ones still in progress.
    fn stored_opens(&self, key: &StreamKey, from: i64, to: i64) -> Result<(Vec<i64>, Vec<i64>), StoreError>;

    /// Per (symbol, timeframe name): the first and last closed candle stored, how many, and the revisions.
    fn stored_ranges(&self) -> Result<StoredRanges, StoreError>;

    /// Whether any candle of `symbol` is stored.
    fn has_symbol(&self, symbol: &str) -> Result<bool, StoreError>;

    /// The indicator outputs stored for a stream with `from <= open time < to`, sorted by name.
    fn indicator_names(&self, key: &StreamKey, from: i64, to: i64) -> Result<Vec<String>, StoreError>;

    /// Calls `each(open_time, name, value)` for every indicator value of a stream with `from <= open time <= to`,
    /// in no particular order.
    fn for_each_indicator_value(
        &self,
        key: &StreamKey,
        from: i64,
        to: i64,
        each: &mut dyn FnMut(i64, &str, f64),
    ) -> Result<(), StoreError>;

    /// `Err` when this handle can no longer reach the store it opened (for SQLite: the file at its path was deleted
    /// or replaced).
    fn check(&self) -> Result<(), StoreError>;

    /// Makes everything committed durable in the store's own files and lets go (for SQLite: folds the WAL into the
    /// database file).
    fn close(&mut self) -> Result<(), StoreError>;
}

/// One indicator value to store: `output` indexes the indicator names given to [`Store::write_batch`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndicatorRow {
    pub stream: StreamId,
    /// The open time of the candle the value was computed on.
    pub open_time: i64,
    pub output: u16,
    pub value: f64,
}

/// The stored indicator values of one candle, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorPoint {
    pub timestamp: i64,
    pub values: Vec<(String, f64)>,
}

/// Which end of a range [`Store::candles_window`] returns when the range holds more than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Oldest,
    Newest,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("no stream is registered as {0:?}")]
    UnknownStream(StreamId),
    #[error("{0:?} in the database is not a timeframe")]
    BadTimeframe(String),
    #[error("no indicator output is numbered {0}")]
    UnknownOutput(u16),
    #[error("cannot read the metadata of the database file {}: {source}", .path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("the database file {} was {change} while open", .path.display())]
    FileChanged { path: PathBuf, change: FileChange },
    /// The database's schema is not one this code can use as it is (too new; or version 1, opened read-only).
    #[error("database schema: {0}")]
    Schema(String),
    #[error("PostgreSQL: {}", crate::error_chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL connection pool: {}", crate::error_chain(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("PostgreSQL settings: {0}")]
    PostgresConfig(String),
    /// A recent check found the server unreachable (its error, as text).
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    #[error("the PostgreSQL store's runtime dropped a request (shutting down?)")]
    PostgresTaskLost,
}

impl StoreError {
    /// Whether trying again later may succeed: the server or the connection went away (a PostgreSQL restart, a pool
    /// timeout, a busy SQLite file), as opposed to a mistake in what was written or a setting. The storage actor
    /// keeps the pending rows and retries with back-off on a transient error.
    pub fn is_transient(&self) -> bool {
        use deadpool_postgres::PoolError;
        match self {
            Self::Postgres(error) => postgres::is_transient(error),
            Self::Pool(PoolError::Backend(error)) => postgres::is_transient(error),
            Self::Pool(PoolError::Timeout(_) | PoolError::Closed) => true,
            Self::Pool(_) => false,
            Self::Unreachable(_) | Self::PostgresTaskLost => true,
            Self::Sqlite(error) => matches!(
                error.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Self::UnknownStream(_)
            | Self::BadTimeframe(_)
            | Self::UnknownOutput(_)
            | Self::File { .. }
            | Self::FileChanged { .. }
            | Self::Schema(_)
            | Self::PostgresConfig(_) => false,
        }
    }
}

/// What happened to the database file at a store's path since the store opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChange {
    /// No file is at the path any more.
    Deleted,
    /// Another file is at the path.
    Replaced,
}

impl std::fmt::Display for FileChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Deleted => "deleted",
            Self::Replaced => "replaced by another file",
        })
    }
}

/// A candle row as stored, with its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCandle {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub candle: Candle,
}

/// What the store holds for one stream.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StoredRange {
    /// Open times of the first and last stored closed candles.
    pub first_closed: Option<i64>,
    pub last_closed: Option<i64>,
    pub present: u64,
    pub revisions: u64,
}

/// What the store holds per (symbol, timeframe name).
pub type StoredRanges = HashMap<(String, String), StoredRange>;

impl StoredRange {
    /// What is stored for `key` (nothing if absent).
    pub fn of(ranges: &StoredRanges, key: &StreamKey) -> Self {
        ranges.get(&(key.symbol.clone(), key.timeframe.to_string())).copied().unwrap_or_default()
    }

    /// The closed candles there should be from the first stored to the last on the exchange's grid, and how many
    /// of them are neither stored nor in a known exchange gap: `(expected, missing)`.
    pub fn expected_and_missing(&self, timeframe: Timeframe, gaps: &[ExchangeGap]) -> (u64, u64) {
        let (expected, known_gaps) = match (self.first_closed, self.last_closed) {
            (Some(first), Some(last)) => {
                let end = timeframe.next_open(last);
                let known =
                    gaps.iter().map(|g| timeframe.count_opens(g.from_open.max(first), g.to_open.min(end))).sum();
                (timeframe.count_opens(first, end), known)
            }
            _ => (0, 0),
        };
        (expected, expected.saturating_sub(self.present).saturating_sub(known_gaps))
    }
}
