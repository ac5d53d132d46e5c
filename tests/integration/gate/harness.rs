//! The gate tests' harness: a real issuer on loopback behind a TCP proxy
//! that can cut every connection (the issuer "stopped"), keys made through
//! its API or forged with its signing key, a gate following it, and the
//! requests the tests send.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

pub use crate::support::eventually;
use crate::support::{b64_json, claims_of, header_of};

/// How long bounded polls wait.
pub const WAIT: Duration = Duration::from_secs(10);

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
    pub fn expect(&self, status: u16) -> &Answer {
        assert_eq!(self.status, status, "{self:?}");
        self
    }

    /// 401 for a key that was sent: `invalid_token` naming the reason.
    #[track_caller]
    pub fn invalid_token(&self, reason: &str) {
        self.expect(401);
        let challenge = self.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\"") && challenge.contains(reason),
            "{challenge}"
        );
    }

    #[track_caller]
    pub fn insufficient_scope(&self) {
        self.expect(403);
        let challenge = self.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(self.header("x-latchkey-key-id").is_none());
    }

    #[track_caller]
    pub fn allowed(&self) -> &Answer {
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
