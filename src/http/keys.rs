//! `/v1/keys`: create, list, describe, update, renew, suspend, resume and
//! revoke access keys (contract §2–§3).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::audit::Actor;
use crate::http::ApiState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, ApiJson, ApiQuery, Problem};
use crate::issuer::{KeyFilter, Minted};
use crate::model::{KeyRecord, KeyStatus, rfc3339};
use crate::validation::{self, FieldError, NewKeyRequest};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/keys", post(create_key).get(list_keys))
        .route(
            "/v1/keys/{id}",
            get(get_key).patch(update_key).delete(revoke_key),
        )
        .route("/v1/keys/{id}/renew", post(renew_key))
        .route("/v1/keys/{id}/suspend", post(suspend_key))
        .route("/v1/keys/{id}/resume", post(resume_key))
}

/// A key as clients see it. Never contains a token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// UUIDv7; the token's `sub`.
    pub id: String,
    pub name: String,
    pub description: String,
    #[schema(value_type = Vec<String>, example = json!(["cloud_account_viewer"]))]
    pub roles: Vec<latchkey_verifier::Role>,
    /// Only with `cloud_account_viewer`; `["*"]` means all accounts.
    pub accounts: Option<Vec<String>>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `{id, name}` of the admin key that created it, or `"bootstrap"`.
    #[schema(value_type = crate::http::schema::Actor)]
    pub created_by: Actor,
    /// Expiry of the key's newest token.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// `null` when never used.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(value_type = crate::http::schema::KeyStatus)]
    pub status: KeyStatus,
    /// `kid` of the signing key of its newest token.
    pub signing_kid: String,
}

impl KeyView {
    pub fn new(record: &KeyRecord, now: OffsetDateTime) -> KeyView {
        KeyView {
            id: record.id.clone(),
            name: record.name.clone(),
            description: record.description.clone(),
            roles: record.roles.clone(),
            accounts: record.accounts.clone(),
            created_at: rfc3339(record.created_at),
            created_by: record.created_by.clone(),
            expires_at: rfc3339(record.expires_at),
            last_used_at: record.last_used_at.map(rfc3339),
            status: record.status(now),
            signing_kid: record.signing_kid.clone(),
        }
    }
}

/// A key with its newly minted token, shown once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct KeyWithToken {
    pub key: KeyView,
    /// The signed access key (JWT). latchkey does not store it: save it now.
    pub token: String,
}

impl std::fmt::Debug for KeyWithToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyWithToken")
            .field("key", &self.key)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A page of keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `active`, `suspended`, `revoked` or `expired`.
    pub status: Option<String>,
    /// Case-insensitive text to find in the name or description.
    pub q: Option<String>,
    /// 1 to 500; default 50.
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `PATCH /v1/keys/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateKeyRequest {
    /// 0–1000 characters. The only field that can change.
    pub description: String,
}

/// `POST /v1/keys/{id}/renew` body (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// 1 to the configured maximum; six calendar months when omitted.
    pub expires_in_days: Option<u32>,
    /// Also revoke every earlier token of this key.
    #[serde(default)]
    pub revoke_previous: bool,
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn minted_response(state: &ApiState, status: StatusCode, minted: Minted) -> Response {
    let location = format!("/v1/keys/{}", minted.record.id);
    let body = KeyWithToken {
        key: KeyView::new(&minted.record, state.now()),
        token: minted.token,
    };
    let mut response = no_store((status, axum::Json(body)).into_response());
    if status == StatusCode::CREATED
        && let Ok(value) = HeaderValue::from_str(&location)
    {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Create a key and mint its token (returned once).
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = crate::http::schema::NewKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the token is shown only in this response", body = KeyWithToken),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs global_admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_key(
    State(state): State<ApiState>,
    principal: Principal,
    body: Result<ApiJson<NewKeyRequest>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require(&state, Need::Admin).await?;
    let ApiJson(request) = body?;
    let minted = state.issuer.create(&principal.actor, &request).await?;
    Ok(minted_response(&state, StatusCode::CREATED, minted))
}

/// List keys, newest first.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(ListQuery), security(("bearer" = [])),
    responses(
        (status = 200, body = KeyList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs global_admin or global_viewer", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_keys(
    State(state): State<ApiState>,
    principal: Principal,
    query: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<axum::Json<KeyList>, ApiError> {
    principal.require(&state, Need::Reader).await?;
    let ApiQuery(query) = query?;
    let mut errors = Vec::new();
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => KeyStatus::parse(s).or_else(|| {
            errors.push(FieldError::new(
                "status",
                format!("{s:?} is not a status; use active, suspended, revoked or expired"),
            ));
            None
        }),
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => 50,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("{text:?} is out of range: use 1 to 500"),
                ));
                50
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let filter = KeyFilter {
        status,
        query: query
            .q
            .filter(|q| !q.trim().is_empty())
            .map(|q| q.trim().to_owned()),
    };
    let now = state.now();
    let page = state
        .issuer
        .list(
            &filter,
            query.cursor.as_deref().filter(|c| !c.is_empty()),
            limit,
        )
        .await?;
    Ok(axum::Json(KeyList {
        items: page.items.iter().map(|r| KeyView::new(r, now)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Describe one key.
#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_key(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    principal.require(&state, Need::Reader).await?;
    let record = state.issuer.describe(&id).await?;
    Ok(axum::Json(KeyView::new(&record, state.now())))
}

/// Change a key's description (the only editable field).
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")),
    request_body = UpdateKeyRequest, security(("bearer" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field other than description, or a description over 1000 characters", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_key(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<ApiJson<serde_json::Value>, ApiError>,
) -> Result<axum::Json<KeyView>, ApiError> {
    principal.require(&state, Need::Admin).await?;
    let ApiJson(body) = body?;
    let object = body.as_object().ok_or_else(|| {
        ApiError::validation(vec![FieldError::new(
            "body",
            "must be a JSON object like {\"description\": \"...\"}",
        )])
    })?;
    let mut errors = Vec::new();
    for field in object.keys().filter(|k| k.as_str() != "description") {
        let why = match field.as_str() {
            "name" => {
                "cannot change: the name is signed into the key's tokens; create a new key instead"
            }
            "roles" | "accounts" => {
                "cannot change after creation: create a new key with the roles and accounts you need"
            }
            "expires_at" | "expires_in_days" => {
                "is changed by renewing the key: POST /v1/keys/{id}/renew"
            }
            "status" => "is changed with suspend, resume or DELETE (revoke)",
            _ => "is not a field of a key that can be edited; only description can change",
        };
        errors.push(FieldError::new(field, why));
    }
    let description = match object.get("description") {
        Some(serde_json::Value::String(d)) => Some(d.clone()),
        Some(_) => {
            errors.push(FieldError::new("description", "must be a string"));
            None
        }
        None => {
            if errors.is_empty() {
                errors.push(FieldError::new("description", "is required"));
            }
            None
        }
    };
    if let Some(d) = &description
        && let Err(e) = validation::validate_description(d)
    {
        errors.push(e);
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let record = state
        .issuer
        .update_description(&principal.actor, &id, description.unwrap_or_default())
        .await?;
    Ok(axum::Json(KeyView::new(&record, state.now())))
}

/// Mint a replacement token for the key (same `sub`, roles and accounts).
#[utoipa::path(post, path = "/v1/keys/{id}/renew", tag = "keys", params(("id" = String, Path, description = "Key id")),
    request_body(content = RenewRequest, description = "May be empty"), security(("bearer" = [])),
    responses(
        (status = 200, body = KeyWithToken),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn renew_key(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require(&state, Need::Admin).await?;
    let request: RenewRequest = optional_json(&headers, &body)?;
    let minted = state
        .issuer
        .renew(
            &principal.actor,
            &id,
            request.expires_in_days,
            request.revoke_previous,
        )
        .await?;
    Ok(minted_response(&state, StatusCode::OK, minted))
}

/// Parses a body that may be empty (then the defaults apply).
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json".into(),
        ));
    }
    // Syntax first (400), then shape (422): `[null, null]` is JSON of the wrong shape.
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::Validation {
        detail: format!("the body does not have the expected shape: {e}"),
        errors: vec![FieldError::new("body", e.to_string())],
    })
}

/// Suspend every live token of the key until it is resumed.
#[utoipa::path(post, path = "/v1/keys/{id}/suspend", tag = "keys", params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Revoked or already suspended", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn suspend_key(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    principal.require(&state, Need::Admin).await?;
    let record = state.issuer.suspend(&principal.actor, &id).await?;
    Ok(axum::Json(KeyView::new(&record, state.now())))
}

/// Lift a suspension.
#[utoipa::path(post, path = "/v1/keys/{id}/resume", tag = "keys", params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Revoked or not suspended", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resume_key(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    principal.require(&state, Need::Admin).await?;
    let record = state.issuer.resume(&principal.actor, &id).await?;
    Ok(axum::Json(KeyView::new(&record, state.now())))
}

/// Revoke the key and all its tokens, permanently.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already revoked", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_key(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(&state, Need::Admin).await?;
    state.issuer.revoke(&principal.actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
