//! `POST /v1/usage`: verifiers' batched usage reports (contract §2–§4).
//!
//! A downstream verifier sends the `jti`s of tokens it accepted; each known
//! `jti` counts as a use of its key and moves the key's `last_used_at`.
//! Writes are coalesced by the registry (at most one per key per
//! [`LAST_USED_RESOLUTION_SECS`](crate::registry::LAST_USED_RESOLUTION_SECS)),
//! so a busy key costs at most one write a minute however many verifiers
//! report it. Unknown `jti`s are ignored, and the answer (202) is the same
//! either way, so a report reveals nothing about which tokens exist.

use std::collections::HashSet;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, ApiJson, Problem};
use crate::validation::FieldError;

/// Most `jti`s in one report.
pub const MAX_USAGE_JTIS: usize = 1000;

/// Longest `jti` looked up (latchkey's are 36-character UUIDs).
const MAX_JTI_LEN: usize = 128;

pub fn router() -> Router<AppState> {
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
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(report): ApiJson<UsageReport>,
) -> Result<StatusCode, ApiError> {
    principal.require(&state, Need::AnyKey)?;
    if report.jtis.len() > MAX_USAGE_JTIS {
        return Err(ApiError::validation(vec![FieldError::new(
            "jtis",
            format!(
                "has {} entries; send at most {MAX_USAGE_JTIS} per report",
                report.jtis.len()
            ),
        )]));
    }
    let now = state.now();
    let mut keys = HashSet::new();
    let unique: HashSet<&str> = report.jtis.iter().map(String::as_str).collect();
    for jti in unique {
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            continue;
        }
        if let Some(key_id) = state.registry.key_id_for_jti(jti)? {
            keys.insert(key_id);
        }
    }
    for key_id in &keys {
        if let Err(e) = state.registry.touch_last_used(key_id, now) {
            tracing::warn!(error = %e, "could not record a reported use");
        }
    }
    metrics::counter!("latchkey_usage_reported_keys_total").increment(keys.len() as u64);
    Ok(StatusCode::ACCEPTED)
}
