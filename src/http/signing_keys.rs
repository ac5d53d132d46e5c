//! `/v1/signing-keys`: the signing keys and their states, rotation and
//! emergency retirement (contract §5).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::ApiState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, Problem};
use crate::model::SigningKeyInfo;
use crate::validation::FieldError;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/signing-keys", get(list_signing_keys))
        .route("/v1/signing-keys/rotate", post(rotate_signing_key))
        .route("/v1/signing-keys/{kid}/retire", post(retire_signing_key))
}

/// The words that confirm an emergency retirement.
pub const RETIRE_CONFIRMATION: &str = "i-understand-tokens-die";

/// `POST /v1/signing-keys/rotate` body (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Make the new key sign at once, skipping the lead time (emergencies).
    #[serde(default)]
    pub now: bool,
}

/// `POST /v1/signing-keys/{kid}/retire` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireRequest {
    /// Must be `i-understand-tokens-die`: every token signed by the key stops verifying.
    pub confirm: Option<String>,
}

/// Stage a new signing key: published in the JWKS at once, signing after the lead time.
#[utoipa::path(post, path = "/v1/signing-keys/rotate", tag = "signing-keys", request_body(content = RotateRequest, description = "May be empty"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = crate::http::schema::SigningKeyInfo),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rotate_signing_key(
    State(state): State<ApiState>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<SigningKeyInfo>), ApiError> {
    principal.require(&state, Need::Admin).await?;
    let request: RotateRequest = crate::http::keys::optional_json(&headers, &body)?;
    let info = state.issuer.rotate(&principal.actor, request.now).await?;
    Ok((StatusCode::CREATED, axum::Json(info)))
}

/// Retire a signing key now: it leaves the JWKS and every token it signed stops verifying.
#[utoipa::path(post, path = "/v1/signing-keys/{kid}/retire", tag = "signing-keys", request_body = RetireRequest,
    params(("kid" = String, Path, description = "The key's kid")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = crate::http::schema::SigningKeyInfo),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The active key, or already retired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing confirmation", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retire_signing_key(
    State(state): State<ApiState>,
    principal: Principal,
    Path(kid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<SigningKeyInfo>, ApiError> {
    principal.require(&state, Need::Admin).await?;
    let request: RetireRequest = crate::http::keys::optional_json(&headers, &body)?;
    if request.confirm.as_deref() != Some(RETIRE_CONFIRMATION) {
        return Err(ApiError::validation(vec![FieldError::new(
            "confirm",
            format!(
                "must be {RETIRE_CONFIRMATION:?}: every token signed by this key will stop verifying"
            ),
        )]));
    }
    Ok(axum::Json(
        state.issuer.retire(&principal.actor, &kid).await?,
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SigningKeyList {
    #[schema(value_type = Vec<crate::http::schema::SigningKeyInfo>)]
    pub items: Vec<SigningKeyInfo>,
}

/// List signing keys, oldest first.
#[utoipa::path(get, path = "/v1/signing-keys", tag = "signing-keys", security(("bearer" = [])),
    responses(
        (status = 200, body = SigningKeyList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_signing_keys(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<SigningKeyList>, ApiError> {
    principal.require(&state, Need::Reader).await?;
    Ok(axum::Json(SigningKeyList {
        items: state.issuer.signing_keys(),
    }))
}
