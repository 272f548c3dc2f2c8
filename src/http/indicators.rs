//! `GET /api/v1/indicators?symbol=&timeframe=&limit=`: the stored indicator series of one stream, and the
//! provisional values of its in-progress candle. No `start`/`end`: the series is always the newest `limit`.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::params::{IndicatorParams, Limits, known_symbol, read};

/// Timestamps returned when `limit` is absent, and the largest `limit`.
pub const LIMITS: Limits = Limits { default: 100, max: 5000 };

/// The values of one candle, by output name.
#[derive(Debug, Serialize)]
pub struct Point {
    pub timestamp: i64,
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct IndicatorsResponse {
    pub symbol: String,
    pub timeframe: &'static str,
    /// The stored values of the newest `limit` closed candles that have any, oldest first.
    pub series: Vec<Point>,
    /// What the in-progress candle would give if it closed now; never stored. `null` when there is none.
    pub provisional: Option<Point>,
}

pub async fn indicators(
    state: web::Data<AppState>,
    params: web::Query<IndicatorParams>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(LIMITS)?;
    known_symbol(&state, &query.symbol).await?;
    let (symbol, timeframe, limit) = (query.symbol, query.timeframe, query.limit);
    let name = symbol.clone();
    let series = read(&state, move |store| store.indicator_series(&name, timeframe, limit)).await?;
    let series = series.into_iter().map(|p| Point { timestamp: p.timestamp, values: p.values.into_iter().collect() });
    let provisional = state
        .provisional
        .get(&symbol, timeframe)
        .map(|p| Point { timestamp: p.open_time, values: p.values.into_iter().collect() });
    Ok(HttpResponse::Ok().json(IndicatorsResponse {
        symbol,
        timeframe: timeframe.as_str(),
        series: series.collect(),
        provisional,
    }))
}
