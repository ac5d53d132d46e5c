//! `/v1/keys` through the API: minting (what a verifier accepts), validation,
//! unique names, listing, describing, editing, renewing, suspending and
//! revoking (contract §1–§3).

use std::collections::{BTreeSet, HashSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_verifier::{Expectations, KeySet, verify_signed};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{AUDIENCE, ISSUER, TestApp, claims_of, header_of, parse_time, rfc3339};

const DAY: i64 = 86_400;

fn object_keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn is_uuid_v7(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok_and(|u| u.get_version_num() == 7)
}

/// The RFC 7638 thumbprint of an OKP/EC/RSA JWK, computed independently.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str().unwrap() {
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap()
        ),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        ),
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap(),
            jwk["n"].as_str().unwrap()
        ),
        other => panic!("unexpected kty {other}"),
    };
    B64.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// Verifies `token` as a downstream service would, against the served JWKS
/// at the app's (fixed) time.
async fn verify_with_jwks(app: &TestApp, token: &str) -> latchkey_verifier::AccessClaims {
    let jwks = app.get("/.well-known/jwks.json", None).await;
    let keys = KeySet::from_jwks_json(jwks.text.as_bytes()).unwrap();
    verify_signed(
        token,
        &keys,
        &Expectations::new(ISSUER, AUDIENCE),
        app.now(),
    )
    .unwrap_or_else(|e| panic!("the verifier refused a fresh token: {e}"))
}

/// Status of `GET /v1/keys` with `token`: 200/403 mean the key is valid.
async fn use_token(app: &TestApp, token: &str) -> u16 {
    app.get("/v1/keys", Some(token)).await.status.as_u16()
}

#[tokio::test]
async fn create_mints_a_token_that_any_verifier_accepts() {
    let app = TestApp::new().await;
    let reply = app
        .post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &json!({"name": "ci-bot", "description": "deploys", "roles": ["global_viewer"]}),
        )
        .await;
    reply.expect(201);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(object_keys(&reply.body), set(&["key", "token"]));
    let token = reply.body["token"].as_str().unwrap();
    let key = &reply.body["key"];
    let now = app.now();

    // Header: EdDSA, at+jwt, kid = RFC 7638 thumbprint of a published key.
    let jwks = app.jwks().await;
    let kid = header_of(token)["kid"].as_str().unwrap().to_owned();
    assert_eq!(
        header_of(token),
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid})
    );
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(kid))
        .expect("the token's kid is in the JWKS")
        .clone();
    assert_eq!(thumbprint(&jwk), kid);

    // The verifier crate accepts it against the served JWKS.
    let verified = verify_with_jwks(&app, token).await;
    assert_eq!(verified.sub, key["id"].as_str().unwrap());

    // So does a plain JOSE library with the JWK.
    latchkey_verifier::install_ring_provider();
    let decoding =
        jsonwebtoken::DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    // Expiry is checked below against the fixed clock, not the wall clock.
    validation.validate_exp = false;
    let decoded = jsonwebtoken::decode::<Value>(token, &decoding, &validation).unwrap();
    assert_eq!(decoded.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(decoded.header.kid.as_deref(), Some(kid.as_str()));

    // Claims exactly as contract §1.
    let claims = decoded.claims;
    assert_eq!(
        object_keys(&claims),
        set(&[
            "iss",
            "sub",
            "client_id",
            "aud",
            "iat",
            "nbf",
            "exp",
            "jti",
            "name",
            "roles",
            "status"
        ])
    );
    assert_eq!(claims["iss"], json!(ISSUER));
    assert_eq!(claims["sub"], key["id"]);
    assert_eq!(claims["client_id"], key["id"]);
    assert!(is_uuid_v7(claims["sub"].as_str().unwrap()));
    assert_eq!(claims["aud"], json!(AUDIENCE));
    assert_eq!(claims["iat"], json!(now));
    assert_eq!(claims["nbf"], json!(now));
    // Six calendar months from 2026-06-01.
    let six_months = time::macros::datetime!(2026-12-01 0:00 UTC).unix_timestamp();
    assert_eq!(claims["exp"], json!(six_months));
    assert!(is_uuid_v7(claims["jti"].as_str().unwrap()));
    assert_ne!(claims["jti"], claims["sub"]);
    assert_eq!(claims["name"], json!("ci-bot"));
    assert_eq!(claims["roles"], json!(["global_viewer"]));
    let status = &claims["status"];
    assert_eq!(object_keys(status), set(&["status_list"]));
    assert_eq!(object_keys(&status["status_list"]), set(&["idx", "uri"]));
    assert!(status["status_list"]["idx"].is_u64());
    assert!(
        status["status_list"]["uri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{ISSUER}/v1/status/")),
        "{status}"
    );

    // The key record as contract §2 describes it.
    assert_eq!(
        object_keys(key),
        set(&[
            "id",
            "name",
            "description",
            "roles",
            "accounts",
            "created_at",
            "created_by",
            "expires_at",
            "last_used_at",
            "status",
            "signing_kid"
        ])
    );
    assert_eq!(key["name"], json!("ci-bot"));
    assert_eq!(key["description"], json!("deploys"));
    assert_eq!(key["roles"], json!(["global_viewer"]));
    assert_eq!(key["accounts"], Value::Null);
    assert_eq!(key["created_at"], json!(rfc3339(now)));
    assert_eq!(
        key["created_by"],
        json!({"id": app.admin_id, "name": "bootstrap-admin"})
    );
    assert_eq!(key["expires_at"], json!(rfc3339(six_months)));
    assert_eq!(key["last_used_at"], Value::Null);
    assert_eq!(key["status"], json!("active"));
    assert_eq!(key["signing_kid"], json!(kid));

    // And latchkey itself accepts it.
    assert_eq!(use_token(&app, token).await, 200);
}

#[tokio::test]
async fn accounts_are_signed_in_only_for_cloud_account_viewers() {
    let app = TestApp::new().await;
    let some = app
        .key("acct-some", &["cloud_account_viewer"], Some(&["a1", "a2"]))
        .await;
    assert_eq!(claims_of(&some.token)["accounts"], json!(["a1", "a2"]));
    assert_eq!(some.key["accounts"], json!(["a1", "a2"]));
    let all = app
        .key("acct-all", &["cloud_account_viewer"], Some(&["*"]))
        .await;
    assert_eq!(claims_of(&all.token)["accounts"], json!(["*"]));
    let mixed = app
        .key(
            "acct-mixed",
            &["global_viewer", "cloud_account_viewer"],
            Some(&["a3"]),
        )
        .await;
    assert_eq!(claims_of(&mixed.token)["accounts"], json!(["a3"]));
    assert_eq!(
        claims_of(&mixed.token)["roles"],
        json!(["global_viewer", "cloud_account_viewer"])
    );
    let admin = app.key("no-accounts", &["global_admin"], None).await;
    assert!(claims_of(&admin.token).get("accounts").is_none());
    for created in [&some, &all, &mixed, &admin] {
        verify_with_jwks(&app, &created.token).await;
    }
}

#[tokio::test]
async fn expiry_defaults_to_six_calendar_months_and_honours_expires_in_days() {
    let app = TestApp::with_config(|c| c.max_expiry_days = 400).await;
    let thirty = app
        .create_key(json!({"name": "thirty", "roles": ["global_viewer"], "expires_in_days": 30}))
        .await;
    assert_eq!(claims_of(&thirty.token)["exp"], json!(app.now() + 30 * DAY));
    assert_eq!(
        thirty.key["expires_at"],
        json!(rfc3339(app.now() + 30 * DAY))
    );
    let max = app
        .create_key(json!({"name": "max", "roles": ["global_viewer"], "expires_in_days": 400}))
        .await;
    assert_eq!(claims_of(&max.token)["exp"], json!(app.now() + 400 * DAY));
    for days in [0, 401] {
        let reply = app
            .post_json(
                "/v1/keys",
                Some(&app.admin_token),
                &json!({"name": format!("days-{days}"), "roles": ["global_viewer"], "expires_in_days": days}),
            )
            .await;
        reply.expect_problem(422);
        assert_eq!(reply.error_fields(), ["expires_in_days"], "{}", reply.text);
    }
    // 31 August + six months is the last day of February.
    app.clock
        .set(time::macros::datetime!(2026-08-31 12:00 UTC).unix_timestamp());
    let clamped = app.key("clamped", &["global_viewer"], None).await;
    assert_eq!(
        claims_of(&clamped.token)["exp"],
        json!(time::macros::datetime!(2027-02-28 12:00 UTC).unix_timestamp())
    );
}

#[tokio::test]
async fn default_maximum_expiry_is_730_days() {
    let app = TestApp::new().await;
    let ok = app
        .create_key(json!({"name": "long", "roles": ["global_viewer"], "expires_in_days": 730}))
        .await;
    assert_eq!(claims_of(&ok.token)["exp"], json!(app.now() + 730 * DAY));
    let reply = app
        .post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &json!({"name": "too-long", "roles": ["global_viewer"], "expires_in_days": 731}),
        )
        .await;
    reply.expect_problem(422);
    assert_eq!(reply.error_fields(), ["expires_in_days"]);
}

#[tokio::test]
async fn invalid_keys_are_refused_with_the_field_at_fault() {
    let app = TestApp::new().await;
    let many: Vec<String> = (0..1001).map(|i| format!("acct-{i}")).collect();
    let cav = |accounts: Value| json!({"name": "v", "roles": ["cloud_account_viewer"], "accounts": accounts});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "empty name",
            json!({"name": "", "roles": ["global_viewer"]}),
            "name",
        ),
        (
            "blank name",
            json!({"name": "   ", "roles": ["global_viewer"]}),
            "name",
        ),
        (
            "101-char name",
            json!({"name": "x".repeat(101), "roles": ["global_viewer"]}),
            "name",
        ),
        (
            "newline in name",
            json!({"name": "line\nbreak", "roles": ["global_viewer"]}),
            "name",
        ),
        (
            "bell in name",
            json!({"name": "bell\u{7}", "roles": ["global_viewer"]}),
            "name",
        ),
        (
            "DEL in name",
            json!({"name": "del\u{7f}", "roles": ["global_viewer"]}),
            "name",
        ),
        ("no roles", json!({"name": "r", "roles": []}), "roles"),
        (
            "unknown role",
            json!({"name": "r", "roles": ["root"]}),
            "roles",
        ),
        (
            "accounts without cloud_account_viewer",
            json!({"name": "a", "roles": ["global_viewer"], "accounts": ["a1"]}),
            "accounts",
        ),
        (
            "cloud_account_viewer without accounts",
            json!({"name": "a", "roles": ["cloud_account_viewer"]}),
            "accounts",
        ),
        ("empty accounts", cav(json!([])), "accounts"),
        ("slash in account", cav(json!(["bad/acct"])), "accounts"),
        ("space in account", cav(json!(["has space"])), "accounts"),
        ("empty account", cav(json!([""])), "accounts"),
        (
            "129-char account",
            cav(json!(["a".repeat(129)])),
            "accounts",
        ),
        ("1001 accounts", cav(json!(many)), "accounts"),
        (
            "1001-char description",
            json!({"name": "d", "roles": ["global_viewer"], "description": "d".repeat(1001)}),
            "description",
        ),
    ];
    let before = app.audit_head().await;
    for (label, body, field) in &cases {
        let reply = app
            .post_json("/v1/keys", Some(&app.admin_token), body)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{label}: {}",
            reply.text
        );
        reply.expect_problem(422);
        let fields = reply.error_fields();
        assert_eq!(fields, [*field], "{label}: {}", reply.text);
        let message = &reply.body["errors"][0]["message"];
        assert!(
            message.as_str().is_some_and(|m| !m.is_empty()),
            "{label}: {}",
            reply.text
        );
    }
    // Nothing was created.
    assert!(
        app.audit_after(before).await.is_empty(),
        "a refused create left an audit entry"
    );

    // The limits themselves are accepted.
    let thousand: Vec<String> = (0..1000).map(|i| format!("acct-{i}")).collect();
    for (label, body) in [
        (
            "100-char name",
            json!({"name": "n".repeat(100), "roles": ["global_viewer"]}),
        ),
        (
            "printable unicode name",
            json!({"name": "Zoë's key ✓", "roles": ["global_viewer"]}),
        ),
        (
            "1000-char description",
            json!({"name": "desc", "roles": ["global_viewer"], "description": "d".repeat(1000)}),
        ),
        (
            "1000 accounts of 128 chars max",
            json!({"name": "acc", "roles": ["cloud_account_viewer"], "accounts": thousand}),
        ),
        (
            "account charset",
            json!({"name": "chars", "roles": ["cloud_account_viewer"], "accounts": ["A-z_0.9:x", "a".repeat(128)]}),
        ),
    ] {
        let reply = app
            .post_json("/v1/keys", Some(&app.admin_token), &body)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{label}: {}", reply.text);
    }
    // Names are trimmed.
    let trimmed = app.key("  padded  ", &["global_viewer"], None).await;
    assert_eq!(trimmed.key["name"], json!("padded"));
    assert_eq!(claims_of(&trimmed.token)["name"], json!("padded"));
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let app = TestApp::new().await;
    let reply = app
        .request(
            Method::POST,
            "/v1/keys",
            Some(&app.admin_token),
            Some("application/json"),
            r#"{"name": "x", "roles": ["#,
        )
        .await;
    reply.expect_problem(400);

    let reply = app
        .post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &json!({"name": "big", "roles": ["global_viewer"], "description": "d".repeat(70 * 1024)}),
        )
        .await;
    reply.expect_problem(413);

    // Exactly 64 KiB is read (and refused for its content); one byte more is 413.
    let exact = |total: usize| {
        let skeleton =
            json!({"name": "big", "roles": ["global_viewer"], "description": ""}).to_string();
        let description = "d".repeat(total - skeleton.len());
        let body = json!({"name": "big", "roles": ["global_viewer"], "description": description})
            .to_string();
        assert_eq!(body.len(), total);
        body
    };
    let reply = app
        .request(
            Method::POST,
            "/v1/keys",
            Some(&app.admin_token),
            Some("application/json"),
            exact(64 * 1024),
        )
        .await;
    reply.expect_problem(422);
    assert_eq!(reply.error_fields(), ["description"]);
    let reply = app
        .request(
            Method::POST,
            "/v1/keys",
            Some(&app.admin_token),
            Some("application/json"),
            exact(64 * 1024 + 1),
        )
        .await;
    reply.expect_problem(413);

    let reply = app
        .request(
            Method::POST,
            &format!("/v1/keys/{}/renew", app.admin_id),
            Some(&app.admin_token),
            Some("application/json"),
            format!(r#"{{"pad": "{}"}}"#, "p".repeat(70 * 1024)),
        )
        .await;
    reply.expect_problem(413);

    let reply = app
        .request(
            Method::PATCH,
            &format!("/v1/keys/{}", app.admin_id),
            Some(&app.admin_token),
            Some("application/json"),
            "{nope",
        )
        .await;
    reply.expect_problem(400);
}

#[tokio::test]
async fn names_are_unique_ignoring_case_revoked_keys_included() {
    let app = TestApp::new().await;
    let first = app.key("Deploy-Bot", &["global_viewer"], None).await;
    for name in [
        "deploy-bot",
        "  DEPLOY-BOT  ",
        "Deploy-Bot",
        "BOOTSTRAP-ADMIN",
    ] {
        let reply = app
            .post_json(
                "/v1/keys",
                Some(&app.admin_token),
                &json!({"name": name, "roles": ["global_viewer"]}),
            )
            .await;
        reply.expect_problem(409);
        assert_eq!(reply.error_fields(), ["name"], "{name}: {}", reply.text);
    }
    let unicode = app.key("École", &["global_viewer"], None).await;
    let reply = app
        .post_json(
            "/v1/keys",
            Some(&app.admin_token),
            &json!({"name": "éCOLE", "roles": ["global_viewer"]}),
        )
        .await;
    reply.expect_problem(409);
    for created in [&first, &unicode] {
        app.delete(
            &format!("/v1/keys/{}", created.id()),
            Some(&app.admin_token),
        )
        .await
        .expect(204);
    }
    for name in ["deploy-BOT", "école"] {
        let reply = app
            .post_json(
                "/v1/keys",
                Some(&app.admin_token),
                &json!({"name": name, "roles": ["global_viewer"]}),
            )
            .await;
        reply.expect_problem(409);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_yield_one_key() {
    let app = TestApp::new().await;
    for round in 0..8 {
        let mut tasks = Vec::new();
        for name in [format!("race-{round}"), format!("RACE-{round}")] {
            let router = app.router.clone();
            let token = app.admin_token.clone();
            tasks.push(tokio::spawn(async move {
                let request = Request::builder()
                    .method(Method::POST)
                    .uri("/v1/keys")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(
                        json!({"name": name, "roles": ["global_viewer"]}).to_string(),
                    ))
                    .unwrap();
                router.oneshot(request).await.unwrap().status().as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "round {round}");
        let listed = app
            .get(&format!("/v1/keys?q=race-{round}"), Some(&app.admin_token))
            .await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    }
}

async fn list_names(app: &TestApp, query: &str) -> Vec<String> {
    let reply = app
        .get(&format!("/v1/keys{query}"), Some(&app.admin_token))
        .await;
    reply.expect(200);
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_is_newest_first_with_bounded_limits_and_cursor_paging() {
    let app = TestApp::new().await;
    let mut ids = vec![app.admin_id.clone()];
    for i in 0..55 {
        ids.push(
            app.key(&format!("k-{i:02}"), &["global_viewer"], None)
                .await
                .id(),
        );
        app.clock.advance(1);
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    let reply = app.get("/v1/keys", Some(&app.admin_token)).await;
    reply.expect(200);
    assert_eq!(object_keys(&reply.body), set(&["items", "next_cursor"]));
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 50, "default limit");
    assert!(reply.body["next_cursor"].is_string());
    let page_ids: Vec<String> = items
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(page_ids, newest_first[..50]);

    let all = app.get("/v1/keys?limit=500", Some(&app.admin_token)).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 56);
    assert!(all.body["next_cursor"].is_null());
    let names = list_names(&app, "?limit=500").await;
    assert_eq!(names.first().map(String::as_str), Some("k-54"));
    assert_eq!(names.last().map(String::as_str), Some("bootstrap-admin"));

    for bad in ["501", "0", "-1", "many"] {
        let reply = app
            .get(&format!("/v1/keys?limit={bad}"), Some(&app.admin_token))
            .await;
        reply.expect_problem(422);
        assert_eq!(reply.error_fields(), ["limit"], "limit={bad}");
    }

    for limit in [1, 7, 8, 55, 56] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let query = match &cursor {
                Some(c) => format!("/v1/keys?limit={limit}&cursor={c}"),
                None => format!("/v1/keys?limit={limit}"),
            };
            let reply = app.get(&query, Some(&app.admin_token)).await;
            reply.expect(200);
            let items = reply.body["items"].as_array().unwrap();
            assert!(items.len() <= limit);
            seen.extend(items.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
            match reply.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, newest_first, "paging with limit {limit}");
    }
}

/// Contract §3: a `cursor` or `after` the server did not hand out is a 400
/// naming the parameter, not a silent first page.
#[tokio::test]
async fn a_cursor_or_after_the_server_did_not_hand_out_is_400() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    for i in 0..3 {
        app.key(&format!("paged-{i}"), &["global_viewer"], None)
            .await;
        app.clock.advance(1);
    }
    let first = app.get("/v1/keys?limit=2", admin).await;
    first.expect(200);
    let handed_out = first.body["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .get(&format!("/v1/keys?limit=2&cursor={handed_out}"), admin)
        .await;
    next.expect(200);
    assert_eq!(next.body["items"].as_array().unwrap().len(), 2);

    let unknown_id = uuid::Uuid::now_v7().to_string();
    for bad in ["%00%ff", "zzzz", unknown_id.as_str(), "..%2F..%2Fkeys"] {
        let reply = app.get(&format!("/v1/keys?cursor={bad}"), admin).await;
        reply.expect_problem(400);
        assert_eq!(reply.error_fields(), ["cursor"], "cursor={bad}");
        assert!(
            reply.body["detail"].as_str().unwrap().contains("cursor"),
            "{}",
            reply.text
        );
    }

    let head = app.audit_head().await;
    app.get(&format!("/v1/audit?after={head}"), admin)
        .await
        .expect(200);
    for beyond in [head + 1, u64::MAX] {
        let reply = app.get(&format!("/v1/audit?after={beyond}"), admin).await;
        reply.expect_problem(400);
        assert_eq!(reply.error_fields(), ["after"], "after={beyond}");
    }
}

#[tokio::test]
async fn list_filters_by_status_and_text() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    app.create_key(json!({"name": "alpha-prod", "description": "Production reader", "roles": ["global_viewer"]}))
        .await;
    app.create_key(
        json!({"name": "beta", "description": "staging only", "roles": ["global_viewer"]}),
    )
    .await;
    let gamma = app.key("gamma", &["global_viewer"], None).await;
    app.post_json(
        &format!("/v1/keys/{}/suspend", gamma.id()),
        admin,
        &json!({}),
    )
    .await
    .expect(200);
    let delta = app.key("delta", &["global_viewer"], None).await;
    app.delete(&format!("/v1/keys/{}", delta.id()), admin)
        .await
        .expect(204);
    app.create_key(json!({"name": "epsilon", "roles": ["global_viewer"], "expires_in_days": 1}))
        .await;
    app.clock.advance(2 * DAY);

    assert_eq!(
        list_names(&app, "?status=active").await,
        ["beta", "alpha-prod", "bootstrap-admin"]
    );
    assert_eq!(list_names(&app, "?status=suspended").await, ["gamma"]);
    assert_eq!(list_names(&app, "?status=revoked").await, ["delta"]);
    assert_eq!(list_names(&app, "?status=expired").await, ["epsilon"]);
    let reply = app.get("/v1/keys?status=sleeping", admin).await;
    reply.expect_problem(422);
    assert_eq!(reply.error_fields(), ["status"]);

    assert_eq!(list_names(&app, "?q=READER").await, ["alpha-prod"]);
    assert_eq!(list_names(&app, "?q=Staging").await, ["beta"]);
    assert_eq!(list_names(&app, "?q=ALPHA").await, ["alpha-prod"]);
    assert_eq!(list_names(&app, "?q=ta&status=revoked").await, ["delta"]);
    assert_eq!(list_names(&app, "?q=A&status=suspended").await, ["gamma"]);
    assert!(list_names(&app, "?q=nothing-matches").await.is_empty());
}

#[tokio::test]
async fn describe_shows_one_key() {
    let app = TestApp::new().await;
    let created = app
        .key("described", &["cloud_account_viewer"], Some(&["a1"]))
        .await;
    let described = app.describe(&created.id()).await;
    assert_eq!(described, created.key);

    let bootstrap = app.describe(&app.admin_id).await;
    assert_eq!(bootstrap["name"], json!("bootstrap-admin"));
    assert_eq!(bootstrap["roles"], json!(["global_admin"]));
    assert_eq!(bootstrap["created_by"], json!("bootstrap"));
    assert_eq!(bootstrap["status"], json!("active"));

    // Viewers may read it too.
    let viewer = app.key("viewer", &["global_viewer"], None).await;
    let reply = app
        .get(&format!("/v1/keys/{}", created.id()), Some(&viewer.token))
        .await;
    reply.expect(200);
    assert_eq!(reply.body["id"], json!(created.id()));
}

#[tokio::test]
async fn only_the_description_can_change() {
    let app = TestApp::new().await;
    let created = app
        .key("editable", &["cloud_account_viewer"], Some(&["a1"]))
        .await;
    let path = format!("/v1/keys/{}", created.id());
    let admin = Some(app.admin_token.as_str());

    let reply = app
        .patch_json(&path, admin, &json!({"description": "new words"}))
        .await;
    reply.expect(200);
    assert_eq!(reply.body["description"], json!("new words"));
    assert_eq!(
        app.describe(&created.id()).await["description"],
        json!("new words")
    );
    app.patch_json(&path, admin, &json!({"description": ""}))
        .await
        .expect(200);
    assert_eq!(app.describe(&created.id()).await["description"], json!(""));
    app.patch_json(&path, admin, &json!({"description": "kept"}))
        .await
        .expect(200);

    let reply = app
        .patch_json(&path, admin, &json!({"description": "d".repeat(1001)}))
        .await;
    reply.expect_problem(422);
    assert_eq!(reply.error_fields(), ["description"]);

    for (body, field) in [
        (json!({"name": "renamed"}), "name"),
        (json!({"roles": ["global_admin"]}), "roles"),
        (json!({"accounts": ["a2"]}), "accounts"),
        (json!({"description": "sneaky", "name": "renamed"}), "name"),
        (
            json!({"description": "sneaky", "roles": ["global_admin"]}),
            "roles",
        ),
    ] {
        let reply = app.patch_json(&path, admin, &body).await;
        reply.expect_problem(422);
        let errors = reply.body["errors"].as_array().unwrap();
        let error = errors
            .iter()
            .find(|e| e["field"] == json!(field))
            .unwrap_or_else(|| panic!("{body}: no error for {field}: {}", reply.text));
        assert!(
            error["message"].as_str().unwrap().len() > 10,
            "{body}: the message should explain why: {}",
            reply.text
        );
    }
    let after = app.describe(&created.id()).await;
    assert_eq!(after["name"], json!("editable"));
    assert_eq!(after["roles"], json!(["cloud_account_viewer"]));
    assert_eq!(after["accounts"], json!(["a1"]));
    assert_eq!(after["description"], json!("kept"));
}

#[tokio::test]
async fn renew_mints_a_replacement_and_can_revoke_the_previous_tokens() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    let created = app
        .key("renewable", &["cloud_account_viewer"], Some(&["a1", "a2"]))
        .await;
    let first = created.token.clone();
    let path = format!("/v1/keys/{}/renew", created.id());
    app.clock.advance(DAY);

    let reply = app
        .post_json(&path, admin, &json!({"expires_in_days": 90}))
        .await;
    reply.expect(200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(object_keys(&reply.body), set(&["key", "token"]));
    let second = reply.body["token"].as_str().unwrap().to_owned();
    let (old, new) = (claims_of(&first), claims_of(&second));
    for same in [
        "sub",
        "client_id",
        "name",
        "roles",
        "accounts",
        "iss",
        "aud",
    ] {
        assert_eq!(old[same], new[same], "{same} must survive renewal");
    }
    assert_ne!(old["jti"], new["jti"]);
    assert_ne!(
        old["status"]["status_list"], new["status"]["status_list"],
        "a renewal gets its own status entry"
    );
    assert_eq!(new["iat"], json!(app.now()));
    assert_eq!(new["exp"], json!(app.now() + 90 * DAY));
    assert_eq!(
        reply.body["key"]["expires_at"],
        json!(rfc3339(app.now() + 90 * DAY))
    );
    assert_eq!(
        app.describe(&created.id()).await["expires_at"],
        json!(rfc3339(app.now() + 90 * DAY))
    );
    verify_with_jwks(&app, &second).await;

    // Both tokens work (403: valid keys whose role cannot list keys).
    assert_eq!(use_token(&app, &first).await, 403);
    assert_eq!(use_token(&app, &second).await, 403);

    // An empty body renews for six months.
    let reply = app
        .request(Method::POST, &path, admin, None, Body::empty())
        .await;
    reply.expect(200);
    let third = reply.body["token"].as_str().unwrap().to_owned();
    let six_months = time::macros::datetime!(2026-12-02 0:00 UTC).unix_timestamp();
    assert_eq!(claims_of(&third)["exp"], json!(six_months));

    let reply = app
        .post_json(&path, admin, &json!({"revoke_previous": true}))
        .await;
    reply.expect(200);
    let fourth = reply.body["token"].as_str().unwrap().to_owned();
    for earlier in [&first, &second, &third] {
        app.get("/v1/keys", Some(earlier)).await.expect_problem(401);
    }
    assert_eq!(use_token(&app, &fourth).await, 403);
    assert_eq!(app.describe(&created.id()).await["status"], json!("active"));

    for days in [0, 731] {
        let reply = app
            .post_json(&path, admin, &json!({"expires_in_days": days}))
            .await;
        reply.expect_problem(422);
    }
}

#[tokio::test]
async fn suspend_and_resume() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    let created = app.key("pausable", &["global_viewer"], None).await;
    let id = created.id();
    let reply = app
        .post_json(&format!("/v1/keys/{id}/suspend"), admin, &json!({}))
        .await;
    reply.expect(200);
    assert_eq!(reply.body["status"], json!("suspended"));
    assert_eq!(reply.body["id"], json!(id));
    app.get("/v1/keys", Some(&created.token))
        .await
        .expect_problem(401);
    assert_eq!(app.describe(&id).await["status"], json!("suspended"));

    let reply = app
        .post_json(&format!("/v1/keys/{id}/resume"), admin, &json!({}))
        .await;
    reply.expect(200);
    assert_eq!(reply.body["status"], json!("active"));
    assert_eq!(use_token(&app, &created.token).await, 200);
    assert_eq!(app.describe(&id).await["status"], json!("active"));
}

#[tokio::test]
async fn revoke_is_permanent() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    let created = app.key("doomed", &["global_viewer"], None).await;
    let id = created.id();
    let reply = app.delete(&format!("/v1/keys/{id}"), admin).await;
    reply.expect(204);
    assert!(reply.text.is_empty());
    app.get("/v1/keys", Some(&created.token))
        .await
        .expect_problem(401);
    assert_eq!(app.describe(&id).await["status"], json!("revoked"));

    app.delete(&format!("/v1/keys/{id}"), admin)
        .await
        .expect_problem(409);
    for action in ["renew", "suspend", "resume"] {
        let reply = app
            .post_json(&format!("/v1/keys/{id}/{action}"), admin, &json!({}))
            .await;
        assert_eq!(
            reply.status.as_u16(),
            409,
            "{action} of a revoked key: {}",
            reply.text
        );
        reply.expect_problem(409);
    }
    assert_eq!(app.describe(&id).await["status"], json!("revoked"));
}

#[tokio::test]
async fn unknown_keys_are_404() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    for id in [uuid::Uuid::now_v7().to_string(), "not-a-key".to_owned()] {
        app.get(&format!("/v1/keys/{id}"), admin)
            .await
            .expect_problem(404);
        app.patch_json(
            &format!("/v1/keys/{id}"),
            admin,
            &json!({"description": "x"}),
        )
        .await
        .expect_problem(404);
        app.delete(&format!("/v1/keys/{id}"), admin)
            .await
            .expect_problem(404);
        for action in ["renew", "suspend", "resume"] {
            let reply = app
                .post_json(&format!("/v1/keys/{id}/{action}"), admin, &json!({}))
                .await;
            assert_eq!(reply.status.as_u16(), 404, "{action}: {}", reply.text);
            reply.expect_problem(404);
        }
    }
}

#[tokio::test]
async fn last_used_is_null_until_the_key_authenticates() {
    let app = TestApp::new().await;
    let created = app.key("lazy", &["global_viewer"], None).await;
    app.clock.advance(3600);
    assert_eq!(
        app.describe(&created.id()).await["last_used_at"],
        Value::Null
    );
    let listed = app.get("/v1/keys?q=lazy", Some(&app.admin_token)).await;
    assert_eq!(listed.body["items"][0]["last_used_at"], Value::Null);

    assert_eq!(use_token(&app, &created.token).await, 200);
    let used_at = app.now();
    app.clock.advance(60);
    assert_eq!(
        app.describe(&created.id()).await["last_used_at"],
        json!(rfc3339(used_at))
    );
}

#[tokio::test]
async fn keys_past_their_expiry_are_expired() {
    let app = TestApp::new().await;
    let created = app
        .create_key(json!({"name": "brief", "roles": ["global_viewer"], "expires_in_days": 1}))
        .await;
    app.clock.advance(DAY - 3600);
    assert_eq!(use_token(&app, &created.token).await, 200);
    assert_eq!(app.describe(&created.id()).await["status"], json!("active"));
    app.clock.advance(3600 + 120);
    assert_eq!(
        app.describe(&created.id()).await["status"],
        json!("expired")
    );
    app.get("/v1/keys", Some(&created.token))
        .await
        .expect_problem(401);
    assert_eq!(
        parse_time(
            app.describe(&created.id()).await["expires_at"]
                .as_str()
                .unwrap()
        ),
        crate::support::start_time() + DAY
    );
}

/// The token is returned once and never stored: it is nowhere in the data
/// directory after the service has flushed and closed.
#[tokio::test]
async fn tokens_are_not_stored() {
    let app = TestApp::new().await;
    let created = app.key("secret", &["global_viewer"], None).await;
    let renewed = app
        .post_json(
            &format!("/v1/keys/{}/renew", created.id()),
            Some(&app.admin_token),
            &json!({}),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens = [app.admin_token.clone(), created.token.clone(), renewed];
    let signatures: HashSet<String> = tokens
        .iter()
        .map(|t| t.rsplit('.').next().unwrap().to_owned())
        .collect();
    if let Some(stored) = app.stored_text().await {
        // PostgreSQL: every row of every table.
        assert!(stored.contains(&created.id()), "the dump holds the keys");
        for signature in &signatures {
            assert!(
                !stored.contains(signature.as_str()),
                "a token is stored in the database"
            );
        }
        return;
    }
    let dir = app.close().await;
    let mut files = 0;
    let mut stack = vec![dir.path().join("data")];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
                continue;
            }
            files += 1;
            let bytes = std::fs::read(entry.path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for signature in &signatures {
                assert!(
                    !text.contains(signature.as_str()),
                    "a token is stored in {}",
                    entry.path().display()
                );
            }
        }
    }
    assert!(files > 0);
}

/// Method, path, content type, body, and the acceptable statuses.
type BadInput<'a> = (Method, &'a str, Option<&'a str>, String, &'static [u16]);

/// Whatever a client sends, the answer is a 4xx problem document, never a
/// 5xx or a bare-text error.
#[tokio::test]
async fn bad_input_gets_a_problem_document_never_a_5xx() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    let id = app.key("target", &["global_viewer"], None).await.id();
    let keys_path = format!("/v1/keys/{id}");
    let renew_path = format!("/v1/keys/{id}/renew");
    let long_id = format!("/v1/keys/{}", "a".repeat(10_000));
    let cases: Vec<BadInput> = vec![
        (
            Method::POST,
            "/v1/keys",
            Some("text/plain"),
            r#"{"name":"t","roles":["global_viewer"]}"#.into(),
            &[415],
        ),
        (
            Method::POST,
            "/v1/keys",
            None,
            r#"{"name":"t","roles":["global_viewer"]}"#.into(),
            &[415],
        ),
        (
            Method::POST,
            "/v1/keys",
            Some("application/json"),
            "".into(),
            &[400],
        ),
        (
            Method::POST,
            "/v1/keys",
            Some("application/json"),
            r#"{"name": 5, "roles": ["global_viewer"]}"#.into(),
            &[422],
        ),
        (
            Method::POST,
            "/v1/keys",
            Some("application/json"),
            r#"{"name": "t", "roles": "global_viewer"}"#.into(),
            &[422],
        ),
        (
            Method::POST,
            "/v1/keys",
            Some("application/json"),
            r#"{"name": "t", "roles": ["global_viewer"], "expires_in_days": 1e12}"#.into(),
            &[422],
        ),
        (
            Method::POST,
            "/v1/keys",
            Some("application/json"),
            r#"{"name": "t", "roles": ["global_viewer"], "expires_in_days": -1}"#.into(),
            &[422],
        ),
        (
            Method::POST,
            "/v1/keys",
            Some("application/json"),
            r#"{"name": "t", "roles": ["global_viewer"], "expires_in_days": 99999999999}"#.into(),
            &[422],
        ),
        (
            Method::POST,
            "/v1/keys",
            Some("application/json"),
            "[]".into(),
            &[422],
        ),
        (
            Method::POST,
            "/v1/keys",
            Some("application/json"),
            "null".into(),
            &[422],
        ),
        (
            Method::PATCH,
            &keys_path,
            Some("application/json"),
            "[]".into(),
            &[422],
        ),
        (
            Method::PATCH,
            &keys_path,
            Some("application/json"),
            r#"{"description": 7}"#.into(),
            &[422],
        ),
        (
            Method::POST,
            &renew_path,
            Some("application/json"),
            "{".into(),
            &[400],
        ),
        (
            Method::POST,
            &renew_path,
            Some("application/json"),
            r#"{"expires_in_days": "ten"}"#.into(),
            &[422],
        ),
        (
            Method::POST,
            &renew_path,
            Some("text/plain"),
            "renew please".into(),
            &[415],
        ),
        (
            Method::GET,
            "/v1/keys?limit=1&limit=2",
            None,
            String::new(),
            &[400],
        ),
        (
            Method::GET,
            "/v1/audit?after=99999999999999999999999",
            None,
            String::new(),
            &[422],
        ),
        // Not UTF-8: malformed (400) or simply no such key (404).
        (
            Method::GET,
            "/v1/keys/%FF",
            None,
            String::new(),
            &[400, 404],
        ),
        (
            Method::GET,
            "/v1/keys/%FF/renew",
            None,
            String::new(),
            &[405],
        ),
        (
            Method::POST,
            "/v1/keys/%FF/suspend",
            Some("application/json"),
            "{}".into(),
            &[400, 404],
        ),
        (Method::GET, &long_id, None, String::new(), &[404]),
    ];
    let mut wrong = Vec::new();
    for (method, path, content_type, body, expected) in cases {
        let reply = app
            .request(method.clone(), path, admin, content_type, body.clone())
            .await;
        let label = format!("{method} {} {body:.60}", &path[..path.len().min(60)]);
        let status = reply.status.as_u16();
        if !expected.contains(&status) {
            wrong.push(format!(
                "{label}: {status} (expected {expected:?}): {:.200}",
                reply.text
            ));
        } else if reply.header("content-type") != Some("application/problem+json")
            || reply.body["status"] != json!(status)
        {
            wrong.push(format!(
                "{label}: {status} is not a problem document ({:?}): {:.200}",
                reply.header("content-type"),
                reply.text
            ));
        }
    }
    // A non-UTF-8 Authorization header is just a bad key.
    let request = Request::builder()
        .uri("/v1/keys")
        .header(
            header::AUTHORIZATION,
            axum::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    let reply = app.send(request).await;
    if reply.status.as_u16() != 401 {
        wrong.push(format!("non-UTF-8 Authorization: {}", reply.status));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(app.describe(&id).await["status"], json!("active"));
}

#[tokio::test]
async fn a_renewal_during_a_suspension_stays_suspended_until_resume() {
    let app = TestApp::new().await;
    let admin = Some(app.admin_token.as_str());
    let created = app.key("paused", &["global_viewer"], None).await;
    let id = created.id();
    app.post_json(&format!("/v1/keys/{id}/suspend"), admin, &json!({}))
        .await
        .expect(200);
    let reply = app
        .post_json(&format!("/v1/keys/{id}/renew"), admin, &json!({}))
        .await;
    reply.expect(200);
    let renewed = reply.body["token"].as_str().unwrap().to_owned();
    assert_eq!(reply.body["key"]["status"], json!("suspended"));
    app.get("/v1/keys", Some(&renewed))
        .await
        .expect_problem(401);
    app.get("/v1/keys", Some(&created.token))
        .await
        .expect_problem(401);
    app.post_json(&format!("/v1/keys/{id}/resume"), admin, &json!({}))
        .await
        .expect(200);
    assert_eq!(use_token(&app, &renewed).await, 200);
    assert_eq!(use_token(&app, &created.token).await, 200);
}

#[tokio::test]
async fn renewing_an_expired_key_brings_it_back() {
    let app = TestApp::new().await;
    let created = app
        .create_key(json!({"name": "lapsed", "roles": ["global_viewer"], "expires_in_days": 1}))
        .await;
    let id = created.id();
    app.clock.advance(3 * DAY);
    assert_eq!(app.describe(&id).await["status"], json!("expired"));
    let reply = app
        .post_json(
            &format!("/v1/keys/{id}/renew"),
            Some(&app.admin_token),
            &json!({"expires_in_days": 7}),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.body["key"]["status"], json!("active"));
    let renewed = reply.body["token"].as_str().unwrap();
    assert_eq!(claims_of(renewed)["sub"], json!(id));
    assert_eq!(use_token(&app, renewed).await, 200);
    app.get("/v1/keys", Some(&created.token))
        .await
        .expect_problem(401);
}
