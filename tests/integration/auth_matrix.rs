//! Every admin route × every kind of caller (contract §3): the three roles,
//! and tokens that are missing, expired, revoked, suspended, tampered,
//! foreign, for another audience or issuer, of the wrong type, unsigned,
//! HMAC-confused, for an unknown key, or malformed. Each cell asserts the
//! exact status, the problem document, and the audit trace of a refusal (or
//! its absence when the request is allowed): a 403 of a key that verified is
//! one `auth.denied` entry naming the key and the route template at once; a
//! 401 leaves no entry until its minute is over, then one anonymous
//! `auth.denied` entry for the minute with its reason and count.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};

use crate::support::{Created, TestApp, claims_of, tamper_payload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    CreateKey,
    ListKeys,
    GetKey,
    PatchKey,
    DeleteKey,
    RenewKey,
    SuspendKey,
    ResumeKey,
    Audit,
    SigningKeys,
    /// Contract routes that may not exist yet: their rows run once they do.
    RotateSigningKey,
    Introspect,
    Usage,
    /// A read that only global admins may make.
    Backup,
}

const ROUTES: [Route; 14] = [
    Route::CreateKey,
    Route::ListKeys,
    Route::GetKey,
    Route::PatchKey,
    Route::DeleteKey,
    Route::RenewKey,
    Route::SuspendKey,
    Route::ResumeKey,
    Route::Audit,
    Route::SigningKeys,
    Route::RotateSigningKey,
    Route::Introspect,
    Route::Usage,
    Route::Backup,
];

impl Route {
    fn is_write(self) -> bool {
        matches!(
            self,
            Route::CreateKey
                | Route::PatchKey
                | Route::DeleteKey
                | Route::RenewKey
                | Route::SuspendKey
                | Route::ResumeKey
                | Route::RotateSigningKey
        )
    }

    /// Routes that any valid key may use (contract §3: "any active key").
    fn any_key(self) -> bool {
        matches!(self, Route::Introspect | Route::Usage)
    }

    /// What an allowed caller gets. Staging a signing key may answer
    /// 200 or 201: the contract does not say which.
    fn success(self) -> &'static [u16] {
        match self {
            Route::CreateKey => &[201],
            Route::DeleteKey => &[204],
            Route::Usage => &[202],
            Route::RotateSigningKey => &[200, 201],
            _ => &[200],
        }
    }

    /// The method and a concrete path, to see whether the server routes it.
    /// The route template the audit log names.
    fn template(self) -> &'static str {
        match self {
            Route::CreateKey | Route::ListKeys => "/v1/keys",
            Route::GetKey | Route::PatchKey | Route::DeleteKey => "/v1/keys/{id}",
            Route::RenewKey => "/v1/keys/{id}/renew",
            Route::SuspendKey => "/v1/keys/{id}/suspend",
            Route::ResumeKey => "/v1/keys/{id}/resume",
            Route::Audit => "/v1/audit",
            Route::SigningKeys => "/v1/signing-keys",
            Route::RotateSigningKey => "/v1/signing-keys/rotate",
            Route::Introspect => "/v1/introspect",
            Route::Usage => "/v1/usage",
            Route::Backup => "/v1/backup",
        }
    }

    fn probe(self) -> (&'static str, &'static str) {
        match self {
            Route::RotateSigningKey => ("POST", "/v1/signing-keys/rotate"),
            Route::Introspect => ("POST", "/v1/introspect"),
            Route::Usage => ("POST", "/v1/usage"),
            Route::Backup => ("GET", "/v1/backup"),
            _ => ("GET", "/v1/keys"),
        }
    }
}

/// One concrete request for a route, against a fresh target where it needs one.
struct Prepared {
    method: Method,
    path: String,
    body: Option<Value>,
}

async fn prepare(app: &TestApp, route: Route, n: usize) -> Prepared {
    let target = || async {
        app.key(&format!("target-{n}"), &["global_viewer"], None)
            .await
            .id()
    };
    let (method, path, body) = match route {
        Route::CreateKey => (
            Method::POST,
            "/v1/keys".to_owned(),
            Some(json!({"name": format!("created-{n}"), "roles": ["global_viewer"]})),
        ),
        Route::ListKeys => (Method::GET, "/v1/keys".to_owned(), None),
        Route::GetKey => (Method::GET, format!("/v1/keys/{}", target().await), None),
        Route::PatchKey => (
            Method::PATCH,
            format!("/v1/keys/{}", target().await),
            Some(json!({"description": "changed"})),
        ),
        Route::DeleteKey => (Method::DELETE, format!("/v1/keys/{}", target().await), None),
        Route::RenewKey => (
            Method::POST,
            format!("/v1/keys/{}/renew", target().await),
            Some(json!({})),
        ),
        Route::SuspendKey => (
            Method::POST,
            format!("/v1/keys/{}/suspend", target().await),
            None,
        ),
        Route::ResumeKey => {
            let id = target().await;
            app.post_json(
                &format!("/v1/keys/{id}/suspend"),
                Some(&app.admin_token),
                &json!({}),
            )
            .await
            .expect(200);
            (Method::POST, format!("/v1/keys/{id}/resume"), None)
        }
        Route::Audit => (Method::GET, "/v1/audit".to_owned(), None),
        Route::Backup => (Method::GET, "/v1/backup".to_owned(), None),
        Route::SigningKeys => (Method::GET, "/v1/signing-keys".to_owned(), None),
        Route::RotateSigningKey => (
            Method::POST,
            "/v1/signing-keys/rotate".to_owned(),
            Some(json!({})),
        ),
        Route::Introspect => {
            let subject = app
                .key(&format!("introspected-{n}"), &["global_viewer"], None)
                .await;
            (
                Method::POST,
                "/v1/introspect".to_owned(),
                Some(json!({"token": subject.token})),
            )
        }
        Route::Usage => {
            let subject = app
                .key(&format!("used-{n}"), &["global_viewer"], None)
                .await;
            (
                Method::POST,
                "/v1/usage".to_owned(),
                Some(json!({"jtis": [claims_of(&subject.token)["jti"]]})),
            )
        }
    };
    Prepared { method, path, body }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Admin,
    Viewer,
    AccountViewer,
    /// Must be refused with 401.
    Invalid,
}

struct Caller {
    label: &'static str,
    /// The whole `Authorization` header, if any.
    authorization: Option<String>,
    kind: Kind,
    /// For valid keys: the audit actor `{id, name}` of a 403.
    actor: Option<Value>,
    /// For invalid ones: the reason their refusal is counted under.
    reason: &'static str,
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

fn valid(label: &'static str, created: &Created, kind: Kind) -> Caller {
    Caller {
        label,
        authorization: bearer(&created.token),
        kind,
        actor: Some(json!({"id": created.id(), "name": created.key["name"]})),
        reason: "forbidden",
    }
}

fn invalid(label: &'static str, reason: &'static str, authorization: Option<String>) -> Caller {
    Caller {
        label,
        authorization,
        kind: Kind::Invalid,
        actor: None,
        reason,
    }
}

/// Builds every caller. Advances the clock by two days (to expire one key)
/// before minting the others.
async fn callers(app: &TestApp) -> Vec<Caller> {
    let admin_token = app.admin_token.clone();
    let expired = app
        .create_key(
            json!({"name": "expired-admin", "roles": ["global_admin"], "expires_in_days": 1}),
        )
        .await;
    app.clock.advance(2 * 86_400);

    let admin = app.key("matrix-admin", &["global_admin"], None).await;
    let viewer = app.key("matrix-viewer", &["global_viewer"], None).await;
    let account_viewer = app
        .key(
            "matrix-account-viewer",
            &["cloud_account_viewer"],
            Some(&["a1", "a2"]),
        )
        .await;

    let revoked = app.key("revoked-admin", &["global_admin"], None).await;
    app.delete(&format!("/v1/keys/{}", revoked.id()), Some(&admin_token))
        .await
        .expect(204);
    let suspended = app.key("suspended-admin", &["global_admin"], None).await;
    app.post_json(
        &format!("/v1/keys/{}/suspend", suspended.id()),
        Some(&admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    let replaced = app.key("replaced-admin", &["global_admin"], None).await;
    app.post_json(
        &format!("/v1/keys/{}/renew", replaced.id()),
        Some(&admin_token),
        &json!({"revoke_previous": true}),
    )
    .await
    .expect(200);

    // Forgeries start from the claims of a live admin token, so each one
    // differs from an acceptable token in exactly the named way.
    let base = app.key("forgery-base", &["global_admin"], None).await;
    let claims = claims_of(&base.token);
    let forger = app.forger();
    let header = forger.access_header();
    let with = |changes: Value| {
        let mut c = claims.clone();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let unknown_sub = uuid::Uuid::now_v7().to_string();
    let two_segments = {
        let parts: Vec<&str> = base.token.split('.').collect();
        format!("{}.{}", parts[0], parts[1])
    };
    let huge = format!(
        "{}.{}.{}",
        base.token.split('.').next().unwrap(),
        "A".repeat(1024 * 1024),
        base.token.split('.').nth(2).unwrap()
    );

    vec![
        valid("global_admin", &admin, Kind::Admin),
        valid("global_viewer", &viewer, Kind::Viewer),
        valid("cloud_account_viewer", &account_viewer, Kind::AccountViewer),
        invalid("missing", "missing_token", None),
        invalid("empty bearer", "missing_token", Some("Bearer ".into())),
        invalid(
            "basic scheme",
            "malformed_header",
            Some(format!("Basic {}", admin.token)),
        ),
        invalid("expired", "expired", bearer(&expired.token)),
        invalid("revoked", "revoked", bearer(&revoked.token)),
        invalid("suspended", "suspended", bearer(&suspended.token)),
        invalid(
            "replaced by renew(revoke_previous)",
            "revoked",
            bearer(&replaced.token),
        ),
        invalid(
            "tampered payload",
            "bad_signature",
            bearer(&tamper_payload(&base.token)),
        ),
        invalid(
            "foreign signature",
            "bad_signature",
            bearer(&forger.foreign_signed(&header, &claims)),
        ),
        invalid(
            "unknown kid",
            "unknown_key",
            bearer(&forger.foreign_signed(
                &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "bm90LWEtcHVibGlzaGVkLWtleQ"}),
                &claims,
            )),
        ),
        invalid(
            "wrong aud",
            "wrong_audience",
            bearer(&forger.issuer_signed(&header, &with(json!({"aud": "someone-else"})))),
        ),
        invalid(
            "wrong iss",
            "wrong_issuer",
            bearer(&forger.issuer_signed(&header, &with(json!({"iss": "http://evil.test"})))),
        ),
        invalid(
            "wrong typ",
            "wrong_type",
            bearer(&forger.issuer_signed(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": forger.kid}),
                &claims,
            )),
        ),
        invalid(
            "nbf in the future",
            "not_yet_valid",
            bearer(&forger.issuer_signed(
                &header,
                // Far enough ahead to stay in the future while the matrix moves the
                // clock a minute per refused cell.
                &with(json!({"nbf": app.now() + 30 * 86_400, "iat": app.now() + 30 * 86_400})),
            )),
        ),
        invalid("alg none", "malformed", bearer(&forger.unsigned(&claims))),
        invalid(
            "HS256 keyed with the public key",
            "unsupported_algorithm",
            bearer(&forger.hs256_with_public_key(&claims)),
        ),
        invalid(
            "well signed, sub not in registry",
            "unknown_key",
            bearer(&forger.issuer_signed(
                &header,
                &with(json!({"sub": unknown_sub, "client_id": unknown_sub})),
            )),
        ),
        invalid("malformed: bad base64", "malformed", bearer("!!!.@@@.###")),
        invalid(
            "malformed: two segments",
            "malformed",
            bearer(&two_segments),
        ),
        invalid("malformed: 1 MB", "too_large", bearer(&huge)),
    ]
}

fn expected_status(route: Route, kind: Kind) -> &'static [u16] {
    match kind {
        Kind::Invalid => &[401],
        // PostgreSQL is backed up with pg_dump: the route says so (409).
        Kind::Admin
            if route == Route::Backup && crate::ENGINE == crate::support::Engine::Postgres =>
        {
            &[409]
        }
        Kind::Admin => route.success(),
        _ if route.any_key() => route.success(),
        Kind::Viewer if route.is_write() || route == Route::Backup => &[403],
        Kind::Viewer => route.success(),
        Kind::AccountViewer => &[403],
    }
}

/// Checks one cell; returns what is wrong with it, if anything.
async fn run_cell(app: &TestApp, route: Route, caller: &Caller, n: usize) -> Vec<String> {
    let prepared = prepare(app, route, n).await;
    let before = app.audit_head().await;
    let mut request = Request::builder()
        .method(prepared.method.clone())
        .uri(&prepared.path);
    if let Some(value) = &caller.authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let body = match &prepared.body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let reply = app.send(request.body(body).unwrap()).await;
    let allowed = expected_status(route, caller.kind);
    let status = reply.status.as_u16();
    let cell = format!("{route:?} × {}", caller.label);
    let mut wrong = Vec::new();
    if !allowed.contains(&status) {
        wrong.push(format!(
            "{cell}: status {status} (expected {allowed:?}): {}",
            reply.text.chars().take(300).collect::<String>()
        ));
        return wrong;
    }
    let entries = app.audit_after(before).await;
    let denials: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "auth.denied")
        .collect();
    // The PostgreSQL backup refusal is an answer to an allowed caller.
    let refused_not_denied = route == Route::Backup && status == 409;
    if status < 400 || refused_not_denied {
        if !denials.is_empty() {
            wrong.push(format!("{cell}: allowed but audited as denied"));
        }
        return wrong;
    }
    if reply.header("content-type") != Some("application/problem+json") {
        wrong.push(format!(
            "{cell}: content type {:?}",
            reply.header("content-type")
        ));
    }
    if reply.body["status"] != json!(status) || !reply.body["detail"].is_string() {
        wrong.push(format!("{cell}: not a problem document: {}", reply.text));
    }
    if status == 401 && reply.header("www-authenticate") != Some("Bearer error=\"invalid_token\"") {
        wrong.push(format!(
            "{cell}: WWW-Authenticate {:?}",
            reply.header("www-authenticate")
        ));
    }
    let expected_path = route.template();
    let request = format!("{} {expected_path}", prepared.method.as_str());
    let denial = if status == 401 {
        // No entry per anonymous refusal...
        if !entries.is_empty() {
            wrong.push(format!(
                "{cell}: a 401 was audited at once: {:?}",
                entries.iter().map(|e| &e["action"]).collect::<Vec<_>>()
            ));
            return wrong;
        }
        // ...but one for its minute, once the minute is over.
        app.clock.advance(60);
        let entries = app.audit_after(before).await;
        if entries.len() != 1 || entries[0]["action"] != "auth.denied" {
            wrong.push(format!(
                "{cell}: expected one auth.denied entry for the minute, got {:?}",
                entries.iter().map(|e| &e["action"]).collect::<Vec<_>>()
            ));
            return wrong;
        }
        let denial = entries[0].clone();
        let details = &denial["details"];
        if details["reason"] != json!(caller.reason)
            || details["count"] != json!(1)
            || details["requests"] != json!({ request.clone(): 1 })
        {
            wrong.push(format!(
                "{cell}: expected 1 × {} for {request}, got {details}",
                caller.reason
            ));
        }
        denial
    } else {
        // A refusal of a key that verified changes nothing: its only trace
        // is one auth.denied entry, at once.
        if entries.len() != 1 || denials.len() != 1 {
            wrong.push(format!(
                "{cell}: expected exactly one auth.denied audit entry, got {:?}",
                entries.iter().map(|e| &e["action"]).collect::<Vec<_>>()
            ));
            return wrong;
        }
        let denial = denials[0].clone();
        if denial["details"]["method"] != json!(prepared.method.as_str())
            || denial["details"]["path"] != json!(expected_path)
            || denial["details"]["reason"] != json!("forbidden")
        {
            wrong.push(format!(
                "{cell}: audit entry names another request: {denial}"
            ));
        }
        denial
    };
    let expected_actor = match &caller.actor {
        Some(actor) => actor.clone(),
        None => json!("anonymous"),
    };
    if denial["actor"] != expected_actor {
        wrong.push(format!(
            "{cell}: audit actor {} (expected {expected_actor})",
            denial["actor"]
        ));
    }
    if let Some(value) = &caller.authorization {
        let token = value.split_once(' ').map(|(_, t)| t).unwrap_or(value);
        if token.len() > 16 && (denial.to_string().contains(token) || reply.text.contains(token)) {
            wrong.push(format!(
                "{cell}: the token leaked into a response or the audit log"
            ));
        }
    }
    wrong
}

#[tokio::test]
async fn every_admin_route_against_every_kind_of_caller() {
    let app = TestApp::new().await;
    let callers = callers(&app).await;
    let mut wrong = Vec::new();
    let mut cells = 0;
    let mut rows = 0;
    for route in ROUTES {
        let (method, path) = route.probe();
        if !app.routes(method, path).await {
            continue;
        }
        // The probe was itself an anonymous refusal: let its minute end, so
        // that each refused cell's minute holds that cell alone.
        app.clock.advance(60);
        rows += 1;
        for caller in &callers {
            wrong.extend(run_cell(&app, route, caller, cells).await);
            cells += 1;
        }
    }
    assert!(
        rows >= 10,
        "the ten admin routes that exist today must all run"
    );
    assert_eq!(cells, rows * callers.len());
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells are wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A key that is valid but whose role is too weak is still a valid key: it
/// authenticates (last use recorded) and gets 403, not 401.
#[tokio::test]
async fn a_weak_role_is_forbidden_not_unauthenticated() {
    let app = TestApp::new().await;
    let viewer = app
        .key("acct", &["cloud_account_viewer"], Some(&["*"]))
        .await;
    let reply = app.get("/v1/keys", Some(&viewer.token)).await;
    reply.expect_problem(403);
    assert!(reply.headers.get("www-authenticate").is_none());
    assert!(!app.describe(&viewer.id()).await["last_used_at"].is_null());
}
