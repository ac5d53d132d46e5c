//! [`VerifierBuilder`]: a verifier's options, the first sync (metadata,
//! JWKS, status lists) and starting the background tasks.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use super::fetch::{FetchError, Http, Metadata};
use super::store::{Clock, StatusStore};
use super::verifier::Handle;
use super::*;
use crate::cache::TokenCache;
use crate::usage::{ReporterToken, UsageReporter};
use crate::verify::{DEFAULT_LEEWAY_SECS, Expectations};

#[derive(Clone)]
pub struct VerifierBuilder {
    pub(super) issuer: String,
    pub(super) audience: String,
    pub(super) staleness: Duration,
    pub(super) fail_open: bool,
    pub(super) jwks_cooldown: Duration,
    pub(super) leeway: Duration,
    pub(super) cache_capacity: usize,
    pub(super) usage_token: Option<ReporterToken>,
    pub(super) usage_interval: Duration,
    pub(super) stream: bool,
    pub(super) http: Option<reqwest::Client>,
    pub(super) request_timeout: Duration,
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
