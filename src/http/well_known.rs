//! Public documents served from prepared bytes: the JWKS and the RFC 8414
//! metadata. Each response is a clone of shared `Bytes` plus a header map,
//! with `ETag` / `If-None-Match` so caches revalidate for free.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::ApiState;
use crate::keyring::PreparedDocument;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
}

/// Serves `doc` with its ETag, or 304 when the client already has it.
pub fn serve_prepared(
    request_headers: &HeaderMap,
    doc: &PreparedDocument,
    content_type: &'static str,
    max_age: u64,
) -> Response {
    let cache_control = HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    let etag = HeaderValue::from_str(&doc.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let matches = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == doc.etag
            })
        });
    let headers = [(header::CACHE_CONTROL, cache_control), (header::ETAG, etag)];
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        doc.body.clone(),
    )
        .into_response()
}

/// The public signing keys (JWKS).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "public",
    responses((status = 200, description = "JWK Set", content_type = "application/json", body = Object),
              (status = 304, description = "Not modified (If-None-Match)")))]
pub async fn jwks(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let response = jwks_response(&state, &headers);
    crate::http::count_request("/.well-known/jwks.json", response.status());
    response
}

fn jwks_response(state: &ApiState, headers: &HeaderMap) -> Response {
    let snapshot = state.issuer.signing_snapshot();
    serve_prepared(
        headers,
        &snapshot.jwks,
        "application/json",
        state.config.jwks_max_age_secs,
    )
}

/// RFC 8414 authorization server metadata.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "public",
    responses((status = 200, description = "Metadata", content_type = "application/json", body = Object),
              (status = 304, description = "Not modified (If-None-Match)")))]
pub async fn metadata(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let response = serve_prepared(&headers, &state.metadata, "application/json", 3600);
    crate::http::count_request("/.well-known/oauth-authorization-server", response.status());
    response
}
