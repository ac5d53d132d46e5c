//! `latchkey gate` (contract §10) against a real issuer on loopback.
//!
//! The issuer runs in-process behind a TCP proxy that can cut every
//! connection (the issuer "stopped"); the gate's verifier syncs from it.
//! This file checks every row of §10's answers through the gate's router
//! (`oneshot`), the binary's flags, policy file refusal and usage reports;
//! [`proxies`] puts Debian's nginx and Caddy in front of an echoing
//! upstream with the gate behind them.

mod proxies;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http_body_util::BodyExt;
use latchkey::app::AppState;
use latchkey::clock::SystemClock;
use latchkey::config::Config;
use latchkey::gate::{AccountPattern, AccountSource, Gate, Policy};
use latchkey_verifier::Verifier;
use latchkey_verifier::jwk::SigningAlgorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tower::ServiceExt;

use crate::support::{b64_json, claims_of, header_of, latchkey};

/// How long bounded polls wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` every 10 ms for up to `limit`; whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy on 127.0.0.1 that can cut every connection through it.
struct CutProxy {
    blocked: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl CutProxy {
    fn start(listener: TcpListener, target: SocketAddr) -> CutProxy {
        let blocked = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (b, c) = (blocked.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if b.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut list = c.lock().unwrap();
                list.retain(|h| !h.is_finished());
                list.push(handle.abort_handle());
            }
        });
        CutProxy {
            blocked,
            connections,
            task,
        }
    }

    fn cut(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for handle in self.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// The real issuer on a loopback port, reached by gates through a
/// [`CutProxy`] (its issuer URL) and by the test's admin calls directly.
pub struct Issuer {
    dir: TempDir,
    _state: AppState,
    /// The issuer URL (the proxy).
    pub url: String,
    direct: String,
    proxy: CutProxy,
    pub admin: String,
    http: reqwest::Client,
    server: JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A key created through the API.
pub struct Key {
    pub id: String,
    pub token: String,
}

impl Issuer {
    pub async fn start() -> Issuer {
        latchkey::cli::client::install_tls_provider();
        let dir = tempfile::tempdir().unwrap();
        let server_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server_listener.local_addr().unwrap();
        let url = format!("http://{}", proxy_listener.local_addr().unwrap());
        let config = Config {
            listen: server_addr,
            issuer: url.clone(),
            data_dir: dir.path().join("data"),
            keys_dir: dir.path().join("keys"),
            ..Config::default()
        };
        let opened = latchkey::service::open(config, Arc::new(SystemClock))
            .await
            .unwrap();
        let admin = opened.bootstrap.expect("a fresh data directory").token;
        let app = latchkey::http::router(opened.state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(server_listener, app).await;
        });
        Issuer {
            dir,
            _state: opened.state,
            url,
            direct: format!("http://{server_addr}"),
            proxy: CutProxy::start(proxy_listener, server_addr),
            admin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            server,
        }
    }

    /// The issuer "stops" for every gate: connections cut, new ones refused.
    pub fn stop(&self) {
        self.proxy.cut();
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.direct))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn create(&self, name: &str, roles: &[&str], accounts: Option<&[&str]>) -> Key {
        let mut body = json!({"name": name, "roles": roles});
        if let Some(accounts) = accounts {
            body["accounts"] = json!(accounts);
        }
        let (status, created) = self
            .call(reqwest::Method::POST, "/v1/keys", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        Key {
            id: created["key"]["id"].as_str().unwrap().to_owned(),
            token: created["token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn revoke(&self, id: &str) {
        let (status, body) = self
            .call(reqwest::Method::DELETE, &format!("/v1/keys/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    pub async fn suspend(&self, id: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/keys/{id}/suspend"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn key(&self, id: &str) -> Value {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("/v1/keys/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// `like`'s claims, expired an hour ago, signed with the issuer's real key.
    pub fn expired(&self, like: &str) -> String {
        let header = header_of(like);
        let mut claims = claims_of(like);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        claims["iat"] = json!(now - 7200);
        claims["nbf"] = json!(now - 7200);
        claims["exp"] = json!(now - 3600);
        let kid = header["kid"].as_str().unwrap();
        let path = latchkey::signing::key_file_path(&self.dir.path().join("keys"), kid);
        let key = latchkey::signing::read_key_file(&path, SigningAlgorithm::EdDSA).unwrap();
        let input = format!("{}.{}", b64_json(&header), b64_json(&claims));
        let signature = key.sign_raw(input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(signature.as_ref()))
    }
}

/// `like`'s header and claims signed by a key the issuer never published.
pub fn foreign(like: &str) -> String {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    assert!(!pair.public_key().as_ref().is_empty());
    let input = format!(
        "{}.{}",
        b64_json(&header_of(like)),
        b64_json(&claims_of(like))
    );
    format!(
        "{input}.{}",
        B64.encode(pair.sign(input.as_bytes()).as_ref())
    )
}

pub fn accounts_pattern() -> AccountSource {
    AccountSource::Path(AccountPattern::parse("/accounts/{account}/").unwrap())
}

/// A gate whose verifier follows `issuer`.
pub async fn gate(
    issuer: &Issuer,
    account: AccountSource,
    policy: Policy,
    staleness: Duration,
) -> Arc<Gate> {
    let verifier = Verifier::builder(&issuer.url, "latchkey")
        .staleness(staleness)
        .build()
        .await
        .unwrap();
    Arc::new(Gate::with_verifier(verifier, account, policy))
}

/// What the gate answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[track_caller]
    fn expect(&self, status: u16) -> &Answer {
        assert_eq!(self.status, status, "{self:?}");
        self
    }

    /// 401 for a key that was sent: `invalid_token` naming the reason.
    #[track_caller]
    fn invalid_token(&self, reason: &str) {
        self.expect(401);
        let challenge = self.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\"") && challenge.contains(reason),
            "{challenge}"
        );
    }

    #[track_caller]
    fn insufficient_scope(&self) {
        self.expect(403);
        let challenge = self.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(self.header("x-latchkey-key-id").is_none());
    }

    #[track_caller]
    fn allowed(&self) -> &Answer {
        self.expect(200);
        assert_eq!(self.body, "", "an allow has an empty body");
        self
    }
}

/// One request to the gate's router.
pub async fn send(gate: &Arc<Gate>, request: Request<Body>) -> Answer {
    let router: Router = latchkey::gate::router(Arc::clone(gate));
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A forward-auth check (nginx headers) of `method uri` with `token`.
pub async fn check(gate: &Arc<Gate>, method: &str, uri: &str, token: Option<&str>) -> Answer {
    let mut request = Request::get("/check")
        .header("x-original-method", method)
        .header("x-original-uri", uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(gate, request.body(Body::empty()).unwrap()).await
}

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

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ends a child process it started (SIGTERM first, then kill).
pub struct Child(pub std::process::Child);

impl Child {
    /// SIGTERM, then wait up to 10 s; whether it exited with success.
    pub fn terminate(&mut self) -> bool {
        let pid = self.0.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
