//! `GET /metrics`: Prometheus text exposition.

use actix_web::{HttpResponse, web};
use candled_actors::actors::health::GetHealth;
use prometheus::core::Collector as _;
use prometheus::{Encoder, TextEncoder};

use super::AppState;
use super::client_errors::CLIENT_ERRORS;
use super::error::ApiError;

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Asking for the health report refreshes the task-state and mailbox gauges.
    let _ = state.health.send(GetHealth).await;
    let mut body = Vec::new();
    let mut families = state.metrics.registry.gather();
    families.extend(CLIENT_ERRORS.collect());
    TextEncoder::new().encode(&families, &mut body)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body))
}
