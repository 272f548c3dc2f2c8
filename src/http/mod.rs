//! The HTTP layer: one file per route group, all asking the actors or a reader on the store. Every query
//! endpoint answers GET and HEAD, every admin endpoint POST (see [`admin`]); any other method is a 405 with
//! `Allow`, an unknown path a 404, and every error a JSON body (see [`error`]).

mod admin;
pub mod binance_rest;
pub mod binance_ws;
mod candles;
pub mod client_errors;
mod config;
mod dashboard;
mod error;
mod events;
mod fault_injection;
mod health;
mod indicators;
mod metrics;
mod params;
mod streams;

use actix::Addr;
use actix_web::dev::HttpServiceFactory;
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Responder, ResponseError, web};
use candled_actors::actors::health::HealthActor;
use candled_actors::actors::storage::CommittedCandles;
use candled_actors::indicators::ProvisionalBoard;
use candled_actors::metrics::Metrics;
use candled_actors::registry::StreamRegistry;
use candled_actors::store::StoreBackend;

use crate::admin_token::AdminToken;
use crate::reload::{LiveConfig, ReloadHandle};
pub use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub health: Addr<HealthActor>,
    pub metrics: Metrics,
    /// The store the read endpoints open a reader on.
    pub store: StoreBackend,
    /// The latest provisional indicator values, written by the indicator actors.
    pub provisional: ProvisionalBoard,
    /// The configured streams (they change with the config): a symbol among them is known even before anything is
    /// stored.
    pub streams: StreamRegistry,
    /// What start-up still waits for: `/health` answers 503 `starting` until the engine runs.
    pub startup: crate::startup::StartupState,
    /// The config in force and the last reload's result.
    pub config: LiveConfig,
    /// Asks the reload owner for a reload.
    pub reload: ReloadHandle,
    /// Turns the admin endpoints on; it never changes while running.
    pub admin_token: Option<AdminToken>,
    /// The candles of every commit, published by the storage actor: `/api/v1/events` follows them.
    pub committed: CommittedCandles,
    /// The exchange's clock as the engine observes it: ages on `/metrics` are judged on it.
    pub exchange_clock: std::sync::Arc<candled_actors::domain::ExchangeClock>,
    /// Binance's WebSocket streams served from the hub (`/ws`, `/stream`).
    pub local_streams: binance_ws::LocalStreams,
    /// The local Binance API (`/api/v3/*`); `None` when `[api] enabled = false`.
    pub local_binance: Option<std::sync::Arc<binance_rest::LocalBinance>>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|error, _| ApiError::from_query(error).into()))
        .service(get_and_head("/health", health::health))
        .service(get_and_head("/api/v1/tasks/status", health::tasks_status))
        .service(get_and_head("/api/v1/streams", streams::streams))
        .service(get_and_head("/api/v1/candles", candles::candles))
        .service(get_and_head("/api/v1/indicators", indicators::indicators))
        .service(get_and_head("/api/v1/config", config::config))
        .service(get_and_head("/metrics", metrics::metrics))
        .service(get_and_head("/api/v1/events", events::events));
    binance_rest::routes(cfg);
    dashboard::routes(cfg);
    admin::routes(cfg);
    binance_ws::routes(cfg);
    if candled_actors::fault_injection::ENABLED {
        fault_injection::routes(cfg);
    }
    cfg.default_service(web::to(not_found));
}

/// A resource answering GET and HEAD with `handler` (actix-web sends no body for HEAD), and 405 otherwise.
fn get_and_head<F, Args>(path: &str, handler: F) -> impl HttpServiceFactory + use<F, Args>
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(request: HttpRequest) -> HttpResponse {
    method_not_allowed_error(&request, error::GET_AND_HEAD).error_response()
}

fn method_not_allowed_error(request: &HttpRequest, allowed: &'static str) -> ApiError {
    ApiError::MethodNotAllowed { method: request.method().clone(), path: request.path().to_owned(), allowed }
}

async fn not_found(request: HttpRequest) -> HttpResponse {
    ApiError::NotFound(request.path().to_owned()).error_response()
}

#[cfg(test)]
mod tests;
