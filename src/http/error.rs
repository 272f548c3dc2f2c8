//! The one error every endpoint answers with: a status code and a JSON body
//! `{"error": "<what went wrong>", "parameter": "<the query parameter at fault>" | null}`. The admin endpoints'
//! 401 also carries `WWW-Authenticate: Bearer`.

use actix_web::error::{BlockingError, QueryPayloadError};
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use candled_actors::actors::supervisor::ReconfigureError;
use candled_actors::store::StoreError;

/// The query endpoints answer GET and HEAD, and nothing else.
pub const GET_AND_HEAD: &str = "GET, HEAD";
/// The admin endpoints answer POST, and nothing else.
pub const POST: &str = "POST";

/// Why a request failed. The caller's mistakes are 4xx and name the parameter; the rest are ours (500).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("`{parameter}`: {problem}")]
    BadParameter { parameter: String, problem: String },
    #[error("the query string cannot be read: {0}")]
    BadQuery(String),
    #[error("`symbol`: {0:?} is neither configured nor stored")]
    UnknownSymbol(String),
    #[error("no endpoint at {0}")]
    NotFound(String),
    #[error("{method} is not allowed on {path}: use {}", allowed.replace(", ", " or "))]
    MethodNotAllowed { method: Method, path: String, allowed: &'static str },
    #[error("this endpoint needs an `Authorization: Bearer <admin token>` header")]
    Unauthorized,
    #[error("the bearer token is not this instance's admin token")]
    Forbidden,
    #[error("the engine has not started yet: try again once /health no longer answers `starting`")]
    NotStarted,
    #[error("{0}; nothing changed")]
    InvalidConfig(String),
    #[error("{0}")]
    ReloadFailed(String),
    #[error("{0}")]
    Engine(#[from] ReconfigureError),
    #[error("the supervisor did not answer: {0}")]
    Supervisor(actix::MailboxError),
    #[error("cannot read the database: {0}")]
    Database(#[from] StoreError),
    #[error("the database read did not finish: {0}")]
    Blocking(#[from] BlockingError),
    #[error("the health actor did not answer: {0}")]
    Health(#[from] actix::MailboxError),
    #[error("cannot encode the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl ApiError {
    pub fn bad(parameter: &str, problem: impl Into<String>) -> Self {
        Self::BadParameter { parameter: parameter.into(), problem: problem.into() }
    }

    /// The query parameter at fault, if the error is about one.
    pub fn parameter(&self) -> Option<&str> {
        match self {
            Self::BadParameter { parameter, .. } => Some(parameter),
            Self::UnknownSymbol(_) => Some("symbol"),
            _ => None,
        }
    }

    /// A query string that does not deserialize (a parameter given twice, an unknown one), from
    /// [`QueryConfig::error_handler`](actix_web::web::QueryConfig::error_handler).
    pub fn from_query(error: QueryPayloadError) -> Self {
        let QueryPayloadError::Deserialize(error) = error else { return Self::BadQuery(error.to_string()) };
        let text = error.to_string();
        // serde's wording: "duplicate field `symbol`", "unknown field `foo`, expected one of `symbol`, ...".
        let named = |prefix: &str| text.strip_prefix(prefix).and_then(|rest| rest.split('`').next());
        if let Some(parameter) = named("duplicate field `") {
            Self::bad(parameter, "is given more than once")
        } else if let Some(parameter) = named("unknown field `") {
            let expected = text.split_once(", expected ").map_or("", |(_, expected)| expected).replace('`', "");
            Self::bad(parameter, format!("is not a parameter of this endpoint; expected {expected}"))
        } else {
            Self::BadQuery(text)
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadParameter { .. } | Self::BadQuery(_) => StatusCode::BAD_REQUEST,
            Self::UnknownSymbol(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Engine(ReconfigureError::UnknownTask(_)) => StatusCode::NOT_FOUND,
            Self::NotStarted | Self::ReloadFailed(_) | Self::Engine(_) | Self::Supervisor(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Database(_) | Self::Blocking(_) | Self::Health(_) | Self::Metrics(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::MethodNotAllowed { allowed, .. } => response.insert_header((header::ALLOW, *allowed)),
            Self::Unauthorized => response.insert_header((header::WWW_AUTHENTICATE, "Bearer")),
            _ => &mut response,
        };
        response.json(serde_json::json!({ "error": self.to_string(), "parameter": self.parameter() }))
    }
}
