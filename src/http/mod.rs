//! The HTTP layer: one file per route group, all asking the actors or a read-only database connection.

mod candles;
mod health;
mod indicators;
mod metrics;
mod params;
mod streams;

use std::path::PathBuf;

use actix::Addr;
use actix_web::web;
use candled_actors::actors::health::HealthActor;
use candled_actors::indicators::ProvisionalBoard;
use candled_actors::metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    pub health: Addr<HealthActor>,
    pub metrics: Metrics,
    pub db_path: PathBuf,
    /// The latest provisional indicator values, written by the indicator actors.
    pub provisional: ProvisionalBoard,
    /// What start-up still waits for: `/health` answers 503 `starting` until the engine runs.
    pub startup: crate::startup::StartupState,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/api/v1/tasks/status", web::get().to(health::tasks_status))
        .route("/api/v1/streams", web::get().to(streams::streams))
        .route("/api/v1/candles", web::get().to(candles::candles))
        .route("/api/v1/indicators", web::get().to(indicators::indicators))
        .route("/metrics", web::get().to(metrics::metrics));
}

#[cfg(test)]
mod tests;
