//! `/openapi.json`: the OpenAPI 3.1 document, generated from the handlers'
//! annotations so it cannot drift from the routes.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::ApiState;

#[derive(OpenApi)]
#[openapi(
    info(title = "latchkey", description = "Issues signed JWT access keys and publishes what verifiers need to check them offline."),
    paths(
        crate::http::keys::create_key,
        crate::http::keys::list_keys,
        crate::http::keys::get_key,
        crate::http::keys::update_key,
        crate::http::keys::renew_key,
        crate::http::keys::suspend_key,
        crate::http::keys::resume_key,
        crate::http::keys::revoke_key,
        crate::http::audit::list_audit,
        crate::http::signing_keys::list_signing_keys,
        crate::http::signing_keys::rotate_signing_key,
        crate::http::signing_keys::retire_signing_key,
        crate::http::introspect::introspect,
        crate::http::usage::report_usage,
        crate::http::status::list_index,
        crate::http::status::status_list,
        crate::http::status::stream_changes,
        crate::http::well_known::jwks,
        crate::http::well_known::metadata,
        crate::http::ops::healthz,
        crate::http::ops::readyz,
        crate::http::ops::metrics,
        crate::http::backup::download_backup,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "keys", description = "Access keys"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "signing-keys", description = "Signing keys"),
        (name = "public", description = "Documents for verifiers"),
        (name = "operations", description = "Health, metrics and backups"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<ApiState> {
    let body = ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into());
    Router::new().route(
        "/openapi.json",
        get(move || {
            let body = body.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body,
                )
                    .into_response()
            }
        }),
    )
}
