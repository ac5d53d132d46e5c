//! `latchkey gate` (contract §10) against a real issuer on loopback.
//!
//! The issuer runs in-process behind a TCP proxy that can cut every
//! connection (the issuer "stopped"); the gate's verifier syncs from it.
//! This file checks every row of §10's answers through the gate's router
//! (`oneshot`), the binary's flags, policy file refusal and usage reports;
//! [`proxies`] puts Debian's nginx and Caddy in front of an echoing
//! upstream with the gate behind them.

pub(crate) mod harness;
pub(crate) mod proxies;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use latchkey::gate::{AccountSource, Policy};

use crate::support::latchkey;
use harness::{
    Child, Issuer, WAIT, accounts_pattern, check, eventually, foreign, free_port, gate, send,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_endpoint_answers_every_row_of_the_contract() {
    let issuer = Issuer::start().await;
    let gate = gate(
        &issuer,
        accounts_pattern(),
        Policy::default(),
        Duration::from_secs(300),
    )
    .await;
    let viewer = issuer
        .create("gate viewer \u{e9}", &["global_viewer"], None)
        .await;
    let admin = issuer.create("gate-admin", &["global_admin"], None).await;
    let cav = issuer
        .create(
            "cav",
            &["cloud_account_viewer"],
            Some(&["acct-1", "acct-2"]),
        )
        .await;
    let cav_all = issuer
        .create("cav-all", &["cloud_account_viewer"], Some(&["*"]))
        .await;

    // No key: 401 with a bare challenge (RFC 6750 §3.1), whatever the scheme.
    let answer = check(&gate, "GET", "/accounts/acct-1/data", None).await;
    answer.expect(401);
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    let basic = Request::get("/check")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/accounts/acct-1/data")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(Body::empty())
        .unwrap();
    let answer = send(&gate, basic).await;
    answer.expect(401);
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));

    // A valid key: 200, empty body, identity headers.
    let answer = check(&gate, "GET", "/accounts/acct-1/data", Some(&viewer.token)).await;
    answer.allowed();
    assert_eq!(answer.header("x-latchkey-key-id"), Some(viewer.id.as_str()));
    assert_eq!(
        answer.header("x-latchkey-key-name"),
        Some("gate%20viewer%20%C3%A9")
    );
    assert_eq!(answer.header("x-latchkey-roles"), Some("global_viewer"));
    assert_eq!(answer.header("x-latchkey-accounts"), Some("*"));
    let answer = check(&gate, "HEAD", "/accounts/acct-2/x", Some(&cav.token)).await;
    answer.allowed();
    assert_eq!(
        answer.header("x-latchkey-roles"),
        Some("cloud_account_viewer")
    );
    assert_eq!(answer.header("x-latchkey-accounts"), Some("acct-1,acct-2"));
    assert_eq!(answer.header("x-latchkey-key-name"), Some("cav"));

    // Writes need global_admin.
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        check(&gate, method, "/accounts/acct-1/data", Some(&viewer.token))
            .await
            .insufficient_scope();
        check(&gate, method, "/accounts/acct-1/data", Some(&admin.token))
            .await
            .allowed();
    }
    check(
        &gate,
        "OPTIONS",
        "/accounts/acct-1/data",
        Some(&admin.token),
    )
    .await
    .insufficient_scope();

    // Accounts: a cloud-account viewer reads its own only; a request with
    // no account needs a key for all accounts.
    check(&gate, "GET", "/accounts/acct-3/data", Some(&cav.token))
        .await
        .insufficient_scope();
    check(&gate, "GET", "/reports", Some(&cav.token))
        .await
        .insufficient_scope();
    check(&gate, "GET", "/accounts/acct-3/data", Some(&cav_all.token))
        .await
        .allowed();
    check(&gate, "GET", "/reports", Some(&cav_all.token))
        .await
        .allowed();
    check(&gate, "GET", "/reports", Some(&viewer.token))
        .await
        .allowed();
    // Unreserved escapes are decoded before the account is read.
    check(&gate, "GET", "/accounts/%61cct-1/data", Some(&cav.token))
        .await
        .allowed();

    // Refused keys: 401 invalid_token naming why.
    check(
        &gate,
        "GET",
        "/reports",
        Some(&issuer.expired(&viewer.token)),
    )
    .await
    .invalid_token("expired");
    check(&gate, "GET", "/reports", Some(&foreign(&viewer.token)))
        .await
        .invalid_token("signature");
    check(&gate, "GET", "/reports", Some("not-a-jwt"))
        .await
        .invalid_token("malformed");
    let suspended = issuer.create("to-suspend", &["global_viewer"], None).await;
    let revoked = issuer.create("to-revoke", &["global_viewer"], None).await;
    check(&gate, "GET", "/reports", Some(&suspended.token))
        .await
        .allowed();
    check(&gate, "GET", "/reports", Some(&revoked.token))
        .await
        .allowed();
    issuer.suspend(&suspended.id).await;
    issuer.revoke(&revoked.id).await;
    assert!(
        eventually(WAIT, || async {
            check(&gate, "GET", "/reports", Some(&suspended.token))
                .await
                .status
                == 401
                && check(&gate, "GET", "/reports", Some(&revoked.token))
                    .await
                    .status
                    == 401
        })
        .await
    );
    check(&gate, "GET", "/reports", Some(&suspended.token))
        .await
        .invalid_token("suspended");
    check(&gate, "GET", "/reports", Some(&revoked.token))
        .await
        .invalid_token("revoked");

    // Missing original-request headers are the proxy's mistake: 400.
    let bare = Request::get("/check")
        .header("authorization", format!("Bearer {}", admin.token))
        .body(Body::empty())
        .unwrap();
    let answer = send(&gate, bare).await;
    answer.expect(400);
    assert!(answer.body.contains("X-Original-Method"), "{}", answer.body);

    // Every decision was counted.
    let metrics = gate.metrics();
    assert!(metrics.count("allow", "ok") >= 10);
    assert!(metrics.count("deny", "missing_token") == 2);
    assert!(metrics.count("deny", "expired") == 1);
    assert!(metrics.count("forbidden", "write_needs_admin") == 4);
    assert!(metrics.count("forbidden", "out_of_scope") == 1);
    assert!(metrics.count("forbidden", "needs_all_accounts") == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_original_uris_are_refused_never_allowed() {
    let issuer = Issuer::start().await;
    let gate = gate(
        &issuer,
        accounts_pattern(),
        Policy::default(),
        Duration::from_secs(300),
    )
    .await;
    let admin = issuer.create("admin-2", &["global_admin"], None).await;
    let cav = issuer
        .create("cav-a", &["cloud_account_viewer"], Some(&["acct-1"]))
        .await;
    let ambiguous = [
        "/accounts/acct-1/../acct-2/data",
        "/accounts/acct-1/./data",
        "/accounts/acct-1/..%2Facct-2/data",
        "/accounts/acct-1%2F..%2Facct-2/data",
        "/accounts/acct-1/%2e%2e/acct-2/data",
        "/accounts/acct-1/.%2E/acct-2",
        "/accounts/acct-1/..;/acct-2/data",
        "/accounts/acct-1/..%3B/acct-2/data",
        "/accounts/acct-1/%252e%252e/acct-2",
        "/accounts/acct-1\\..\\acct-2",
        "/accounts/acct-1/%5c..%5cacct-2",
        "/accounts/acct-1/%00",
        "/accounts/acct-1/x#frag",
        "/accounts/acct 1/x",
        "/accounts/acct-1/%zz",
        "/accounts/acct*/x",
        "accounts/acct-1/x",
        "*",
    ];
    for uri in ambiguous {
        for token in [&admin.token, &cav.token] {
            let answer = check(&gate, "GET", uri, Some(token)).await;
            assert_eq!(answer.status, 400, "{uri}: {answer:?}");
            assert_eq!(
                answer.header("content-type"),
                Some("application/problem+json")
            );
            assert!(answer.header("x-latchkey-key-id").is_none());
        }
    }
    // Envoy mode reads the same URIs from its own request line.
    for uri in [
        "/accounts/acct-1/../acct-2/data",
        "/accounts/acct-1/..%2Facct-2/data",
    ] {
        let request = Request::get(format!("/check{uri}"))
            .header("authorization", format!("Bearer {}", cav.token))
            .body(Body::empty())
            .unwrap();
        let answer = send(&gate, request).await;
        assert_eq!(answer.status, 400, "{uri}: {answer:?}");
    }
    // Duplicate slashes are merged, not refused.
    check(&gate, "GET", "//accounts//acct-1//data", Some(&cav.token))
        .await
        .allowed();
    // A key is still checked first: no key, no hint about the URI.
    assert_eq!(check(&gate, "GET", "/a/../b", None).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_reads_the_original_request_from_its_path() {
    let issuer = Issuer::start().await;
    let gate = gate(
        &issuer,
        accounts_pattern(),
        Policy::default(),
        Duration::from_secs(300),
    )
    .await;
    let viewer = issuer
        .create("envoy-viewer", &["global_viewer"], None)
        .await;
    let cav = issuer
        .create("envoy-cav", &["cloud_account_viewer"], Some(&["acct-1"]))
        .await;
    let envoy = |method: &str, path: &str, token: &str| {
        Request::builder()
            .method(method)
            .uri(format!("/check{path}"))
            .header("authorization", format!("Bearer {token}"))
            // Client-sent forward-auth headers mean nothing in Envoy mode.
            .header("x-original-uri", "/reports")
            .header("x-original-method", "GET")
            .body(Body::empty())
            .unwrap()
    };
    let answer = send(&gate, envoy("GET", "/accounts/acct-1/data?x=1", &cav.token)).await;
    answer.allowed();
    assert_eq!(answer.header("x-latchkey-accounts"), Some("acct-1"));
    send(&gate, envoy("GET", "/accounts/acct-2/data", &cav.token))
        .await
        .insufficient_scope();
    send(&gate, envoy("POST", "/accounts/acct-1/data", &viewer.token))
        .await
        .insufficient_scope();
    send(&gate, envoy("GET", "/", &viewer.token))
        .await
        .allowed();
    // The gate's own routes are not reachable below /check/.
    send(&gate, envoy("GET", "/healthz", &cav.token))
        .await
        .insufficient_scope();
    let answer = send(
        &gate,
        Request::get("/elsewhere").body(Body::empty()).unwrap(),
    )
    .await;
    answer.expect(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_can_come_from_a_header_and_rules_from_a_policy_file() {
    let issuer = Issuer::start().await;
    let policy = latchkey::gate::policy_file::parse(
        "policy.toml",
        r#"
[[rule]]
prefix = "/admin"
roles = ["global_admin"]

[[rule]]
prefix = "/queries"
methods = ["POST"]
roles = ["global_admin", "cloud_account_viewer"]
"#,
    )
    .unwrap();
    let source = AccountSource::Header("x-account".parse().unwrap());
    let gate = gate(&issuer, source, policy, Duration::from_secs(300)).await;
    let viewer = issuer
        .create("rules-viewer", &["global_viewer"], None)
        .await;
    let admin = issuer.create("rules-admin", &["global_admin"], None).await;
    let cav = issuer
        .create("rules-cav", &["cloud_account_viewer"], Some(&["acct-1"]))
        .await;
    let with_account = |method: &str, uri: &str, account: Option<&str>, token: &str| {
        let mut request = Request::get("/check")
            .header("x-forwarded-method", method)
            .header("x-forwarded-uri", uri)
            .header("authorization", format!("Bearer {token}"));
        if let Some(account) = account {
            request = request.header("x-account", account);
        }
        request.body(Body::empty()).unwrap()
    };
    send(
        &gate,
        with_account("GET", "/data", Some("acct-1"), &cav.token),
    )
    .await
    .allowed();
    send(
        &gate,
        with_account("GET", "/data", Some("acct-2"), &cav.token),
    )
    .await
    .insufficient_scope();
    send(&gate, with_account("GET", "/data", None, &cav.token))
        .await
        .insufficient_scope();
    let answer = send(
        &gate,
        with_account("GET", "/data", Some("a/../b"), &cav.token),
    )
    .await;
    answer.expect(400);
    // The rule lets cloud-account viewers POST queries, in their account only.
    send(
        &gate,
        with_account("POST", "/queries", Some("acct-1"), &cav.token),
    )
    .await
    .allowed();
    send(
        &gate,
        with_account("POST", "/queries", Some("acct-2"), &cav.token),
    )
    .await
    .insufficient_scope();
    send(&gate, with_account("POST", "/queries", None, &viewer.token))
        .await
        .insufficient_scope();
    // The /admin rule needs global_admin even to read.
    send(
        &gate,
        with_account("GET", "/admin/users", None, &viewer.token),
    )
    .await
    .insufficient_scope();
    send(
        &gate,
        with_account("GET", "/admin/users", None, &admin.token),
    )
    .await
    .allowed();
    send(
        &gate,
        with_account("GET", "/administrator", None, &viewer.token),
    )
    .await
    .allowed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_status_data_is_a_503_and_the_gate_stops_being_ready() {
    let issuer = Issuer::start().await;
    let gate = gate(
        &issuer,
        accounts_pattern(),
        Policy::default(),
        Duration::from_secs(2),
    )
    .await;
    let viewer = issuer
        .create("stale-viewer", &["global_viewer"], None)
        .await;
    let readyz = || async {
        send(&gate, Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .status
    };
    check(&gate, "GET", "/reports", Some(&viewer.token))
        .await
        .allowed();
    assert_eq!(readyz().await, 200);
    let health = send(&gate, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    health.expect(200);

    issuer.stop();
    let stopped = Instant::now();
    // Within the bound the last good data still counts.
    check(&gate, "GET", "/reports", Some(&viewer.token))
        .await
        .allowed();
    assert!(
        eventually(WAIT, || async {
            check(&gate, "GET", "/reports", Some(&viewer.token))
                .await
                .status
                == 503
        })
        .await
    );
    eprintln!(
        "the gate failed closed {:?} after the issuer stopped (bound 2 s)",
        stopped.elapsed()
    );
    let answer = check(&gate, "GET", "/reports", Some(&viewer.token)).await;
    answer.expect(503);
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert!(answer.header("www-authenticate").is_none());
    assert_eq!(readyz().await, 503);
    // A missing key is still a 401, not an outage.
    assert_eq!(check(&gate, "GET", "/reports", None).await.status, 401);
    let metrics = send(&gate, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    metrics.expect(200);
    assert!(
        metrics.body.contains(
            "latchkey_gate_decisions_total{result=\"unavailable\",reason=\"status_unavailable\"}"
        ),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("latchkey_gate_ready 0\n"));
    assert!(
        metrics
            .body
            .contains("latchkey_gate_decision_duration_seconds_count")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_its_settings_from_the_environment_and_reports_usage() {
    let issuer = Issuer::start().await;
    let user = issuer
        .create("used-through-gate", &["global_viewer"], None)
        .await;
    let reporter = issuer
        .create("gate-reporter", &["global_viewer"], None)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("usage.key");
    std::fs::write(&token_file, format!("{}\n", reporter.token)).unwrap();
    let port = free_port();
    let log = dir.path().join("gate.log");
    let child = latchkey()
        .arg("gate")
        .env("LATCHKEY_GATE_ISSUER", &issuer.url)
        .env("LATCHKEY_GATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("LATCHKEY_GATE_ACCOUNT_PATH", "/accounts/{account}/")
        .env("LATCHKEY_GATE_USAGE_TOKEN_FILE", &token_file)
        .env("LATCHKEY_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(WAIT, || async {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the gate never became ready: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let response = http
        .get(format!("{base}/check"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/accounts/acct-1/data")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-latchkey-key-id"], user.id.as_str());
    assert!(issuer.key(&user.id).await["last_used_at"].is_null());

    // SIGTERM: a graceful stop that sends the pending usage reports.
    assert!(
        child.terminate(),
        "the gate did not stop cleanly on SIGTERM"
    );
    assert!(
        eventually(WAIT, || async {
            !issuer.key(&user.id).await["last_used_at"].is_null()
        })
        .await,
        "the use through the gate was never reported"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("latchkey gate is serving"), "{logged}");
    assert!(
        !logged.contains(&reporter.token),
        "the usage key was logged"
    );
    assert!(!logged.contains(&user.token), "a checked key was logged");
}

#[test]
fn the_binary_refuses_a_bad_policy_file_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("gate-policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nprefix = \"/admin\"\nroles = [\"global_admin\"]\n\n[[rule]]\nprefix = \"/x\"\nroles = [\"superuser\"]\n",
    )
    .unwrap();
    let ran = crate::support::run(
        latchkey()
            .args(["gate", "--issuer", "http://127.0.0.1:9", "--policy"])
            .arg(&policy),
    );
    assert!(!ran.success);
    assert!(ran.stderr.contains("gate-policy.toml"), "{}", ran.stderr);
    assert!(ran.stderr.contains("line 7"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("\"superuser\" is not a role"),
        "{}",
        ran.stderr
    );

    let ran = crate::support::run(latchkey().args([
        "gate",
        "--issuer",
        "http://127.0.0.1:9",
        "--account-path",
        "/accounts/",
    ]));
    assert!(!ran.success);
    assert!(ran.stderr.contains("--account-path"), "{}", ran.stderr);
    let ran = crate::support::run(latchkey().args(["gate"]));
    assert!(!ran.success);
    assert!(ran.stderr.contains("--issuer"), "{}", ran.stderr);
}
