//! `POST /v1/introspect` is scoped (contract §3): global admins and global
//! viewers may introspect any token; any other key only its own tokens (same
//! `sub`); another key's token asked by such a caller answers exactly
//! `{"active": false}`, as an invalid token does, and leaves no trace on
//! that key.

use serde_json::{Value, json};

use crate::support::{TestApp, claims_of};

/// What introspecting an active `token` must return: its claims, with the
/// key's status in place of the status list pointer.
fn full_answer(token: &str) -> Value {
    let mut expected = claims_of(token);
    expected["active"] = json!(true);
    expected["token_type"] = json!("access_token");
    expected["status"] = json!("active");
    expected["username"] = expected["name"].clone();
    expected
}

async fn introspect(app: &TestApp, caller: &str, token: &str) -> Value {
    let reply = app
        .post_json("/v1/introspect", Some(caller), &json!({"token": token}))
        .await;
    reply.expect(200);
    reply.body
}

#[tokio::test]
async fn each_caller_sees_what_its_role_allows() {
    let app = TestApp::new().await;
    let viewer = app.key("intro-viewer", &["global_viewer"], None).await;
    let scoped = app
        .key("intro-scoped", &["cloud_account_viewer"], Some(&["a1"]))
        .await;
    let everywhere = app
        .key(
            "intro-all-accounts",
            &["cloud_account_viewer"],
            Some(&["*"]),
        )
        .await;
    let subject = app
        .key("intro-subject", &["cloud_account_viewer"], Some(&["a2"]))
        .await;
    let admin = app.admin_token.clone();
    let inactive = json!({"active": false});

    // Global readers see any key.
    for caller in [&admin, &viewer.token] {
        assert_eq!(
            introspect(&app, caller, &subject.token).await,
            full_answer(&subject.token)
        );
        assert_eq!(
            introspect(&app, caller, &scoped.token).await,
            full_answer(&scoped.token)
        );
    }
    assert_eq!(
        introspect(&app, &viewer.token, &admin).await,
        full_answer(&admin)
    );

    // Another key sees only itself: another key's token, valid or not,
    // answers exactly {"active": false} (no name, roles or accounts).
    let subject_used = app.describe(&subject.id()).await["last_used_at"].clone();
    for caller in [&scoped, &everywhere] {
        for other in [&subject.token, &admin, &viewer.token] {
            assert_eq!(
                introspect(&app, &caller.token, other).await,
                inactive,
                "{} asked about another key",
                caller.key["name"]
            );
        }
        assert_eq!(
            introspect(&app, &caller.token, &caller.token).await,
            full_answer(&caller.token),
            "{} asked about itself",
            caller.key["name"]
        );
        assert_eq!(introspect(&app, &caller.token, "a.b.c").await, inactive);
    }
    assert_eq!(
        app.describe(&subject.id()).await["last_used_at"],
        subject_used,
        "a refused introspection does not count as a use of that key"
    );

    // "Its own token" is any token of the same key: a renewed one too.
    let renewed = app
        .post_json(
            &format!("/v1/keys/{}/renew", scoped.id()),
            Some(&admin),
            &json!({}),
        )
        .await;
    renewed.expect(200);
    let second = renewed.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        introspect(&app, &scoped.token, &second).await,
        full_answer(&second)
    );
    assert_eq!(
        introspect(&app, &second, &scoped.token).await,
        full_answer(&scoped.token)
    );

    // A revoked token of one's own key is inactive like any other.
    let replaced = app
        .post_json(
            &format!("/v1/keys/{}/renew", everywhere.id()),
            Some(&admin),
            &json!({"revoke_previous": true}),
        )
        .await;
    replaced.expect(200);
    let fresh = replaced.body["token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(&app, &fresh, &everywhere.token).await, inactive);
    assert_eq!(introspect(&app, &fresh, &fresh).await, full_answer(&fresh));
}

#[tokio::test]
async fn the_refusal_looks_like_an_invalid_token_in_every_format() {
    let app = TestApp::new().await;
    let scoped = app
        .key("form-scoped", &["cloud_account_viewer"], Some(&["a1"]))
        .await;
    let subject = app.key("form-subject", &["global_viewer"], None).await;
    let form = format!("token={}", subject.token);
    let reply = app
        .request(
            axum::http::Method::POST,
            "/v1/introspect",
            Some(&scoped.token),
            Some("application/x-www-form-urlencoded"),
            form,
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.text, r#"{"active":false}"#);
    let junk = app
        .request(
            axum::http::Method::POST,
            "/v1/introspect",
            Some(&scoped.token),
            Some("application/x-www-form-urlencoded"),
            "token=a.b.c",
        )
        .await;
    assert_eq!(junk.text, reply.text, "indistinguishable from a bad token");
    assert!(!reply.text.contains("form-subject"));
}
