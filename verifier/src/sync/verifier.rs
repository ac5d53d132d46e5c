//! The [`Verifier`] handle and its API: offline verification with the
//! verified-token cache, the sync status, usage reporting, and the handle
//! that stops the background tasks when the last clone drops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::store::ListSlot;
use super::*;
use crate::claims::{AccessClaims, StatusListRef, TokenStatus};
use crate::error::VerifyError;
use crate::policy::VerifiedKey;
use crate::usage::UsageReporter;
use crate::verify::{
    DEFAULT_LEEWAY_SECS, Expectations, MAX_TOKEN_BYTES, check_status, verify_signed,
};

/// A token whose signature and claims verified once.
#[derive(Debug)]
pub(super) struct CachedToken {
    key: VerifiedKey,
    /// The `kid` it was signed with: it must still be published.
    kid: Box<str>,
    nbf: i64,
    /// Its status list, once held.
    list: OnceLock<Arc<ListSlot>>,
    /// When its use was last noted for a usage report (ms; 0 = never).
    reported_ms: AtomicU64,
}

/// Owns the background tasks: they are aborted when the last [`Verifier`]
/// clone drops this.
pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
    pub(super) tasks: Vec<tokio::task::AbortHandle>,
}

impl Handle {
    pub(super) fn spawn<F>(&mut self, task: F)
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
    pub(super) inner: Arc<Handle>,
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
