//! `GET /api/v1/config`: the config in force (normalised, the admin token shown only as whether one is set), its
//! file, when it was loaded, and the last reload's result.

use actix_web::{HttpResponse, web};

use super::AppState;

pub async fn config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.config.view())
}
