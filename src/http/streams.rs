//! `GET /api/v1/streams`: the completeness report. Per (symbol, timeframe): the first and last stored closed
//! candle, the expected and present counts between them, known exchange gaps, repairs and revisions.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use candled_actors::actors::health::GetStreams;
use candled_actors::domain::{StreamKey, Timeframe};
use candled_actors::store::{CandleStore, StoreError};
use candled_actors::streams::ExchangeGap;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::params::read;

/// What SQLite holds for one stream.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(super) struct StoredRange {
    /// Open times of the first and last stored closed candles.
    pub first_closed: Option<i64>,
    pub last_closed: Option<i64>,
    pub present: u64,
    pub revisions: u64,
}

/// What SQLite holds per (symbol, timeframe name).
pub(super) type StoredRanges = HashMap<(String, String), StoredRange>;

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

#[derive(Serialize)]
struct StreamReport {
    symbol: String,
    timeframe: String,
    #[serde(flatten)]
    stored: StoredRange,
    /// Closed candles there should be from the first stored to the last, on the exchange's grid.
    expected: u64,
    /// Expected candles neither stored nor known to be missing on the exchange.
    missing: u64,
    #[serde(flatten)]
    counters: candled_actors::streams::StreamCounters,
}

pub async fn streams(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let counters = state.health.send(GetStreams).await?;
    let stored = read(&state, stored_ranges).await?;
    let reports: Vec<StreamReport> = counters
        .into_iter()
        .map(|(key, counters)| {
            let stored = StoredRange::of(&stored, &key);
            let (expected, missing) = stored.expected_and_missing(key.timeframe, &counters.exchange_gaps);
            StreamReport {
                symbol: key.symbol,
                timeframe: key.timeframe.to_string(),
                stored,
                expected,
                missing,
                counters,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "streams": reports,
        "rejected_frames": state.metrics.rejected().into_iter().collect::<HashMap<_, _>>(),
    })))
}

pub(super) fn stored_ranges(store: &CandleStore) -> Result<StoredRanges, StoreError> {
    let conn = store.connection();
    let mut ranges = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT symbol, timeframe, MIN(timestamp), MAX(timestamp), COUNT(*) FROM candles WHERE is_closed = 1
         GROUP BY symbol, timeframe",
    )?;
    let rows = stmt.query_map([], |row| {
        let range = StoredRange {
            first_closed: row.get(2)?,
            last_closed: row.get(3)?,
            present: row.get::<_, i64>(4)? as u64,
            revisions: 0,
        };
        Ok(((row.get(0)?, row.get(1)?), range))
    })?;
    for row in rows {
        let (key, range) = row?;
        ranges.insert(key, range);
    }
    let mut stmt =
        conn.prepare("SELECT symbol, timeframe, COUNT(*) FROM candle_revisions GROUP BY symbol, timeframe")?;
    let rows = stmt.query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get::<_, i64>(2)? as u64)))?;
    for row in rows {
        let (key, revisions) = row?;
        ranges.entry(key).or_insert_with(StoredRange::default).revisions = revisions;
    }
    Ok(ranges)
}
