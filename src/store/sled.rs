//! The sled engine: the issuer's store in one embedded database in the
//! data directory (layout in `sled_layout`, write path in `sled_write`).
//!
//! sled locks its directory, so one process writes at a time; the engine
//! still keeps to the interface's rules (chaining, name claims and
//! compare-and-set inside the transaction), so the domain cannot tell.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};

use latchkey_verifier::TokenStatus;
use time::OffsetDateTime;

use crate::audit::{self, AuditEntry, ChainHead, ChainReport, NewEntry};
use crate::model::{KeyRecord, SigningKeyInfo};
use crate::store::sled_layout::*;
use crate::store::sled_write::{Committer, Job, Op, Outcome};
use crate::store::{
    Boot, CommitHook, Durability, KeyUpdate, NewKey, SigningKeyChange, Store, StoreError,
    StoreFuture, StoreResult, ready,
};

pub use crate::store::sled_layout::{IndexRebuild, open_db};

/// The issuer's store in a sled database.
pub struct SledStore {
    trees: Trees,
    boot: Boot,
    list_capacity: u64,
    next_slot: Arc<AtomicU64>,
    jobs: Sender<Job>,
    hook: Arc<RwLock<Option<CommitHook>>>,
    crash_before_signing_audit: Arc<AtomicBool>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens the store in `dir` (creating it), bringing an older layout up
    /// to date. `default_list_capacity` applies to a new store only.
    pub fn open_dir(
        dir: &std::path::Path,
        default_list_capacity: u64,
    ) -> Result<SledStore, String> {
        let db = open_db(dir)?;
        SledStore::open(db, default_list_capacity).map_err(|e| e.to_string())
    }

    /// Opens the store over an open database.
    pub fn open(db: sled::Db, default_list_capacity: u64) -> StoreResult<SledStore> {
        let trees = Trees::open(db)?;
        let meta = &trees.meta;
        let list_capacity = match meta.get(META_LIST_CAPACITY).map_err(internal)? {
            Some(bytes) => read_u64(&bytes)?,
            None => {
                meta.insert(META_LIST_CAPACITY, &default_list_capacity.to_be_bytes())
                    .map_err(internal)?;
                default_list_capacity
            }
        };
        let next_slot = match meta.get(META_STATUS_NEXT).map_err(internal)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let status_seq = match meta.get(META_STATUS_SEQ).map_err(internal)? {
            Some(bytes) => read_u64(&bytes)?,
            None => 0,
        };
        let status_epoch = match meta.get(META_STATUS_EPOCH).map_err(internal)? {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map_err(|_| StoreError::Internal("the status epoch is not text".into()))?,
            None => {
                // Data directories from before epochs get one now; their
                // sequence never went back, so any name will do.
                let epoch = new_epoch()?;
                meta.insert(META_STATUS_EPOCH, epoch.as_bytes())
                    .map_err(internal)?;
                epoch
            }
        };
        let mut statuses = Vec::new();
        for item in trees.statuses.iter() {
            let (k, v) = item.map_err(internal)?;
            statuses.push((
                read_u64(&k)?,
                TokenStatus::from_bits(v.first().copied().unwrap_or(1)),
            ));
        }
        let rebuild = ensure_names_layout(&trees)?;
        if rebuild.rebuilt {
            trees.db.flush().map_err(internal)?;
            tracing::info!(
                keys = rebuild.keys,
                "rebuilt the unique-name index (names now compare NFKC case-folded)"
            );
        }
        for (id, holder) in &rebuild.collisions {
            tracing::warn!(key = %id, same_name_as = %holder, "two existing keys have names that are now the same name; both keep working, and no new key can take it");
        }
        let head = read_head(meta)?;
        let next = Arc::new(AtomicU64::new(next_slot));
        let hook: Arc<RwLock<Option<CommitHook>>> = Arc::default();
        let crash = Arc::new(AtomicBool::new(false));
        let committer = Committer {
            trees: trees.clone(),
            head,
            status_seq,
            next_slot: Arc::clone(&next),
            hook: Arc::clone(&hook),
            crash_before_signing_audit: Arc::clone(&crash),
        };
        let (jobs, job_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("latchkey-commit".into())
            .spawn(move || committer.run(job_rx))
            .map_err(internal)?;
        Ok(SledStore {
            boot: Boot {
                list_capacity,
                next_slot,
                status_seq,
                status_epoch,
                statuses,
            },
            trees,
            list_capacity,
            next_slot: next,
            jobs,
            hook,
            crash_before_signing_audit: crash,
        })
    }

    /// Test hook: the next signing-key change fails as a crash would
    /// between writing the key records and writing their audit entries.
    #[doc(hidden)]
    pub fn inject_crash_before_signing_key_audit(&self) {
        self.crash_before_signing_audit
            .store(true, Ordering::SeqCst);
    }

    /// Queues a job; the future resolves with its outcome.
    fn submit(
        &self,
        op: Op,
        at: OffsetDateTime,
        durable: bool,
    ) -> StoreFuture<'_, Vec<StoreResult<()>>> {
        let (reply, outcome) = tokio::sync::oneshot::channel::<Outcome>();
        let sent = self.jobs.send(Job {
            op,
            at,
            durable,
            reply,
        });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Internal("the store's writer has stopped".into()))?;
            outcome
                .await
                .map_err(|_| StoreError::Internal("the store's writer has stopped".into()))?
        })
    }

    fn submit_one(&self, op: Op, at: OffsetDateTime, durable: bool) -> StoreFuture<'_, ()> {
        let outcome = self.submit(op, at, durable);
        Box::pin(async move {
            outcome
                .await?
                .pop()
                .unwrap_or_else(|| Err(StoreError::Internal("a write had no outcome".into())))
        })
    }
}

fn now_utc() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Store for SledStore {
    fn boot(&self) -> StoreFuture<'_, Boot> {
        ready(Ok(self.boot.clone()))
    }

    fn set_commit_hook(&self, hook: CommitHook) {
        if let Ok(mut slot) = self.hook.write() {
            *slot = Some(hook);
        }
    }

    fn list_capacity(&self) -> u64 {
        self.list_capacity
    }

    fn allocate_slot(&self) -> StoreFuture<'_, u64> {
        ready(Ok(self.next_slot.fetch_add(1, Ordering::SeqCst)))
    }

    fn insert_keys(
        &self,
        keys: Vec<NewKey>,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, Vec<StoreResult<()>>> {
        // Encoded here, on the caller's task, not on the committer.
        let encoded: StoreResult<Vec<(NewKey, Vec<u8>)>> = keys
            .into_iter()
            .map(|key| encode(&key.record).map(|bytes| (key, bytes)))
            .collect();
        match encoded {
            Ok(items) => self.submit(Op::Create(items), at, true),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn update_key(&self, update: KeyUpdate, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        self.submit_one(Op::Update(Box::new(update)), at, true)
    }

    fn touch_last_used(&self, id: &str, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        self.submit_one(Op::Touch { id: id.to_owned() }, at, false)
    }

    fn append_audit(
        &self,
        entries: Vec<NewEntry>,
        at: OffsetDateTime,
        durability: Durability,
    ) -> StoreFuture<'_, ()> {
        self.submit_one(Op::Audit(entries), at, durability == Durability::Durable)
    }

    fn change_signing_keys(
        &self,
        changes: Vec<SigningKeyChange>,
        entries: Vec<NewEntry>,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, ()> {
        self.submit_one(Op::SigningKeys { changes, entries }, at, true)
    }

    fn set_bootstrap_pending(&self, key_id: Option<String>) -> StoreFuture<'_, ()> {
        let value = key_id.map(String::into_bytes);
        self.submit_one(
            Op::Meta {
                key: META_BOOTSTRAP_PENDING,
                value,
            },
            now_utc(),
            true,
        )
    }

    fn record_issuer(&self, issuer: String) -> StoreFuture<'_, ()> {
        self.submit_one(
            Op::Meta {
                key: META_ISSUER,
                value: Some(issuer.into_bytes()),
            },
            now_utc(),
            true,
        )
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        self.submit_one(Op::Flush, now_utc(), true)
    }

    fn key<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<KeyRecord>> {
        ready(self.read_key(id))
    }

    fn key_id_for_jti<'a>(&'a self, jti: &'a str) -> StoreFuture<'a, Option<String>> {
        ready(
            self.trees
                .tokens
                .get(jti.as_bytes())
                .map_err(internal)
                .map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned())),
        )
    }

    fn scan_keys<'a>(
        &'a self,
        before: Option<&'a str>,
        visit: &'a mut (dyn FnMut(KeyRecord) -> bool + Send),
    ) -> StoreFuture<'a, ()> {
        ready(self.scan(before, visit))
    }

    fn has_no_keys(&self) -> StoreFuture<'_, bool> {
        ready(Ok(self.trees.keys.is_empty()))
    }

    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKeyInfo>> {
        ready(self.read_signing_keys())
    }

    fn audit_page(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<AuditEntry>> {
        let start = seq_key(after.saturating_add(1));
        ready(
            self.trees
                .audit
                .range(start..)
                .take(limit)
                .map(|item| {
                    let (_, value) = item.map_err(internal)?;
                    decode("audit entry", &value)
                })
                .collect(),
        )
    }

    fn audit_head(&self) -> StoreFuture<'_, ChainHead> {
        ready(read_head(&self.trees.meta))
    }

    fn verify_audit(&self) -> StoreFuture<'_, Result<ChainReport, String>> {
        ready(Ok(verify_stored_chain(&self.trees)))
    }

    fn bootstrap_pending(&self) -> StoreFuture<'_, Option<String>> {
        ready(self.meta_text(META_BOOTSTRAP_PENDING))
    }

    fn recorded_issuer(&self) -> StoreFuture<'_, Option<String>> {
        ready(self.meta_text(META_ISSUER))
    }

    fn backup(&self, out: std::path::PathBuf) -> StoreFuture<'_, crate::store::BackupSummary> {
        // The committer takes the snapshot between batches (`sled_backup`);
        // the fsync happens here, off its thread, so writes wait less.
        let (reply, snapshot) = tokio::sync::oneshot::channel();
        let request = crate::store::sled_backup::BackupRequest { path: out, reply };
        let queued = self.submit(Op::Backup(request), now_utc(), false);
        Box::pin(async move {
            // The job's own reply carries nothing for a backup.
            drop(queued);
            let stopped = || StoreError::Internal("the store's writer has stopped".into());
            let (summary, file) = snapshot.await.map_err(|_| stopped())??;
            tokio::task::spawn_blocking(move || file.sync_all())
                .await
                .map_err(|_| stopped())?
                .map_err(|e| StoreError::Internal(format!("cannot sync the backup: {e}")))?;
            Ok(summary)
        })
    }
}

impl SledStore {
    fn read_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        match self.trees.keys.get(id.as_bytes()).map_err(internal)? {
            Some(bytes) => decode("key", &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn scan(
        &self,
        before: Option<&str>,
        visit: &mut (dyn FnMut(KeyRecord) -> bool + Send),
    ) -> StoreResult<()> {
        let iter = match before {
            Some(id) => self.trees.keys.range(..id.as_bytes()),
            None => self.trees.keys.iter(),
        };
        for item in iter.rev() {
            let (_, value) = item.map_err(internal)?;
            if !visit(decode("key", &value)?) {
                break;
            }
        }
        Ok(())
    }

    fn read_signing_keys(&self) -> StoreResult<Vec<SigningKeyInfo>> {
        let mut infos = Vec::new();
        for item in self.trees.signing_keys.iter() {
            let (_, value) = item.map_err(internal)?;
            infos.push(decode("signing key", &value)?);
        }
        Ok(infos)
    }

    fn meta_text(&self, key: &[u8]) -> StoreResult<Option<String>> {
        Ok(self
            .trees
            .meta
            .get(key)
            .map_err(internal)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

/// Checks numbering, links, hashes, each entry's position and the recorded
/// head (which catches entries removed from the end).
pub(crate) fn verify_stored_chain(trees: &Trees) -> Result<ChainReport, String> {
    let mut head = ChainHead::genesis();
    for item in trees.audit.iter() {
        let (key, value) = item.map_err(|e| e.to_string())?;
        let expected_seq = head.seq + 1;
        let entry: AuditEntry = serde_json::from_slice(&value)
            .map_err(|_| format!("entry {expected_seq}: not a valid audit entry (edited?)"))?;
        if key.as_ref() != seq_key(entry.seq) {
            return Err(format!(
                "entry stored under the wrong position near seq {expected_seq}"
            ));
        }
        head = audit::check_link(&head, entry)?;
    }
    let recorded = read_head(&trees.meta).map_err(|e| e.to_string())?;
    if recorded != head {
        return Err(format!(
            "the log ends at entry {} but the recorded head is entry {}: entries were removed from the end",
            head.seq, recorded.seq
        ));
    }
    Ok(ChainReport {
        entries: head.seq,
        head,
    })
}
