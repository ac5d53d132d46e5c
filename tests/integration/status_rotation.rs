//! Revocation publication and the signing-key lifecycle (contract §4–§5):
//! status bits in both list formats, the SSE stream with resume, lists that
//! fill up, rotation with a lead time on a fixed clock, and emergency retire.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, header};
use http_body_util::BodyExt;
use latchkey_verifier::TokenStatus;
use latchkey_verifier::jwk::KeySet;
use latchkey_verifier::status_list::{StatusList, StatusListClaims};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{TestApp, claims_of, header_of};

const DAY: i64 = 86_400;

/// The status of `token` as published, read from both list formats; the
/// signed form is verified against the served JWKS.
pub(crate) async fn published_status(app: &TestApp, token: &str) -> TokenStatus {
    let claims = claims_of(token);
    let uri = claims["status"]["status_list"]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let idx = claims["status"]["status_list"]["idx"].as_u64().unwrap() as usize;
    let path = uri.strip_prefix(crate::support::ISSUER).unwrap();

    let json_reply = app
        .send(
            Request::get(path)
                .header(header::ACCEPT, "application/statuslist+json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    json_reply.expect(200);
    assert_eq!(
        json_reply.header("content-type"),
        Some("application/statuslist+json")
    );
    let unsigned: StatusListClaims = serde_json::from_value(json_reply.body.clone()).unwrap();
    assert_eq!(unsigned.sub, uri);
    let from_json = StatusList::decode(unsigned.status_list.bits, &unsigned.status_list.lst)
        .unwrap()
        .get(idx)
        .unwrap();

    let jwt_reply = app
        .send(
            Request::get(path)
                .header(header::ACCEPT, "application/statuslist+jwt")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    jwt_reply.expect(200);
    assert_eq!(
        jwt_reply.header("content-type"),
        Some("application/statuslist+jwt")
    );
    let jwt = jwt_reply.text.clone();
    let header = header_of(&jwt);
    assert_eq!(header["typ"], "statuslist+jwt");
    let keys = KeySet::from_jwks_json(app.jwks().await.to_string().as_bytes()).unwrap();
    let key = keys
        .get(header["kid"].as_str().unwrap())
        .expect("list signed by a published key");
    let (signing_input, signature) = jwt.rsplit_once('.').unwrap();
    use base64::Engine;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    assert!(
        key.verify_signature(signing_input.as_bytes(), &signature),
        "status list signature"
    );
    let signed: StatusListClaims = serde_json::from_value(claims_of(&jwt)).unwrap();
    assert_eq!(signed.sub, uri);
    assert!(signed.ttl.is_some() && signed.exp.is_some());
    let from_jwt = StatusList::decode(signed.status_list.bits, &signed.status_list.lst)
        .unwrap()
        .get(idx)
        .unwrap();
    assert_eq!(from_json, from_jwt, "both formats agree");
    from_json
}

#[tokio::test]
async fn status_bit_follows_suspend_resume_and_revoke_in_both_formats() {
    let app = TestApp::new().await;
    let key = app.key("status-bits", &["global_viewer"], None).await;
    let id = key.id();
    assert_eq!(published_status(&app, &key.token).await, TokenStatus::Valid);

    app.post_json(
        &format!("/v1/keys/{id}/suspend"),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    assert_eq!(
        published_status(&app, &key.token).await,
        TokenStatus::Suspended
    );

    app.post_json(
        &format!("/v1/keys/{id}/resume"),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    assert_eq!(published_status(&app, &key.token).await, TokenStatus::Valid);

    // Renewing with revoke_previous invalidates only the earlier token.
    let renewed = app
        .post_json(
            &format!("/v1/keys/{id}/renew"),
            Some(&app.admin_token),
            &json!({"revoke_previous": true}),
        )
        .await;
    renewed.expect(200);
    let new_token = renewed.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        published_status(&app, &key.token).await,
        TokenStatus::Invalid
    );
    assert_eq!(published_status(&app, &new_token).await, TokenStatus::Valid);

    app.delete(&format!("/v1/keys/{id}"), Some(&app.admin_token))
        .await
        .expect(204);
    assert_eq!(
        published_status(&app, &new_token).await,
        TokenStatus::Invalid
    );
}

#[tokio::test]
async fn status_list_is_cacheable_and_revalidates() {
    let app = TestApp::new().await;
    let first = app.get("/v1/status/0", None).await;
    first.expect(200);
    let etag = first.header("etag").unwrap().to_owned();
    assert_eq!(first.header("cache-control"), Some("public, max-age=300"));
    let again = app
        .send(
            Request::get("/v1/status/0")
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    again.expect(304);
    // A change makes the old ETag stale.
    let key = app.key("etag-change", &["global_viewer"], None).await;
    app.delete(&format!("/v1/keys/{}", key.id()), Some(&app.admin_token))
        .await
        .expect(204);
    let changed = app
        .send(
            Request::get("/v1/status/0")
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    changed.expect(200);
    assert_ne!(changed.header("etag").unwrap(), etag);
    app.get("/v1/status/7", None).await.expect_problem(404);
    app.get("/v1/status/not-a-number", None)
        .await
        .expect_problem(404);
}

#[tokio::test]
async fn a_new_list_starts_when_one_fills() {
    let app = TestApp::with_config(|c| c.status_list_capacity = 16).await;
    // The bootstrap admin took slot 0.
    let mut tokens = Vec::new();
    for i in 0..20 {
        tokens.push(
            app.key(&format!("filler-{i}"), &["global_viewer"], None)
                .await,
        );
    }
    let index = app.get("/v1/status", None).await;
    index.expect(200);
    let lists = index.body["lists"].as_array().unwrap();
    assert_eq!(lists.len(), 2);
    let last = claims_of(&tokens.last().unwrap().token);
    assert_eq!(last["status"]["status_list"]["uri"], lists[1]);
    assert!(last["status"]["status_list"]["idx"].as_u64().unwrap() < 16);
    app.delete(
        &format!("/v1/keys/{}", tokens.last().unwrap().id()),
        Some(&app.admin_token),
    )
    .await
    .expect(204);
    assert_eq!(
        published_status(&app, &tokens.last().unwrap().token).await,
        TokenStatus::Invalid
    );
    assert_eq!(
        published_status(&app, &tokens[0].token).await,
        TokenStatus::Valid
    );
}

/// Reads SSE events (name, id, data) from a streaming body until `count`
/// arrive or the bounded wait ends.
pub(crate) async fn read_events(
    body: &mut Body,
    count: usize,
) -> Vec<(String, Option<String>, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while events.len() < count {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await;
        let Ok(Some(Ok(frame))) = frame else { break };
        if let Some(data) = frame.data_ref() {
            buffer.push_str(&String::from_utf8_lossy(data));
        }
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut name, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                events.push((name, id, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
    }
    events
}

pub(crate) async fn subscribe(app: &TestApp, last_event_id: Option<&str>) -> Body {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/v1/status/stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = app
        .router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response.into_body()
}

#[tokio::test]
async fn stream_pushes_each_change_and_resumes_without_gaps() {
    let app = TestApp::new().await;
    let a = app.key("stream-a", &["global_viewer"], None).await;
    let b = app.key("stream-b", &["global_viewer"], None).await;
    let mut body = subscribe(&app, None).await;
    let ready = read_events(&mut body, 1).await;
    assert_eq!(ready[0].0, "ready");
    let start = ready[0].2["seq"].as_u64().unwrap();

    app.post_json(
        &format!("/v1/keys/{}/suspend", a.id()),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    app.delete(&format!("/v1/keys/{}", a.id()), Some(&app.admin_token))
        .await
        .expect(204);
    let events = read_events(&mut body, 2).await;
    let idx_a = claims_of(&a.token)["status"]["status_list"]["idx"]
        .as_u64()
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "status");
    assert_eq!(
        events[0].1.as_deref(),
        Some((start + 1).to_string().as_str())
    );
    assert_eq!(events[0].2["idx"], idx_a);
    assert_eq!(events[0].2["status"], 2);
    assert_eq!(events[1].2["status"], 1);
    assert_eq!(events[1].2["seq"], start + 2);
    drop(body); // the subscriber disconnects

    // Changes while it is away are replayed when it comes back.
    app.post_json(
        &format!("/v1/keys/{}/suspend", b.id()),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    app.post_json(
        &format!("/v1/keys/{}/resume", b.id()),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    let mut body = subscribe(&app, Some(&(start + 2).to_string())).await;
    let events = read_events(&mut body, 3).await;
    assert_eq!(events[0].0, "ready");
    let replayed: Vec<u64> = events[1..]
        .iter()
        .map(|e| e.2["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, vec![start + 3, start + 4]);
    assert_eq!(events[1].2["status"], 2);
    assert_eq!(events[2].2["status"], 0);

    // A client that cannot be caught up is told to re-fetch.
    let mut body = subscribe(&app, Some("999999")).await;
    let events = read_events(&mut body, 2).await;
    assert_eq!(events[1].0, "reset");
    let mut body = subscribe(&app, Some("garbage")).await;
    let events = read_events(&mut body, 2).await;
    assert_eq!(events[1].0, "reset");
}

/// The published kids, sorted (the JWKS order is not part of the contract).
fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

async fn signing_key_states(app: &TestApp, token: &str) -> Vec<(String, String)> {
    let reply = app.get("/v1/signing-keys", Some(token)).await;
    reply.expect(200);
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn rotation_publishes_first_signs_after_the_lead_and_retires_when_tokens_are_gone() {
    let app = TestApp::with_config(|c| c.rotation_lead_time_secs = 600).await;
    let old_kid = kids(&app.jwks().await)[0].clone();
    // A long-lived admin and a short-lived viewer, both signed by the old key.
    let admin = app
        .create_key(json!({"name": "ops", "roles": ["global_admin"], "expires_in_days": 730}))
        .await;
    let short = app
        .create_key(json!({"name": "short", "roles": ["global_viewer"], "expires_in_days": 10}))
        .await;
    assert_eq!(header_of(&short.token)["kid"], old_kid.as_str());

    let rotated = app
        .post_json("/v1/signing-keys/rotate", Some(&admin.token), &json!({}))
        .await;
    rotated.expect(201);
    let new_kid = rotated.body["kid"].as_str().unwrap().to_owned();
    assert_eq!(rotated.body["state"], "next");
    // Published at once, not signing yet.
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    assert_eq!(kids(&app.jwks().await), both);
    let before = app.key("before-lead", &["global_viewer"], None).await;
    assert_eq!(header_of(&before.token)["kid"], old_kid.as_str());

    // The lead time passes; maintenance activates the new key.
    app.clock.advance(601);
    latchkey::rotation::maintain(&app.state).await.unwrap();
    let states = signing_key_states(&app, &admin.token).await;
    assert!(
        states.contains(&(new_kid.clone(), "active".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&(old_kid.clone(), "previous".into())),
        "{states:?}"
    );
    let after = app
        .create_key_as(
            &admin.token,
            json!({"name": "after-lead", "roles": ["global_viewer"]}),
        )
        .await;
    assert_eq!(header_of(&after.token)["kid"], new_kid.as_str());
    // Tokens from before and after both verify; status lists are signed by the new key.
    app.get("/v1/keys?limit=1", Some(&before.token))
        .await
        .expect(200);
    app.get("/v1/keys?limit=1", Some(&after.token))
        .await
        .expect(200);
    let list = app.get("/v1/status/0", None).await;
    assert_eq!(header_of(&list.text)["kid"], new_kid.as_str());

    // The old key stays published while any token it signed is live...
    app.clock.advance(11 * DAY);
    latchkey::rotation::maintain(&app.state).await.unwrap();
    assert_eq!(kids(&app.jwks().await).len(), 2);
    // ...and leaves once the last one has expired or been revoked.
    app.delete(
        &format!("/v1/keys/{}", before.id()),
        Some(&after_admin(&app, &new_kid).await),
    )
    .await
    .expect(204);
    app.delete(
        &format!("/v1/keys/{}", admin.id()),
        Some(&after_admin(&app, &new_kid).await),
    )
    .await
    .expect(204);
    app.delete(
        &format!("/v1/keys/{}", app.admin_id),
        Some(&after_admin(&app, &new_kid).await),
    )
    .await
    .expect(204);
    latchkey::rotation::maintain(&app.state).await.unwrap();
    assert_eq!(kids(&app.jwks().await), vec![new_kid.clone()]);
    let states = signing_key_states(&app, &after_admin(&app, &new_kid).await).await;
    assert!(
        states.contains(&(old_kid.clone(), "retired".into())),
        "{states:?}"
    );
    assert!(
        !app.private_key_kept(&old_kid).await,
        "a retired key's private half is deleted"
    );
    // A token of the retired key no longer verifies (it was revoked anyway, but
    // the unknown kid is what refuses it now).
    app.get("/v1/keys?limit=1", Some(&short.token))
        .await
        .expect_problem(401);
}

/// An admin token signed by `kid`, minted for the test through the registry.
async fn after_admin(app: &TestApp, kid: &str) -> String {
    let name = format!("admin-{}", uuid::Uuid::now_v7());
    assert_eq!(app.state.issuer.signing_snapshot().active.kid(), kid);
    let minted = app
        .state
        .issuer
        .create(
            &latchkey::audit::Actor::bootstrap(),
            &latchkey::validation::NewKeyRequest {
                name,
                roles: vec!["global_admin".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    minted.token
}

#[tokio::test]
async fn emergency_rotation_and_retire_make_old_tokens_fail() {
    let app = TestApp::new().await;
    let old_kid = kids(&app.jwks().await)[0].clone();
    let victim = app.key("victim", &["global_viewer"], None).await;
    let rotated = app
        .post_json(
            "/v1/signing-keys/rotate",
            Some(&app.admin_token),
            &json!({"now": true}),
        )
        .await;
    rotated.expect(201);
    assert_eq!(rotated.body["state"], "active");
    let new_kid = rotated.body["kid"].as_str().unwrap().to_owned();
    let admin = after_admin(&app, &new_kid).await;
    // The old key's tokens still verify until it is retired by hand.
    app.get("/v1/keys?limit=1", Some(&victim.token))
        .await
        .expect(200);
    // Retiring the active key, or without the confirmation, is refused.
    app.post_json(
        &format!("/v1/signing-keys/{new_kid}/retire"),
        Some(&admin),
        &json!({"confirm": "i-understand-tokens-die"}),
    )
    .await
    .expect_problem(409);
    app.post_json(
        &format!("/v1/signing-keys/{old_kid}/retire"),
        Some(&admin),
        &json!({}),
    )
    .await
    .expect_problem(422);
    app.post_json(
        "/v1/signing-keys/nope/retire",
        Some(&admin),
        &json!({"confirm": "i-understand-tokens-die"}),
    )
    .await
    .expect_problem(404);
    let retired = app
        .post_json(
            &format!("/v1/signing-keys/{old_kid}/retire"),
            Some(&admin),
            &json!({"confirm": "i-understand-tokens-die"}),
        )
        .await;
    retired.expect(200);
    assert_eq!(retired.body["state"], "retired");
    assert_eq!(kids(&app.jwks().await), vec![new_kid]);
    app.get("/v1/keys?limit=1", Some(&victim.token))
        .await
        .expect_problem(401);
    app.get("/v1/keys?limit=1", Some(&app.admin_token))
        .await
        .expect_problem(401);
    app.get("/v1/keys?limit=1", Some(&admin)).await.expect(200);
    // Viewers may not rotate.
    let viewer = app
        .create_key_as(
            &admin,
            json!({"name": "viewer", "roles": ["global_viewer"]}),
        )
        .await;
    app.post_json("/v1/signing-keys/rotate", Some(&viewer.token), &json!({}))
        .await
        .expect_problem(403);
    let audit = app.get("/v1/audit?limit=1000", Some(&admin)).await;
    audit.expect(200);
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"signing_key.rotate") && actions.contains(&"signing_key.retire"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn metadata_names_the_status_endpoints() {
    let app = TestApp::new().await;
    let meta = app
        .get("/.well-known/oauth-authorization-server", None)
        .await;
    meta.expect(200);
    let issuer = crate::support::ISSUER;
    assert_eq!(
        meta.body["status_list_endpoint"],
        format!("{issuer}/v1/status")
    );
    assert_eq!(
        meta.body["status_list_stream_endpoint"],
        format!("{issuer}/v1/status/stream")
    );
    let algs = meta.body["access_token_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(
        algs.contains(&json!("EdDSA"))
            && algs.contains(&json!("ES256"))
            && algs.contains(&json!("RS256"))
    );
}

/// The issuer caches verified bearer tokens; a cached token must still
/// expire, and must still be refused once suspended, on the very next request.
#[tokio::test]
async fn a_token_verified_before_still_expires_and_still_suspends() {
    let app = TestApp::new().await;
    let key = app
        .create_key(json!({"name": "cached", "roles": ["global_viewer"], "expires_in_days": 1}))
        .await;
    app.get("/v1/keys?limit=1", Some(&key.token))
        .await
        .expect(200);
    app.get("/v1/keys?limit=1", Some(&key.token))
        .await
        .expect(200);
    app.post_json(
        &format!("/v1/keys/{}/suspend", key.id()),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    app.get("/v1/keys?limit=1", Some(&key.token))
        .await
        .expect_problem(401);
    app.post_json(
        &format!("/v1/keys/{}/resume", key.id()),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    app.get("/v1/keys?limit=1", Some(&key.token))
        .await
        .expect(200);
    app.clock.advance(DAY + 31);
    let expired = app.get("/v1/keys?limit=1", Some(&key.token)).await;
    expired.expect_problem(401);
    assert!(
        expired.body["detail"].as_str().unwrap().contains("expired"),
        "{}",
        expired.body
    );
}

/// What a status list says of itself, signed: (`seq`, `epoch`), plus the
/// response's `Vary` header.
async fn list_version(app: &TestApp, accept: &str) -> (u64, String, Option<String>) {
    let reply = app
        .send(
            Request::get("/v1/status/0")
                .header(header::ACCEPT, accept)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    reply.expect(200);
    let claims: StatusListClaims = if accept.ends_with("+jwt") {
        serde_json::from_value(claims_of(&reply.text)).unwrap()
    } else {
        serde_json::from_value(reply.body.clone()).unwrap()
    };
    (
        claims
            .seq
            .expect("a list says the sequence of its last change"),
        claims.epoch.expect("and the sequence space it counts in"),
        reply.header("vary").map(str::to_owned),
    )
}

#[tokio::test]
async fn lists_carry_the_sequence_they_include_and_the_index_is_never_cached() {
    let app = TestApp::new().await;
    let key = app.key("sequenced", &["global_viewer"], None).await;

    let index = app.get("/v1/status", None).await;
    index.expect(200);
    assert_eq!(index.header("cache-control"), Some("no-store"));
    let epoch = index.body["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch.len(), 32, "16 random bytes, hex");
    let before = index.body["list_seqs"][0].as_u64().unwrap();
    assert_eq!(index.body["seq"].as_u64(), Some(before));

    // Both forms say the same, and a cache must key them on Accept.
    for accept in ["application/statuslist+jwt", "application/statuslist+json"] {
        let (seq, list_epoch, vary) = list_version(&app, accept).await;
        assert_eq!((seq, list_epoch.as_str()), (before, epoch.as_str()));
        assert_eq!(vary.as_deref(), Some("accept"), "{accept}");
    }

    // A suspension is the next change, and the list includes it.
    app.post_json(
        &format!("/v1/keys/{}/suspend", key.id()),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    let (seq, list_epoch, _) = list_version(&app, "application/statuslist+jwt").await;
    assert_eq!(seq, before + 1);
    assert_eq!(
        list_epoch, epoch,
        "the epoch never changes for a data directory"
    );
    let index = app.get("/v1/status", None).await;
    assert_eq!(index.body["seq"].as_u64(), Some(before + 1));
    assert_eq!(index.body["list_seqs"][0].as_u64(), Some(before + 1));

    // A 304 keeps the header too.
    let first = app.get("/v1/status/0", None).await;
    let etag = first.header("etag").unwrap().to_owned();
    let revalidated = app
        .send(
            Request::get("/v1/status/0")
                .header(header::IF_NONE_MATCH, etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    revalidated.expect(304);
    assert_eq!(revalidated.header("vary"), Some("accept"));
}
