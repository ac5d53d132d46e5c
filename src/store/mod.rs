//! The persistence interface of the issuer, in the domain's terms, and its
//! engines (`sled` is the first, in [`sled`]).
//!
//! Every write is one transaction of the engine, and says everything that
//! must change together: a create inserts the record, claims its name,
//! indexes its token and appends its audit entry; a key change rewrites the
//! record, the status bits that moved and appends its entry; a signing-key
//! change writes the new states and its entry. Either all of a write is
//! stored or none of it.
//!
//! The interface assumes nothing about who else writes:
//!
//! - the store chains audit entries itself, against the head it reads in
//!   the same transaction (callers hand it [`NewEntry`]s, never sequence
//!   numbers or hashes);
//! - a name is claimed inside the create's transaction, so two writers
//!   cannot both take it;
//! - a key change is a compare-and-set: [`KeyUpdate::expected`] is the
//!   record the change was computed from, and a record that changed since
//!   fails with [`StoreError::Conflict`] (the domain reads again and
//!   retries);
//! - a signing-key change names the state each key must still be in;
//! - status slots and the status change sequence are allocated by the store.
//!
//! Every operation is asynchronous (an engine may be a network away). Writes
//! resolve when the write is committed and, for every write but
//! [`Store::touch_last_used`] and [`Store::append_audit`] with
//! [`Durability::Committed`], on disk.
//! [`Store::set_commit_hook`] reports this process's committed status
//! changes in commit order, which is how the published status lists follow
//! the store.
//!
//! [`Store::backup`] writes a consistent snapshot to a file; an engine
//! whose data lives elsewhere answers [`StoreError::Unsupported`].

pub mod copy;
pub mod postgres;
pub mod sled;
pub mod sled_backup;
mod sled_layout;
pub mod sled_restore;
mod sled_write;

use std::future::Future;
use std::pin::Pin;

use latchkey_verifier::TokenStatus;
use time::OffsetDateTime;

use crate::audit::{AuditEntry, ChainHead, ChainReport, NewEntry};
use crate::model::{KeyRecord, SigningKeyInfo, SigningKeyState};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No key with that id.
    #[error("no key with that id")]
    NotFound,
    /// The name (compared folded) is claimed by another key.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// The record (or signing key) changed since it was read.
    #[error("{0}")]
    Conflict(String),
    /// The engine cannot be reached now (a database connection is down);
    /// the change was not made and may be retried.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The engine failed; the message is for the operator, not for clients.
    #[error("storage error: {0}")]
    Internal(String),
    /// The engine does not offer this operation; the message is for
    /// clients and says what to do instead.
    #[error("{0}")]
    Unsupported(String),
}

pub type StoreResult<T> = Result<T, StoreError>;
/// A write in progress.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// How long a write waits before it resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Committed and on disk (every change a client is told about).
    Durable,
    /// Committed (visible to reads); on disk with the next durable write or
    /// within a second.
    Committed,
}

/// What the domain needs at start-up to rebuild its in-memory state.
#[derive(Debug, Clone)]
pub struct Boot {
    /// Entries per status list, fixed when the store was created.
    pub list_capacity: u64,
    /// The next status slot to allocate (every smaller one may be in use).
    pub next_slot: u64,
    /// The sequence number of the last status change.
    pub status_seq: u64,
    /// The random name of the status sequence space.
    pub status_epoch: String,
    /// Every slot whose status is not VALID.
    pub statuses: Vec<(u64, TokenStatus)>,
}

/// A key to insert, with its name claim, first token and audit entry.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub record: KeyRecord,
    /// The name in the form uniqueness compares ([`crate::names::fold_name`]).
    pub folded_name: String,
    pub entry: NewEntry,
}

/// A change of one key: the record it was computed from, the new record,
/// the status bits that move, and the audit entry.
#[derive(Debug, Clone)]
pub struct KeyUpdate {
    pub expected: KeyRecord,
    pub record: KeyRecord,
    /// `jti`s of tokens this change minted (renew), to index.
    pub new_jtis: Vec<String>,
    /// Status slots whose bit changes, with the new bit.
    pub statuses: Vec<(u64, TokenStatus)>,
    pub entry: NewEntry,
}

/// A signing key's new record and the state it must still be in
/// (`None`: it must not be recorded yet). A change that adds a key must
/// name every recorded key (unchanged ones with their current state), so
/// two rotations computed from the same key set cannot both commit.
#[derive(Debug, Clone)]
pub struct SigningKeyChange {
    pub info: SigningKeyInfo,
    pub expected: Option<SigningKeyState>,
    /// A new key's private half sealed under the key-encryption key, for
    /// engines that keep key material (PostgreSQL); `None` keeps what is
    /// stored. The embedded engine keeps key files instead.
    pub sealed: Option<Vec<u8>>,
}

/// Held while a process initialises an empty store (first signing key,
/// bootstrap admin), so that of several replicas starting at once exactly
/// one does it. Released when dropped.
pub struct InitLock(#[allow(dead_code)] Option<Box<dyn std::any::Any + Send + Sync>>);

impl InitLock {
    /// A lock with nothing to hold (one process owns the store).
    pub fn none() -> InitLock {
        InitLock(None)
    }

    pub fn held(guard: Box<dyn std::any::Any + Send + Sync>) -> InitLock {
        InitLock(Some(guard))
    }
}

impl std::fmt::Debug for InitLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitLock")
    }
}

/// A committed write's effect on the published statuses, reported in
/// commit order.
#[derive(Debug, Clone)]
pub struct StatusCommit {
    /// Slots below this may be in use.
    pub allocated: u64,
    /// The bits that changed, in order; the first has sequence number
    /// `first_seq`, the next `first_seq + 1`, and so on.
    pub changes: Vec<(u64, TokenStatus)>,
    pub first_seq: u64,
}

/// What [`Store::backup`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupSummary {
    pub keys: u64,
    pub audit_entries: u64,
    pub signing_keys: u64,
    /// Size of the file.
    pub bytes: u64,
    /// Hex SHA-256 of the whole file (what `sha256sum` prints).
    pub sha256: String,
}

/// Called after each commit, in commit order, before the write resolves.
pub type CommitHook = Box<dyn Fn(&StatusCommit) + Send + Sync>;

/// A result as a ready future (engines whose reads do not wait).
pub fn ready<'a, T: Send + 'a>(result: StoreResult<T>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

/// The issuer's persistence.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// What the domain rebuilds its in-memory state from.
    fn boot(&self) -> StoreFuture<'_, Boot>;
    /// Reports committed status changes (replaces any earlier hook).
    fn set_commit_hook(&self, hook: CommitHook);
    /// Entries per status list.
    fn list_capacity(&self) -> u64;
    /// Allocates a status slot, never handed out before.
    fn allocate_slot(&self) -> StoreFuture<'_, u64>;

    /// Inserts keys, each on its own: a taken name fails only its key with
    /// [`StoreError::NameTaken`]. One result per key, in order.
    fn insert_keys(
        &self,
        keys: Vec<NewKey>,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, Vec<StoreResult<()>>>;
    /// Applies one key change (compare-and-set on [`KeyUpdate::expected`]).
    fn update_key(&self, update: KeyUpdate, at: OffsetDateTime) -> StoreFuture<'_, ()>;
    /// Sets a key's `last_used_at` to `at` if that is later. Committed, not awaited to disk.
    fn touch_last_used(&self, id: &str, at: OffsetDateTime) -> StoreFuture<'_, ()>;
    /// Appends audit entries that record no other change.
    fn append_audit(
        &self,
        entries: Vec<NewEntry>,
        at: OffsetDateTime,
        durability: Durability,
    ) -> StoreFuture<'_, ()>;
    /// Writes signing-key records and their audit entries in one
    /// transaction; a key not in its expected state fails the whole change
    /// with [`StoreError::Conflict`].
    fn change_signing_keys(
        &self,
        changes: Vec<SigningKeyChange>,
        entries: Vec<NewEntry>,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, ()>;
    /// Records (or with `None` clears) the id of a bootstrap key whose token
    /// was not handed over yet.
    fn set_bootstrap_pending(&self, key_id: Option<String>) -> StoreFuture<'_, ()>;
    /// Records the issuer tokens are bound to.
    fn record_issuer(&self, issuer: String) -> StoreFuture<'_, ()>;
    /// Waits until every write so far is on disk.
    fn flush(&self) -> StoreFuture<'_, ()>;

    fn key<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<KeyRecord>>;
    /// The id of the key that minted token `jti`.
    fn key_id_for_jti<'a>(&'a self, jti: &'a str) -> StoreFuture<'a, Option<String>>;
    /// Calls `visit` with keys newest first, starting after key `before`
    /// (its id), until `visit` returns false.
    fn scan_keys<'a>(
        &'a self,
        before: Option<&'a str>,
        visit: &'a mut (dyn FnMut(KeyRecord) -> bool + Send),
    ) -> StoreFuture<'a, ()>;
    /// Whether no key is stored (O(1)).
    fn has_no_keys(&self) -> StoreFuture<'_, bool>;
    /// Every signing key's record.
    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKeyInfo>>;
    /// Entries with `seq > after`, at most `limit`, oldest first.
    fn audit_page(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<AuditEntry>>;
    /// The last entry's sequence number and hash.
    fn audit_head(&self) -> StoreFuture<'_, ChainHead>;
    /// Walks the whole log: numbering, links, hashes and the recorded head.
    /// `Ok(Err(problem))` is a log that fails verification.
    fn verify_audit(&self) -> StoreFuture<'_, Result<ChainReport, String>>;
    fn bootstrap_pending(&self) -> StoreFuture<'_, Option<String>>;
    fn recorded_issuer(&self) -> StoreFuture<'_, Option<String>>;

    /// Sealed private keys by kid (engines that store key material).
    fn sealed_signing_keys(&self) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        ready(Ok(Vec::new()))
    }
    /// Waits until this process may initialise an empty store.
    fn lock_initialisation(&self) -> StoreFuture<'_, InitLock> {
        ready(Ok(InitLock::none()))
    }
    /// Ticks when another process may have changed the signing keys
    /// (`None`: no other process writes this store).
    fn signing_key_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Whether writes can be served now (the database is reachable and
    /// this process has caught up with it).
    fn ready(&self) -> bool {
        true
    }

    /// Writes a consistent snapshot of everything stored to `out`, a file
    /// that must not exist yet (created 0600, on disk when this resolves).
    /// Engines that keep their data elsewhere refuse with
    /// [`StoreError::Unsupported`] saying how to back them up.
    fn backup(&self, out: std::path::PathBuf) -> StoreFuture<'_, BackupSummary> {
        let _ = out;
        Box::pin(async {
            Err(StoreError::Unsupported(
                "this store cannot write backups".into(),
            ))
        })
    }
}
