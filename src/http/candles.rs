//! `GET /api/v1/candles?symbol=&timeframe=&start=&end=&limit=`: stored candles of one stream, oldest first.

use actix_web::{HttpResponse, web};
use candled_actors::domain::{Candle, Timeframe};
use candled_actors::store::Window;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::params::{CandleParams, Limits, known_symbol, read};

/// Candles returned when `limit` is absent, and the largest `limit`.
pub const LIMITS: Limits = Limits { default: 500, max: 5000 };

/// One row of the `candles` table, named as its columns.
#[derive(Debug, Serialize)]
pub struct CandleRow<'a> {
    pub symbol: &'a str,
    pub timeframe: &'static str,
    pub timestamp: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub close_time: i64,
    pub quote_volume: f64,
    pub trades: u64,
    pub taker_buy_base: f64,
    pub taker_buy_quote: f64,
    pub is_closed: bool,
}

impl<'a> CandleRow<'a> {
    pub fn new(symbol: &'a str, timeframe: Timeframe, c: &Candle) -> Self {
        Self {
            symbol,
            timeframe: timeframe.as_str(),
            timestamp: c.open_time,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            close_time: c.close_time,
            quote_volume: c.quote_volume,
            trades: c.trades,
            taker_buy_base: c.taker_buy_base,
            taker_buy_quote: c.taker_buy_quote,
            is_closed: c.is_closed,
        }
    }
}

/// The candles with `start <= timestamp < end`: the first `limit` from `start` when it is given, otherwise the
/// newest `limit` before `end`. Ascending either way; the in-progress candle is included (`is_closed: false`).
pub async fn candles(state: web::Data<AppState>, params: web::Query<CandleParams>) -> Result<HttpResponse, ApiError> {
    let query = params.parse(LIMITS)?;
    known_symbol(&state, &query.symbol).await?;
    let window = if query.start.is_some() { Window::Oldest } else { Window::Newest };
    let (from, to) = (query.start.unwrap_or(i64::MIN), query.end.unwrap_or(i64::MAX));
    let (name, timeframe, limit) = (query.symbol.clone(), query.timeframe, query.limit);
    let candles = read(&state, move |store| store.candles_window(&name, timeframe, from, to, limit, window)).await?;
    let rows: Vec<_> = candles.iter().map(|c| CandleRow::new(&query.symbol, timeframe, c)).collect();
    Ok(HttpResponse::Ok().json(rows))
}
