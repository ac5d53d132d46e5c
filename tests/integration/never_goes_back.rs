//! The two ways a verifier used to accept a revoked key again, end to end
//! against the real issuer on loopback (contract §8, "it never goes back"):
//!
//! 1. A shared cache between the issuer and the verifier hands back the
//!    status list from before a revocation at the verifier's next poll. The
//!    cache here behaves as nginx's `proxy_cache` does by default: it keeps
//!    what `Cache-Control: public, max-age` allows, keyed by path and
//!    `Accept`, and ignores the request's own `Cache-Control`.
//! 2. The push stream is unavailable when the verifier starts (every
//!    `max_stream_subscribers` slot held by an anonymous client), the key is
//!    revoked meanwhile, and the stream connects later.
//!
//! In both the key must stay (or become) refused within seconds, where it
//! used to be accepted for up to the list's `ttl` or half the staleness
//! bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey::clock::SystemClock;
use latchkey::config::Config;
use latchkey_verifier::{Verifier, VerifyError};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::eventually;

/// A cached response and when it goes stale.
#[derive(Clone)]
struct Cached {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    expires: Instant,
}

struct CacheState {
    target: String,
    client: reqwest::Client,
    cache: Mutex<HashMap<(String, String), Cached>>,
    /// Status-list answers served from the cache.
    list_hits: AtomicUsize,
}

/// The `max-age` of a response a shared cache may keep, if any.
fn storable_for(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    let directives: Vec<String> = value
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    if directives
        .iter()
        .any(|d| d == "no-store" || d == "private" || d == "no-cache")
    {
        return None;
    }
    directives
        .iter()
        .find_map(|d| d.strip_prefix("max-age=")?.parse().ok())
        .map(Duration::from_secs)
}

async fn cache_proxy(State(state): State<Arc<CacheState>>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let is_stream = path.starts_with("/v1/status/stream");
    let key = (path.clone(), accept.clone());
    if request.method() == Method::GET && !is_stream {
        let hit = state.cache.lock().unwrap().get(&key).cloned();
        if let Some(hit) = hit.filter(|c| c.expires > Instant::now()) {
            if path.starts_with("/v1/status/") {
                state.list_hits.fetch_add(1, Ordering::SeqCst);
            }
            let mut response = (hit.status, hit.body).into_response();
            *response.headers_mut() = hit.headers;
            return response;
        }
    }
    let method = request.method().clone();
    let mut forward = state
        .client
        .request(method.clone(), format!("{}{path}", state.target));
    for (name, value) in request.headers() {
        // The cache answers conditionals and freshness itself.
        if name != header::HOST
            && name != header::IF_NONE_MATCH
            && name != header::CACHE_CONTROL
            && name != header::PRAGMA
        {
            forward = forward.header(name, value);
        }
    }
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let upstream = match forward.body(body).send().await {
        Ok(upstream) => upstream,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            headers.append(name, value.clone());
        }
    }
    if is_stream {
        let mut response = Body::from_stream(upstream.bytes_stream()).into_response();
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return response;
    }
    let bytes = upstream.bytes().await.unwrap_or_default();
    if method == Method::GET
        && status == StatusCode::OK
        && let Some(max_age) = storable_for(&headers)
    {
        state.cache.lock().unwrap().insert(
            key,
            Cached {
                status,
                headers: headers.clone(),
                body: bytes.clone(),
                expires: Instant::now() + max_age,
            },
        );
    }
    let mut response = (status, bytes).into_response();
    *response.headers_mut() = headers;
    response
}

/// The real issuer on a loopback port, optionally reached through a
/// caching proxy (then the proxy's URL is the issuer URL).
struct Issuer {
    _dir: TempDir,
    url: String,
    direct: String,
    admin: String,
    http: reqwest::Client,
    cache: Option<Arc<CacheState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Issuer {
    async fn start(cached: bool, adjust: impl FnOnce(&mut Config)) -> Issuer {
        latchkey::cli::client::install_tls_provider();
        let dir = tempfile::tempdir().unwrap();
        let server_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server_listener.local_addr().unwrap();
        let direct = format!("http://{server_addr}");
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = if cached {
            format!("http://{}", proxy_listener.local_addr().unwrap())
        } else {
            direct.clone()
        };
        let mut config = Config {
            listen: server_addr,
            issuer: url.clone(),
            data_dir: dir.path().join("data"),
            keys_dir: dir.path().join("keys"),
            ..Config::default()
        };
        adjust(&mut config);
        let opened = latchkey::service::open(config, Arc::new(SystemClock))
            .await
            .unwrap();
        let admin = opened.bootstrap.expect("a fresh data directory").token;
        let app = latchkey::http::router(opened.state.clone());
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(server_listener, app).await;
        })];
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let cache = cached.then(|| {
            Arc::new(CacheState {
                target: direct.clone(),
                client: reqwest::Client::new(),
                cache: Mutex::new(HashMap::new()),
                list_hits: AtomicUsize::new(0),
            })
        });
        if let Some(cache) = &cache {
            let app = Router::new()
                .fallback(cache_proxy)
                .with_state(cache.clone());
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(proxy_listener, app).await;
            }));
        }
        Issuer {
            _dir: dir,
            url,
            direct,
            admin,
            http,
            cache,
            tasks,
        }
    }

    async fn create(&self, name: &str) -> (String, String) {
        let response = self
            .http
            .post(format!("{}/v1/keys", self.direct))
            .bearer_auth(&self.admin)
            .json(&json!({"name": name, "roles": ["global_viewer"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        (
            body["key"]["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn revoke(&self, id: &str) {
        let response = self
            .http
            .delete(format!("{}/v1/keys/{id}", self.direct))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_older_status_list_never_resurrects_a_revoked_key() {
    // Lists may be cached for a minute; the verifier polls every second.
    let issuer = Issuer::start(true, |c| c.status_list_ttl_secs = 60).await;
    let (id, token) = issuer.create("behind-a-cache").await;
    let verifier = Verifier::builder(&issuer.url, "latchkey")
        .staleness(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    assert!(verifier.verify(&token).is_ok());

    issuer.revoke(&id).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            verifier.verify(&token) == Err(VerifyError::Revoked)
        })
        .await,
        "the stream should refuse the key at once"
    );
    let cache = issuer.cache.as_ref().unwrap();
    let hits_before = cache.list_hits.load(Ordering::SeqCst);
    // Several polls, each handed the list from before the revocation. The
    // key stays refused: as revoked while the stream's data is fresh, then
    // (no event in the 2 s bound, keep-alives come every 15 s, and every
    // poll gets the stale copy) as unavailable, failing closed.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let result = verifier.verify(&token);
        assert!(
            matches!(
                result,
                Err(VerifyError::Revoked | VerifyError::StatusUnavailable)
            ),
            "a cached older list brought a revoked key back ({result:?}): {:?}",
            verifier.sync_status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cache.list_hits.load(Ordering::SeqCst) > hits_before,
        "the cache never served the old list, so this test proved nothing"
    );
    let status = verifier.sync_status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("stale copy")),
        "the refused copy is reported: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_connects_late_is_reconciled_before_it_vouches_for_the_lists() {
    let issuer = Issuer::start(false, |c| c.max_stream_subscribers = 1).await;
    let (id, token) = issuer.create("late-stream").await;
    // An anonymous client holds the only stream slot.
    let holder = reqwest::Client::new()
        .get(format!("{}/v1/status/stream", issuer.direct))
        .header(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(holder.status(), StatusCode::OK);
    // Default staleness (5 minutes): only reconciliation can refuse the key soon.
    let verifier = Verifier::builder(&issuer.url, "latchkey")
        .build()
        .await
        .unwrap();
    assert!(!verifier.sync_status().stream_connected);
    assert!(verifier.verify(&token).is_ok());

    issuer.revoke(&id).await;
    drop(holder);
    assert!(
        eventually(Duration::from_secs(15), || async {
            verifier.sync_status().stream_connected
        })
        .await,
        "the stream should connect once the slot is free"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            verifier.verify(&token) == Err(VerifyError::Revoked)
        })
        .await,
        "the key revoked while the stream was unavailable still verifies: {:?}",
        verifier.sync_status()
    );
    assert!(!verifier.sync_status().stale);
}
