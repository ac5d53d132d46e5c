//! The [`Verifier`]: everything a downstream service needs to check latchkey
//! access keys offline (contract §8).
//!
//! Built from the issuer URL and an audience, it fetches the issuer's RFC
//! 8414 metadata, its JWKS and its status lists, and keeps them fresh in
//! background tasks:
//!
//! - **JWKS**: re-fetched when its `Cache-Control: max-age` runs out, and at
//!   once when a token names an unknown `kid` — at most once per
//!   [`jwks_cooldown`](VerifierBuilder::jwks_cooldown), so unknown `kid`s
//!   cannot make the verifier hammer the issuer.
//! - **Status lists**: re-fetched every `ttl` (bounded by half the
//!   [staleness](VerifierBuilder::staleness)), and kept current between
//!   fetches by the push stream (`/v1/status/stream`): each change is
//!   applied as it arrives; a gap in the sequence, a `reset`, a reconnect or
//!   a stream that connects after start-up makes every list be fetched
//!   again, bypassing caches, before the stream vouches for them.
//! - **It never goes back**: a fetched list older than the changes already
//!   applied (its `seq` claim below what the stream or an earlier list
//!   said, or from another epoch) is a stale copy from a cache and is not
//!   installed (see `store`).
//! - Network failures keep the last good data and are retried with
//!   exponential backoff.
//!
//! [`Verifier::verify`] is synchronous and does no I/O: signature (with the
//! algorithm of the JWK the `kid` names, never the header's), `typ`
//! `at+jwt`, `iss`, `aud`, `exp`/`nbf` with a leeway of
//! [`DEFAULT_LEEWAY_SECS`] seconds by default,
//! and the token's entry in its status list. A token that verified before is
//! found in a bounded cache keyed by the whole token and skips the
//! signature and JSON work; its expiry, its signing key's presence in the
//! JWKS and its status are still checked on every call.
//!
//! **Staleness.** Status data is current as of its last fetch or the last
//! time the in-sync stream was heard from (keep-alives count). Once that is
//! longer ago than the staleness bound, verification fails closed with
//! [`VerifyError::StatusUnavailable`] (and a rate-limited warning in the
//! log naming the age and the last sync error), unless the verifier was
//! built with [`fail_open(true)`](VerifierBuilder::fail_open).
//!
//! The background tasks stop when the last clone of the `Verifier` is
//! dropped.

pub(crate) mod fetch;
mod sse;
pub(crate) mod store;
mod tasks;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use tokio::sync::{Notify, watch};

use crate::cache::TokenCache;
use crate::claims::{AccessClaims, StatusListRef, TokenStatus};
use crate::error::VerifyError;
use crate::jwk::KeySet;
use crate::policy::VerifiedKey;
use crate::usage::{ReporterToken, UsageReporter};
use crate::verify::{
    DEFAULT_LEEWAY_SECS, Expectations, MAX_TOKEN_BYTES, check_status, verify_signed,
};
use fetch::{FetchError, Http, Metadata};
use store::{Clock, ListSlot, StatusStore};

/// Default [`VerifierBuilder::staleness`]: five minutes.
pub const DEFAULT_STALENESS: Duration = Duration::from_secs(300);

/// Default [`VerifierBuilder::jwks_cooldown`]: thirty seconds.
pub const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(30);

/// Default [`VerifierBuilder::cache_capacity`].
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Default [`VerifierBuilder::usage_interval`]: one minute (the issuer
/// records `last_used_at` at most once a minute per key anyway).
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(60);

/// Default [`VerifierBuilder::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a [`Verifier`] could not be built, or an on-demand sync failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The issuer URL is not an absolute `https://` (or `http://`) URL.
    #[error("the issuer URL {url:?} is not usable: {reason}")]
    InvalidIssuer { url: String, reason: String },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// A document could not be fetched.
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    /// The metadata document is not this issuer's, or lacks a member.
    #[error("the issuer metadata at {url} is not usable: {reason}")]
    Metadata { url: String, reason: String },
    /// The JWKS has no usable key.
    #[error("the JWKS at {url} is not usable: {reason}")]
    Jwks { url: String, reason: String },
    /// A status list could not be fetched or verified.
    #[error("the status list at {url} is not usable: {reason}")]
    StatusList { url: String, reason: String },
    /// A usage report was not accepted.
    #[error("the usage report to {url} failed: {reason}")]
    Usage { url: String, reason: String },
    /// [`Verifier::flush_usage`] on a verifier built without
    /// [`usage_reporting`](VerifierBuilder::usage_reporting).
    #[error("usage reporting is not configured")]
    UsageNotConfigured,
}

/// A snapshot of the verifier's sync state, for health checks and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStatus {
    /// Signing keys known.
    pub keys: usize,
    /// Status lists held.
    pub status_lists: usize,
    /// How old the stalest list's data is (`None` before any fetch).
    pub status_age: Option<Duration>,
    /// Whether that age is past the staleness bound (verification fails
    /// closed unless built with `fail_open(true)`).
    pub stale: bool,
    /// Whether the push stream is connected.
    pub stream_connected: bool,
    /// The last sync error, if the last attempt of some fetch failed.
    pub last_error: Option<String>,
    /// Tokens in the verified-token cache.
    pub cached_tokens: usize,
    /// Usage reports waiting to be sent.
    pub pending_usage: usize,
}

/// Configures and builds a [`Verifier`]; from [`Verifier::builder`].
#[derive(Clone)]
pub struct VerifierBuilder {
    issuer: String,
    audience: String,
    staleness: Duration,
    fail_open: bool,
    jwks_cooldown: Duration,
    leeway: Duration,
    cache_capacity: usize,
    usage_token: Option<ReporterToken>,
    usage_interval: Duration,
    stream: bool,
    http: Option<reqwest::Client>,
    request_timeout: Duration,
}

impl std::fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("staleness", &self.staleness)
            .field("fail_open", &self.fail_open)
            .field("jwks_cooldown", &self.jwks_cooldown)
            .field("leeway", &self.leeway)
            .field("cache_capacity", &self.cache_capacity)
            .field("usage_reporting", &self.usage_token.is_some())
            .field("usage_interval", &self.usage_interval)
            .field("stream", &self.stream)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// How old status data may get before verification fails closed
    /// (default [`DEFAULT_STALENESS`]). Status lists are re-fetched at least
    /// every half of this, so with a reachable issuer data never gets near
    /// it.
    pub fn staleness(mut self, staleness: Duration) -> Self {
        self.staleness = staleness;
        self
    }

    /// Accept tokens whose status cannot be checked (stale data, or a list
    /// not fetched yet) instead of refusing them. Off by default: only turn
    /// it on if availability matters more than honouring revocations.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// The least time between two JWKS fetches caused by unknown `kid`s
    /// (default [`DEFAULT_JWKS_COOLDOWN`]).
    pub fn jwks_cooldown(mut self, cooldown: Duration) -> Self {
        self.jwks_cooldown = cooldown;
        self
    }

    /// Clock skew tolerated on `exp` and `nbf` (default
    /// [`DEFAULT_LEEWAY_SECS`] seconds; whole
    /// seconds count).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How many verified tokens to remember (default
    /// [`DEFAULT_CACHE_CAPACITY`]; 0 turns the cache off).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Send usage reports to the issuer's `/v1/usage`, authenticated with
    /// this access key (the verifying service's own key; any role will do).
    pub fn usage_reporting(mut self, access_key: impl Into<String>) -> Self {
        self.usage_token = Some(ReporterToken(access_key.into()));
        self
    }

    /// How often usage reports are sent, and the least time between two
    /// reports of one token (default [`DEFAULT_USAGE_INTERVAL`]).
    pub fn usage_interval(mut self, interval: Duration) -> Self {
        self.usage_interval = interval;
        self
    }

    /// Subscribe to the issuer's push stream (default on). Without it,
    /// revocations are learnt only by polling every `ttl`.
    pub fn stream(mut self, subscribe: bool) -> Self {
        self.stream = subscribe;
        self
    }

    /// The HTTP client to fetch with (default: a rustls client using ring).
    /// Give it no total timeout: the push stream is one long response. Each
    /// other request gets [`request_timeout`](Self::request_timeout).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Timeout of each fetch (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Fetches the metadata, the JWKS and every status list, subscribes to
    /// the push stream, and starts the background refresh. Must be called
    /// within a tokio runtime, which runs the background tasks.
    pub async fn build(self) -> Result<Verifier, SyncError> {
        // ring is the one crypto library; an error means a provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let issuer_arg = self.issuer.trim().to_owned();
        let metadata_urls =
            fetch::metadata_urls(&issuer_arg).map_err(|reason| SyncError::InvalidIssuer {
                url: issuer_arg.clone(),
                reason: reason.to_owned(),
            })?;
        let client = match self.http {
            Some(client) => client,
            None => reqwest::Client::builder()
                .connect_timeout(self.request_timeout)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| SyncError::Client(fetch::describe(e)))?,
        };
        let http = Http {
            client,
            timeout: self.request_timeout,
        };

        let (metadata_url, metadata) = fetch_metadata(&http, &metadata_urls).await?;
        if metadata.issuer.trim_end_matches('/') != issuer_arg.trim_end_matches('/') {
            return Err(SyncError::Metadata {
                url: metadata_url,
                reason: format!(
                    "it names the issuer {:?}, not {issuer_arg:?} (RFC 8414 §3.3)",
                    metadata.issuer
                ),
            });
        }
        let issuer = metadata.issuer.clone();
        let base = issuer.trim_end_matches('/');
        let endpoints = Endpoints {
            jwks: metadata.jwks_uri.clone(),
            status_index: metadata
                .status_list_endpoint
                .clone()
                .unwrap_or_else(|| format!("{base}/v1/status")),
            stream: metadata
                .status_list_stream_endpoint
                .clone()
                .filter(|_| self.stream),
            usage: metadata
                .usage_endpoint
                .clone()
                .unwrap_or_else(|| format!("{base}/v1/usage")),
            introspection: metadata.introspection_endpoint.clone(),
        };

        let jwks = tasks::fetch_jwks(&http, &endpoints.jwks, None, false)
            .await
            .map_err(|reason| SyncError::Jwks {
                url: endpoints.jwks.clone(),
                reason,
            })?;
        let tasks::JwksFetch::Fresh {
            keys,
            etag,
            max_age,
        } = jwks
        else {
            return Err(SyncError::Jwks {
                url: endpoints.jwks.clone(),
                reason: "unexpected 304".into(),
            });
        };

        let clock = Clock::new();
        let usage = self
            .usage_token
            .map(|token| UsageReporter::new(endpoints.usage.clone(), token, self.usage_interval));
        let mut expect = Expectations::new(issuer, self.audience);
        expect.leeway_secs = i64::try_from(self.leeway.as_secs()).unwrap_or(DEFAULT_LEEWAY_SECS);
        let (jwks_generation, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            expect,
            endpoints,
            http,
            keys: ArcSwap::from_pointee(keys),
            store: StatusStore::new(clock),
            cache: TokenCache::new(self.cache_capacity),
            staleness_ms: u64::try_from(self.staleness.as_millis()).unwrap_or(u64::MAX),
            staleness: self.staleness,
            fail_open: self.fail_open,
            jwks_cooldown: self.jwks_cooldown,
            jwks_wake: Notify::new(),
            jwks_last_attempt_ms: AtomicU64::new(clock.now_ms()),
            jwks_generation,
            lists_wake: Notify::new(),
            usage,
            last_error: Mutex::new(None),
            last_stale_warning_ms: AtomicU64::new(0),
        });
        // From here on, dropping `handle` (an early return) stops the tasks.
        let mut handle = Handle {
            shared: Arc::clone(&shared),
            tasks: Vec::new(),
        };
        handle.spawn(tasks::jwks_task(Arc::clone(&shared), etag, max_age));

        // Subscribe first, then fetch: changes that arrive while the lists
        // are in flight are replayed onto them (see `store`).
        if let Some(url) = shared.endpoints.stream.clone() {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            handle.spawn(tasks::stream_task(Arc::clone(&shared), url, ready_tx));
            // Bounded: a stream that does not come up is retried in the
            // background, and polling covers the meantime.
            let _ = tokio::time::timeout(shared.http.timeout, ready_rx).await;
        }
        let mut lists = tasks::ListSync::default();
        // From here on a stream that becomes ready finds lists fetched
        // without it, and must be reconciled with them before it vouches
        // for them (contract §8).
        shared.store.begin_initial_sync();
        let generation = shared.store.resync_generation();
        let ttl = lists
            .full_sync(&shared)
            .await
            .map_err(|(url, reason)| SyncError::StatusList { url, reason })?;
        shared.store.resync_completed(generation);
        handle.spawn(tasks::lists_task(Arc::clone(&shared), lists, ttl));
        if shared.usage.is_some() {
            handle.spawn(tasks::usage_task(Arc::clone(&shared)));
        }
        Ok(Verifier {
            inner: Arc::new(handle),
        })
    }
}

async fn fetch_metadata(http: &Http, urls: &[String]) -> Result<(String, Metadata), SyncError> {
    let mut last = None;
    for url in urls {
        match http.get_json::<Metadata>(url, false).await {
            Ok((metadata, _)) => return Ok((url.clone(), metadata)),
            Err(FetchError::Status(404)) => last = Some((url.clone(), FetchError::Status(404))),
            Err(e) => {
                return Err(SyncError::Fetch {
                    url: url.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }
    let (url, e) = last.unwrap_or_else(|| (String::new(), FetchError::Status(404)));
    Err(SyncError::Fetch {
        url,
        reason: e.to_string(),
    })
}

/// Where the issuer publishes what the verifier fetches.
#[derive(Debug)]
pub(crate) struct Endpoints {
    pub(crate) jwks: String,
    pub(crate) status_index: String,
    pub(crate) stream: Option<String>,
    pub(crate) usage: String,
    pub(crate) introspection: Option<String>,
}

/// A token whose signature and claims verified once.
#[derive(Debug)]
struct CachedToken {
    key: VerifiedKey,
    /// The `kid` it was signed with: it must still be published.
    kid: Box<str>,
    nbf: i64,
    /// Its status list, once held.
    list: OnceLock<Arc<ListSlot>>,
    /// When its use was last noted for a usage report (ms; 0 = never).
    reported_ms: AtomicU64,
}

/// State shared by the handle and the background tasks.
pub(crate) struct Shared {
    pub(crate) expect: Expectations,
    pub(crate) endpoints: Endpoints,
    pub(crate) http: Http,
    pub(crate) keys: ArcSwap<KeySet>,
    pub(crate) store: StatusStore,
    cache: TokenCache<Arc<CachedToken>>,
    staleness_ms: u64,
    pub(crate) staleness: Duration,
    fail_open: bool,
    pub(crate) jwks_cooldown: Duration,
    /// Wakes the JWKS task (an unknown `kid`).
    pub(crate) jwks_wake: Notify,
    pub(crate) jwks_last_attempt_ms: AtomicU64,
    /// Bumped after every JWKS fetch attempt.
    pub(crate) jwks_generation: watch::Sender<u64>,
    /// Wakes the list task (a gap, a reset, an unknown list).
    pub(crate) lists_wake: Notify,
    pub(crate) usage: Option<UsageReporter>,
    last_error: Mutex<Option<String>>,
    last_stale_warning_ms: AtomicU64,
}

impl Shared {
    pub(crate) fn set_last_error(&self, error: Option<String>) {
        let mut guard = self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = error;
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Asks for a JWKS fetch now, and waits for it unless the cooldown
    /// forbids one yet (then it is scheduled for the cooldown's end).
    /// Returns whether a fetch completed.
    pub(crate) async fn refresh_keys(&self) -> bool {
        let now = self.store.clock().now_ms();
        let last = self.jwks_last_attempt_ms.load(Ordering::Acquire);
        let cooldown = u64::try_from(self.jwks_cooldown.as_millis()).unwrap_or(u64::MAX);
        self.jwks_wake.notify_one();
        if now < last.saturating_add(cooldown) {
            return false;
        }
        let mut rx = self.jwks_generation.subscribe();
        let seen = *rx.borrow_and_update();
        tokio::time::timeout(
            self.http.timeout + Duration::from_secs(1),
            rx.wait_for(|generation| *generation > seen),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// The status of entry `idx` of `slot` (or of the list at `uri` when
    /// `slot` is not known yet), failing closed on stale or missing data
    /// unless `fail_open`.
    fn current_status(
        &self,
        slot: Option<&ListSlot>,
        idx: u64,
        now_ms: u64,
    ) -> Result<TokenStatus, VerifyError> {
        let Some(slot) = slot else {
            self.lists_wake.notify_one();
            self.warn_unavailable(now_ms, "the token's status list has not been fetched");
            return Err(VerifyError::StatusUnavailable);
        };
        let Some(status) = slot.get(idx) else {
            self.lists_wake.notify_one();
            self.warn_unavailable(
                now_ms,
                "the token's status index is past the end of its list",
            );
            return Err(VerifyError::StatusUnavailable);
        };
        let age = self.store.age_ms(slot, now_ms);
        if age > self.staleness_ms && !self.fail_open {
            self.warn_unavailable(now_ms, "the status data is older than the staleness bound");
            return Err(VerifyError::StatusUnavailable);
        }
        Ok(status)
    }

    /// Logs why verification fails closed, at most every 10 seconds.
    fn warn_unavailable(&self, now_ms: u64, why: &str) {
        let last = self.last_stale_warning_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < 10_000 {
            return;
        }
        if self
            .last_stale_warning_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        tracing::warn!(
            why,
            status_age = ?self.store.oldest_age(),
            staleness = ?self.staleness,
            stream_connected = self.store.stream_connected(),
            last_sync_error = ?self.last_error(),
            "latchkey verifier: failing closed, token status cannot be checked"
        );
    }
}

/// Owns the background tasks: they are aborted when the last [`Verifier`]
/// clone drops this.
struct Handle {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Handle {
    fn spawn<F>(&mut self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(task).abort_handle());
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Verifies latchkey access keys offline against one issuer and audience,
/// with the issuer's keys and status lists kept fresh in the background.
///
/// Cheap to clone (an `Arc`); share one per issuer across the service. See
/// the [module documentation](self) for what is checked and kept fresh.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.shared().expect.issuer)
            .field("audience", &self.shared().expect.audience)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The `kid` of a token whose signature has already been verified.
fn verified_kid(token: &str) -> Option<Box<str>> {
    #[derive(Deserialize)]
    struct Header<'a> {
        #[serde(borrow)]
        kid: std::borrow::Cow<'a, str>,
    }
    let header_b64 = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header_b64).ok()?;
    let header: Header<'_> = serde_json::from_slice(&bytes).ok()?;
    Some(header.kid.into())
}

impl Verifier {
    /// Starts configuring a verifier for tokens from `issuer` (the URL in
    /// the tokens' `iss` and the issuer's metadata) meant for `audience`.
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            audience: audience.into(),
            staleness: DEFAULT_STALENESS,
            fail_open: false,
            jwks_cooldown: DEFAULT_JWKS_COOLDOWN,
            leeway: Duration::from_secs(DEFAULT_LEEWAY_SECS.unsigned_abs()),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            usage_token: None,
            usage_interval: DEFAULT_USAGE_INTERVAL,
            stream: true,
            http: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Verifies an access key: signature, `typ`, `iss`, `aud`,
    /// `exp`/`nbf` (with the leeway), and that its status is valid.
    /// Synchronous, no I/O.
    ///
    /// An unknown `kid` yields [`VerifyError::UnknownKey`] and wakes the JWKS
    /// refresh (within the cooldown); [`verify_or_refresh`](Self::verify_or_refresh)
    /// waits for that refresh instead. Stale status data yields
    /// [`VerifyError::StatusUnavailable`] unless built with `fail_open(true)`.
    pub fn verify(&self, token: &str) -> Result<VerifiedKey, VerifyError> {
        let shared = self.shared();
        let now = unix_now();
        let entry = self.verified_entry(token, now)?;
        let leeway = shared.expect.leeway_secs.max(0);
        if entry.key.expires_at <= now.saturating_sub(leeway) {
            return Err(VerifyError::Expired);
        }
        if entry.nbf > now.saturating_add(leeway) {
            return Err(VerifyError::NotYetValid);
        }
        if shared.keys.load().get(&entry.kid).is_none() {
            // The signing key was withdrawn from the JWKS since.
            return Err(VerifyError::UnknownKey);
        }
        let now_ms = shared.store.clock().now_ms();
        let slot = match entry.list.get() {
            Some(slot) => Some(slot),
            None => shared
                .store
                .lookup(&entry.key.status.uri)
                .map(|slot| entry.list.get_or_init(|| slot)),
        };
        match shared.current_status(slot.map(|s| &**s), entry.key.status.idx, now_ms) {
            Ok(status) => check_status(status)?,
            Err(VerifyError::StatusUnavailable) if shared.fail_open => {}
            Err(e) => return Err(e),
        }
        if let Some(usage) = &shared.usage {
            let interval = u64::try_from(usage.interval.as_millis()).unwrap_or(u64::MAX);
            let last = entry.reported_ms.load(Ordering::Relaxed);
            if (last == 0 || now_ms.saturating_sub(last) >= interval)
                && entry
                    .reported_ms
                    .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                usage.note(&entry.key.jti);
            }
        }
        Ok(entry.key.clone())
    }

    /// The cached verification of `token`, or a full one (then cached).
    fn verified_entry(&self, token: &str, now: i64) -> Result<Arc<CachedToken>, VerifyError> {
        let shared = self.shared();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::TooLarge);
        }
        if let Some(entry) = shared.cache.get(token) {
            return Ok(entry);
        }
        let claims = self.verify_claims_at(token, now)?;
        let kid = verified_kid(token).ok_or(VerifyError::Malformed("header"))?;
        let nbf = claims.nbf;
        let entry = Arc::new(CachedToken {
            key: VerifiedKey::from(claims),
            kid,
            nbf,
            list: OnceLock::new(),
            reported_ms: AtomicU64::new(0),
        });
        shared.cache.insert(token, Arc::clone(&entry));
        Ok(entry)
    }

    fn verify_claims_at(&self, token: &str, now: i64) -> Result<AccessClaims, VerifyError> {
        let shared = self.shared();
        let keys = shared.keys.load();
        let result = verify_signed(token, &keys, &shared.expect, now);
        if result == Err(VerifyError::UnknownKey) {
            shared.jwks_wake.notify_one();
        }
        result
    }

    /// Like [`verify`](Self::verify), but when the token names a signing
    /// key not known yet, fetches the JWKS (unless a fetch happened within
    /// the cooldown) and tries once more. For async callers such as the
    /// axum extractor, so a key rotated in with no lead time is accepted on
    /// its first use.
    pub async fn verify_or_refresh(&self, token: &str) -> Result<VerifiedKey, VerifyError> {
        match self.verify(token) {
            Err(VerifyError::UnknownKey) if self.shared().refresh_keys().await => {
                self.verify(token)
            }
            other => other,
        }
    }

    /// Checks a token's signature and claims (everything but its status)
    /// and returns all its claims, without using or filling the cache.
    pub fn verify_claims(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        self.verify_claims_at(token, unix_now())
    }

    /// The status of a token's status-list entry, from the data held now.
    /// [`VerifyError::StatusUnavailable`] when the list is not held, the
    /// index is out of range, or the data is past the staleness bound
    /// (unless built with `fail_open(true)`).
    pub fn status(&self, status: &StatusListRef) -> Result<TokenStatus, VerifyError> {
        let shared = self.shared();
        let slot = shared.store.lookup(&status.uri);
        shared.current_status(slot.as_deref(), status.idx, shared.store.clock().now_ms())
    }

    /// Fetches the JWKS now, unless the cooldown forbids it; returns whether
    /// a fetch completed.
    pub async fn refresh_keys(&self) -> bool {
        self.shared().refresh_keys().await
    }

    /// Sends the pending usage reports now; returns how many `jti`s went.
    pub async fn flush_usage(&self) -> Result<usize, SyncError> {
        let shared = self.shared();
        let usage = shared.usage.as_ref().ok_or(SyncError::UsageNotConfigured)?;
        usage
            .flush(&shared.http)
            .await
            .map_err(|reason| SyncError::Usage {
                url: shared.endpoints.usage.clone(),
                reason,
            })
    }

    /// The issuer (`iss`) this verifier accepts.
    pub fn issuer(&self) -> &str {
        &self.shared().expect.issuer
    }

    /// The audience this verifier requires in `aud`.
    pub fn audience(&self) -> &str {
        &self.shared().expect.audience
    }

    /// The issuer's RFC 7662 introspection endpoint, for services that want
    /// an online check as well.
    pub fn introspection_endpoint(&self) -> Option<&str> {
        self.shared().endpoints.introspection.as_deref()
    }

    /// The expectations tokens are checked against.
    pub fn expectations(&self) -> &Expectations {
        &self.shared().expect
    }

    /// The current sync state.
    pub fn sync_status(&self) -> SyncStatus {
        let shared = self.shared();
        let status_age = shared.store.oldest_age();
        SyncStatus {
            keys: shared.keys.load().len(),
            status_lists: shared.store.list_count(),
            status_age,
            stale: status_age.is_none_or(|age| age > shared.staleness),
            stream_connected: shared.store.stream_connected(),
            last_error: shared.last_error(),
            cached_tokens: shared.cache.len(),
            pending_usage: shared.usage.as_ref().map_or(0, UsageReporter::pending_len),
        }
    }
}
