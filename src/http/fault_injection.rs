//! `POST /api/v1/test/tasks/{name}/{fault}` (`fault` is `panic` or `stop`): makes a supervised task fail, for the
//! integration tests. Mounted only in builds that carry the engine's `fault-injection` feature (test builds).

use actix_web::{HttpResponse, web};
use candled_actors::fault_injection::{self, Fault};

use super::ApiError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/test/tasks/{name}/{fault}").route(web::post().to(inject)));
}

/// 204 once the fault is on its way; 400 for an unknown fault; 404 for an unknown task.
async fn inject(path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (name, fault) = path.into_inner();
    let fault: Fault = fault.parse().map_err(|problem: String| ApiError::bad("fault", problem))?;
    match fault_injection::inject(&name, fault).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(error) => Ok(HttpResponse::NotFound().json(serde_json::json!({ "error": error, "parameter": null }))),
    }
}
