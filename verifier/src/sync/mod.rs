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

//! | file | job |
//! |---|---|
//! | `builder.rs` | [`VerifierBuilder`]: options, the first sync, starting the tasks |
//! | `verifier.rs` | the [`Verifier`] API: `verify`, its token cache, status and usage |
//! | `tasks.rs` | the refresh loops (JWKS, lists, stream) |
//! | `fetch.rs` | HTTP fetching and checking of the documents |
//! | `store.rs` | the status lists held, and the never-goes-back rule |
//! | `sse.rs` | the Server-Sent Events parser |

mod builder;
pub(crate) mod fetch;
mod sse;
pub(crate) mod store;
mod tasks;
mod verifier;

pub use builder::VerifierBuilder;
use verifier::CachedToken;
pub use verifier::Verifier;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::cache::TokenCache;
use crate::claims::TokenStatus;
use crate::error::VerifyError;
use crate::jwk::KeySet;
use crate::usage::UsageReporter;
use crate::verify::Expectations;
use fetch::Http;
use store::{ListSlot, StatusStore};

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
/// Where the issuer publishes what the verifier fetches.
#[derive(Debug)]
pub(crate) struct Endpoints {
    pub(crate) jwks: String,
    pub(crate) status_index: String,
    pub(crate) stream: Option<String>,
    pub(crate) usage: String,
    pub(crate) introspection: Option<String>,
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
