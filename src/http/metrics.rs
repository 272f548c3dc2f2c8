//! `GET /metrics`: Prometheus text exposition.

use actix_web::{HttpResponse, web};
use candled_actors::actors::health::GetHealth;
use prometheus::{Encoder, TextEncoder};

use super::AppState;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Asking for the health report refreshes the task-state and mailbox gauges.
    let _ = state.health.send(GetHealth).await;
    let mut body = Vec::new();
    match TextEncoder::new().encode(&state.metrics.registry.gather(), &mut body) {
        Ok(()) => HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}
