//! The background tasks that keep a verifier's data fresh: the JWKS, the
//! status lists (polled by `ttl` and on demand), the push stream, and usage
//! reports. Each runs until its verifier's last handle is dropped (which
//! aborts it); failures keep the last good data and back off.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{ACCEPT, CACHE_CONTROL};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::Shared;
use super::fetch::{
    Fetched, Http, MAX_DOCUMENT_BYTES, MAX_STATUS_LIST_BYTES, STATUS_LIST_ACCEPT, StatusIndex,
    StatusJwtError, describe, verify_status_list_jwt,
};
use super::sse::SseParser;
use super::store::{Installed, ListVersion};
use crate::claims::TokenStatus;
use crate::jwk::KeySet;
use crate::status_list::{STATUS_BITS, StatusList};

/// Re-fetch interval of documents that do not say (`Cache-Control`, `ttl`).
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// The longest a JWKS or list is kept without re-fetching, whatever its
/// `max-age` or `ttl` says.
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// The stream is dropped and reconnected after this long without a byte
/// (the issuer sends a keep-alive every ~15 s).
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// The least time between two list syncs asked for on demand.
const MIN_WAKE_INTERVAL: Duration = Duration::from_millis(250);

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Exponential backoff with a little jitter (so that many verifiers do not
/// retry in lockstep).
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()))
            .unwrap_or(0x9E37_79B9)
            | 1;
        Backoff {
            initial,
            max,
            next: initial,
            seed,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The next delay: the current step plus up to 25%, then double the step.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = base.mul_f64((self.seed % 1000) as f64 / 4000.0);
        (base + jitter).min(self.max)
    }
}

/// A JWKS fetch.
pub(crate) enum JwksFetch {
    Fresh {
        keys: KeySet,
        etag: Option<String>,
        max_age: Option<Duration>,
    },
    NotModified {
        max_age: Option<Duration>,
    },
}

pub(crate) async fn fetch_jwks(
    http: &Http,
    url: &str,
    etag: Option<&str>,
    fresh: bool,
) -> Result<JwksFetch, String> {
    match http
        .get(
            url,
            "application/jwk-set+json, application/json",
            etag,
            MAX_DOCUMENT_BYTES,
            fresh,
        )
        .await
        .map_err(|e| e.to_string())?
    {
        Fetched::NotModified { max_age } => Ok(JwksFetch::NotModified { max_age }),
        Fetched::Body {
            bytes,
            etag,
            max_age,
        } => {
            let keys = KeySet::from_jwks_json(&bytes).map_err(|e| e.to_string())?;
            if keys.is_empty() {
                return Err("it has no usable signing key".into());
            }
            Ok(JwksFetch::Fresh {
                keys,
                etag,
                max_age,
            })
        }
    }
}

fn refresh_after(max_age: Option<Duration>, floor: Duration) -> Duration {
    max_age
        .unwrap_or(DEFAULT_REFRESH)
        .clamp(floor.max(Duration::from_secs(1)), MAX_REFRESH)
}

/// Keeps the JWKS fresh: by its `max-age`, and on request (an unknown
/// `kid`) at most once per cooldown.
pub(crate) async fn jwks_task(
    shared: Arc<Shared>,
    mut etag: Option<String>,
    max_age: Option<Duration>,
) {
    let url = shared.endpoints.jwks.clone();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    let mut due = Instant::now() + refresh_after(max_age, shared.jwks_cooldown);
    let mut last_attempt = Instant::now();
    loop {
        // An unknown `kid` asks the issuer itself: a cache would not know
        // the new key either.
        let fresh = tokio::select! {
            () = sleep_until(due) => false,
            () = shared.jwks_wake.notified() => {
                let earliest = last_attempt + shared.jwks_cooldown;
                if Instant::now() < earliest {
                    // Within the cooldown: fetch when it ends.
                    due = due.min(earliest);
                    continue;
                }
                true
            }
        };
        last_attempt = Instant::now();
        shared
            .jwks_last_attempt_ms
            .store(shared.store.clock().now_ms(), Ordering::Release);
        match fetch_jwks(&shared.http, &url, etag.as_deref(), fresh).await {
            Ok(JwksFetch::Fresh {
                keys,
                etag: new_etag,
                max_age,
            }) => {
                tracing::debug!(keys = keys.len(), "latchkey verifier: JWKS refreshed");
                shared.keys.store(Arc::new(keys));
                etag = new_etag;
                backoff.reset();
                due = Instant::now() + refresh_after(max_age, shared.jwks_cooldown);
            }
            Ok(JwksFetch::NotModified { max_age }) => {
                backoff.reset();
                due = Instant::now() + refresh_after(max_age, shared.jwks_cooldown);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(url = %url, error = %e, retry_in = ?delay, "latchkey verifier: JWKS fetch failed; keeping the last good keys");
                shared.set_last_error(Some(format!("JWKS {url}: {e}")));
                due = Instant::now() + delay;
            }
        }
        shared
            .jwks_generation
            .send_modify(|generation| *generation += 1);
    }
}

/// A fetched list and the `ETag` it came with, for revalidation.
struct CachedList {
    etag: String,
    list: StatusList,
    ttl: Option<Duration>,
    version: ListVersion,
}

/// The list task's memory between syncs.
#[derive(Default)]
pub(crate) struct ListSync {
    cached: HashMap<String, CachedList>,
}

impl ListSync {
    /// Fetches the index and every list in it, and installs them. Returns
    /// the shortest `ttl` seen; on failure, the URL and the reason.
    ///
    /// While a resync is pending (a gap, a reset, a reconnect) every fetch
    /// bypasses caches. Otherwise an index or list older than what the
    /// stream already told is fetched once more bypassing caches, then
    /// refused (the last good data stays, and is not marked fresh).
    pub(crate) async fn full_sync(
        &mut self,
        shared: &Shared,
    ) -> Result<Duration, (String, String)> {
        let index_url = &shared.endpoints.status_index;
        let resync = shared.store.resync_pending();
        let mut fresh = resync;
        let index = loop {
            let (index, _) = shared
                .http
                .get_json::<StatusIndex>(index_url, fresh)
                .await
                .map_err(|e| (index_url.clone(), e.to_string()))?;
            match shared.store.check_index(index.epoch.as_deref(), index.seq) {
                Ok(()) => break index,
                Err(why) if fresh => return Err((index_url.clone(), why)),
                Err(_) => fresh = true,
            }
        };
        if let Some(bits) = index.bits.filter(|&b| b != STATUS_BITS) {
            return Err((
                index_url.clone(),
                format!("{bits} bits per entry; latchkey lists have {STATUS_BITS}"),
            ));
        }
        let mut ttl: Option<Duration> = None;
        for (i, uri) in index.lists.iter().enumerate() {
            let at_least = index.list_seqs.get(i).copied().unwrap_or(0);
            let list_ttl = self
                .sync_list(shared, uri, at_least, resync)
                .await
                .map_err(|e| (uri.clone(), e))?;
            ttl = Some(ttl.map_or(list_ttl, |t| t.min(list_ttl)));
        }
        Ok(ttl.unwrap_or(DEFAULT_REFRESH))
    }

    /// Fetches one list (revalidating with its `ETag`), verifies it and
    /// installs it, replaying the stream's changes since the fetch began.
    /// A list older than `at_least` (from the index) or than what is held
    /// is fetched again bypassing caches, then refused.
    async fn sync_list(
        &mut self,
        shared: &Shared,
        uri: &str,
        at_least: u64,
        mut fresh: bool,
    ) -> Result<Duration, String> {
        let mut refreshed_keys = false;
        for _ in 0..4 {
            let mark = shared.store.mark(uri);
            let etag = self.cached.get(uri).map(|c| c.etag.as_str());
            let fetched = shared
                .http
                .get(uri, STATUS_LIST_ACCEPT, etag, MAX_STATUS_LIST_BYTES, fresh)
                .await
                .map_err(|e| e.to_string())?;
            let (installed, ttl) = match fetched {
                Fetched::NotModified { max_age } => match self.cached.get(uri) {
                    Some(cached) => {
                        let version = ListVersion {
                            at_least,
                            ..cached.version.clone()
                        };
                        (
                            shared.store.install(uri, &cached.list, mark, &version),
                            cached.ttl.or(max_age),
                        )
                    }
                    // A 304 for a list we no longer hold: fetch it whole.
                    None => continue,
                },
                Fetched::Body {
                    bytes,
                    etag,
                    max_age,
                } => {
                    let jwt = std::str::from_utf8(&bytes)
                        .map_err(|_| "the status list is not text".to_owned())?;
                    let verified = {
                        let keys = shared.keys.load();
                        verify_status_list_jwt(jwt, &keys, uri, unix_now())
                    };
                    let (claims, list) = match verified {
                        Ok(verified) => verified,
                        Err(StatusJwtError::UnknownKey) if !refreshed_keys => {
                            refreshed_keys = true;
                            shared.refresh_keys().await;
                            continue;
                        }
                        Err(StatusJwtError::UnknownKey) => {
                            return Err("signed by a key that is not in the JWKS".into());
                        }
                        Err(StatusJwtError::Invalid(why)) => return Err(why),
                    };
                    let version = ListVersion {
                        epoch: claims.epoch,
                        seq: claims.seq,
                        at_least,
                    };
                    let installed = shared.store.install(uri, &list, mark, &version);
                    let ttl = claims.ttl.map(Duration::from_secs).or(max_age);
                    match etag {
                        Some(etag) if !matches!(installed, Installed::Stale(_)) => {
                            self.cached.insert(
                                uri.to_owned(),
                                CachedList {
                                    etag,
                                    list,
                                    ttl,
                                    version,
                                },
                            );
                        }
                        _ => {
                            self.cached.remove(uri);
                        }
                    }
                    (installed, ttl)
                }
            };
            match installed {
                Installed::Current => return Ok(ttl.unwrap_or(DEFAULT_REFRESH)),
                Installed::Incomplete => {}
                Installed::Stale(why) if fresh => return Err(why),
                Installed::Stale(why) => {
                    tracing::warn!(uri = %uri, why = %why, "latchkey verifier: refused a stale status list; fetching it again from the issuer");
                    // Past every cache, and without the stale copy's ETag.
                    fresh = true;
                    self.cached.remove(uri);
                }
            }
        }
        Err("the list kept changing faster than it could be fetched".into())
    }
}

/// Polls the status lists every `ttl` (at most half the staleness bound
/// apart) and whenever asked (a gap, a reset, a reconnect, an unknown list).
pub(crate) async fn lists_task(shared: Arc<Shared>, mut lists: ListSync, ttl: Duration) {
    let interval = |ttl: Duration| {
        ttl.min(shared.staleness / 2)
            .clamp(Duration::from_secs(1), MAX_REFRESH)
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    let mut due = Instant::now() + interval(ttl);
    let mut last_sync = Instant::now();
    loop {
        tokio::select! {
            () = sleep_until(due) => {}
            () = shared.lists_wake.notified() => {
                let earliest = last_sync + MIN_WAKE_INTERVAL;
                if Instant::now() < earliest {
                    sleep_until(earliest).await;
                }
            }
        }
        last_sync = Instant::now();
        let generation = shared.store.resync_generation();
        match lists.full_sync(&shared).await {
            Ok(ttl) => {
                shared.store.resync_completed(generation);
                backoff.reset();
                due = Instant::now() + interval(ttl);
            }
            Err((url, e)) => {
                let delay = backoff.next_delay().min(interval(DEFAULT_REFRESH));
                tracing::warn!(url = %url, error = %e, retry_in = ?delay, "latchkey verifier: status list sync failed; keeping the last good lists");
                shared.set_last_error(Some(format!("status list {url}: {e}")));
                due = Instant::now() + delay;
            }
        }
    }
}

#[derive(Deserialize)]
struct ReadyData {
    seq: u64,
    #[serde(default)]
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct StatusData {
    seq: u64,
    #[serde(default)]
    list: Option<u64>,
    #[serde(default)]
    uri: Option<String>,
    idx: u64,
    status: u8,
}

/// What one stream connection did.
struct StreamEnd {
    /// It got as far as the `ready` event.
    was_ready: bool,
    reason: String,
}

/// Where the stream stands across reconnections.
struct StreamState {
    /// The last sequence number applied (`Last-Event-ID` on reconnect).
    last_seq: Option<u64>,
    ready_tx: Option<oneshot::Sender<()>>,
}

/// Follows the push stream, reconnecting with backoff.
pub(crate) async fn stream_task(shared: Arc<Shared>, url: String, ready_tx: oneshot::Sender<()>) {
    let mut state = StreamState {
        last_seq: None,
        ready_tx: Some(ready_tx),
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        let end = stream_once(&shared, &url, &mut state).await;
        shared.store.set_stream_connected(false);
        if let Some(tx) = state.ready_tx.take() {
            let _ = tx.send(());
        }
        if end.was_ready {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::info!(url = %url, reason = %end.reason, retry_in = ?delay, "latchkey verifier: status stream disconnected");
        shared.set_last_error(Some(format!("status stream {url}: {}", end.reason)));
        sleep(delay).await;
    }
}

fn request_resync(shared: &Shared) {
    shared.store.request_resync();
    shared.lists_wake.notify_one();
}

async fn stream_once(shared: &Shared, url: &str, state: &mut StreamState) -> StreamEnd {
    let mut was_ready = false;
    let end = |was_ready, reason: String| StreamEnd { was_ready, reason };
    let mut request = shared
        .http
        .client
        .get(url)
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache");
    if let Some(seq) = state.last_seq {
        request = request.header("Last-Event-ID", seq.to_string());
    }
    let mut response = match timeout(shared.http.timeout, request.send()).await {
        Err(_) => return end(false, "connecting timed out".into()),
        Ok(Err(e)) => return end(false, describe(e)),
        Ok(Ok(response)) => response,
    };
    if !response.status().is_success() {
        return end(false, format!("HTTP status {}", response.status()));
    }
    let mut parser = SseParser::new();
    let mut ready_seq: Option<u64> = None;
    loop {
        let chunk = match timeout(STREAM_IDLE_TIMEOUT, response.chunk()).await {
            Err(_) => return end(was_ready, "no event or keep-alive in 45 s".into()),
            Ok(Err(e)) => return end(was_ready, describe(e)),
            Ok(Ok(None)) => return end(was_ready, "the server closed the stream".into()),
            Ok(Ok(Some(chunk))) => chunk,
        };
        let events = match parser.feed(&chunk) {
            Ok(events) => events,
            Err(_) => return end(was_ready, "a line longer than 64 KiB".into()),
        };
        for event in events {
            match event.event.as_str() {
                "ready" => {
                    let Ok(data) = serde_json::from_str::<ReadyData>(&event.data) else {
                        return end(was_ready, "a malformed ready event".into());
                    };
                    was_ready = true;
                    // Decided before the stream counts as connected: the
                    // first fetch of the lists either follows this `ready`
                    // (and sees every change before it) or has begun, and
                    // then the lists were fetched without the stream.
                    let fetched_without_stream = shared.store.initial_sync_begun();
                    shared.store.set_stream_connected(true);
                    if shared.store.stream_ready(data.epoch.as_deref(), data.seq) {
                        // The issuer's sequence started over: what was
                        // applied counts in a space that no longer exists.
                        state.last_seq = Some(data.seq);
                        request_resync(shared);
                    } else if state.last_seq.is_none() {
                        state.last_seq = Some(data.seq);
                    }
                    // Missed events, if any, are replayed next; but any
                    // `ready` after the first fetch began (a late stream,
                    // a reconnect) is reconciled with the lists before the
                    // stream vouches for them (contract §8).
                    if fetched_without_stream {
                        request_resync(shared);
                    }
                    ready_seq = Some(data.seq);
                    if let Some(tx) = state.ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                "status" => {
                    let Ok(data) = serde_json::from_str::<StatusData>(&event.data) else {
                        // A change we cannot read is a change we missed.
                        request_resync(shared);
                        continue;
                    };
                    if let Some(prev) = state.last_seq {
                        if data.seq <= prev {
                            continue; // already applied
                        }
                        if data.seq > prev + 1 {
                            request_resync(shared);
                        }
                    }
                    state.last_seq = Some(data.seq);
                    let uri = match (data.uri, data.list) {
                        (Some(uri), _) => uri,
                        (None, Some(list)) => format!(
                            "{}/{list}",
                            shared.endpoints.status_index.trim_end_matches('/')
                        ),
                        (None, None) => {
                            request_resync(shared);
                            continue;
                        }
                    };
                    let status = TokenStatus::from_bits(data.status);
                    if !shared.store.apply(&uri, data.idx, status, data.seq) {
                        // A list not fetched yet (or an index past its end).
                        shared.lists_wake.notify_one();
                    }
                }
                "reset" => {
                    request_resync(shared);
                    if let Ok(data) = serde_json::from_str::<ReadyData>(&event.data) {
                        state.last_seq = Some(data.seq);
                    }
                }
                _ => {}
            }
        }
        let caught_up = match (state.last_seq, ready_seq) {
            (Some(last), Some(ready)) => last >= ready,
            _ => false,
        };
        if caught_up {
            shared.store.stream_heard();
        }
    }
}

/// Sends usage reports every interval.
pub(crate) async fn usage_task(shared: Arc<Shared>) {
    let Some(usage) = &shared.usage else { return };
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    let mut delay = usage.interval;
    loop {
        sleep(delay).await;
        match usage.flush(&shared.http).await {
            Ok(_) => {
                backoff.reset();
                delay = usage.interval;
            }
            Err(e) => {
                tracing::warn!(error = %e, "latchkey verifier: usage report failed; will retry");
                delay = backoff.next_delay().max(usage.interval);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
        let mut last = first;
        for _ in 0..10 {
            last = b.next_delay();
        }
        assert_eq!(last, Duration::from_secs(2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[test]
    fn refresh_bounds() {
        let s = Duration::from_secs;
        assert_eq!(refresh_after(None, s(30)), DEFAULT_REFRESH);
        assert_eq!(refresh_after(Some(s(5)), s(30)), s(30));
        assert_eq!(refresh_after(Some(Duration::ZERO), Duration::ZERO), s(1));
        assert_eq!(refresh_after(Some(s(10 * 86_400)), s(30)), MAX_REFRESH);
    }
}
