//! The admin endpoints, `POST /api/v1/reload` and `POST /api/v1/tasks/{name}/restart`: they need
//! `Authorization: Bearer <admin token>` (401 without it, 403 with a wrong one) and do not exist (404) on an instance
//! with no admin token. Before the engine runs they answer 503.

use actix::Addr;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use candled_actors::actors::supervisor::{ReconfigureError, RestartTask, SupervisorActor};

use super::error::POST;
use super::{ApiError, AppState, method_not_allowed_error};
use crate::admin_token::{Refusal, authorize};
use crate::reload::{ReloadResult, Trigger};

pub fn routes(cfg: &mut web::ServiceConfig) {
    for (path, handler) in
        [("/api/v1/reload", web::post().to(reload)), ("/api/v1/tasks/{name}/restart", web::post().to(restart_task))]
    {
        cfg.service(web::resource(path).route(handler).default_service(web::to(other_method)));
    }
}

/// 405 with `Allow: POST`; 404 when the admin endpoints are off.
async fn other_method(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match state.admin_token {
        Some(_) => method_not_allowed_error(&request, POST),
        None => ApiError::NotFound(request.path().to_owned()),
    }
    .error_response()
}

/// The engine, for a request that carries the admin token.
fn admitted(request: &HttpRequest, state: &AppState) -> Result<Addr<SupervisorActor>, ApiError> {
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    authorize(state.admin_token.as_ref(), authorization).map_err(|refusal| match refusal {
        Refusal::NoTokenConfigured => ApiError::NotFound(request.path().to_owned()),
        Refusal::MissingBearer => ApiError::Unauthorized,
        Refusal::WrongToken => ApiError::Forbidden,
    })?;
    state.startup.engine().ok_or(ApiError::NotStarted)
}

/// 200 with the reload's report when it applied (or found nothing to do); 422 for an invalid edit, 503 when the
/// engine could not apply it.
async fn reload(request: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    admitted(&request, &state)?;
    // The reload owner stops when shutdown begins.
    let shutting_down = || ApiError::Engine(ReconfigureError::ShuttingDown);
    let report = state.reload.reload(Trigger::Http).await.ok_or_else(shutting_down)?;
    let error = report.error.clone().unwrap_or_default();
    match report.result {
        ReloadResult::Invalid => Err(ApiError::InvalidConfig(error)),
        ReloadResult::Failed => Err(ApiError::ReloadFailed(error)),
        ReloadResult::Applied | ReloadResult::RestartNeeded | ReloadResult::Unchanged => {
            Ok(HttpResponse::Ok().json(report))
        }
    }
}

/// 200 once the task is being restarted; 404 for an unknown task.
async fn restart_task(
    request: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let supervisor = admitted(&request, &state)?;
    let name = name.into_inner();
    supervisor.send(RestartTask(name.clone())).await.map_err(ApiError::Supervisor)??;
    log::info!("{name}: restart asked over HTTP");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "task": name, "restarted": true })))
}
