//! What the query endpoints share: the query-string parameters naming a stream, their validation, the error that
//! names the bad parameter, and reads on a read-only database connection off the async workers.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use candled_actors::domain::Timeframe;
use candled_actors::store::{CandleStore, StoreError};
use serde::Deserialize;

use super::AppState;

/// Why a query failed. A bad parameter is the caller's to fix (400); the rest are ours (500).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("`{parameter}`: {problem}")]
    BadParameter { parameter: &'static str, problem: String },
    #[error("cannot read the database: {0}")]
    Database(#[from] StoreError),
    #[error("the database read did not finish: {0}")]
    Blocking(#[from] actix_web::error::BlockingError),
}

impl QueryError {
    fn bad(parameter: &'static str, problem: impl Into<String>) -> Self {
        Self::BadParameter { parameter, problem: problem.into() }
    }
}

impl ResponseError for QueryError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::Database(_) | Self::Blocking(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let parameter = match self {
            Self::BadParameter { parameter, .. } => Some(*parameter),
            _ => None,
        };
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "error": self.to_string(), "parameter": parameter }))
    }
}

/// The raw query string: every parameter is optional text here, so that each problem is reported by name.
#[derive(Debug, Default, Deserialize)]
pub struct StreamParams {
    symbol: Option<String>,
    timeframe: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
}

impl StreamParams {
    /// `symbol`: required; upper-cased, as stored.
    pub fn symbol(&self) -> Result<String, QueryError> {
        match self.symbol.as_deref().map(str::trim) {
            None | Some("") => Err(QueryError::bad("symbol", "is required, for example symbol=BTCUSDT")),
            Some(symbol) => Ok(symbol.to_ascii_uppercase()),
        }
    }

    /// `timeframe`: required, one of Binance's intervals.
    pub fn timeframe(&self) -> Result<Timeframe, QueryError> {
        let text = self
            .timeframe
            .as_deref()
            .ok_or_else(|| QueryError::bad("timeframe", "is required, for example timeframe=1m"))?;
        text.parse()
            .map_err(|_| QueryError::bad("timeframe", format!("{text:?} is not a timeframe such as 1m, 1h or 1d")))
    }

    /// `start`: an optional open time, ms UTC.
    pub fn start(&self) -> Result<Option<i64>, QueryError> {
        time("start", self.start.as_deref())
    }

    /// `end`: an optional open time, ms UTC (exclusive).
    pub fn end(&self) -> Result<Option<i64>, QueryError> {
        time("end", self.end.as_deref())
    }

    /// `limit`: 1 to `max`, `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, QueryError> {
        let Some(text) = self.limit.as_deref() else { return Ok(default) };
        match text.parse::<usize>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(QueryError::bad("limit", format!("{text:?} must be a whole number from 1 to {max}"))),
        }
    }
}

fn time(parameter: &'static str, text: Option<&str>) -> Result<Option<i64>, QueryError> {
    text.map(|t| {
        t.parse().map_err(|_| QueryError::bad(parameter, format!("{t:?} is not a time in ms since the epoch")))
    })
    .transpose()
}

/// Runs `read` on a fresh read-only connection, on the blocking thread pool.
pub async fn read<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&CandleStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, QueryError> {
    let path = state.db_path.clone();
    let value = web::block(move || CandleStore::open_read_only(&path).and_then(|store| read(&store))).await??;
    Ok(value)
}
