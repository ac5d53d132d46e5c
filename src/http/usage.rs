//! `POST /v1/usage`: verifiers' batched usage reports (contract §2–§4).
//!
//! A downstream verifier sends the `jti`s of tokens it accepted; each known
//! `jti` counts as a use of its key and moves the key's `last_used_at`.
//! Writes are coalesced by the domain (at most one per key per
//! [`LAST_USED_RESOLUTION_SECS`](crate::issuer::LAST_USED_RESOLUTION_SECS)),
//! so a busy key costs at most one write a minute however many verifiers
//! report it. Unknown `jti`s are ignored, and the answer (202) is the same
//! either way, so a report reveals nothing about which tokens exist.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::http::ApiState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, ApiJson, Problem};

/// Most `jti`s in one report.
pub use crate::issuer::MAX_USAGE_JTIS;

pub fn router() -> Router<ApiState> {
    Router::new().route("/v1/usage", post(report_usage))
}

/// A usage report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// `jti`s of tokens used since the last report (at most 1000).
    pub jtis: Vec<String>,
}

/// Report token use seen by a verifier.
#[utoipa::path(post, path = "/v1/usage", tag = "keys", request_body = UsageReport,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted; unknown `jti`s are ignored"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "More than 1000 `jti`s", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report_usage(
    State(state): State<ApiState>,
    principal: Principal,
    ApiJson(report): ApiJson<UsageReport>,
) -> Result<StatusCode, ApiError> {
    principal.require(&state, Need::AnyKey).await?;
    let keys = state.issuer.record_usage(&report.jtis).await?;
    metrics::counter!("latchkey_usage_reported_keys_total").increment(keys as u64);
    Ok(StatusCode::ACCEPTED)
}
