//! Liveness, readiness and Prometheus metrics.
//!
//! `/healthz` says the process serves requests; `/readyz` says it can also
//! serve writes (its database is reachable and it has caught up with what
//! other replicas changed), so a balancer routes writes around a replica
//! that cannot.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::http::ApiState;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness: 200 while the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", content_type = "application/json", body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: 200 while this replica can serve writes, 503 (with
/// `Retry-After`) while its database is unreachable.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready for reads and writes", content_type = "application/json", body = Object),
        (status = 503, description = "The database is unreachable: route writes elsewhere", content_type = "application/problem+json", body = crate::http::error::Problem)))]
pub async fn readyz(State(state): State<ApiState>) -> axum::response::Response {
    if state.issuer.ready() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        crate::http::error::ApiError::Unavailable(
            "this replica cannot reach its database: reads from memory still work, writes do not; retry on another replica".into(),
        )
        .into_response()
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
}
