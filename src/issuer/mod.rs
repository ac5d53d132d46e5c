//! The issuer's domain: every operation a user has, as methods of one type,
//! [`Issuer`], which owns the store, the signing keys, the published
//! statuses, the audit log and the clock.
//!
//! The HTTP API and the command line call only this. It validates what it
//! is given before it touches storage, decides what a change is (the new
//! record, the status bits that move, the audit entry) and hands the store
//! one transaction per change. It knows nothing of HTTP: its errors say
//! what went wrong in domain terms ([`IssuerError`]), and the HTTP layer
//! picks status codes.
//!
//! | file | operations |
//! |---|---|
//! | `keys.rs` | create, describe, list, update, renew, suspend, resume, revoke |
//! | `access.rs` | authenticate a bearer key, introspect, record usage, refused requests |
//! | `signing_keys.rs` | rotate, import, retire, the lifecycle pass |
//! | `status_lists.rs` | the status slot ↔ list URI mapping |
//! | `backup.rs` | online backup of the store |

mod access;
mod backup;
mod keys;
mod signing_keys;
mod status_lists;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use latchkey_verifier::verify::Expectations;
use latchkey_verifier::{Audience, jwk::SigningAlgorithm};
use time::OffsetDateTime;

use crate::audit::{AuditEntry, ChainReport};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::denials::DenialWindows;
use crate::keyring::{KeyMaterial, KeyRing, KeyRingError, KeySnapshot};
use crate::status_board::StatusBoard;
use crate::store::{Store, StoreError};
use crate::validation::FieldError;

pub use access::{MAX_USAGE_JTIS, Refusal, STORE_UNAVAILABLE, VerifiedTokenCache};
pub use keys::{KeyFilter, KeyPage, Minted};
pub use signing_keys::initialise as initialise_signing_keys;
pub use status_lists::StatusLists;

/// How often a key's `last_used_at` is written at most.
pub const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// Loads the key set again whenever another process (a replica) changed
/// it, so every replica publishes a rotation at once. Ends with the store.
fn follow_signing_key_changes(store: &Arc<dyn Store>, keyring: &Arc<KeyRing>) {
    let Some(mut changes) = store.signing_key_changes() else {
        return;
    };
    let store = Arc::downgrade(store);
    let keyring = Arc::downgrade(keyring);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let (Some(store), Some(keyring)) = (store.upgrade(), keyring.upgrade()) else {
                return;
            };
            let loaded = async {
                let sealed = store.sealed_signing_keys().await?.into_iter().collect();
                keyring
                    .install(store.signing_keys().await?, &sealed)
                    .map_err(IssuerError::from)
            };
            if let Err(e) = loaded.await {
                tracing::warn!(error = %e, "could not load the signing keys another replica changed");
            }
        }
    });
}

/// Why an operation was refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IssuerError {
    #[error("no key with that id")]
    NotFound,
    #[error(
        "a key named {0:?} already exists (names are unique ignoring letter case and compatibility forms, revoked keys included)"
    )]
    NameTaken(String),
    #[error("the key is revoked; revocation is permanent")]
    AlreadyRevoked,
    /// The change does not apply to the key's state (e.g. resume an active key).
    #[error("{0}")]
    InvalidState(String),
    /// The input breaks a rule; one entry per field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// A parameter that this issuer never handed out (a cursor).
    #[error("{}: {}", .0.field, .0.message)]
    UnknownParameter(FieldError),
    #[error("no signing key with kid {0:?}")]
    SigningKeyNotFound(String),
    /// A signing-key change that does not apply (retire the active key...).
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached; nothing changed, retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The store does not offer this operation; the message says what to
    /// do instead and may be shown to clients.
    #[error("{0}")]
    Unsupported(String),
    /// Something inside failed; the message is for the operator's log.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for IssuerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => IssuerError::NotFound,
            StoreError::NameTaken(name) => IssuerError::NameTaken(name),
            StoreError::Conflict(m) => IssuerError::Conflict(m),
            StoreError::Unavailable(m) => IssuerError::Unavailable(m),
            StoreError::Internal(m) => IssuerError::Internal(m),
            StoreError::Unsupported(m) => IssuerError::Unsupported(m),
        }
    }
}

impl From<KeyRingError> for IssuerError {
    fn from(e: KeyRingError) -> Self {
        match e {
            KeyRingError::NotFound(kid) => IssuerError::SigningKeyNotFound(kid),
            KeyRingError::Conflict(m) => IssuerError::Conflict(m),
            other => IssuerError::Internal(other.to_string()),
        }
    }
}

pub type IssuerResult<T> = Result<T, IssuerError>;

/// What the issuer signs into tokens and how it rotates its keys.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub issuer: String,
    pub audience: Audience,
    /// The audience a token must carry to be accepted by the issuer's own API.
    pub primary_audience: String,
    pub max_expiry_days: u32,
    pub signing_algorithm: SigningAlgorithm,
    pub rotation_lead_time_secs: u64,
    pub rotation_period_days: Option<u32>,
}

impl IssuerSettings {
    pub fn from_config(config: &Config) -> IssuerSettings {
        IssuerSettings {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            primary_audience: config.primary_audience().to_owned(),
            max_expiry_days: config.max_expiry_days,
            signing_algorithm: config.signing_algorithm,
            rotation_lead_time_secs: config.rotation_lead_time_secs,
            rotation_period_days: config.rotation_period_days,
        }
    }
}

/// The issuer: every user operation. Cheap to share behind an `Arc`.
pub struct Issuer {
    store: Arc<dyn Store>,
    keyring: Arc<KeyRing>,
    board: Arc<StatusBoard>,
    clock: SharedClock,
    settings: IssuerSettings,
    lists: StatusLists,
    expectations: Expectations,
    denials: DenialWindows,
    /// When each key's `last_used_at` was last written by this process.
    last_used_written: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// The issuer over an initialised store (one with an active signing key).
    pub async fn open(
        store: Arc<dyn Store>,
        settings: IssuerSettings,
        material: KeyMaterial,
        clock: SharedClock,
    ) -> IssuerResult<Issuer> {
        let boot = store.boot().await?;
        let board = Arc::new(StatusBoard::new(
            boot.list_capacity,
            boot.next_slot,
            boot.status_seq,
            boot.status_epoch,
        ));
        for (slot, status) in boot.statuses {
            board.load(slot, status);
        }
        let published = Arc::clone(&board);
        store.set_commit_hook(Box::new(move |commit| {
            published.ensure_slots(commit.allocated);
            if commit.changes.is_empty() {
                return;
            }
            if published.seq() + 1 != commit.first_seq {
                tracing::warn!(
                    board = published.seq(),
                    store = commit.first_seq,
                    "the published status sequence is out of step with the store"
                );
            }
            published.apply(&commit.changes);
        }));
        let sealed = store.sealed_signing_keys().await?.into_iter().collect();
        let keyring = Arc::new(KeyRing::open(
            material,
            store.signing_keys().await?,
            &sealed,
        )?);
        follow_signing_key_changes(&store, &keyring);
        let expectations =
            Expectations::new(settings.issuer.clone(), settings.primary_audience.clone());
        Ok(Issuer {
            lists: StatusLists::new(&settings.issuer, boot.list_capacity),
            store,
            keyring,
            board,
            clock,
            settings,
            expectations,
            denials: DenialWindows::default(),
            last_used_written: Mutex::new(HashMap::new()),
        })
    }

    /// The current time, to the second (the precision of JWT NumericDates).
    pub fn now(&self) -> OffsetDateTime {
        let now = self.clock.now();
        now.replace_nanosecond(0).unwrap_or(now)
    }

    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// The published statuses (lists, sequence, replay, live changes).
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Where each status slot is published.
    pub fn status_lists(&self) -> &StatusLists {
        &self.lists
    }

    /// The current signing keys (active, published, JWKS).
    pub fn signing_snapshot(&self) -> Arc<KeySnapshot> {
        self.keyring.snapshot()
    }

    /// Whether no key exists yet.
    pub async fn has_no_keys(&self) -> IssuerResult<bool> {
        Ok(self.store.has_no_keys().await?)
    }

    /// The id of a bootstrap key whose token was not handed over yet.
    pub async fn bootstrap_pending(&self) -> IssuerResult<Option<String>> {
        Ok(self.store.bootstrap_pending().await?)
    }

    /// Records (or clears) the bootstrap key whose token is being handed over.
    pub async fn set_bootstrap_pending(&self, key_id: Option<String>) -> IssuerResult<()> {
        Ok(self.store.set_bootstrap_pending(key_id).await?)
    }

    /// A page of the audit log: entries after `after`, at most `limit`.
    /// An `after` beyond the last entry was never handed out.
    pub async fn audit_page(&self, after: u64, limit: usize) -> IssuerResult<Vec<AuditEntry>> {
        let head = self.store.audit_head().await?;
        if after > head.seq {
            return Err(IssuerError::UnknownParameter(FieldError::new(
                "after",
                format!(
                    "{after} is beyond the last entry ({}); pass 0 or the next_after of a previous page",
                    head.seq
                ),
            )));
        }
        Ok(self.store.audit_page(after, limit).await?)
    }

    /// Walks the whole audit log. `Ok(Err(problem))`: it fails verification.
    pub async fn verify_audit(&self) -> IssuerResult<Result<ChainReport, String>> {
        Ok(self.store.verify_audit().await?)
    }

    /// Whether writes can be served now (the store is reachable).
    pub fn ready(&self) -> bool {
        self.store.ready()
    }

    /// Waits until every change so far is on disk.
    pub async fn flush(&self) -> IssuerResult<()> {
        Ok(self.store.flush().await?)
    }

    /// Finishes a run: writes the pending counts of refused anonymous
    /// requests and waits until everything is on disk.
    pub async fn shutdown(&self) -> IssuerResult<()> {
        self.flush_all_denials().await;
        self.flush().await
    }
}
