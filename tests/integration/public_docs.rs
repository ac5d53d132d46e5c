//! The public documents (contract §3): JWKS and RFC 8414 metadata with
//! caching headers and conditional requests, health, metrics, the OpenAPI
//! document, and problem documents for unknown routes and methods.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};

use crate::support::{ISSUER, TestApp};

/// `public, max-age=<n>`.
fn assert_public_cache(cache_control: Option<&str>) {
    let value = cache_control.expect("Cache-Control is set");
    let max_age = value
        .split(',')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("max-age="))
        .unwrap_or_else(|| panic!("no max-age in {value:?}"));
    assert!(max_age.parse::<u64>().is_ok(), "{value:?}");
    assert!(
        value.split(',').map(str::trim).any(|d| d == "public"),
        "{value:?}"
    );
}

async fn conditional_get(app: &TestApp, path: &str, etag: &str) -> crate::support::Reply {
    app.send(
        Request::builder()
            .uri(path)
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

async fn assert_cached_document(app: &TestApp, path: &str) -> Value {
    let reply = app.get(path, None).await;
    reply.expect(200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        reply.header("content-type")
    );
    assert_public_cache(reply.header("cache-control"));
    let etag = reply.header("etag").expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let again = conditional_get(app, path, &etag).await;
    again.expect(304);
    assert!(again.text.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_public_cache(again.header("cache-control"));

    let other = conditional_get(app, path, "\"something-else\"").await;
    other.expect(200);
    assert_eq!(other.body, reply.body);
    reply.body
}

#[tokio::test]
async fn jwks_is_public_cacheable_and_revalidates() {
    let app = TestApp::new().await;
    let jwks = assert_cached_document(&app, "/.well-known/jwks.json").await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], json!("OKP"));
    assert_eq!(key["crv"], json!("Ed25519"));
    assert_eq!(key["alg"], json!("EdDSA"));
    assert!(key["x"].is_string() && key["kid"].is_string());
    assert!(key.get("d").is_none(), "a private key member is published");
    // The signing key list agrees with the JWKS.
    let signing = app.get("/v1/signing-keys", Some(&app.admin_token)).await;
    signing.expect(200);
    assert_eq!(signing.body["items"][0]["kid"], key["kid"]);
    assert_eq!(signing.body["items"][0]["alg"], json!("EdDSA"));
    assert_eq!(signing.body["items"][0]["state"], json!("active"));
}

#[tokio::test]
async fn metadata_names_the_issuer_and_its_endpoints() {
    let app = TestApp::new().await;
    let metadata = assert_cached_document(&app, "/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata["issuer"], json!(ISSUER));
    assert_eq!(
        metadata["jwks_uri"],
        json!(format!("{ISSUER}/.well-known/jwks.json"))
    );
    let introspection = metadata["introspection_endpoint"].as_str().unwrap();
    assert!(introspection.starts_with(ISSUER), "{introspection}");
    let text = metadata.to_string();
    assert!(text.contains(&format!("{ISSUER}/v1/status/")), "{text}");
    // The JWKS it points to is served here.
    let jwks_path = metadata["jwks_uri"]
        .as_str()
        .unwrap()
        .strip_prefix(ISSUER)
        .unwrap();
    app.get(jwks_path, None).await.expect(200);
}

#[tokio::test]
async fn health_and_metrics() {
    let app = TestApp::new().await;
    app.get("/healthz", None).await.expect(200);
    app.key("counted", &["global_viewer"], None).await;
    let reply = app.get("/metrics", None).await;
    reply.expect(200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        reply.header("content-type")
    );
    for metric in ["latchkey_http_requests_total", "latchkey_keys_minted_total"] {
        assert!(
            reply.text.contains(metric),
            "{metric} missing:\n{}",
            reply.text
        );
    }
    // Metrics never carry tokens.
    assert!(
        !reply
            .text
            .contains(app.admin_token.rsplit('.').next().unwrap())
    );
}

/// Every route of contract §3, with a concrete path to probe it.
const CONTRACT_ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/keys", "/v1/keys"),
    ("GET", "/v1/keys", "/v1/keys"),
    (
        "GET",
        "/v1/keys/{id}",
        "/v1/keys/0190c3a4-0000-7000-8000-000000000000",
    ),
    (
        "PATCH",
        "/v1/keys/{id}",
        "/v1/keys/0190c3a4-0000-7000-8000-000000000000",
    ),
    (
        "DELETE",
        "/v1/keys/{id}",
        "/v1/keys/0190c3a4-0000-7000-8000-000000000000",
    ),
    (
        "POST",
        "/v1/keys/{id}/renew",
        "/v1/keys/0190c3a4-0000-7000-8000-000000000000/renew",
    ),
    (
        "POST",
        "/v1/keys/{id}/suspend",
        "/v1/keys/0190c3a4-0000-7000-8000-000000000000/suspend",
    ),
    (
        "POST",
        "/v1/keys/{id}/resume",
        "/v1/keys/0190c3a4-0000-7000-8000-000000000000/resume",
    ),
    ("GET", "/v1/audit", "/v1/audit"),
    ("GET", "/v1/signing-keys", "/v1/signing-keys"),
    ("POST", "/v1/signing-keys/rotate", "/v1/signing-keys/rotate"),
    ("POST", "/v1/introspect", "/v1/introspect"),
    ("POST", "/v1/usage", "/v1/usage"),
    ("GET", "/.well-known/jwks.json", "/.well-known/jwks.json"),
    (
        "GET",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server",
    ),
    ("GET", "/v1/status/{list}", "/v1/status/0"),
    ("GET", "/v1/status/stream", "/v1/status/stream"),
    ("GET", "/healthz", "/healthz"),
    ("GET", "/metrics", "/metrics"),
];

/// `/v1/keys/{key_id}` and `/v1/keys/{id}` are the same template.
fn normalise(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn openapi_documents_every_routed_path() {
    let app = TestApp::new().await;
    let reply = app.get("/openapi.json", None).await;
    reply.expect(200);
    let doc = reply.body;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1"), "openapi {version}");
    let paths = doc["paths"].as_object().unwrap();
    let documented: std::collections::HashMap<String, &Value> = paths
        .iter()
        .map(|(template, item)| (normalise(template), item))
        .collect();

    let mut routed = 0;
    let mut missing = Vec::new();
    for (method, template, probe) in CONTRACT_ROUTES {
        if !app.routes(method, probe).await {
            continue;
        }
        routed += 1;
        let item = documented.get(&normalise(template));
        if item.is_none_or(|item| item.get(method.to_lowercase()).is_none()) {
            missing.push(format!("{method} {template}"));
        }
    }
    // The routes that exist today must be found, so this test can fail.
    assert!(routed >= 14, "only {routed} contract routes are routed");
    assert!(
        missing.is_empty(),
        "routed but not in /openapi.json: {missing:?}"
    );

    // And everything documented is served.
    for (template, item) in paths {
        let probe = template
            .replace("{id}", "0190c3a4-0000-7000-8000-000000000000")
            .replace("{list}", "0");
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete", "head"].contains(&method.as_str()) {
                assert!(
                    app.routes(&method.to_uppercase(), &probe).await,
                    "documented but not routed: {method} {template}"
                );
            }
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::new().await;
    for path in ["/v1/nothing", "/v2/keys", "/.well-known/other"] {
        app.get(path, Some(&app.admin_token))
            .await
            .expect_problem(404);
    }
    for (method, path) in [
        (Method::PUT, "/v1/keys"),
        (Method::DELETE, "/healthz"),
        (Method::POST, "/.well-known/jwks.json"),
        (Method::PUT, "/v1/keys/0190c3a4-0000-7000-8000-000000000000"),
    ] {
        let reply = app
            .request(
                method.clone(),
                path,
                Some(&app.admin_token),
                None,
                Body::empty(),
            )
            .await;
        assert_eq!(
            reply.status.as_u16(),
            405,
            "{method} {path}: {}",
            reply.text
        );
        reply.expect_problem(405);
    }
}
