//! `POST /v1/introspect`: RFC 7662 token introspection, for services that
//! prefer an online check to the verifier crate.
//!
//! The caller authenticates with any active access key (its own). What it
//! may learn is scoped (contract §3): a `global_admin` or `global_viewer`
//! may introspect any token; any other key only its own tokens (same key id,
//! `sub`). Another key's token asked by a caller who may not see it answers
//! `{"active": false}`, exactly as an invalid token does, so the answer
//! does not even tell whether the token is valid, and nothing of that key
//! (name, roles, accounts) is shown or touched. The token
//! to introspect comes as `token=` (`application/x-www-form-urlencoded`, as
//! RFC 7662 §2.1 specifies) or as JSON `{"token": ...}`. It is checked
//! exactly as the admin API checks a bearer key (signature, `typ`, `iss`,
//! `aud`, `exp`/`nbf`, status bit, key in the registry, token issued for
//! that key). Any invalid token, whatever the reason, is `{"active": false}`
//! and nothing else (§2.2: no hint to a prober). An active token's response
//! carries its claims, `token_type: "access_token"` and `status: "active"`
//! (the key's status, in place of the `status` claim's list pointer), and
//! introspecting it counts as a use of that key (`last_used_at`).

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::routing::post;
use latchkey_verifier::{AccessClaims, Audience, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::ApiState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, ApiJson, Problem};

pub fn router() -> Router<ApiState> {
    Router::new().route("/v1/introspect", post(introspect))
}

/// The introspection request (RFC 7662 §2.1).
#[derive(Debug, Deserialize, ToSchema)]
pub struct IntrospectionRequest {
    /// The access key to introspect.
    pub token: String,
    /// Ignored: latchkey only issues access tokens.
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// The introspection response (RFC 7662 §2.2). Only `active` is present
/// for an invalid token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IntrospectionResponse {
    pub active: bool,
    /// `access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// The key's status: `active`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The key's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AudienceSchema>)]
    pub aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The key's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key's name (RFC 7662's member for a human-readable identifier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub roles: Option<Vec<Role>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
}

impl IntrospectionResponse {
    fn inactive() -> Self {
        IntrospectionResponse {
            active: false,
            token_type: None,
            status: None,
            iss: None,
            sub: None,
            client_id: None,
            aud: None,
            iat: None,
            nbf: None,
            exp: None,
            jti: None,
            name: None,
            username: None,
            roles: None,
            accounts: None,
        }
    }

    fn active(claims: AccessClaims) -> Self {
        IntrospectionResponse {
            active: true,
            token_type: Some("access_token".into()),
            status: Some("active".into()),
            iss: Some(claims.iss),
            sub: Some(claims.sub),
            client_id: Some(claims.client_id),
            aud: Some(claims.aud),
            iat: Some(claims.iat),
            nbf: Some(claims.nbf),
            exp: Some(claims.exp),
            jti: Some(claims.jti),
            username: Some(claims.name.clone()),
            name: Some(claims.name),
            roles: Some(claims.roles),
            accounts: claims.accounts,
        }
    }
}

/// Reads the request body: a form (RFC 7662) or JSON.
async fn read_request(
    state: &ApiState,
    request: Request,
) -> Result<IntrospectionRequest, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let axum::Form(body) = axum::Form::<IntrospectionRequest>::from_request(request, state)
            .await
            .map_err(|rejection| {
                ApiError::BadRequest(format!(
                    "send token=<access key> (RFC 7662): {}",
                    rejection.body_text()
                ))
            })?;
        Ok(body)
    } else if content_type.starts_with("application/json") {
        let ApiJson(body) = ApiJson::<IntrospectionRequest>::from_request(request, state).await?;
        Ok(body)
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send the token as application/x-www-form-urlencoded (token=...) or as JSON {\"token\": ...}"
                .into(),
        ))
    }
}

/// Introspect an access key (RFC 7662).
#[utoipa::path(post, path = "/v1/introspect", tag = "keys",
    request_body(content = IntrospectionRequest, description = "`token=` form (RFC 7662) or JSON",
        content_type = "application/x-www-form-urlencoded"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{\"active\": false}` for any invalid token, and for another key's token unless the caller is a global_admin or global_viewer", body = IntrospectionResponse),
        (status = 400, description = "No `token`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The caller's own key is missing or invalid", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn introspect(
    State(state): State<ApiState>,
    principal: Principal,
    request: Request,
) -> Result<axum::Json<IntrospectionResponse>, ApiError> {
    principal.require(&state, Need::AnyKey).await?;
    let body = read_request(&state, request).await?;
    let token = body.token.trim();
    if token.is_empty() {
        return Err(ApiError::BadRequest("`token` is empty".into()));
    }
    // One rule for "is this token live" and who may see it: the domain's.
    Ok(axum::Json(
        match state.issuer.introspect(&principal.key, token).await {
            Some(claims) => IntrospectionResponse::active(claims),
            None => IntrospectionResponse::inactive(),
        },
    ))
}

/// `aud` as it appears on the wire: a string or an array of strings
/// (documents the schema; the value itself is the verifier crate's `Audience`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
enum AudienceSchema {
    One(String),
    Many(Vec<String>),
}
