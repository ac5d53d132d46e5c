//! `GET /v1/audit`: the audit log, oldest first, paged by sequence number.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::AuditEntry;
use crate::http::ApiState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, ApiQuery, Problem};
use crate::validation::FieldError;

pub fn router() -> Router<ApiState> {
    Router::new().route("/v1/audit", get(list_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Return entries with a sequence number above this (default 0).
    pub after: Option<String>,
    /// 1 to 1000; default 100.
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<crate::http::schema::AuditEntry>)]
    pub items: Vec<AuditEntry>,
    /// Pass as `after` for the next page; `null` when there is none yet.
    pub next_after: Option<u64>,
}

/// Read the audit log.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_audit(
    State(state): State<ApiState>,
    principal: Principal,
    query: Result<ApiQuery<AuditQuery>, ApiError>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    principal.require(&state, Need::Reader).await?;
    let ApiQuery(query) = query?;
    let mut errors = Vec::new();
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        Some(text) => text.parse::<u64>().unwrap_or_else(|_| {
            errors.push(FieldError::new(
                "after",
                format!("{text:?} is not a sequence number"),
            ));
            0
        }),
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => 100,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("{text:?} is out of range: use 1 to 1000"),
                ));
                100
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let items = state.issuer.audit_page(after, limit).await?;
    let next_after = if items.len() == limit {
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(axum::Json(AuditPage { items, next_after }))
}
