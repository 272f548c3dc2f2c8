//! `GET /health` and `GET /api/v1/tasks/status`: the task table, as the health actor sees it.

use actix_web::{HttpResponse, web};
use candled_actors::actors::health::{GetHealth, HealthStatus};

use super::AppState;
use super::error::ApiError;

/// 200 while healthy or degraded, 503 when a critical task is down or the engine has not started yet.
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(detail) = state.startup.waiting() {
        return Ok(
            HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "starting", "detail": detail }))
        );
    }
    let report = state.health.send(GetHealth).await?;
    let mut response = match report.status {
        HealthStatus::Healthy | HealthStatus::Degraded => HttpResponse::Ok(),
        HealthStatus::Unhealthy => HttpResponse::ServiceUnavailable(),
    };
    Ok(response.json(report))
}

/// One entry per task.
pub async fn tasks_status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = state.health.send(GetHealth).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": report.status,
        "tasks": report.task_list,
    })))
}
