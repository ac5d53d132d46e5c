//! The key registry: key records, the unique-name index, token status slots
//! and the audit log, all in one sled database.
//!
//! Every mutation is one sled transaction that changes the record, the
//! statuses of its tokens and appends the audit entry together, so a crash
//! leaves either all of it or none. Mutations are serialised by one writer
//! lock (held only for in-memory work, never across an fsync), which makes
//! the unique-name check race-free; durability comes afterwards from the
//! shared [`FlushGroup`], so concurrent writers share one fsync.
//!
//! Time is always a parameter, so expiry logic is tested with fixed clocks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use latchkey_verifier::{AccessClaims, Audience, Role, StatusClaim, StatusListRef, TokenStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Actor, AuditEntry, ChainHead, NewEntry};
use crate::durability::{FlushError, FlushGroup};
use crate::names::fold_name;
use crate::signing::SigningKey;
use crate::status_board::StatusBoard;
use crate::validation::{FieldError, NewKeyRequest, ValidNewKey};

const META_STATUS_NEXT: &[u8] = b"status_next";
const META_LIST_CAPACITY: &[u8] = b"status_list_capacity";
const META_STATUS_SEQ: &[u8] = b"status_seq";
/// The name of the status sequence space (see [`StatusBoard::epoch`]).
const META_STATUS_EPOCH: &[u8] = b"status_epoch";
/// How often a key's `last_used_at` is written at most.
pub const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// The lasting state of a key; `expired` is derived from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    Suspended,
    Revoked,
}

/// What a key looks like to a client at a given time (contract §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Suspended,
    Revoked,
    Expired,
}

impl KeyStatus {
    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "active" => Some(KeyStatus::Active),
            "suspended" => Some(KeyStatus::Suspended),
            "revoked" => Some(KeyStatus::Revoked),
            "expired" => Some(KeyStatus::Expired),
            _ => None,
        }
    }
}

/// One token minted for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSlot {
    pub jti: String,
    /// Global status slot: list = slot / capacity, idx = slot % capacity.
    pub slot: u64,
    pub issued_at: i64,
    pub expires_at: i64,
    pub signing_kid: String,
    /// Revoked on its own (renew with `revoke_previous`), whatever the key's state.
    #[serde(default)]
    pub revoked: bool,
}

/// A key as stored. Never contains a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub roles: Vec<Role>,
    pub accounts: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: Actor,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    pub state: KeyState,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub signing_kid: String,
    pub tokens: Vec<TokenSlot>,
}

impl KeyRecord {
    pub fn status(&self, now: OffsetDateTime) -> KeyStatus {
        match self.state {
            KeyState::Revoked => KeyStatus::Revoked,
            _ if self.expires_at <= now => KeyStatus::Expired,
            KeyState::Suspended => KeyStatus::Suspended,
            KeyState::Active => KeyStatus::Active,
        }
    }

    /// The status bit a token of this key should carry.
    fn token_status(&self, token: &TokenSlot) -> TokenStatus {
        if token.revoked || self.state == KeyState::Revoked {
            TokenStatus::Invalid
        } else if self.state == KeyState::Suspended {
            TokenStatus::Suspended
        } else {
            TokenStatus::Valid
        }
    }
}

/// One status bit that a mutation changed; pushed to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    pub slot: u64,
    pub status: TokenStatus,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("no key with that id")]
    NotFound,
    #[error(
        "a key named {0:?} already exists (names are unique ignoring letter case and compatibility forms, revoked keys included)"
    )]
    NameTaken(String),
    #[error("the key is revoked; revocation is permanent")]
    AlreadyRevoked,
    #[error("{0}")]
    InvalidState(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("storage error: {0}")]
    Internal(String),
    #[error(transparent)]
    Flush(#[from] FlushError),
}

impl From<sled::Error> for RegistryError {
    fn from(e: sled::Error) -> Self {
        RegistryError::Internal(e.to_string())
    }
}

impl From<TransactionError<RegistryError>> for RegistryError {
    fn from(e: TransactionError<RegistryError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => RegistryError::Internal(e.to_string()),
        }
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<RegistryError>>;

fn abort<T>(e: RegistryError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn encode<T: Serialize>(value: &T) -> TxResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| ConflictableTransactionError::Abort(RegistryError::Internal(e.to_string())))
}

/// What the issuer signs into every token.
#[derive(Debug, Clone)]
pub struct IssuanceSettings {
    pub issuer: String,
    pub audience: Audience,
    pub max_expiry_days: u32,
}

impl IssuanceSettings {
    /// The URL of status list `list`.
    pub fn status_list_uri(&self, list: u64) -> String {
        format!("{}/v1/status/{list}", self.issuer.trim_end_matches('/'))
    }
}

/// A freshly minted token: returned once, never stored.
pub struct Minted {
    pub record: KeyRecord,
    pub token: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("record", &self.record)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A page of keys.
#[derive(Debug)]
pub struct KeyPage {
    pub items: Vec<KeyRecord>,
    pub next_cursor: Option<String>,
}

/// Filters for listing keys.
#[derive(Debug, Default, Clone)]
pub struct KeyFilter {
    pub status: Option<KeyStatus>,
    /// Case-insensitive substring of the name or description.
    pub query: Option<String>,
}

struct WriterState {
    audit_head: ChainHead,
}

/// The key registry over an open sled database.
pub struct Registry {
    keys: sled::Tree,
    names: sled::Tree,
    tokens: sled::Tree,
    statuses: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    signing_keys: sled::Tree,
    writer: Mutex<WriterState>,
    next_slot: AtomicU64,
    list_capacity: u64,
    last_used_written: Mutex<HashMap<String, i64>>,
    flush: FlushGroup,
    board: StatusBoard,
    /// Creates waiting to be committed together (see [`Registry::create`]).
    create_queue: Mutex<Vec<QueuedCreate>>,
    /// Held by the task committing the queued creates.
    create_leader: tokio::sync::Mutex<()>,
}

/// A prepared create and where to send its outcome.
type QueuedCreate = (
    PreparedCreate,
    tokio::sync::oneshot::Sender<Result<(), RegistryError>>,
);

/// A create that is minted and ready to commit.
struct PreparedCreate {
    record: KeyRecord,
    record_bytes: Vec<u8>,
    folded: String,
    jti: String,
    entry: NewEntry,
    now: OffsetDateTime,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Opens the sled database in `dir`, explaining the common failure of
/// another process (a running server) holding it.
pub fn open_db(dir: &std::path::Path) -> Result<sled::Db, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    sled::Config::new()
        .path(dir.join("db"))
        .flush_every_ms(Some(1000))
        .open()
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") || text.contains("WouldBlock") || text.contains("temporarily unavailable") {
                format!(
                    "the database in {} is in use by another process (is `latchkey serve` running? stop it first)",
                    dir.display()
                )
            } else {
                format!("cannot open the database in {}: {text}", dir.display())
            }
        })
}

impl Registry {
    /// Opens the registry's trees. Must run inside a tokio runtime (it starts the flusher).
    pub fn open(db: sled::Db, default_list_capacity: u64) -> Result<Registry, RegistryError> {
        let meta = db.open_tree("meta")?;
        let list_capacity = match meta.get(META_LIST_CAPACITY)? {
            Some(bytes) => read_u64(&bytes)?,
            None => {
                meta.insert(META_LIST_CAPACITY, &default_list_capacity.to_be_bytes())?;
                default_list_capacity
            }
        };
        let next_slot = match meta.get(META_STATUS_NEXT)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let audit_head = audit::read_head(&meta).map_err(RegistryError::Internal)?;
        let status_seq = match meta.get(META_STATUS_SEQ)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let status_epoch = match meta.get(META_STATUS_EPOCH)? {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map_err(|_| RegistryError::Internal("the status epoch is not text".into()))?,
            None => {
                // Data directories from before epochs get one now; their
                // sequence never went back, so any name will do.
                let epoch = new_epoch()?;
                meta.insert(META_STATUS_EPOCH, epoch.as_bytes())?;
                epoch
            }
        };
        let statuses = db.open_tree("statuses")?;
        let board = StatusBoard::new(list_capacity, next_slot, status_seq, status_epoch);
        for item in statuses.iter() {
            let (k, v) = item?;
            board.load(
                read_u64(&k)?,
                TokenStatus::from_bits(v.first().copied().unwrap_or(1)),
            );
        }
        let keys = db.open_tree("keys")?;
        let names = db.open_tree("names")?;
        let rebuild = crate::names::ensure_index_layout(&keys, &names, &meta)
            .map_err(RegistryError::Internal)?;
        if rebuild.rebuilt {
            db.flush()?;
            tracing::info!(
                keys = rebuild.keys,
                "rebuilt the unique-name index (names now compare NFKC case-folded)"
            );
        }
        for (id, holder) in &rebuild.collisions {
            tracing::warn!(key = %id, same_name_as = %holder, "two existing keys have names that are now the same name; both keep working, and no new key can take it");
        }
        Ok(Registry {
            keys,
            names,
            tokens: db.open_tree("tokens")?,
            statuses,
            audit: db.open_tree("audit")?,
            signing_keys: db.open_tree("signing_keys")?,
            meta,
            writer: Mutex::new(WriterState { audit_head }),
            next_slot: AtomicU64::new(next_slot),
            list_capacity,
            last_used_written: Mutex::new(HashMap::new()),
            flush: FlushGroup::start(db.clone()),
            board,
            create_queue: Mutex::new(Vec::new()),
            create_leader: tokio::sync::Mutex::new(()),
        })
    }

    pub fn signing_keys_tree(&self) -> &sled::Tree {
        &self.signing_keys
    }

    pub fn audit_tree(&self) -> &sled::Tree {
        &self.audit
    }

    pub fn meta_tree(&self) -> &sled::Tree {
        &self.meta
    }

    /// The published statuses.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Entries per status list.
    pub fn list_capacity(&self) -> u64 {
        self.list_capacity
    }

    /// Where `slot` lives: (list number, index in the list).
    pub fn locate(&self, slot: u64) -> (u64, u64) {
        (slot / self.list_capacity, slot % self.list_capacity)
    }

    /// Waits until every change made so far is on disk.
    pub async fn flush(&self) -> Result<(), FlushError> {
        self.flush.flush().await
    }

    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, WriterState>, RegistryError> {
        self.writer
            .lock()
            .map_err(|_| RegistryError::Internal("writer lock poisoned".into()))
    }

    fn mint_token(
        &self,
        record: &KeyRecord,
        signing_key: &SigningKey,
        settings: &IssuanceSettings,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(TokenSlot, String), RegistryError> {
        let slot = self.next_slot.fetch_add(1, Ordering::SeqCst);
        let (list, idx) = self.locate(slot);
        let jti = Uuid::now_v7().to_string();
        let claims = AccessClaims {
            iss: settings.issuer.clone(),
            sub: record.id.clone(),
            client_id: record.id.clone(),
            aud: settings.audience.clone(),
            iat: now.unix_timestamp(),
            nbf: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            jti: jti.clone(),
            name: record.name.clone(),
            roles: record.roles.clone(),
            accounts: record.accounts.clone(),
            status: StatusClaim {
                status_list: StatusListRef {
                    idx,
                    uri: settings.status_list_uri(list),
                },
            },
        };
        let token = signing_key
            .mint(&claims)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        metrics::counter!("latchkey_keys_minted_total").increment(1);
        Ok((
            TokenSlot {
                jti,
                slot,
                issued_at: now.unix_timestamp(),
                expires_at: expires_at.unix_timestamp(),
                signing_kid: signing_key.kid().to_owned(),
                revoked: false,
            },
            token,
        ))
    }

    /// Runs one mutation: the closure writes through the transactional trees
    /// and returns its result plus the audit entry; the entry is chained and
    /// appended in the same transaction.
    fn transact<T>(
        &self,
        now: OffsetDateTime,
        body: impl Fn(&Trees<'_>) -> TxResult<(T, NewEntry, Vec<StatusChange>)>,
    ) -> Result<T, RegistryError> {
        let mut writer = self.lock_writer()?;
        let head = writer.audit_head.clone();
        let next_slot = self.next_slot.load(Ordering::SeqCst);
        let status_seq = self.board.seq();
        let (value, entry, changes) = (
            &self.keys,
            &self.tokens,
            &self.statuses,
            &self.audit,
            &self.meta,
        )
            .transaction(|(keys, tokens, statuses, audit_tree, meta)| {
                let trees = Trees {
                    keys,
                    tokens,
                    statuses,
                };
                let (value, new_entry, changes) = body(&trees)?;
                let entry = audit::next_entry(&head, new_entry, now);
                audit::append_in_tx(audit_tree, meta, &entry)?;
                meta.insert(META_STATUS_NEXT, &next_slot.to_be_bytes())?;
                let seq = status_seq + changes.len() as u64;
                meta.insert(META_STATUS_SEQ, &seq.to_be_bytes())?;
                Ok((value, entry, changes))
            })?;
        writer.audit_head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
        // Still under the writer lock: the board follows commit order.
        self.board.ensure_slots(next_slot);
        let changes: Vec<(u64, TokenStatus)> = changes.iter().map(|c| (c.slot, c.status)).collect();
        self.board.apply(&changes);
        Ok(value)
    }

    /// Creates a key and mints its first token. `signing_key` is the active key.
    pub async fn create(
        &self,
        actor: &Actor,
        request: &NewKeyRequest,
        signing_key: &SigningKey,
        settings: &IssuanceSettings,
        now: OffsetDateTime,
    ) -> Result<Minted, RegistryError> {
        let valid: ValidNewKey = request
            .validate(settings.max_expiry_days, now)
            .map_err(RegistryError::Validation)?;
        let (prepared, token) = self.prepare_create(actor, valid, signing_key, settings, now)?;
        let record = prepared.record.clone();
        let (reply, committed) = tokio::sync::oneshot::channel();
        self.create_queue
            .lock()
            .map_err(|_| RegistryError::Internal("create queue lock poisoned".into()))?
            .push((prepared, reply));
        // Whoever holds the leader lock commits everything queued so far in
        // one transaction: every sled transaction rolls and writes sled's log
        // buffer, so under concurrency one per batch is much cheaper than one
        // per key. By the time this task gets the lock, its own create may
        // already have been committed by the previous leader.
        {
            let _leader = self.create_leader.lock().await;
            let batch = std::mem::take(
                &mut *self
                    .create_queue
                    .lock()
                    .map_err(|_| RegistryError::Internal("create queue lock poisoned".into()))?,
            );
            if !batch.is_empty() {
                let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let results = self.commit_creates(&items);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        }
        committed.await.map_err(|_| {
            RegistryError::Internal("the create was dropped before it committed".into())
        })??;
        self.flush().await?;
        Ok(Minted { record, token })
    }

    /// The synchronous part of [`Registry::create`], for offline commands
    /// that flush themselves.
    pub fn create_valid(
        &self,
        actor: &Actor,
        valid: ValidNewKey,
        signing_key: &SigningKey,
        settings: &IssuanceSettings,
        now: OffsetDateTime,
    ) -> Result<Minted, RegistryError> {
        let (prepared, token) = self.prepare_create(actor, valid, signing_key, settings, now)?;
        let record = prepared.record.clone();
        self.commit_creates(std::slice::from_ref(&prepared))
            .pop()
            .unwrap_or_else(|| Err(RegistryError::Internal("empty commit".into())))?;
        Ok(Minted { record, token })
    }

    /// Builds the record, mints its first token and prepares the audit entry.
    fn prepare_create(
        &self,
        actor: &Actor,
        valid: ValidNewKey,
        signing_key: &SigningKey,
        settings: &IssuanceSettings,
        now: OffsetDateTime,
    ) -> Result<(PreparedCreate, String), RegistryError> {
        let mut record = KeyRecord {
            id: Uuid::now_v7().to_string(),
            name: valid.name,
            description: valid.description,
            roles: valid.roles,
            accounts: valid.accounts,
            created_at: now,
            created_by: actor.clone(),
            expires_at: valid.expires_at,
            last_used_at: None,
            state: KeyState::Active,
            revoked_at: None,
            signing_kid: signing_key.kid().to_owned(),
            tokens: Vec::new(),
        };
        let (slot, token) =
            self.mint_token(&record, signing_key, settings, now, record.expires_at)?;
        record.tokens.push(slot.clone());
        let folded = fold_name(&record.name);
        let record_bytes =
            serde_json::to_vec(&record).map_err(|e| RegistryError::Internal(e.to_string()))?;
        let entry = NewEntry {
            actor: actor.clone(),
            action: "key.create",
            target: Some(record.id.clone()),
            details: json!({
                "name": record.name,
                "roles": record.roles,
                "accounts": record.accounts,
                "expires_at": rfc3339(record.expires_at),
                "jti": slot.jti,
            }),
        };
        Ok((
            PreparedCreate {
                record,
                record_bytes,
                folded,
                jti: slot.jti,
                entry,
                now,
            },
            token,
        ))
    }

    /// Commits creates in one transaction, each name checked against the
    /// index and the rest of the batch; returns one result per create, in order.
    fn commit_creates(&self, items: &[PreparedCreate]) -> Vec<Result<(), RegistryError>> {
        let mut writer = match self.lock_writer() {
            Ok(w) => w,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        let start = writer.audit_head.clone();
        let next_slot = self.next_slot.load(Ordering::SeqCst);
        let outcome = (
            &self.keys,
            &self.names,
            &self.tokens,
            &self.audit,
            &self.meta,
        )
            .transaction(|(keys, names, tokens, audit_tree, meta)| {
                let mut head = start.clone();
                let mut results = Vec::with_capacity(items.len());
                let mut in_batch = std::collections::HashSet::with_capacity(items.len());
                for item in items {
                    if !in_batch.insert(item.folded.as_str())
                        || names.get(item.folded.as_bytes())?.is_some()
                    {
                        results.push(Err(RegistryError::NameTaken(item.record.name.clone())));
                        continue;
                    }
                    names.insert(item.folded.as_bytes(), item.record.id.as_bytes())?;
                    keys.insert(item.record.id.as_bytes(), item.record_bytes.clone())?;
                    tokens.insert(item.jti.as_bytes(), item.record.id.as_bytes())?;
                    let entry = audit::next_entry(&head, item.entry.clone(), item.now);
                    audit::append_in_tx(audit_tree, meta, &entry)?;
                    head = ChainHead {
                        seq: entry.seq,
                        hash: entry.hash,
                    };
                    results.push(Ok(()));
                }
                meta.insert(META_STATUS_NEXT, &next_slot.to_be_bytes())?;
                Ok((results, head))
            });
        match outcome {
            Ok((results, head)) => {
                writer.audit_head = head;
                self.board.ensure_slots(next_slot);
                results
            }
            Err(e) => {
                let e = RegistryError::from(e);
                items.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    /// Reads one key.
    pub fn get(&self, id: &str) -> Result<KeyRecord, RegistryError> {
        let bytes = self
            .keys
            .get(id.as_bytes())?
            .ok_or(RegistryError::NotFound)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Internal(format!("key record is corrupt: {e}")))
    }

    /// The id of the key that minted token `jti`.
    pub fn key_id_for_jti(&self, jti: &str) -> Result<Option<String>, RegistryError> {
        Ok(self
            .tokens
            .get(jti.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Lists keys newest first. `cursor` is the id of the last key of the previous page.
    pub fn list(
        &self,
        filter: &KeyFilter,
        cursor: Option<&str>,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<KeyPage, RegistryError> {
        let query = filter.query.as_ref().map(|q| q.to_lowercase());
        let iter = match cursor {
            Some(cursor) => self.keys.range(..cursor.as_bytes()),
            None => self.keys.iter(),
        };
        let mut items = Vec::with_capacity(limit.min(512));
        let mut next_cursor = None;
        for item in iter.rev() {
            let (_, value) = item?;
            let record: KeyRecord = serde_json::from_slice(&value)
                .map_err(|e| RegistryError::Internal(format!("key record is corrupt: {e}")))?;
            if let Some(status) = filter.status
                && record.status(now) != status
            {
                continue;
            }
            if let Some(q) = &query
                && !record.name.to_lowercase().contains(q.as_str())
                && !record.description.to_lowercase().contains(q.as_str())
            {
                continue;
            }
            if items.len() == limit {
                next_cursor = items.last().map(|r: &KeyRecord| r.id.clone());
                break;
            }
            items.push(record);
        }
        Ok(KeyPage { items, next_cursor })
    }

    /// Applies `change` to key `id` inside a transaction, rewriting the
    /// status of every token whose bit changes, and records `action`.
    fn mutate(
        &self,
        actor: &Actor,
        id: &str,
        now: OffsetDateTime,
        action: &'static str,
        change: impl Fn(&mut KeyRecord) -> Result<serde_json::Value, RegistryError>,
    ) -> Result<KeyRecord, RegistryError> {
        self.transact(now, |t| {
            let bytes = match t.keys.get(id.as_bytes())? {
                Some(b) => b,
                None => return abort(RegistryError::NotFound),
            };
            let mut record: KeyRecord = serde_json::from_slice(&bytes).map_err(|e| {
                ConflictableTransactionError::Abort(RegistryError::Internal(e.to_string()))
            })?;
            let before: Vec<TokenStatus> = record
                .tokens
                .iter()
                .map(|tk| record.token_status(tk))
                .collect();
            let details = match change(&mut record) {
                Ok(d) => d,
                Err(e) => return abort(e),
            };
            let mut changes = Vec::new();
            for (i, token) in record.tokens.iter().enumerate() {
                let after = record.token_status(token);
                let previous = before.get(i).copied();
                if previous.is_none() {
                    // A token minted by this change (renew).
                    t.tokens.insert(token.jti.as_bytes(), id.as_bytes())?;
                }
                if previous.unwrap_or(TokenStatus::Valid) != after {
                    write_status(t.statuses, token.slot, after)?;
                    changes.push(StatusChange {
                        slot: token.slot,
                        status: after,
                    });
                }
            }
            t.keys.insert(id.as_bytes(), encode(&record)?)?;
            let entry = NewEntry {
                actor: actor.clone(),
                action,
                target: Some(id.to_owned()),
                details,
            };
            Ok((record, entry, changes))
        })
    }

    /// Changes the description.
    pub async fn set_description(
        &self,
        actor: &Actor,
        id: &str,
        description: String,
        now: OffsetDateTime,
    ) -> Result<KeyRecord, RegistryError> {
        let record = self.mutate(actor, id, now, "key.update", |record| {
            let details = json!({"description": {"from": record.description, "to": description}});
            record.description = description.clone();
            Ok(details)
        })?;
        self.flush().await?;
        Ok(record)
    }

    /// Suspends every live token of the key.
    pub async fn suspend(
        &self,
        actor: &Actor,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<KeyRecord, RegistryError> {
        let result = self.mutate(actor, id, now, "key.suspend", |record| match record.state {
            KeyState::Revoked => Err(RegistryError::AlreadyRevoked),
            KeyState::Suspended => Err(RegistryError::InvalidState(
                "the key is already suspended".into(),
            )),
            KeyState::Active => {
                record.state = KeyState::Suspended;
                Ok(json!({"name": record.name}))
            }
        })?;
        self.flush().await?;
        Ok(result)
    }

    /// Lifts a suspension.
    pub async fn resume(
        &self,
        actor: &Actor,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<KeyRecord, RegistryError> {
        let result = self.mutate(actor, id, now, "key.resume", |record| match record.state {
            KeyState::Revoked => Err(RegistryError::AlreadyRevoked),
            KeyState::Active => Err(RegistryError::InvalidState(
                "the key is not suspended".into(),
            )),
            KeyState::Suspended => {
                record.state = KeyState::Active;
                Ok(json!({"name": record.name}))
            }
        })?;
        self.flush().await?;
        Ok(result)
    }

    /// Revokes the key and every token it has, permanently.
    pub async fn revoke(
        &self,
        actor: &Actor,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<KeyRecord, RegistryError> {
        let result = self.mutate(actor, id, now, "key.revoke", |record| match record.state {
            KeyState::Revoked => Err(RegistryError::AlreadyRevoked),
            _ => {
                record.state = KeyState::Revoked;
                record.revoked_at = Some(now);
                Ok(json!({"name": record.name, "tokens": record.tokens.len()}))
            }
        })?;
        self.flush().await?;
        Ok(result)
    }

    /// Mints a replacement token for the key: same `sub`, name, roles and
    /// accounts; new `jti`, status slot and expiry.
    #[allow(clippy::too_many_arguments)]
    pub async fn renew(
        &self,
        actor: &Actor,
        id: &str,
        expires_in_days: Option<u32>,
        revoke_previous: bool,
        signing_key: &SigningKey,
        settings: &IssuanceSettings,
        now: OffsetDateTime,
    ) -> Result<Minted, RegistryError> {
        let expires_at = crate::validation::expiry(expires_in_days, settings.max_expiry_days, now)
            .map_err(|e| RegistryError::Validation(vec![e]))?;
        let current = self.get(id)?;
        if current.state == KeyState::Revoked {
            return Err(RegistryError::AlreadyRevoked);
        }
        let (slot, token) = self.mint_token(&current, signing_key, settings, now, expires_at)?;
        let kid = signing_key.kid().to_owned();
        let record = self.mutate(actor, id, now, "key.renew", |record| {
            if record.state == KeyState::Revoked {
                return Err(RegistryError::AlreadyRevoked);
            }
            let mut revoked = Vec::new();
            if revoke_previous {
                for token in record.tokens.iter_mut().filter(|t| !t.revoked) {
                    token.revoked = true;
                    revoked.push(token.jti.clone());
                }
            }
            record.tokens.push(slot.clone());
            record.expires_at = expires_at;
            record.signing_kid = kid.clone();
            Ok(json!({
                "name": record.name,
                "jti": slot.jti,
                "expires_at": rfc3339(expires_at),
                "revoke_previous": revoke_previous,
                "revoked_jtis": revoked,
            }))
        })?;
        self.flush().await?;
        Ok(Minted { record, token })
    }

    /// The status bit of a token slot.
    pub fn token_status(&self, slot: u64) -> Result<TokenStatus, RegistryError> {
        Ok(match self.statuses.get(slot.to_be_bytes())? {
            None => TokenStatus::Valid,
            Some(v) => TokenStatus::from_bits(v.first().copied().unwrap_or(1)),
        })
    }

    /// Every non-valid status bit, for rebuilding the published lists.
    pub fn non_valid_statuses(
        &self,
    ) -> impl Iterator<Item = Result<(u64, TokenStatus), RegistryError>> + '_ {
        self.statuses.iter().map(|item| {
            let (k, v) = item?;
            Ok((
                read_u64(&k)?,
                TokenStatus::from_bits(v.first().copied().unwrap_or(1)),
            ))
        })
    }

    /// Records that key `id` authenticated, at most once per
    /// [`LAST_USED_RESOLUTION_SECS`]; not flushed on its own.
    pub fn touch_last_used(&self, id: &str, now: OffsetDateTime) -> Result<(), RegistryError> {
        let ts = now.unix_timestamp();
        {
            let mut written = self
                .last_used_written
                .lock()
                .map_err(|_| RegistryError::Internal("lock poisoned".into()))?;
            if let Some(last) = written.get(id)
                && ts - last < LAST_USED_RESOLUTION_SECS
            {
                return Ok(());
            }
            written.insert(id.to_owned(), ts);
        }
        let _writer = self.lock_writer()?;
        if let Some(bytes) = self.keys.get(id.as_bytes())? {
            let mut record: KeyRecord = serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::Internal(e.to_string()))?;
            record.last_used_at = Some(now);
            let bytes =
                serde_json::to_vec(&record).map_err(|e| RegistryError::Internal(e.to_string()))?;
            self.keys.insert(id.as_bytes(), bytes)?;
        }
        Ok(())
    }

    /// Appends an audit entry that has no other effect (e.g. a denied request).
    pub fn record_event(&self, entry: NewEntry, now: OffsetDateTime) -> Result<(), RegistryError> {
        self.transact(now, |_| Ok(((), entry.clone(), Vec::new())))
    }

    /// Appends an audit entry and waits until it is on disk.
    pub async fn record_event_durably(
        &self,
        entry: NewEntry,
        now: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        self.record_event(entry, now)?;
        self.flush().await?;
        Ok(())
    }

    /// A page of the audit log.
    pub fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, RegistryError> {
        audit::read_page(&self.audit, after, limit).map_err(RegistryError::Internal)
    }

    /// Whether a live token (not expired, not revoked) was signed by `kid`.
    pub fn kid_in_use(&self, kid: &str, now: OffsetDateTime) -> Result<bool, RegistryError> {
        let now = now.unix_timestamp();
        for item in self.keys.iter() {
            let (_, value) = item?;
            let record: KeyRecord = serde_json::from_slice(&value)
                .map_err(|e| RegistryError::Internal(e.to_string()))?;
            if record.state == KeyState::Revoked {
                continue;
            }
            if record
                .tokens
                .iter()
                .any(|t| t.signing_kid == kid && !t.revoked && t.expires_at > now)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the registry holds no key: O(1), where [`Registry::key_count`]
    /// walks every record (seconds, and the whole tree in memory, at a million).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The transactional trees a mutation body may write.
struct Trees<'a> {
    keys: &'a TransactionalTree,
    tokens: &'a TransactionalTree,
    statuses: &'a TransactionalTree,
}

fn write_status(statuses: &TransactionalTree, slot: u64, status: TokenStatus) -> TxResult<()> {
    if status == TokenStatus::Valid {
        statuses.remove(&slot.to_be_bytes())?;
    } else {
        statuses.insert(&slot.to_be_bytes(), &[status.bits()])?;
    }
    Ok(())
}

/// A fresh random name for a status sequence space (16 bytes, hex).
fn new_epoch() -> Result<String, RegistryError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RegistryError::Internal("no randomness for the status epoch".into()))?;
    Ok(hex::encode(bytes))
}

fn read_u64(bytes: &[u8]) -> Result<u64, RegistryError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| RegistryError::Internal("corrupt counter".into()))?;
    Ok(u64::from_be_bytes(array))
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
