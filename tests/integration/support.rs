//! The test harness: a [`TestApp`] over a temporary data directory (or,
//! in the PostgreSQL test binary, a fresh database of a throwaway cluster:
//! [`crate::ENGINE`]) whose requests go through `router.oneshot(...)`, with
//! a fixed clock, the bootstrap admin token, and forgers that sign
//! arbitrary tokens with the issuer's real key, a foreign key, `alg: none`
//! or HS256.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http_body_util::BodyExt;
use latchkey::app::AppState;
use latchkey::clock::FixedClock;
use latchkey::config::Config;
use latchkey::signing::{self, SigningKey};
use latchkey_verifier::jwk::SigningAlgorithm;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

pub const ISSUER: &str = "http://latchkey.test";
pub const AUDIENCE: &str = "latchkey";
pub const PROBLEM_JSON: &str = "application/problem+json";

/// 2026-06-01T00:00:00Z, the time every [`TestApp`] starts at.
pub fn start_time() -> i64 {
    time::macros::datetime!(2026-06-01 0:00 UTC).unix_timestamp()
}

/// RFC 3339 form of a unix time, as the API writes it.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Parses an RFC 3339 time from the API into unix seconds.
pub fn parse_time(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .unix_timestamp()
}

/// What a client saw.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON, or `Null` when it is empty or not JSON.
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts an RFC 9457 problem document with this status.
    #[track_caller]
    pub fn expect_problem(&self, status: u16) -> &Self {
        self.expect(status);
        assert_eq!(
            self.header("content-type"),
            Some(PROBLEM_JSON),
            "content type of a {status}"
        );
        assert_eq!(self.body["status"], json!(status), "{}", self.text);
        for member in ["type", "title", "detail"] {
            assert!(
                self.body[member].is_string(),
                "problem member {member} missing: {}",
                self.text
            );
        }
        if status == 401 {
            assert_eq!(
                self.header("www-authenticate"),
                Some("Bearer error=\"invalid_token\""),
                "WWW-Authenticate of a 401"
            );
        }
        self
    }

    /// The `field`s of a validation problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A key created through the API, with its one-time token.
#[derive(Debug, Clone)]
pub struct Created {
    pub key: Value,
    pub token: String,
}

impl Created {
    pub fn id(&self) -> String {
        self.key["id"].as_str().unwrap().to_owned()
    }
}

/// Which store a test binary runs its API suite against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sled,
    Postgres,
}

/// Points `config` at the test binary's engine: for PostgreSQL a new
/// database of the shared throwaway cluster and a key-encryption key in
/// `dir`.
pub fn use_engine(config: &mut Config, dir: &Path) {
    if crate::ENGINE == Engine::Postgres {
        let url = crate::pg_cluster::shared().create_database();
        // Reopening the same directory reopens the same database.
        std::fs::write(dir.join("database-url"), &url).unwrap();
        config.database_url = Some(latchkey::store::postgres::DatabaseUrl::parse(&url).unwrap());
        let kek = dir.join("kek");
        if !kek.exists() {
            latchkey::kek::Kek::generate_file(&kek).unwrap();
        }
        config.key_encryption_key_file = Some(kek);
    }
}

/// The service over a temporary data directory, driven in-process.
pub struct TestApp {
    pub dir: TempDir,
    pub clock: FixedClock,
    pub state: AppState,
    pub router: Router,
    /// The bootstrap admin's token and key id.
    pub admin_token: String,
    pub admin_id: String,
    /// The PostgreSQL database, when the engine is PostgreSQL.
    pub database: Option<latchkey::store::postgres::DatabaseUrl>,
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with_config(|_| {}).await
    }

    /// A fresh app whose configuration `adjust` may change first.
    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            keys_dir: dir.path().join("keys"),
            issuer: ISSUER.to_owned(),
            ..Config::default()
        };
        use_engine(&mut config, dir.path());
        adjust(&mut config);
        let database = config.database_url.clone();
        let clock = FixedClock::at(start_time());
        let opened = latchkey::service::open(config, Arc::new(clock.clone()))
            .await
            .unwrap();
        let bootstrap = opened
            .bootstrap
            .expect("a new data directory yields a bootstrap token");
        // The test holds the token: handed over, as `serve` records it.
        latchkey::service::confirm_bootstrap_delivered(&opened.state)
            .await
            .unwrap();
        let router = latchkey::http::router(opened.state.clone());
        TestApp {
            dir,
            clock,
            state: opened.state,
            router,
            admin_token: bootstrap.token,
            admin_id: bootstrap.key_id,
            database,
        }
    }

    /// Opens the service again over a data directory that [`TestApp::close`]
    /// released, with the same admin token, its clock at `now`.
    pub async fn open_existing(
        dir: TempDir,
        now: i64,
        admin_token: String,
        admin_id: String,
    ) -> TestApp {
        let database = std::fs::read_to_string(dir.path().join("database-url"))
            .ok()
            .map(|url| latchkey::store::postgres::DatabaseUrl::parse(&url).unwrap());
        Self::open_existing_database(dir, database, now, admin_token, admin_id).await
    }

    /// [`TestApp::open_existing`] over the PostgreSQL database `database`
    /// (with the key-encryption key in `dir`), or the data directory.
    pub async fn open_existing_database(
        dir: TempDir,
        database: Option<latchkey::store::postgres::DatabaseUrl>,
        now: i64,
        admin_token: String,
        admin_id: String,
    ) -> TestApp {
        let config = Config {
            data_dir: dir.path().join("data"),
            keys_dir: dir.path().join("keys"),
            issuer: ISSUER.to_owned(),
            key_encryption_key_file: database.as_ref().map(|_| dir.path().join("kek")),
            database_url: database.clone(),
            ..Config::default()
        };
        let clock = FixedClock::at(now);
        let opened = latchkey::service::open(config, Arc::new(clock.clone()))
            .await
            .unwrap();
        assert!(opened.bootstrap.is_none(), "the directory was initialised");
        let router = latchkey::http::router(opened.state.clone());
        TestApp {
            dir,
            clock,
            state: opened.state,
            router,
            admin_token,
            admin_id,
            database,
        }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// The fixed clock's current time.
    pub fn now(&self) -> i64 {
        self.state.clock.now().unix_timestamp()
    }

    /// Drops the service (releasing the database) and returns the directory.
    pub async fn close(self) -> TempDir {
        let TestApp {
            dir, state, router, ..
        } = self;
        drop(router);
        drop(state);
        if crate::ENGINE == Engine::Postgres {
            // Let the store's tasks see it is gone and close their connections.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return dir;
        }
        let db = dir.path().join("data").join("db");
        // The flush task drops its database handle once it sees the
        // registry is gone; wait (bounded) until the lock is free.
        wait_until_unlocked(&db).await;
        dir
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// Whether the server routes `method` on `path`: 405 means the path
    /// exists without that method, the fallback's 404 means no such path.
    /// Only the status is read (the status stream never ends).
    pub async fn routes(&self, method: &str, path: &str) -> bool {
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        match response.status().as_u16() {
            405 => false,
            404 => {
                // A handler's own 404 (an unknown list, say) is not the fallback's.
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                !body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("no such route"))
            }
            _ => true,
        }
    }

    /// A request with an optional bearer token and raw body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        self.send(builder.body(body.into()).unwrap()).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request(Method::GET, path, token, None, Body::empty())
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.request(Method::DELETE, path, token, None, Body::empty())
            .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.request(
            Method::POST,
            path,
            token,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    pub async fn patch_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.request(
            Method::PATCH,
            path,
            token,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    /// `POST /v1/keys` as the bootstrap admin; asserts 201.
    pub async fn create_key(&self, body: Value) -> Created {
        self.create_key_as(&self.admin_token.clone(), body).await
    }

    /// `POST /v1/keys` with `token`; asserts 201.
    pub async fn create_key_as(&self, token: &str, body: Value) -> Created {
        let reply = self.post_json("/v1/keys", Some(token), &body).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create {body}: {}",
            reply.text
        );
        Created {
            key: reply.body["key"].clone(),
            token: reply.body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// A key with `roles` (and, for cloud_account_viewer, `accounts`).
    pub async fn key(&self, name: &str, roles: &[&str], accounts: Option<&[&str]>) -> Created {
        let mut body = json!({"name": name, "roles": roles});
        if let Some(accounts) = accounts {
            body["accounts"] = json!(accounts);
        }
        self.create_key(body).await
    }

    /// `GET /v1/keys/{id}` as the admin; asserts 200.
    pub async fn describe(&self, id: &str) -> Value {
        let reply = self
            .get(&format!("/v1/keys/{id}"), Some(&self.admin_token))
            .await;
        reply.expect(200);
        reply.body
    }

    /// Every audit entry with `seq > after`, following `next_after`.
    pub async fn audit_after(&self, after: u64) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut after = after;
        loop {
            let reply = self
                .get(
                    &format!("/v1/audit?after={after}&limit=1000"),
                    Some(&self.admin_token),
                )
                .await;
            reply.expect(200);
            let items = reply.body["items"].as_array().unwrap().clone();
            if let Some(last) = items.last() {
                after = last["seq"].as_u64().unwrap();
            }
            entries.extend(items);
            if reply.body["next_after"].is_null() {
                return entries;
            }
        }
    }

    pub async fn audit_all(&self) -> Vec<Value> {
        self.audit_after(0).await
    }

    /// The sequence number of the newest audit entry.
    pub async fn audit_head(&self) -> u64 {
        self.audit_all()
            .await
            .last()
            .map(|e| e["seq"].as_u64().unwrap())
            .unwrap_or(0)
    }

    pub async fn jwks(&self) -> Value {
        let reply = self.get("/.well-known/jwks.json", None).await;
        reply.expect(200);
        reply.body
    }

    /// The issuer's private signing key `kid`, as it signs with it.
    pub fn signing_key(&self, kid: &str) -> Arc<SigningKey> {
        let key = self
            .state
            .issuer
            .signing_snapshot()
            .published
            .iter()
            .find(|k| k.kid() == kid)
            .cloned()
            .expect("the kid is a published key");
        assert_eq!(key.alg(), SigningAlgorithm::EdDSA);
        key
    }

    /// Whether the private half of signing key `kid` is still kept: its
    /// file (embedded) or its sealed row (PostgreSQL).
    pub async fn private_key_kept(&self, kid: &str) -> bool {
        match &self.database {
            None => signing::key_file_path(&self.keys_dir(), kid).exists(),
            Some(url) => {
                let pool = url.pool(1).unwrap();
                let client = pool.get().await.unwrap();
                let row = client
                    .query_opt(
                        "SELECT 1 FROM latchkey_signing_keys WHERE kid = $1 AND sealed_key IS NOT NULL",
                        &[&kid],
                    )
                    .await
                    .unwrap();
                row.is_some()
            }
        }
    }

    /// The PostgreSQL URL as given (password included), for configuration.
    #[allow(dead_code)] // only the PostgreSQL suite uses it
    pub fn database_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("database-url")).unwrap()
    }

    /// Every text and record the PostgreSQL engine stored (`None` for the
    /// embedded engine, whose files the caller reads).
    pub async fn stored_text(&self) -> Option<String> {
        let url = self.database.as_ref()?;
        let pool = url.pool(1).unwrap();
        let client = pool.get().await.unwrap();
        let mut all = String::new();
        for sql in [
            "SELECT convert_from(record, 'UTF8') FROM latchkey_keys",
            "SELECT folded || key_id FROM latchkey_names",
            "SELECT jti || key_id FROM latchkey_tokens",
            "SELECT convert_from(entry, 'UTF8') FROM latchkey_audit",
            "SELECT convert_from(info, 'UTF8') || coalesce(encode(sealed_key, 'base64'), '') FROM latchkey_signing_keys",
            "SELECT key || value FROM latchkey_meta",
        ] {
            for row in client.query(sql, &[]).await.unwrap() {
                all.push_str(row.get::<_, &str>(0));
                all.push('\n');
            }
        }
        Some(all)
    }

    /// Token forgers that use this issuer's real signing key.
    pub fn forger(&self) -> Forger {
        let kid = header_of(&self.admin_token)["kid"]
            .as_str()
            .unwrap()
            .to_owned();
        let issuer_key = self.signing_key(&kid);
        let public_x = B64
            .decode(issuer_key.public_jwk()["x"].as_str().unwrap())
            .unwrap();
        Forger {
            issuer_key,
            kid,
            public_x,
        }
    }
}

/// Waits (bounded) until no process or handle holds the sled lock of `db`.
pub async fn wait_until_unlocked(db: &Path) {
    for _ in 0..200 {
        match sled::Config::new().path(db).open() {
            Ok(handle) => {
                drop(handle);
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    panic!("the database {} stayed locked", db.display());
}

/// Opens the sled database at `db`, waiting (bounded) for its lock: sled's
/// I/O threads may hold it for a moment after the last handle is dropped.
pub fn open_db_when_free(db: &Path) -> sled::Db {
    for _ in 0..200 {
        if let Ok(handle) = sled::Config::new().path(db).open() {
            return handle;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the database {} stayed locked", db.display());
}

pub fn b64_json(value: &Value) -> String {
    B64.encode(serde_json::to_vec(value).unwrap())
}

/// The decoded JOSE header of a compact token (test-side inspection only).
pub fn header_of(token: &str) -> Value {
    let segment = token.split('.').next().unwrap();
    serde_json::from_slice(&B64.decode(segment).unwrap()).unwrap()
}

/// The decoded claims of a compact token (test-side inspection only).
pub fn claims_of(token: &str) -> Value {
    let segment = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(segment).unwrap()).unwrap()
}

/// The token with one character of its payload changed (still valid base64url).
pub fn tamper_payload(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Vec<u8> = parts[1].as_bytes().to_vec();
    let i = payload.len() / 2;
    payload[i] = if payload[i] == b'A' { b'B' } else { b'A' };
    let payload = String::from_utf8(payload).unwrap();
    assert_ne!(payload, parts[1]);
    format!("{}.{}.{}", parts[0], payload, parts[2])
}

/// Signs whatever it is asked to.
pub struct Forger {
    issuer_key: Arc<SigningKey>,
    pub kid: String,
    public_x: Vec<u8>,
}

impl Forger {
    /// The header latchkey itself puts on access keys.
    pub fn access_header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid})
    }

    /// Signed with the issuer's real private key.
    pub fn issuer_signed(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64_json(header), b64_json(claims));
        let signature = self.issuer_key.sign_raw(input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(signature.as_ref()))
    }

    /// Signed with a freshly generated Ed25519 key the issuer never published.
    pub fn foreign_signed(&self, header: &Value, claims: &Value) -> String {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        assert_ne!(pair.public_key().as_ref(), self.public_x.as_slice());
        let input = format!("{}.{}", b64_json(header), b64_json(claims));
        let signature = pair.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(signature.as_ref()))
    }

    /// `alg: none` with an empty signature.
    pub fn unsigned(&self, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "at+jwt", "kid": self.kid});
        format!("{}.{}.", b64_json(&header), b64_json(claims))
    }

    /// HS256 keyed with the issuer's public key bytes (the classic
    /// algorithm-confusion attack).
    pub fn hs256_with_public_key(&self, claims: &Value) -> String {
        let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": self.kid});
        let input = format!("{}.{}", b64_json(&header), b64_json(claims));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.public_x);
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", B64.encode(tag.as_ref()))
    }
}

/// The built `latchkey` binary, with no `LATCHKEY_*` variables inherited.
pub fn latchkey() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LATCHKEY_") {
            command.env_remove(name);
        }
    }
    command.env("LATCHKEY_LOG", "warn");
    command
}

/// A finished command's exit status and text output.
#[derive(Debug)]
pub struct Ran {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(command: &mut std::process::Command) -> Ran {
    let output = command.stdin(std::process::Stdio::null()).output().unwrap();
    Ran {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Polls `check` every 10 ms for up to `limit`; whether it became true.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
