//! What the query endpoints share: one parser for the query-string parameters naming a stream (the same checks
//! and messages on every endpoint), the check that the symbol exists, and reads on a read-only database
//! connection off the async workers.

use actix_web::web;
use candled_actors::domain::Timeframe;
use candled_actors::store::{Store, StoreError};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;

/// The query of `/api/v1/candles`. Every parameter is optional text here, so that each problem is reported by
/// name; a parameter given twice or not listed here is refused by [`ApiError::from_query`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandleParams {
    symbol: Option<String>,
    timeframe: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
}

/// The query of `/api/v1/indicators`: a stream and a `limit`, no window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorParams {
    symbol: Option<String>,
    timeframe: Option<String>,
    limit: Option<String>,
}

/// The query of `/api/v1/events`: a stream, nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    symbol: Option<String>,
    timeframe: Option<String>,
}

/// How many rows an endpoint returns: `default` when `limit` is absent, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default: usize,
    pub max: usize,
}

/// A validated stream query.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamQuery {
    /// Upper-cased, as stored.
    pub symbol: String,
    pub timeframe: Timeframe,
    /// The first open time, ms UTC.
    pub start: Option<i64>,
    /// The open time to stop before, ms UTC (exclusive); never below `start`.
    pub end: Option<i64>,
    pub limit: usize,
}

impl CandleParams {
    pub fn parse(&self, limits: Limits) -> Result<StreamQuery, ApiError> {
        let window = (self.start.as_deref(), self.end.as_deref());
        parse(self.symbol.as_deref(), self.timeframe.as_deref(), window, self.limit.as_deref(), limits)
    }
}

impl IndicatorParams {
    pub fn parse(&self, limits: Limits) -> Result<StreamQuery, ApiError> {
        parse(self.symbol.as_deref(), self.timeframe.as_deref(), (None, None), self.limit.as_deref(), limits)
    }
}

impl StreamParams {
    /// The stream; the query's `limit` is meaningless here.
    pub fn parse(&self) -> Result<StreamQuery, ApiError> {
        parse(self.symbol.as_deref(), self.timeframe.as_deref(), (None, None), None, Limits { default: 1, max: 1 })
    }
}

/// The one parser. An empty value (`start=`) counts as absent.
fn parse(
    symbol: Option<&str>,
    timeframe: Option<&str>,
    (start, end): (Option<&str>, Option<&str>),
    limit: Option<&str>,
    limits: Limits,
) -> Result<StreamQuery, ApiError> {
    let symbol = given(symbol)
        .ok_or_else(|| ApiError::bad("symbol", "is required, for example symbol=BTCUSDT"))?
        .to_ascii_uppercase();
    let timeframe =
        given(timeframe).ok_or_else(|| ApiError::bad("timeframe", "is required, for example timeframe=1m"))?;
    let timeframe = timeframe
        .parse()
        .map_err(|_| ApiError::bad("timeframe", format!("{timeframe:?} is not a timeframe such as 1m, 1h or 1d")))?;
    let (start, end) = (time("start", given(start))?, time("end", given(end))?);
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(ApiError::bad("start", format!("{start} is after `end` {end}: the window would be empty")));
    }
    let limit = match given(limit) {
        None => limits.default,
        Some(text) => text.parse().ok().filter(|limit| (1..=limits.max).contains(limit)).ok_or_else(|| {
            ApiError::bad("limit", format!("{text:?} must be a whole number from 1 to {}", limits.max))
        })?,
    };
    Ok(StreamQuery { symbol, timeframe, start, end, limit })
}

/// A parameter's value, unless it is absent or empty.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn time(parameter: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| t.parse().map_err(|_| ApiError::bad(parameter, format!("{t:?} is not a time in ms since the epoch"))))
        .transpose()
}

/// Fails with a 404 naming `symbol` when it is neither configured nor has any stored candle.
pub async fn known_symbol(state: &AppState, symbol: &str) -> Result<(), ApiError> {
    if state.streams.has_symbol(symbol) {
        return Ok(());
    }
    let name = symbol.to_owned();
    let stored = read(state, move |store| store.has_symbol(&name)).await?;
    if stored { Ok(()) } else { Err(ApiError::UnknownSymbol(symbol.to_owned())) }
}

/// Runs `read` on a fresh reader of the store, on the blocking thread pool.
pub async fn read<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let backend = state.store.clone();
    let value = web::block(move || backend.open_reader().and_then(|store| read(store.as_ref()))).await??;
    Ok(value)
}
