//! Refused requests and the audit log: anonymous refusals (no valid key)
//! are counted per reason and minute, so a flood cannot grow the log; a
//! key that verified but was refused for its role is audited request by
//! request; stored paths are route templates.

use serde_json::{Value, json};

use crate::support::{TestApp, rfc3339};

/// The value of `latchkey_auth_failures_total{reason="<reason>"}` in `/metrics`.
async fn failures_counted(app: &TestApp, reason: &str) -> u64 {
    let reply = app.get("/metrics", None).await;
    reply.expect(200);
    let label = format!("reason=\"{reason}\"");
    reply
        .text
        .lines()
        .filter(|line| line.starts_with("latchkey_auth_failures_total{") && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn denials(entries: &[Value]) -> Vec<&Value> {
    entries
        .iter()
        .filter(|e| e["action"] == "auth.denied")
        .collect()
}

#[tokio::test]
async fn an_anonymous_flood_costs_one_small_entry_per_reason_and_minute() {
    let app = TestApp::new().await;
    let minute = app.now();
    assert_eq!(minute % 60, 0, "the test starts on a whole minute");
    let long_path = format!("/v1/keys/{}", "a".repeat(60_000));
    let before = app.audit_head().await;
    let missing_before = failures_counted(&app, "missing_token").await;
    let malformed_before = failures_counted(&app, "malformed_header").await;

    for i in 0..300 {
        app.get(&long_path, None).await.expect_problem(401);
        if i % 100 == 99 {
            // Spread over the minute: still one window.
            app.clock.advance(15);
        }
    }
    for _ in 0..7 {
        let reply = app
            .request(
                axum::http::Method::GET,
                &long_path,
                None,
                None,
                axum::body::Body::empty(),
            )
            .await;
        reply.expect_problem(401);
    }
    let basic = axum::http::Request::builder()
        .uri(&long_path)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(axum::body::Body::empty())
        .unwrap();
    app.send(basic).await.expect_problem(401);

    // The metric counts every refusal at once, by reason (other tests in this
    // process count too, hence at least).
    let missing = failures_counted(&app, "missing_token").await - missing_before;
    let malformed = failures_counted(&app, "malformed_header").await - malformed_before;
    assert!(missing >= 307, "missing_token counted {missing} times");
    assert!(malformed >= 1, "malformed_header counted {malformed} times");

    // Nothing is written while the minute runs...
    assert!(app.audit_after(before).await.is_empty());
    // ...and one entry per reason once it is over.
    app.clock.set(minute + 60);
    let reply = app
        .get(
            &format!("/v1/audit?after={before}&limit=1000"),
            Some(&app.admin_token),
        )
        .await;
    reply.expect(200);
    assert!(
        reply.text.len() < 2048,
        "the page of a flood weighs {} bytes",
        reply.text.len()
    );
    let entries = reply.body["items"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let by_reason = |reason: &str| {
        entries
            .iter()
            .find(|e| e["details"]["reason"] == reason)
            .unwrap_or_else(|| panic!("no entry for {reason}: {entries:?}"))
            .clone()
    };
    let missing = by_reason("missing_token");
    assert_eq!(missing["action"], json!("auth.denied"));
    assert_eq!(missing["actor"], json!("anonymous"));
    assert_eq!(missing["target"], Value::Null);
    assert_eq!(
        missing["details"],
        json!({
            "reason": "missing_token",
            "count": 307,
            "window_start": rfc3339(minute),
            "window_end": rfc3339(minute + 60),
            "requests": {"GET /v1/keys/{id}": 307},
        })
    );
    assert_eq!(by_reason("malformed_header")["details"]["count"], json!(1));
    assert!(!reply.text.contains("aaaaaaaa"), "the raw path was stored");

    // A new minute is a new entry.
    app.clock.advance(5);
    for _ in 0..3 {
        app.get("/v1/audit", None).await.expect_problem(401);
    }
    let head = app.audit_head().await;
    app.clock.advance(60);
    let next = app.audit_after(head).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0]["details"]["count"], json!(3));
    assert_eq!(next[0]["details"]["reason"], json!("missing_token"));
    assert_eq!(
        next[0]["details"]["window_start"],
        json!(rfc3339(minute + 60))
    );
    assert_eq!(next[0]["details"]["requests"], json!({"GET /v1/audit": 3}));

    // The chain still verifies, to the head the API serves.
    let report = app.state.issuer.verify_audit().await.unwrap().unwrap();
    assert_eq!(report.entries, app.audit_head().await);
}

#[tokio::test]
async fn a_weak_key_is_audited_per_request_with_the_route_template() {
    let app = TestApp::new().await;
    let viewer = app
        .key("weak-caller", &["cloud_account_viewer"], Some(&["acct-1"]))
        .await;
    let long_path = format!("/v1/keys/{}", "b".repeat(60_000));
    let before = app.audit_head().await;
    for _ in 0..3 {
        app.get(&long_path, Some(&viewer.token))
            .await
            .expect_problem(403);
    }
    let entries = app.audit_after(before).await;
    assert_eq!(entries.len(), 3, "one entry per refusal, at once");
    for entry in &entries {
        assert_eq!(entry["action"], json!("auth.denied"));
        assert_eq!(
            entry["actor"],
            json!({"id": viewer.id(), "name": "weak-caller"})
        );
        assert_eq!(entry["details"]["path"], json!("/v1/keys/{id}"));
        assert_eq!(entry["details"]["method"], json!("GET"));
        assert_eq!(entry["details"]["reason"], json!("forbidden"));
        assert!(entry.to_string().len() < 1024, "{entry}");
    }
}

#[tokio::test]
async fn a_quiet_minute_is_written_by_maintenance_and_a_pending_one_at_shutdown() {
    let app = TestApp::new().await;
    let minute = app.now();
    let before = app.audit_head().await;
    app.get("/v1/keys", Some("junk")).await.expect_problem(401);

    // No request comes after the minute: the maintenance pass writes it.
    app.clock.advance(90);
    app.state.issuer.flush_due_denials().await;
    let written = app.state.issuer.audit_page(before, 100).await.unwrap();
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0].details["reason"], json!("malformed"));
    assert_eq!(written[0].details["window_start"], json!(rfc3339(minute)));

    // Refusals in a minute that is not over are written at shutdown.
    for _ in 0..4 {
        app.get("/v1/signing-keys", None).await.expect_problem(401);
    }
    latchkey::service::shutdown(&app.state).await.unwrap();
    let now = app.now();
    let (token, id) = (app.admin_token.clone(), app.admin_id.clone());
    let dir = app.close().await;
    let app = TestApp::open_existing(dir, now, token, id).await;
    let entries = app.audit_after(before + 1).await;
    let pending = denials(&entries);
    assert_eq!(pending.len(), 1, "{entries:?}");
    assert_eq!(
        pending[0]["details"],
        json!({
            "reason": "missing_token",
            "count": 4,
            "window_start": rfc3339(minute + 60),
            "window_end": rfc3339(minute + 120),
            "requests": {"GET /v1/signing-keys": 4},
            "flushed_at_shutdown": true,
        })
    );
}
