//! Who is calling, and what they may learn: authenticating a bearer key
//! (the admin API and introspection share it), introspection's scope,
//! usage reports, and the audit entries of refused requests.
//!
//! A bearer key is verified exactly as a downstream verifier would (the
//! verifier crate's core: signature with the algorithm taken from the key,
//! `typ`, `iss`, `aud`, `exp`/`nbf`), then checked live here: its status
//! bit, its key in the store and not revoked or suspended, and the token
//! one the key was issued.

use std::collections::HashSet;
use std::sync::Arc;

use latchkey_verifier::AccessClaims;
use latchkey_verifier::bearer::{BearerError, parse_bearer};
use latchkey_verifier::error::VerifyError;
use latchkey_verifier::policy::VerifiedKey;
use latchkey_verifier::verify::{check_status, verify_signed};
use serde_json::json;

use crate::audit::{Actor, NewEntry};
use crate::issuer::{Issuer, IssuerError, IssuerResult, LAST_USED_RESOLUTION_SECS};
use crate::keyring::KeySnapshot;
use crate::model::KeyState;
use crate::store::Durability;
use crate::validation::FieldError;

/// Most `jti`s in one usage report.
pub const MAX_USAGE_JTIS: usize = 1000;
/// Longest `jti` looked up (latchkey's are 36-character UUIDs).
const MAX_JTI_LEN: usize = 128;

/// The refusal code of a key that could not be checked because the store
/// is unreachable: not the key's fault (the HTTP layer answers 503).
pub const STORE_UNAVAILABLE: &str = "store_unavailable";

/// Why a bearer key was refused: a stable reason code (for metrics and the
/// audit log) and a message for the client, never containing the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: &str) -> Refusal {
        Refusal {
            code,
            message: message.to_owned(),
        }
    }

    fn verify(e: VerifyError) -> Refusal {
        Refusal {
            code: e.code(),
            message: format!("the access key was refused: {e}"),
        }
    }
}

/// Tokens whose signature and claims already verified under a key set
/// (kept by the caller, e.g. the HTTP layer's bounded cache).
pub trait VerifiedTokenCache: Sync {
    /// The claims of `token` if it verified under exactly `keys`.
    fn get(&self, token: &str, keys: &Arc<KeySnapshot>) -> Option<AccessClaims>;
    fn insert(&self, token: &str, keys: Arc<KeySnapshot>, claims: AccessClaims);
}

impl Issuer {
    /// The token of a request's `Authorization` header values.
    pub fn bearer_token<'a>(
        &self,
        values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<&'a str, Refusal> {
        parse_bearer(values).map_err(|e| match e {
            BearerError::Repeated => {
                Refusal::new("malformed_header", "send exactly one Authorization header")
            }
            BearerError::Missing => Refusal::new(
                "missing_token",
                "send your access key as Authorization: Bearer <key>",
            ),
            BearerError::NotText => Refusal::new(
                "malformed_header",
                "the Authorization header is not valid text",
            ),
            BearerError::NoSeparator { .. } => Refusal::new(
                "malformed_header",
                "use the form Authorization: Bearer <key>",
            ),
            BearerError::OtherScheme => Refusal::new(
                "malformed_header",
                "use the Bearer scheme: Authorization: Bearer <key>",
            ),
            BearerError::Empty => Refusal::new("missing_token", "the Bearer credential is empty"),
        })
    }

    /// Verifies `token` and checks that it is live now; the one rule for
    /// "is this token live". `cache` may hold tokens verified before under
    /// the same key set (then only the clock is checked again).
    pub async fn authenticate(
        &self,
        token: &str,
        cache: Option<&dyn VerifiedTokenCache>,
    ) -> Result<AccessClaims, Refusal> {
        let snapshot = self.keyring.snapshot();
        let now = self.now().unix_timestamp();
        let leeway = self.expectations.leeway_secs;
        let claims = match cache.and_then(|c| c.get(token, &snapshot)) {
            // Same token, same key set: the signature and claims checked out
            // before; only the clock can have changed.
            Some(claims) => {
                if claims.exp <= now - leeway {
                    return Err(Refusal::verify(VerifyError::Expired));
                }
                if claims.nbf > now + leeway {
                    return Err(Refusal::verify(VerifyError::NotYetValid));
                }
                claims
            }
            None => {
                let claims = verify_signed(token, &snapshot.verification, &self.expectations, now)
                    .map_err(Refusal::verify)?;
                if let Some(cache) = cache {
                    cache.insert(token, Arc::clone(&snapshot), claims.clone());
                }
                claims
            }
        };
        self.check_live(&claims).await?;
        Ok(claims)
    }

    async fn check_live(&self, claims: &AccessClaims) -> Result<(), Refusal> {
        let slot = self
            .lists
            .slot_of(&claims.status.status_list)
            .ok_or_else(|| {
                Refusal::new(
                    "unknown_status_list",
                    "the key's status list is not one of this issuer's",
                )
            })?;
        // The published bit: this process's own changes are on it before
        // they are acknowledged, other replicas' within the push latency.
        // The record read next is the store's current word either way.
        if let Some(status) = self.board.get(slot) {
            check_status(status).map_err(Refusal::verify)?;
        }
        let record = match self.store.key(&claims.sub).await {
            Ok(Some(record)) => record,
            Err(crate::store::StoreError::Unavailable(_)) => {
                return Err(Refusal::new(
                    STORE_UNAVAILABLE,
                    "the key registry cannot be read now (its database is unavailable); retry in a few seconds",
                ));
            }
            _ => {
                return Err(Refusal::new(
                    "unknown_key",
                    "this key is not in the registry",
                ));
            }
        };
        match record.state {
            KeyState::Revoked => return Err(Refusal::verify(VerifyError::Revoked)),
            KeyState::Suspended => return Err(Refusal::verify(VerifyError::Suspended)),
            KeyState::Active => {}
        }
        if !record
            .tokens
            .iter()
            .any(|t| t.jti == claims.jti && t.slot == slot && !t.revoked)
        {
            return Err(Refusal::new(
                "unknown_token",
                "this token was not issued for this key",
            ));
        }
        Ok(())
    }

    /// The caller `key` authenticated: records the use (at most once per
    /// [`LAST_USED_RESOLUTION_SECS`]) and names it for the audit log.
    pub async fn caller(&self, claims: AccessClaims) -> (VerifiedKey, Actor) {
        self.touch_last_used(&claims.sub).await;
        let key = VerifiedKey::from(claims);
        let actor = Actor::Key {
            id: key.id.clone(),
            name: key.name.clone(),
        };
        (key, actor)
    }

    /// RFC 7662 introspection by `caller`: the claims of `token` if it is
    /// live and the caller may see it (admins and global viewers see every
    /// key, any other key only itself); otherwise `None`, whatever the
    /// reason. Introspecting a live token counts as a use of its key.
    pub async fn introspect(&self, caller: &VerifiedKey, token: &str) -> Option<AccessClaims> {
        let claims = self.authenticate(token, None).await.ok()?;
        if !(caller.can_read_all() || caller.id == claims.sub) {
            return None;
        }
        self.touch_last_used(&claims.sub).await;
        Some(claims)
    }

    /// A verifier's usage report: each known `jti` counts as a use of its
    /// key. Returns how many keys were touched; unknown `jti`s are ignored.
    pub async fn record_usage(&self, jtis: &[String]) -> IssuerResult<usize> {
        if jtis.len() > MAX_USAGE_JTIS {
            return Err(IssuerError::Validation(vec![FieldError::new(
                "jtis",
                format!(
                    "has {} entries; send at most {MAX_USAGE_JTIS} per report",
                    jtis.len()
                ),
            )]));
        }
        let mut keys = HashSet::new();
        let unique: HashSet<&str> = jtis.iter().map(String::as_str).collect();
        for jti in unique {
            if jti.is_empty() || jti.len() > MAX_JTI_LEN {
                continue;
            }
            if let Some(key_id) = self.store.key_id_for_jti(jti).await? {
                keys.insert(key_id);
            }
        }
        for key_id in &keys {
            self.touch_last_used(key_id).await;
        }
        Ok(keys.len())
    }

    /// Moves a key's `last_used_at`, at most once per resolution window.
    async fn touch_last_used(&self, id: &str) {
        let now = self.now();
        let ts = now.unix_timestamp();
        {
            let Ok(mut written) = self.last_used_written.lock() else {
                return;
            };
            if let Some(last) = written.get(id)
                && ts - last < LAST_USED_RESOLUTION_SECS
            {
                return;
            }
            written.insert(id.to_owned(), ts);
        }
        if let Err(e) = self.store.touch_last_used(id, now).await {
            tracing::warn!(error = %e, "could not record last use");
        }
    }

    /// Audits a request refused for its role (one entry each: the caller is known).
    pub async fn record_forbidden(&self, actor: &Actor, method: &str, route: &str, detail: &str) {
        metrics::counter!("latchkey_auth_failures_total", "reason" => "forbidden").increment(1);
        let entry = NewEntry {
            actor: actor.clone(),
            action: "auth.denied",
            target: None,
            details: json!({
                "method": method,
                "path": route,
                "reason": "forbidden",
                "detail": detail,
            }),
        };
        self.append_quietly(vec![entry], "could not audit a denied request")
            .await;
    }

    /// Counts a refusal of a request that carried no valid key (metric at
    /// once, audit entry when its minute closes: [`crate::denials`]).
    pub async fn record_anonymous(&self, reason: &'static str, request: &str) {
        metrics::counter!("latchkey_auth_failures_total", "reason" => reason).increment(1);
        let closed = self.denials.count(self.now(), reason, request);
        self.append_quietly(closed, "could not audit a window of denied requests")
            .await;
    }

    /// Writes the window of refusals if its minute is over; cheap when it is not.
    pub async fn flush_due_denials(&self) {
        let closed = self.denials.take_due(self.now());
        self.append_quietly(closed, "could not audit a window of denied requests")
            .await;
    }

    /// Writes any pending counts, whether or not their minute is over.
    pub async fn flush_all_denials(&self) {
        let pending = self.denials.take_all();
        self.append_quietly(pending, "could not audit a window of denied requests")
            .await;
    }

    async fn append_quietly(&self, entries: Vec<NewEntry>, what: &str) {
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self
            .store
            .append_audit(entries, self.now(), Durability::Committed)
            .await
        {
            tracing::warn!(error = %e, "{what}");
        }
    }
}
