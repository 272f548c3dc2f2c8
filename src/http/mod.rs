//! The HTTP layer: one file per route group, all asking the actors or a read-only database connection.

mod health;
mod metrics;
mod streams;

use std::path::PathBuf;

use actix::Addr;
use actix_web::web;
use candled_actors::actors::health::HealthActor;
use candled_actors::metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    pub health: Addr<HealthActor>,
    pub metrics: Metrics,
    pub db_path: PathBuf,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/api/v1/tasks/status", web::get().to(health::tasks_status))
        .route("/api/v1/streams", web::get().to(streams::streams))
        .route("/metrics", web::get().to(metrics::metrics));
}
