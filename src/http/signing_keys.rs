//! `GET /v1/signing-keys`: the signing keys and their states (contract §5).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, Problem};
use crate::keyring::SigningKeyInfo;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/signing-keys", get(list_signing_keys))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SigningKeyList {
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
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<SigningKeyList>, ApiError> {
    principal.require(&state, Need::Reader)?;
    Ok(axum::Json(SigningKeyList {
        items: state.keyring.snapshot().infos.clone(),
    }))
}
