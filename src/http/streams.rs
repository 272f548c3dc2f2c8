//! `GET /api/v1/streams`: the completeness report. Per (symbol, timeframe): the first and last stored closed
//! candle, the expected and present counts between them, known exchange gaps, repairs and revisions. It lists the
//! streams this instance runs (the ones its shard owns), and says which shard it is.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use candled_actors::actors::health::GetStreams;

use candled_actors::store::StoredRange;

use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::params::read;
use crate::cluster::ClusterView;

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
    let stored = read(&state, |store| store.stored_ranges()).await?;
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
        "cluster": state.config.read(|settings| ClusterView::of(settings.cluster)),
        "streams": reports,
        "rejected_frames": state.metrics.rejected().into_iter().collect::<HashMap<_, _>>(),
    })))
}
