//! A minimal latchkey issuer on a loopback port, for the verifier's own
//! tests and benchmarks: RFC 8414 metadata, a JWKS, one signed status list
//! and its push stream (with replay from `Last-Event-ID` and `reset`), and
//! a usage endpoint. Test code drives it directly: mint tokens, change
//! statuses (with or without an event), rotate keys, go offline, and inject
//! the faults of a hostile network: a shared cache that serves old copies
//! of the lists, index and JWKS whatever the request says, a stream that
//! refuses subscribers, slow lists, a sequence that starts over.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_verifier::status_list::{StatusList, StatusListPayload};
use latchkey_verifier::{SigningAlgorithm, TokenStatus, VerificationKey};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const AUDIENCE: &str = "latchkey";
pub const CAPACITY: usize = 1 << 16;

type Chunk = Result<Bytes, Infallible>;

struct Key {
    kid: String,
    pair: Ed25519KeyPair,
    published: bool,
}

struct Inner {
    keys: Vec<Key>,
    active: usize,
    list: StatusList,
    next_idx: u64,
    seq: u64,
    /// (seq, SSE text) kept for replay.
    history: VecDeque<(u64, String)>,
    subscribers: Vec<mpsc::Sender<Chunk>>,
    offline: bool,
    jwks_max_age: u64,
    ttl: u64,
    jwks_fetches: usize,
    list_fetches: usize,
    stream_connects: usize,
    usage: Vec<String>,
    usage_auth: Vec<String>,
    /// The sequence space, and the sequence of the last change to list 0.
    epoch: String,
    list_seq: u64,
    /// Every list, index and JWKS document served, oldest first: what a
    /// shared cache could hand back.
    served_lists: Vec<String>,
    served_indexes: Vec<Value>,
    served_jwks: Vec<Value>,
    /// When set, the "cache" answers with the document served that many
    /// copies ago (clamped to the oldest), ignoring `Cache-Control`.
    stale_lists: Option<usize>,
    stale_index: Option<usize>,
    stale_jwks: Option<usize>,
    /// New stream subscribers get 503 (every slot held).
    stream_refused: bool,
    /// Delay before a list is served.
    list_delay_ms: u64,
    /// `Cache-Control` request headers seen on list fetches.
    list_cache_control: Vec<String>,
}

pub struct MockIssuer {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn new_key(n: usize) -> Key {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Key {
        kid: format!("kid-{n}-{}", now()),
        pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        published: true,
    }
}

fn sign(key: &Key, typ: &str, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": typ, "kid": key.kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.pair.sign(input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    url: String,
}

impl Ctx {
    fn list_uri(&self) -> String {
        format!("{}/v1/status/0", self.url)
    }
}

impl MockIssuer {
    pub async fn start() -> MockIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            keys: vec![new_key(0)],
            active: 0,
            list: StatusList::new(CAPACITY),
            next_idx: 0,
            seq: 100,
            history: VecDeque::new(),
            subscribers: Vec::new(),
            offline: false,
            jwks_max_age: 300,
            ttl: 300,
            jwks_fetches: 0,
            list_fetches: 0,
            stream_connects: 0,
            usage: Vec::new(),
            usage_auth: Vec::new(),
            epoch: "epoch-1".into(),
            list_seq: 100,
            served_lists: Vec::new(),
            served_indexes: Vec::new(),
            served_jwks: Vec::new(),
            stale_lists: None,
            stale_index: None,
            stale_jwks: None,
            stream_refused: false,
            list_delay_ms: 0,
            list_cache_control: Vec::new(),
        }));
        let ctx = Ctx {
            inner: inner.clone(),
            url: url.clone(),
        };
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/.well-known/jwks.json", get(jwks))
            .route("/v1/status", get(index))
            .route("/v1/status/stream", get(stream))
            .route("/v1/status/0", get(list))
            .route("/v1/usage", post(usage))
            .with_state(ctx);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockIssuer { url, inner, server }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub fn list_uri(&self) -> String {
        format!("{}/v1/status/0", self.url)
    }

    /// Mints a token with these roles and accounts, expiring in `exp_in`
    /// seconds; returns it and its status index.
    pub fn mint_with(
        &self,
        roles: &[&str],
        accounts: Option<&[&str]>,
        exp_in: i64,
    ) -> (String, u64) {
        let mut inner = self.lock();
        let idx = inner.next_idx;
        inner.next_idx += 1;
        let t = now();
        let mut claims = json!({
            "iss": self.url, "sub": format!("key-{idx}"), "client_id": format!("key-{idx}"),
            "aud": AUDIENCE, "iat": t, "nbf": t, "exp": t + exp_in,
            "jti": format!("jti-{idx}"), "name": format!("key-name-{idx}"),
            "roles": roles,
            "status": {"status_list": {"idx": idx, "uri": self.list_uri()}}
        });
        if let Some(accounts) = accounts {
            claims["accounts"] = json!(accounts);
        }
        let key = &inner.keys[inner.active];
        (sign(key, "at+jwt", &claims), idx)
    }

    pub fn mint(&self) -> (String, u64) {
        self.mint_with(&["global_admin"], None, 3600)
    }

    /// The raw Ed25519 public key and kid of the active key.
    pub fn active_key(&self) -> (String, Vec<u8>) {
        let inner = self.lock();
        let key = &inner.keys[inner.active];
        (key.kid.clone(), key.pair.public_key().as_ref().to_vec())
    }

    /// Changes a status and pushes the event.
    pub fn set_status(&self, idx: u64, status: TokenStatus) {
        let mut inner = self.lock();
        inner.list.set(idx as usize, status).unwrap();
        inner.seq += 1;
        let seq = inner.seq;
        inner.list_seq = seq;
        let data = json!({"seq": seq, "list": 0, "uri": self.list_uri(), "idx": idx, "status": status.bits()});
        let text = format!("id: {seq}\nevent: status\ndata: {data}\n\n");
        inner.history.push_back((seq, text.clone()));
        broadcast(&mut inner, &text);
    }

    /// Changes a status without any event (and without using a sequence
    /// number), as if the event were lost.
    pub fn set_status_silently(&self, idx: u64, status: TokenStatus) {
        self.lock().list.set(idx as usize, status).unwrap();
    }

    /// Skips a sequence number, so the next event reveals a gap.
    pub fn skip_seq(&self) {
        self.lock().seq += 1;
    }

    /// Forgets the replay history: a reconnect gets `reset`.
    pub fn forget_history(&self) {
        self.lock().history.clear();
    }

    /// Ends every open stream.
    pub fn drop_streams(&self) {
        self.lock().subscribers.clear();
    }

    /// Offline: every request gets 503 and open streams end.
    pub fn set_offline(&self, offline: bool) {
        let mut inner = self.lock();
        inner.offline = offline;
        if offline {
            inner.subscribers.clear();
        }
    }

    /// A new active signing key; the old ones stay published.
    pub fn rotate(&self) {
        let mut inner = self.lock();
        let n = inner.keys.len();
        inner.keys.push(new_key(n));
        inner.active = n;
    }

    /// Removes every key but the active one from the JWKS.
    pub fn withdraw_old_keys(&self) {
        let mut inner = self.lock();
        let active = inner.active;
        for (i, key) in inner.keys.iter_mut().enumerate() {
            key.published = i == active;
        }
    }

    /// The issuer's sequence starts over at `seq` in a new sequence space
    /// (its history replaced, as by a restore): streams end, replay
    /// history is gone; the statuses stay.
    pub fn restart_sequence(&self, seq: u64, epoch: &str) {
        let mut inner = self.lock();
        inner.seq = seq;
        inner.list_seq = seq;
        inner.epoch = epoch.to_owned();
        inner.history.clear();
        inner.subscribers.clear();
    }

    /// A cache that hands back the list served `age` copies ago (`None`:
    /// the issuer's own answer).
    pub fn serve_stale_lists(&self, age: Option<usize>) {
        self.lock().stale_lists = age;
    }

    pub fn serve_stale_index(&self, age: Option<usize>) {
        self.lock().stale_index = age;
    }

    pub fn serve_stale_jwks(&self, age: Option<usize>) {
        self.lock().stale_jwks = age;
    }

    /// Refuses new stream subscribers (503), as when every slot is held.
    pub fn refuse_streams(&self, refused: bool) {
        let mut inner = self.lock();
        inner.stream_refused = refused;
        if refused {
            inner.subscribers.clear();
        }
    }

    pub fn set_list_delay(&self, delay_ms: u64) {
        self.lock().list_delay_ms = delay_ms;
    }

    /// The `Cache-Control` request header of every list fetch so far.
    pub fn list_cache_control(&self) -> Vec<String> {
        self.lock().list_cache_control.clone()
    }

    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    pub fn set_ttl(&self, ttl: u64) {
        self.lock().ttl = ttl;
    }

    pub fn set_jwks_max_age(&self, max_age: u64) {
        self.lock().jwks_max_age = max_age;
    }

    pub fn jwks_fetches(&self) -> usize {
        self.lock().jwks_fetches
    }

    pub fn list_fetches(&self) -> usize {
        self.lock().list_fetches
    }

    pub fn stream_connects(&self) -> usize {
        self.lock().stream_connects
    }

    pub fn subscribers(&self) -> usize {
        let mut inner = self.lock();
        inner.subscribers.retain(|s| !s.is_closed());
        inner.subscribers.len()
    }

    /// Sends a keep-alive comment to every stream (dropping closed ones).
    pub fn keep_alive(&self) {
        broadcast(&mut self.lock(), ": keep-alive\n\n");
    }

    pub fn usage(&self) -> Vec<String> {
        self.lock().usage.clone()
    }

    pub fn usage_auth(&self) -> Vec<String> {
        self.lock().usage_auth.clone()
    }

    /// The public JWK of the active key, for comparisons.
    pub fn active_verification_key(&self) -> VerificationKey {
        let (kid, public) = self.active_key();
        VerificationKey::from_public_key(kid, SigningAlgorithm::EdDSA, &public).unwrap()
    }
}

fn broadcast(inner: &mut Inner, text: &str) {
    inner
        .subscribers
        .retain(|s| s.try_send(Ok(Bytes::from(text.to_owned()))).is_ok());
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "offline").into_response()
}

async fn metadata(State(ctx): State<Ctx>) -> Response {
    if ctx.inner.lock().unwrap().offline {
        return unavailable();
    }
    let u = &ctx.url;
    axum::Json(json!({
        "issuer": u,
        "jwks_uri": format!("{u}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{u}/v1/introspect"),
        "usage_endpoint": format!("{u}/v1/usage"),
        "status_list_endpoint": format!("{u}/v1/status"),
        "status_list_stream_endpoint": format!("{u}/v1/status/stream"),
    }))
    .into_response()
}

async fn jwks(State(ctx): State<Ctx>) -> Response {
    let mut inner = ctx.inner.lock().unwrap();
    if inner.offline {
        return unavailable();
    }
    inner.jwks_fetches += 1;
    if let Some(age) = inner.stale_jwks
        && let Some(old) = stale_copy(&inner.served_jwks, age)
    {
        let old = old.clone();
        return (
            [(header::CACHE_CONTROL, "public, max-age=300".to_owned())],
            axum::Json(old),
        )
            .into_response();
    }
    let keys: Vec<Value> = inner
        .keys
        .iter()
        .filter(|k| k.published)
        .map(|k| {
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.pair.public_key().as_ref()),
                   "kid": k.kid, "alg": "EdDSA", "use": "sig"})
        })
        .collect();
    let doc = json!({ "keys": keys });
    inner.served_jwks.push(doc.clone());
    (
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={}", inner.jwks_max_age),
        )],
        axum::Json(doc),
    )
        .into_response()
}

/// The document served `age` copies before the newest (the oldest kept if
/// fewer were served).
fn stale_copy<T>(served: &[T], age: usize) -> Option<&T> {
    let newest = served.len().checked_sub(1)?;
    served.get(newest.saturating_sub(age))
}

async fn index(State(ctx): State<Ctx>) -> Response {
    let mut inner = ctx.inner.lock().unwrap();
    if inner.offline {
        return unavailable();
    }
    if let Some(age) = inner.stale_index
        && let Some(old) = stale_copy(&inner.served_indexes, age)
    {
        return axum::Json(old.clone()).into_response();
    }
    let doc = json!({"lists": [ctx.list_uri()], "bits": 2, "seq": inner.seq,
                     "list_seqs": [inner.list_seq], "epoch": inner.epoch});
    inner.served_indexes.push(doc.clone());
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(doc)).into_response()
}

async fn list(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let delay = ctx.inner.lock().unwrap().list_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let mut inner = ctx.inner.lock().unwrap();
    if inner.offline {
        return unavailable();
    }
    inner.list_fetches += 1;
    let cache_control = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    inner.list_cache_control.push(cache_control);
    if let Some(age) = inner.stale_lists
        && let Some(old) = stale_copy(&inner.served_lists, age)
    {
        // A shared cache: no revalidation, whatever the request asked.
        return (
            [
                (
                    header::CONTENT_TYPE,
                    "application/statuslist+jwt".to_owned(),
                ),
                (
                    header::CACHE_CONTROL,
                    format!("public, max-age={}", inner.ttl),
                ),
            ],
            old.clone(),
        )
            .into_response();
    }
    let payload = StatusListPayload::from_list(&inner.list);
    let version = format!("{}/{}/{}", payload.lst, inner.list_seq, inner.epoch);
    let digest = ring::digest::digest(&ring::digest::SHA256, version.as_bytes());
    let etag = format!("\"{}\"", b64(&digest.as_ref()[..12]));
    let cache = format!("public, max-age={}", inner.ttl);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    let t = now();
    let claims = json!({"sub": ctx.list_uri(), "iat": t, "exp": t + 86_400, "ttl": inner.ttl,
                        "seq": inner.list_seq, "epoch": inner.epoch,
                        "status_list": {"bits": payload.bits, "lst": payload.lst}});
    let jwt = sign(&inner.keys[inner.active], "statuslist+jwt", &claims);
    inner.served_lists.push(jwt.clone());
    (
        [
            (
                header::CONTENT_TYPE,
                "application/statuslist+jwt".to_owned(),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        jwt,
    )
        .into_response()
}

async fn stream(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let mut inner = ctx.inner.lock().unwrap();
    if inner.offline {
        return unavailable();
    }
    if inner.stream_refused {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many subscribers").into_response();
    }
    inner.stream_connects += 1;
    let (tx, rx) = mpsc::channel::<Chunk>(1024);
    let seq = inner.seq;
    let mut first = format!(
        "event: ready\ndata: {}\n\n",
        json!({"seq": seq, "epoch": inner.epoch})
    );
    let last: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(last) = last
        && last < seq
    {
        let replay: Vec<&(u64, String)> = inner.history.iter().filter(|(s, _)| *s > last).collect();
        let complete = replay.first().is_some_and(|(s, _)| *s == last + 1)
            && replay.len() as u64 == seq - last;
        if complete {
            for (_, text) in replay {
                first.push_str(text);
            }
        } else {
            first.push_str(&format!(
                "event: reset\ndata: {}\n\n",
                json!({"seq": seq, "reason": "history lost"})
            ));
        }
    }
    tx.try_send(Ok(Bytes::from(first))).unwrap();
    inner.subscribers.push(tx);
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn usage(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let mut inner = ctx.inner.lock().unwrap();
    if inner.offline {
        return unavailable();
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    inner.usage_auth.push(auth);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    for jti in v["jtis"].as_array().cloned().unwrap_or_default() {
        if let Some(j) = jti.as_str() {
            inner.usage.push(j.to_owned());
        }
    }
    StatusCode::ACCEPTED.into_response()
}
