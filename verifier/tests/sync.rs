//! The `Verifier` against a mock issuer on a loopback port: initial sync,
//! the push stream (changes, gaps, resets, reconnects), JWKS rotation and
//! cooldown, staleness, the token cache, usage reports and the axum
//! integration. The end-to-end tests against the real issuer live in the
//! workspace's `tests/integration/verifier_e2e.rs`.

#![allow(clippy::unwrap_used)]

#[path = "support/mock_issuer.rs"]
mod mock_issuer;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path};
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use latchkey_verifier::axum::VerifierLayer;
use latchkey_verifier::{
    Authenticated, Authorized, SyncError, TokenStatus, VerifiedKey, Verifier, VerifierBuilder,
    VerifyError,
};
use mock_issuer::{AUDIENCE, MockIssuer};
use tower::ServiceExt;

async fn build(
    mock: &MockIssuer,
    adjust: impl FnOnce(VerifierBuilder) -> VerifierBuilder,
) -> Verifier {
    adjust(Verifier::builder(&mock.url, AUDIENCE))
        .build()
        .await
        .unwrap()
}

/// Polls `check` every 2 ms for up to `limit`; whether it became true.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    check()
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn accepts_a_fresh_key_and_learns_revocation_from_the_stream() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b).await;
    let (token, idx) = mock.mint_with(&["cloud_account_viewer"], Some(&["acct-1"]), 3600);
    let key = v.verify(&token).unwrap();
    assert_eq!(key.id, format!("key-{idx}"));
    assert!(key.can_read("acct-1") && !key.can_read("acct-2") && !key.can_write("acct-1"));
    // Cached now; the same answer.
    assert_eq!(v.verify(&token).unwrap(), key);
    assert!(v.sync_status().stream_connected);
    assert_eq!(v.sync_status().cached_tokens, 1);

    let lists_before = mock.list_fetches();
    mock.set_status(idx, TokenStatus::Suspended);
    assert!(eventually(WAIT, || v.verify(&token) == Err(VerifyError::Suspended)).await);
    mock.set_status(idx, TokenStatus::Valid);
    assert!(eventually(WAIT, || v.verify(&token).is_ok()).await);
    mock.set_status(idx, TokenStatus::Invalid);
    assert!(eventually(WAIT, || v.verify(&token) == Err(VerifyError::Revoked)).await);
    // The stream did it, not a re-fetch.
    assert_eq!(mock.list_fetches(), lists_before);
    // Other tokens are unaffected.
    let (other, _) = mock.mint();
    assert!(v.verify(&other).is_ok());
}

#[tokio::test]
async fn a_gap_in_the_sequence_refetches_the_list() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b).await;
    let (lost, lost_idx) = mock.mint();
    let (_, other_idx) = mock.mint();
    assert!(v.verify(&lost).is_ok());
    // The revocation's event is lost...
    mock.set_status_silently(lost_idx, TokenStatus::Invalid);
    mock.skip_seq();
    assert!(v.verify(&lost).is_ok(), "nothing tells the verifier yet");
    // ...and the next event reveals the gap.
    mock.set_status(other_idx, TokenStatus::Suspended);
    assert!(eventually(WAIT, || v.verify(&lost) == Err(VerifyError::Revoked)).await);
}

#[tokio::test]
async fn a_reconnect_replays_missed_events_or_refetches() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b).await;
    let (a, a_idx) = mock.mint();
    let (b, b_idx) = mock.mint();
    assert!(v.verify(&a).is_ok() && v.verify(&b).is_ok());

    // Disconnected while a is revoked: the reconnect replays (and re-fetches).
    mock.set_offline(true);
    assert!(eventually(WAIT, || !v.sync_status().stream_connected).await);
    mock.set_status(a_idx, TokenStatus::Invalid);
    assert!(v.verify(&a).is_ok(), "the stream is down");
    mock.set_offline(false);
    assert!(eventually(WAIT, || v.verify(&a) == Err(VerifyError::Revoked)).await);
    assert!(eventually(WAIT, || v.sync_status().stream_connected).await);

    // Disconnected and the history lost: `reset`, then a re-fetch.
    mock.drop_streams();
    mock.set_offline(true);
    mock.set_status(b_idx, TokenStatus::Suspended);
    mock.forget_history();
    mock.set_offline(false);
    assert!(eventually(WAIT, || v.verify(&b) == Err(VerifyError::Suspended)).await);
    assert!(eventually(WAIT, || mock.stream_connects() >= 3).await);
}

#[tokio::test]
async fn stale_status_fails_closed_unless_fail_open() {
    let mock = MockIssuer::start().await;
    let staleness = Duration::from_millis(600);
    let closed = build(&mock, |b| b.staleness(staleness)).await;
    let open = build(&mock, |b| b.staleness(staleness).fail_open(true)).await;
    let (token, _) = mock.mint();
    assert!(closed.verify(&token).is_ok());
    assert!(open.verify(&token).is_ok());

    // While the stream is up and heard from, data stays fresh.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        mock.keep_alive();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(closed.verify(&token).is_ok(), "{:?}", closed.sync_status());

    // The issuer goes away: after the bound, closed refuses, open accepts.
    mock.set_offline(true);
    assert!(
        eventually(WAIT, || closed.verify(&token)
            == Err(VerifyError::StatusUnavailable))
        .await
    );
    let status = closed.sync_status();
    assert!(status.stale && !status.stream_connected, "{status:?}");
    assert!(status.last_error.is_some());
    assert!(open.verify(&token).is_ok());
    // An unseen token fails closed the same way (its signature is fine).
    let (fresh, _) = mock.mint();
    assert_eq!(closed.verify(&fresh), Err(VerifyError::StatusUnavailable));

    // The issuer is back: verification recovers by itself.
    mock.set_offline(false);
    assert!(eventually(WAIT, || closed.verify(&token).is_ok()).await);
}

#[tokio::test]
async fn polling_alone_keeps_lists_fresh() {
    let mock = MockIssuer::start().await;
    mock.set_ttl(1);
    let v = build(&mock, |b| b.stream(false).staleness(Duration::from_secs(3))).await;
    let (token, idx) = mock.mint();
    assert!(v.verify(&token).is_ok());
    mock.set_status(idx, TokenStatus::Invalid);
    assert!(eventually(WAIT, || v.verify(&token) == Err(VerifyError::Revoked)).await);
    assert!(!v.sync_status().stream_connected);
}

#[tokio::test]
async fn follows_a_signing_key_rotation() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b.jwks_cooldown(Duration::from_millis(200))).await;
    let (old, _) = mock.mint();
    assert!(v.verify(&old).is_ok());
    mock.rotate();
    let (new, _) = mock.mint();
    // verify() does no I/O: the first sight of the kid fails and wakes the
    // refresh; shortly after, the token verifies.
    assert_eq!(v.verify(&new), Err(VerifyError::UnknownKey));
    assert!(eventually(WAIT, || v.verify(&new).is_ok()).await);
    assert!(
        v.verify(&old).is_ok(),
        "the previous key is still published"
    );

    // verify_or_refresh waits for the fetch instead (once out of the
    // cooldown of the last fetch, which the failed calls above may have
    // asked for once more).
    tokio::time::sleep(Duration::from_millis(600)).await;
    mock.rotate();
    let (newer, _) = mock.mint();
    assert!(v.verify_or_refresh(&newer).await.is_ok());

    // A key withdrawn from the JWKS stops even cached tokens.
    mock.withdraw_old_keys();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(v.refresh_keys().await);
    assert_eq!(v.verify(&old), Err(VerifyError::UnknownKey));
    assert_eq!(v.verify(&new), Err(VerifyError::UnknownKey));
    assert!(v.verify(&newer).is_ok());
}

#[tokio::test]
async fn unknown_kids_are_fetched_at_most_once_per_cooldown() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b.jwks_cooldown(Duration::from_secs(60))).await;
    let start = mock.jwks_fetches();
    mock.rotate();
    let (token, _) = mock.mint();
    for _ in 0..200 {
        assert_eq!(v.verify(&token), Err(VerifyError::UnknownKey));
    }
    assert!(v.verify_or_refresh(&token).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Built a moment ago, so still in the cooldown: no fetch at all yet.
    assert_eq!(mock.jwks_fetches(), start);
}

#[tokio::test]
async fn jwks_is_refreshed_by_its_max_age() {
    let mock = MockIssuer::start().await;
    mock.set_jwks_max_age(1);
    let v = build(&mock, |b| b.jwks_cooldown(Duration::from_millis(100))).await;
    let start = mock.jwks_fetches();
    mock.rotate();
    let (token, _) = mock.mint();
    // No unknown kid is ever presented: the max-age alone brings the key.
    assert!(eventually(WAIT, || mock.jwks_fetches() > start).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(v.verify(&token).is_ok());
}

#[tokio::test]
async fn expiry_is_checked_on_every_call_even_when_cached() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b.leeway(Duration::ZERO)).await;
    let (token, _) = mock.mint_with(&["global_viewer"], None, 2);
    assert!(v.verify(&token).is_ok());
    assert_eq!(v.sync_status().cached_tokens, 1);
    assert!(
        eventually(Duration::from_secs(4), || v.verify(&token)
            == Err(VerifyError::Expired))
        .await
    );
}

#[tokio::test]
async fn claims_are_checked() {
    let mock = MockIssuer::start().await;
    let v = Verifier::builder(&mock.url, "another-audience")
        .build()
        .await
        .unwrap();
    let (token, _) = mock.mint();
    assert_eq!(v.verify(&token), Err(VerifyError::WrongAudience));
    assert_eq!(
        v.verify("not.a.token"),
        Err(VerifyError::Malformed("header"))
    );
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let v = build(&mock, |b| b).await;
    assert!(v.verify(&tampered).is_err());
    let claims = v.verify_claims(&token).unwrap();
    assert_eq!(v.status(&claims.status.status_list), Ok(TokenStatus::Valid));
}

#[tokio::test]
async fn build_errors_say_what_is_wrong() {
    let mock = MockIssuer::start().await;
    // The metadata names another issuer.
    let wrong = format!("{}/", mock.url.replace("127.0.0.1", "localhost"));
    let err = Verifier::builder(&wrong, AUDIENCE)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::Metadata { .. }), "{err}");
    let err = Verifier::builder("not a url", AUDIENCE)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::InvalidIssuer { .. }), "{err}");
    mock.set_offline(true);
    let err = Verifier::builder(&mock.url, AUDIENCE)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn usage_reports_are_batched_and_authenticated() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| {
        b.usage_reporting("reporter-token")
            .usage_interval(Duration::from_secs(3600))
    })
    .await;
    let (a, _) = mock.mint();
    let (b, _) = mock.mint();
    for _ in 0..10 {
        v.verify(&a).unwrap();
        v.verify(&b).unwrap();
    }
    assert_eq!(
        v.sync_status().pending_usage,
        2,
        "once per token per interval"
    );
    assert_eq!(v.flush_usage().await.unwrap(), 2);
    let mut got = mock.usage();
    got.sort();
    assert_eq!(got, vec!["jti-0", "jti-1"]);
    assert_eq!(mock.usage_auth(), vec!["Bearer reporter-token"]);
    assert_eq!(v.flush_usage().await.unwrap(), 0);

    let plain = build(&mock, |b| b).await;
    assert_eq!(
        plain.flush_usage().await,
        Err(SyncError::UsageNotConfigured)
    );
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_background_tasks() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b).await;
    let clone = v.clone();
    assert_eq!(mock.subscribers(), 1);
    drop(v);
    mock.keep_alive();
    assert_eq!(mock.subscribers(), 1, "a clone still holds it");
    drop(clone);
    assert!(
        eventually(WAIT, || {
            mock.keep_alive();
            mock.subscribers() == 0
        })
        .await
    );
}

#[derive(Clone, FromRef)]
struct AppState {
    verifier: Verifier,
}

async fn read(Authorized(key): Authorized, Path(account): Path<String>) -> String {
    format!("{} read {account}", key.name)
}

async fn whoami(Authenticated(key): Authenticated) -> String {
    key.name
}

fn app(verifier: Verifier) -> Router {
    Router::new()
        .route("/accounts/{account}/data", get(read).post(read))
        .route("/whoami", get(whoami))
        .route(
            "/global",
            get(|Authorized(k): Authorized| async move { k.name }),
        )
        .with_state(AppState { verifier })
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (
        status,
        challenge,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn axum_extractors_apply_the_policy() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b).await;
    let app = app(v.clone());
    let (admin, _) = mock.mint_with(&["global_admin"], None, 3600);
    let (viewer, _) = mock.mint_with(&["global_viewer"], None, 3600);
    let (acct, acct_idx) = mock.mint_with(&["cloud_account_viewer"], Some(&["acct-1"]), 3600);

    let (s, c, _) = call(&app, "GET", "/accounts/acct-1/data", None).await;
    assert_eq!((s, c.as_str()), (StatusCode::UNAUTHORIZED, "Bearer"));
    let (s, c, body) = call(&app, "GET", "/accounts/acct-1/data", Some("x.y.z")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        c.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{c}"
    );
    assert!(body.contains("\"status\":401"), "{body}");

    for (token, path, method, want) in [
        (&admin, "/accounts/acct-9/data", "GET", StatusCode::OK),
        (&admin, "/accounts/acct-9/data", "POST", StatusCode::OK),
        (&viewer, "/accounts/acct-9/data", "GET", StatusCode::OK),
        (
            &viewer,
            "/accounts/acct-9/data",
            "POST",
            StatusCode::FORBIDDEN,
        ),
        (&acct, "/accounts/acct-1/data", "GET", StatusCode::OK),
        (&acct, "/accounts/acct-2/data", "GET", StatusCode::FORBIDDEN),
        (
            &acct,
            "/accounts/acct-1/data",
            "POST",
            StatusCode::FORBIDDEN,
        ),
        (&acct, "/global", "GET", StatusCode::FORBIDDEN),
        (&viewer, "/global", "GET", StatusCode::OK),
        (&acct, "/whoami", "GET", StatusCode::OK),
    ] {
        let (s, c, body) = call(&app, method, path, Some(token)).await;
        assert_eq!(s, want, "{method} {path}: {body}");
        if want == StatusCode::FORBIDDEN {
            assert!(c.starts_with("Bearer error=\"insufficient_scope\""), "{c}");
        }
    }

    mock.set_status(acct_idx, TokenStatus::Invalid);
    assert!(eventually(WAIT, || v.verify(&acct).is_err()).await);
    let (s, c, _) = call(&app, "GET", "/accounts/acct-1/data", Some(&acct)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(c.contains("revoked"), "{c}");
}

#[tokio::test]
async fn tower_layer_authenticates_and_authorizes() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b).await;
    let app: Router = Router::new()
        .route(
            "/reports",
            get(|axum::Extension(key): axum::Extension<VerifiedKey>| async move { key.name }),
        )
        .route("/me", get(whoami))
        .layer(
            VerifierLayer::new(v.clone())
                .authorize(|key, parts| parts.uri.path() != "/reports" || key.can_read_all()),
        )
        .with_state(AppState { verifier: v });
    let (viewer, _) = mock.mint_with(&["global_viewer"], None, 3600);
    let (acct, _) = mock.mint_with(&["cloud_account_viewer"], Some(&["a"]), 3600);
    assert_eq!(
        call(&app, "GET", "/reports", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _, body) = call(&app, "GET", "/reports", Some(&viewer)).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "key-name-0"));
    assert_eq!(
        call(&app, "GET", "/reports", Some(&acct)).await.0,
        StatusCode::FORBIDDEN
    );
    // The extractor reuses the layer's verification.
    assert_eq!(
        call(&app, "GET", "/me", Some(&acct)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn stale_data_is_a_503_at_the_http_edge() {
    let mock = MockIssuer::start().await;
    let v = build(&mock, |b| b.staleness(Duration::from_millis(300))).await;
    let app = app(v.clone());
    let (admin, _) = mock.mint();
    assert_eq!(
        call(&app, "GET", "/whoami", Some(&admin)).await.0,
        StatusCode::OK
    );
    mock.set_offline(true);
    assert!(eventually(WAIT, || v.verify(&admin).is_err()).await);
    let (s, c, body) = call(&app, "GET", "/whoami", Some(&admin)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(c.is_empty());
    assert!(body.contains("status_unavailable"), "{body}");
}
