//! The HTTP API: one module per resource, merged here, with the middleware
//! applied once (body limit, panic catcher, request metrics, tracing).
//!
//! Handlers parse and answer HTTP; every operation is a call on the domain
//! ([`crate::issuer::Issuer`]). What only HTTP needs lives here, in
//! [`ApiState`]: the signed status-list documents, the verified-bearer
//! cache and the count of open event streams.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod console;
pub mod error;
pub mod introspect;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod schema;
pub mod signing_keys;
pub mod status;
pub mod usage;
pub mod well_known;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::AppState;
use error::ApiError;

/// The HTTP layer's state: the service's, plus what only HTTP keeps.
/// Cheap to clone; derefs to [`AppState`].
#[derive(Clone, Debug)]
pub struct ApiState {
    app: AppState,
    pub http: std::sync::Arc<HttpCaches>,
}

/// What the HTTP layer caches and counts.
#[derive(Debug)]
pub struct HttpCaches {
    /// Signed status list documents, per list.
    pub status_documents: status::StatusDocuments,
    /// Bearer tokens whose signature and claims already verified, per key set.
    pub bearers: auth::BearerCache,
    /// Open `/v1/status/stream` connections.
    pub stream_subscribers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::ops::Deref for ApiState {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.app
    }
}

impl ApiState {
    pub fn new(app: AppState) -> ApiState {
        ApiState {
            app,
            http: std::sync::Arc::new(HttpCaches {
                status_documents: Default::default(),
                bearers: auth::BearerCache::new(10_000),
                stream_subscribers: Default::default(),
            }),
        }
    }
}

/// Largest request body accepted (contract §3).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Builds the whole application; the binary and the tests both call this.
pub fn router(state: AppState) -> Router {
    let state = ApiState::new(state);
    let api = Router::new()
        .merge(keys::router())
        .merge(audit::router())
        .merge(signing_keys::router())
        .merge(status::router())
        .merge(introspect::router())
        .merge(usage::router())
        .merge(ops::router())
        .merge(backup::router())
        .merge(openapi::router())
        .merge(console::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A client that stops sending its body half-way does not hold a task forever.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_TIMEOUT,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ));
    // The documents every verifier polls (JWKS, metadata, status lists) are
    // served from prepared bytes; the generic metrics middleware would cost
    // them about a quarter of their CPU, so they count themselves instead.
    let documents = Router::new()
        .merge(well_known::router())
        .merge(status::documents_router());
    api.merge(documents)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a request handler panicked".into()).into_response()
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /openapi.json".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Counts one request to a route that is not behind [`record_request`].
pub fn count_request(route: &'static str, status: StatusCode) {
    metrics::counter!("latchkey_http_requests_total", "method" => "GET", "route" => route, "status" => status.as_u16().to_string()).increment(1);
}

/// Counts requests by route template and status, and times them.
async fn record_request(State(_state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let elapsed = started.elapsed();
    // One event per request, at debug: enable with LATCHKEY_LOG=latchkey=debug.
    tracing::debug!(target: "latchkey::http", method = %method, route = %route, status = status.as_u16(), micros = elapsed.as_micros() as u64, "request");
    metrics::counter!("latchkey_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.as_u16().to_string()).increment(1);
    metrics::histogram!("latchkey_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v == error::PROBLEM_JSON);
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        return as_problem(status, response).await;
    }
    response
}

/// Rewrites an error that a framework extractor answered in plain text (a
/// path parameter that is not UTF-8, say) as a problem document.
async fn as_problem(status: StatusCode, response: Response) -> Response {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge.into_response();
    }
    if status.is_server_error() {
        return ApiError::Internal(format!("unhandled {status} response")).into_response();
    }
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
    };
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound(text),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized(text),
        StatusCode::FORBIDDEN => ApiError::Forbidden(text),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Validation {
            detail: text.clone(),
            errors: vec![crate::validation::FieldError::new("body", text)],
        },
        _ => ApiError::BadRequest(text),
    };
    error.into_response()
}
