//! `GET /health` and `GET /api/v1/tasks/status`: the task table, as the health actor sees it.

use actix_web::{HttpResponse, web};
use candled_actors::actors::health::{GetHealth, HealthReport, HealthStatus};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::cluster::ClusterView;

/// 200 while healthy or degraded, 503 when a critical task is down or the engine has not started yet. Either way
/// `cluster` says which shard this instance is and how many of the configured streams it owns.
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let owned = state.streams.active_count();
    let cluster =
        state.config.read(|settings| ClusterView::with_counts(settings.cluster, owned, settings.streams.len()));
    if let Some(detail) = state.startup.waiting() {
        return Ok(HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "starting",
            "detail": detail,
            "cluster": cluster,
        })));
    }
    let report = state.health.send(GetHealth).await?;
    let mut response = match report.status {
        HealthStatus::Healthy | HealthStatus::Degraded => HttpResponse::Ok(),
        HealthStatus::Unhealthy => HttpResponse::ServiceUnavailable(),
    };
    Ok(response.json(HealthWithCluster { report, cluster }))
}

/// The health report with the `cluster` object beside its fields.
#[derive(Serialize)]
struct HealthWithCluster {
    #[serde(flatten)]
    report: HealthReport,
    cluster: ClusterView,
}

/// One entry per task.
pub async fn tasks_status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = state.health.send(GetHealth).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": report.status,
        "tasks": report.task_list,
    })))
}
