//! Moving up and rotating the key-encryption key: `latchkey store copy`
//! (embedded → PostgreSQL) and `latchkey signing-keys reseal`, run as the
//! built binary, then checked through a service on the database.

use latchkey_verifier::TokenStatus;
use serde_json::json;

use crate::status_rotation::published_status;
use crate::support::{TestApp, run};

fn latchkey() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
}

/// An embedded installation with keys in every state, stopped.
async fn embedded_installation() -> (
    tempfile::TempDir,
    Vec<(String, String, &'static str)>,
    String,
    String,
) {
    // The embedded engine, whatever this binary's engine is.
    let dir = tempfile::tempdir().unwrap();
    let config = latchkey::config::Config {
        data_dir: dir.path().join("data"),
        keys_dir: dir.path().join("keys"),
        issuer: crate::support::ISSUER.to_owned(),
        issuer_explicit: true,
        ..latchkey::config::Config::default()
    };
    let clock = latchkey::clock::FixedClock::at(crate::support::start_time());
    let mut opened = latchkey::service::open(config, std::sync::Arc::new(clock))
        .await
        .unwrap();
    let admin = opened.bootstrap.take().unwrap();
    latchkey::service::confirm_bootstrap_delivered(&opened.state)
        .await
        .unwrap();
    let router = latchkey::http::router(opened.state.clone());
    let mut keys = Vec::new();
    for (name, then) in [
        ("kept", "active"),
        ("paused", "suspend"),
        ("gone", "revoke"),
    ] {
        use tower::ServiceExt;
        let request = |method: &str, path: String, body: serde_json::Value| {
            axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {}", admin.token))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap()
        };
        let response = router
            .clone()
            .oneshot(request(
                "POST",
                "/v1/keys".into(),
                json!({"name": name, "roles": ["global_viewer"]}),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = serde_json::from_slice(
            &http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes(),
        )
        .unwrap();
        let id = body["key"]["id"].as_str().unwrap().to_owned();
        let token = body["token"].as_str().unwrap().to_owned();
        match then {
            "suspend" => {
                let r = router
                    .clone()
                    .oneshot(request("POST", format!("/v1/keys/{id}/suspend"), json!({})))
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            "revoke" => {
                let r = router
                    .clone()
                    .oneshot(request("DELETE", format!("/v1/keys/{id}"), json!({})))
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
            _ => {}
        }
        keys.push((id, token, then));
    }
    latchkey::service::shutdown(&opened.state).await.unwrap();
    drop(router);
    drop(opened);
    crate::support::wait_until_unlocked(&dir.path().join("data").join("db")).await;
    (dir, keys, admin.token, admin.key_id)
}

#[tokio::test]
async fn store_copy_moves_an_embedded_installation_and_old_tokens_keep_their_status() {
    let (embedded, keys, admin_token, admin_id) = embedded_installation().await;
    let url = crate::pg_cluster::shared().create_database();
    let target = tempfile::tempdir().unwrap();
    latchkey::kek::Kek::generate_file(&target.path().join("kek")).unwrap();
    std::fs::write(target.path().join("database-url"), &url).unwrap();
    let copied = run(latchkey()
        .arg("store")
        .arg("copy")
        .arg("--from")
        .arg(embedded.path().join("data"))
        .arg("--keys-dir")
        .arg(embedded.path().join("keys"))
        .arg("--to")
        .arg(&url)
        .arg("--key-encryption-key-file")
        .arg(target.path().join("kek")));
    assert!(copied.success, "{}", copied.stderr);
    assert!(copied.stderr.contains("copied 4 keys"), "{}", copied.stderr);
    assert!(
        !copied.stderr.contains("PASSWORD") && !copied.stderr.contains(&password_of(&url)),
        "{}",
        copied.stderr
    );
    // A second copy into the same database is refused.
    let again = run(latchkey()
        .args(["store", "copy", "--from"])
        .arg(embedded.path().join("data"))
        .arg("--keys-dir")
        .arg(embedded.path().join("keys"))
        .arg("--to")
        .arg(&url)
        .arg("--key-encryption-key-file")
        .arg(target.path().join("kek")));
    assert!(!again.success);
    assert!(
        again.stderr.contains("already holds latchkey data"),
        "{}",
        again.stderr
    );

    let db = latchkey::store::postgres::DatabaseUrl::parse(&url).unwrap();
    let app = TestApp::open_existing_database(
        target,
        Some(db),
        crate::support::start_time(),
        admin_token,
        admin_id,
    )
    .await;
    // The audit chain still verifies, with every entry.
    let report = app.state.issuer.verify_audit().await.unwrap().unwrap();
    assert!(report.entries >= 6, "{report:?}");
    for (id, token, state) in &keys {
        let expected = match *state {
            "active" => TokenStatus::Valid,
            "suspend" => TokenStatus::Suspended,
            _ => TokenStatus::Invalid,
        };
        assert_eq!(published_status(&app, token).await, expected, "{id}");
        let reply = app.get("/v1/keys?limit=1", Some(token)).await;
        assert_eq!(
            reply.status,
            if *state == "active" { 200 } else { 401 },
            "{state}: {}",
            reply.text
        );
    }
    // New keys get new slots, never one a copied token holds.
    let fresh = app.key("after-the-move", &["global_viewer"], None).await;
    let slot = |t: &str| {
        crate::support::claims_of(t)["status"]["status_list"]["idx"]
            .as_u64()
            .unwrap()
    };
    assert!(keys.iter().all(|(_, t, _)| slot(t) != slot(&fresh.token)));
    // The admin token of the embedded issuer still works (same signing key).
    app.get("/v1/keys", Some(&app.admin_token))
        .await
        .expect(200);
}

fn password_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    let userinfo = rest.split('@').next().unwrap();
    userinfo.split(':').nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn reseal_moves_every_signing_key_to_the_new_key_encryption_key() {
    let app = TestApp::new().await;
    app.post_json(
        "/v1/signing-keys/rotate",
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(201);
    let new_kek = app.dir.path().join("new-kek");
    latchkey::kek::Kek::generate_file(&new_kek).unwrap();
    let resealed = run(latchkey()
        .args([
            "signing-keys",
            "reseal",
            "--database-url",
            &app.database_text(),
        ])
        .arg("--key-encryption-key-file")
        .arg(app.dir.path().join("kek"))
        .arg("--new-kek-file")
        .arg(&new_kek));
    assert!(resealed.success, "{}", resealed.stderr);
    assert!(
        resealed.stderr.contains("resealed 2 signing keys"),
        "{}",
        resealed.stderr
    );
    // The running replica (old KEK) may not seal a new key any more.
    let refused = app
        .post_json(
            "/v1/signing-keys/rotate",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    refused.expect_problem(409);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("restart this replica"),
        "{}",
        refused.text
    );
    // A replica with the old file is refused at start; with the new one it
    // loads both keys and the old tokens verify.
    let url = app.database.clone();
    let (token, id, now) = (app.admin_token.clone(), app.admin_id.clone(), app.now());
    let dir = app.close().await;
    let old = latchkey::config::Config {
        database_url: url.clone(),
        key_encryption_key_file: Some(dir.path().join("kek")),
        ..latchkey::config::Config::default()
    };
    let error = latchkey::service::open(old, std::sync::Arc::new(latchkey::clock::SystemClock))
        .await
        .unwrap_err();
    assert!(error.contains("sealed under key-encryption key"), "{error}");
    std::fs::rename(&new_kek, dir.path().join("kek")).unwrap();
    let app = TestApp::open_existing_database(dir, url, now, token, id).await;
    app.get("/v1/keys", Some(&app.admin_token))
        .await
        .expect(200);
    assert_eq!(app.jwks().await["keys"].as_array().unwrap().len(), 2);
    let audit = app.audit_all().await;
    assert!(audit.iter().any(|e| e["action"] == "signing_key.reseal"));
}
