//! The sled engine's write path: one committer thread.
//!
//! Every write is queued as a [`Job`]. The committer takes everything
//! queued, applies it in **one** sled transaction (each job on its own: a
//! taken name or a lost compare-and-set fails only its job), chains the
//! audit entries in order, reports the status changes through the commit
//! hook, then covers the jobs that must be durable with one
//! `sled::Db::flush` and answers them.
//!
//! Why: sled 0.34 seals and writes its log buffer on every multi-tree
//! transaction, so the cost of a write is mostly per transaction, not per
//! key; and a transaction waits for sled's concurrency-control lock, which
//! must not stall the async workers. Under load the batches grow by
//! themselves: whatever arrives while one commits goes into the next.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};

use latchkey_verifier::TokenStatus;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use time::OffsetDateTime;

use crate::audit::{self, ChainHead, NewEntry};
use crate::model::{KeyRecord, SigningKeyInfo};
use crate::store::sled_layout::*;
use crate::store::{
    CommitHook, KeyUpdate, NewKey, SigningKeyChange, StatusCommit, StoreError, StoreResult,
};

/// Most jobs in one transaction.
const MAX_BATCH: usize = 1024;

/// One queued write.
pub enum Op {
    /// Keys to insert, each with its record already encoded.
    Create(Vec<(NewKey, Vec<u8>)>),
    Update(Box<KeyUpdate>),
    Touch {
        id: String,
    },
    Audit(Vec<NewEntry>),
    SigningKeys {
        changes: Vec<SigningKeyChange>,
        entries: Vec<NewEntry>,
    },
    Meta {
        key: &'static [u8],
        value: Option<Vec<u8>>,
    },
    /// Nothing to write: resolves once everything before it is on disk.
    Flush,
}

/// Per-item outcomes of a job, or the failure of its whole batch.
pub type Outcome = StoreResult<Vec<StoreResult<()>>>;
pub type Reply = tokio::sync::oneshot::Sender<Outcome>;

pub struct Job {
    pub op: Op,
    pub at: OffsetDateTime,
    pub durable: bool,
    pub reply: Reply,
}

/// What the committer carries from one batch to the next.
pub struct Committer {
    pub trees: Trees,
    pub head: ChainHead,
    pub status_seq: u64,
    pub next_slot: Arc<AtomicU64>,
    pub hook: Arc<RwLock<Option<CommitHook>>>,
    /// Test hook: abort the next signing-key change after its records are
    /// written and before its audit entries are (a crash between them).
    pub crash_before_signing_audit: Arc<AtomicBool>,
}

type Tx<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> Tx<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn tx_encode<T: serde::Serialize>(value: &T) -> Tx<Vec<u8>> {
    encode(value).map_err(ConflictableTransactionError::Abort)
}

fn tx_decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Tx<T> {
    decode(what, bytes).map_err(ConflictableTransactionError::Abort)
}

struct TxTrees<'a> {
    keys: &'a TransactionalTree,
    names: &'a TransactionalTree,
    tokens: &'a TransactionalTree,
    statuses: &'a TransactionalTree,
    audit: &'a TransactionalTree,
    signing: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

/// The state a transaction advances: the chain head, the status sequence
/// and the status bits that changed.
struct Progress {
    head: ChainHead,
    seq: u64,
    changes: Vec<(u64, TokenStatus)>,
}

impl Progress {
    fn append(&mut self, t: &TxTrees<'_>, entry: NewEntry, at: OffsetDateTime) -> Tx<()> {
        let entry = audit::next_entry(&self.head, entry, at);
        t.audit.insert(&seq_key(entry.seq), tx_encode(&entry)?)?;
        self.head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
        Ok(())
    }

    fn set_status(&mut self, t: &TxTrees<'_>, slot: u64, status: TokenStatus) -> Tx<()> {
        if status == TokenStatus::Valid {
            t.statuses.remove(&slot.to_be_bytes())?;
        } else {
            t.statuses.insert(&slot.to_be_bytes(), &[status.bits()])?;
        }
        self.seq += 1;
        self.changes.push((slot, status));
        Ok(())
    }
}

impl Committer {
    /// Runs until every sender is gone, then drops the database.
    ///
    /// Commit and flush alternate on this one thread: whatever is queued
    /// while a flush runs goes into the next transaction, so under load one
    /// transaction and one flush cover many writes (flushing beside the
    /// commits instead made both smaller and more frequent, and each costs
    /// about the same whatever its size).
    pub fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let outcomes = self.commit(&batch);
            let mut durable = Vec::new();
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                if job.durable && outcome.is_ok() {
                    durable.push((job.reply, outcome));
                } else {
                    let _ = job.reply.send(outcome);
                }
            }
            if !durable.is_empty() {
                flush(&self.trees.db, durable);
            }
        }
    }

    /// Applies a batch in one transaction; one outcome per job.
    fn commit(&mut self, batch: &[Job]) -> Vec<Outcome> {
        let next_slot = self.next_slot.load(Ordering::SeqCst);
        let crash = &self.crash_before_signing_audit;
        let t = &self.trees;
        let result = (
            &t.keys,
            &t.names,
            &t.tokens,
            &t.statuses,
            &t.audit,
            &t.signing_keys,
            &t.meta,
        )
            .transaction(|(keys, names, tokens, statuses, audit, signing, meta)| {
                let t = TxTrees {
                    keys,
                    names,
                    tokens,
                    statuses,
                    audit,
                    signing,
                    meta,
                };
                let mut progress = Progress {
                    head: self.head.clone(),
                    seq: self.status_seq,
                    changes: Vec::new(),
                };
                let mut claimed = HashSet::new();
                let mut outcomes = Vec::with_capacity(batch.len());
                for job in batch {
                    let outcome = apply(&t, &mut progress, &mut claimed, job, crash)?;
                    outcomes.push(Ok(outcome));
                }
                meta.insert(META_STATUS_NEXT, &next_slot.to_be_bytes())?;
                if progress.seq != self.status_seq {
                    meta.insert(META_STATUS_SEQ, &progress.seq.to_be_bytes())?;
                }
                if progress.head != self.head {
                    meta.insert(META_AUDIT_HEAD, tx_encode(&progress.head)?)?;
                }
                Ok((outcomes, progress))
            });
        match result {
            Ok((outcomes, progress)) => {
                let commit = StatusCommit {
                    allocated: next_slot,
                    changes: progress.changes,
                    first_seq: self.status_seq + 1,
                };
                self.head = progress.head;
                self.status_seq = progress.seq;
                if let Ok(hook) = self.hook.read()
                    && let Some(hook) = hook.as_ref()
                {
                    hook(&commit);
                }
                outcomes
            }
            Err(e) => {
                let e = match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => internal(e),
                };
                batch.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }
}

/// Applies one job inside the transaction. A refusal of the job itself
/// (taken name, lost compare-and-set) is its outcome; only storage errors
/// (and the crash test hook) abort the batch.
fn apply(
    t: &TxTrees<'_>,
    progress: &mut Progress,
    claimed: &mut HashSet<String>,
    job: &Job,
    crash: &AtomicBool,
) -> Tx<Vec<StoreResult<()>>> {
    let at = job.at;
    match &job.op {
        Op::Create(items) => {
            let mut results = Vec::with_capacity(items.len());
            for (new, bytes) in items {
                let folded = new.folded_name.as_str();
                if claimed.contains(folded) || t.names.get(folded.as_bytes())?.is_some() {
                    results.push(Err(StoreError::NameTaken(new.record.name.clone())));
                    continue;
                }
                claimed.insert(folded.to_owned());
                let id = new.record.id.as_bytes();
                t.names.insert(folded.as_bytes(), id)?;
                t.keys.insert(id, bytes.as_slice())?;
                for token in &new.record.tokens {
                    t.tokens.insert(token.jti.as_bytes(), id)?;
                }
                progress.append(t, new.entry.clone(), at)?;
                results.push(Ok(()));
            }
            Ok(results)
        }
        Op::Update(update) => {
            let id = update.record.id.as_bytes();
            let Some(bytes) = t.keys.get(id)? else {
                return Ok(vec![Err(StoreError::NotFound)]);
            };
            let current: KeyRecord = tx_decode("key", &bytes)?;
            if current != update.expected {
                return Ok(vec![Err(StoreError::Conflict(
                    "the key changed while this change was made".into(),
                ))]);
            }
            t.keys.insert(id, tx_encode(&update.record)?)?;
            for jti in &update.new_jtis {
                t.tokens.insert(jti.as_bytes(), id)?;
            }
            for &(slot, status) in &update.statuses {
                progress.set_status(t, slot, status)?;
            }
            progress.append(t, update.entry.clone(), at)?;
            Ok(vec![Ok(())])
        }
        Op::Touch { id } => {
            if let Some(bytes) = t.keys.get(id.as_bytes())? {
                let mut record: KeyRecord = tx_decode("key", &bytes)?;
                if record.last_used_at.is_none_or(|last| last < at) {
                    record.last_used_at = Some(at);
                    t.keys.insert(id.as_bytes(), tx_encode(&record)?)?;
                }
            }
            Ok(vec![Ok(())])
        }
        Op::Audit(entries) => {
            for entry in entries {
                progress.append(t, entry.clone(), at)?;
            }
            Ok(vec![Ok(())])
        }
        Op::SigningKeys { changes, entries } => {
            for change in changes {
                let stored = t.signing.get(change.info.kid.as_bytes())?;
                let state = match stored {
                    Some(bytes) => Some(tx_decode::<SigningKeyInfo>("signing key", &bytes)?.state),
                    None => None,
                };
                if state != change.expected {
                    return Ok(vec![Err(StoreError::Conflict(format!(
                        "signing key {} changed meanwhile; try again",
                        change.info.kid
                    )))]);
                }
            }
            for change in changes {
                t.signing
                    .insert(change.info.kid.as_bytes(), tx_encode(&change.info)?)?;
            }
            if crash.swap(false, Ordering::SeqCst) {
                return abort(StoreError::Internal(
                    "injected crash between a signing-key change and its audit entry".into(),
                ));
            }
            for entry in entries {
                progress.append(t, entry.clone(), at)?;
            }
            Ok(vec![Ok(())])
        }
        Op::Meta { key, value } => {
            match value {
                Some(value) => {
                    t.meta.insert(*key, value.as_slice())?;
                }
                None => {
                    t.meta.remove(*key)?;
                }
            }
            Ok(vec![Ok(())])
        }
        Op::Flush => Ok(vec![Ok(())]),
    }
}

/// Flushes once for every write of a batch, then answers them.
fn flush(db: &sled::Db, waiting: Vec<(Reply, Outcome)>) {
    let flushed = db.flush().map(|_| ()).map_err(|e| {
        StoreError::Internal(format!("the database could not be flushed to disk: {e}"))
    });
    metrics::histogram!("latchkey_flush_batch_size").record(waiting.len() as f64);
    for (reply, outcome) in waiting {
        let _ = reply.send(match &flushed {
            Ok(()) => outcome,
            Err(e) => Err(e.clone()),
        });
    }
}
