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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};

use latchkey_verifier::TokenStatus;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use time::OffsetDateTime;

use crate::audit::{self, ChainHead, NewEntry};
use crate::model::{KeyRecord, SigningKeyInfo};
use crate::store::sled_backup::BackupRequest;
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
    /// A snapshot of every tree, taken after its batch is committed and
    /// flushed, before the next batch (answered through the request).
    Backup(BackupRequest),
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

type Tx<A> = Result<A, ConflictableTransactionError<StoreError>>;

/// A tree of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum T {
    Keys,
    Names,
    Tokens,
    Statuses,
    Audit,
    Signing,
    Meta,
}

/// A batch worked out before sled's transaction starts: the writes, in
/// order, and what they advance (the chain head, the status sequence).
///
/// sled runs a transaction's body under its global concurrency-control
/// write lock, which stalls every read of the request workers; so the
/// reads, checks, hashing and encoding happen here, and the transaction
/// only applies the writes. The committer is the engine's only writer, so
/// what it reads here cannot change before the transaction; reads see the
/// batch's own earlier writes through `pending`.
struct Plan<'a> {
    trees: &'a Trees,
    pending: HashMap<(T, Vec<u8>), Option<Vec<u8>>>,
    writes: Vec<(T, Vec<u8>, Option<Vec<u8>>)>,
    head: ChainHead,
    seq: u64,
    changes: Vec<(u64, TokenStatus)>,
    /// Test hook: abort the transaction once this many writes are applied.
    crash_after: Option<usize>,
}

impl Plan<'_> {
    fn tree(&self, t: T) -> &sled::Tree {
        match t {
            T::Keys => &self.trees.keys,
            T::Names => &self.trees.names,
            T::Tokens => &self.trees.tokens,
            T::Statuses => &self.trees.statuses,
            T::Audit => &self.trees.audit,
            T::Signing => &self.trees.signing_keys,
            T::Meta => &self.trees.meta,
        }
    }

    fn get(&self, t: T, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        if let Some(value) = self.pending.get(&(t, key.to_vec())) {
            return Ok(value.clone());
        }
        Ok(self.tree(t).get(key).map_err(internal)?.map(|v| v.to_vec()))
    }

    fn put(&mut self, t: T, key: &[u8], value: Option<Vec<u8>>) {
        self.pending.insert((t, key.to_vec()), value.clone());
        self.writes.push((t, key.to_vec(), value));
    }

    fn append(&mut self, entry: NewEntry, at: OffsetDateTime) -> StoreResult<()> {
        let entry = audit::next_entry(&self.head, entry, at);
        self.put(T::Audit, &seq_key(entry.seq), Some(encode(&entry)?));
        self.head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
        Ok(())
    }

    fn set_status(&mut self, slot: u64, status: TokenStatus) {
        let value = (status != TokenStatus::Valid).then(|| vec![status.bits()]);
        self.put(T::Statuses, &slot.to_be_bytes(), value);
        self.seq += 1;
        self.changes.push((slot, status));
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
            let mut backups = Vec::new();
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                if let Op::Backup(request) = job.op {
                    backups.push((request, job.at, outcome));
                } else if job.durable && outcome.is_ok() {
                    durable.push((job.reply, outcome));
                } else {
                    let _ = job.reply.send(outcome);
                }
            }
            if !durable.is_empty() {
                flush(&self.trees.db, durable);
            }
            // No write can land until the snapshot is taken: this thread
            // is the only writer.
            for (request, at, outcome) in backups {
                match outcome {
                    Ok(_) => request.run(&self.trees, at),
                    Err(e) => {
                        let _ = request.reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Applies a batch in one transaction; one outcome per job.
    fn commit(&mut self, batch: &[Job]) -> Vec<Outcome> {
        match self.plan_and_apply(batch) {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    fn plan_and_apply(&mut self, batch: &[Job]) -> StoreResult<Vec<Vec<StoreResult<()>>>> {
        let next_slot = self.next_slot.load(Ordering::SeqCst);
        let mut plan = Plan {
            trees: &self.trees,
            pending: HashMap::new(),
            writes: Vec::new(),
            head: self.head.clone(),
            seq: self.status_seq,
            changes: Vec::new(),
            crash_after: None,
        };
        let mut claimed = HashSet::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            outcomes.push(plan_job(
                &mut plan,
                &mut claimed,
                job,
                &self.crash_before_signing_audit,
            )?);
        }
        plan.put(
            T::Meta,
            META_STATUS_NEXT,
            Some(next_slot.to_be_bytes().to_vec()),
        );
        if plan.seq != self.status_seq {
            plan.put(
                T::Meta,
                META_STATUS_SEQ,
                Some(plan.seq.to_be_bytes().to_vec()),
            );
        }
        if plan.head != self.head {
            let head = encode(&plan.head)?;
            plan.put(T::Meta, META_AUDIT_HEAD, Some(head));
        }
        let t = &self.trees;
        let writes = &plan.writes;
        let crash_after = plan.crash_after;
        (
            &t.keys,
            &t.names,
            &t.tokens,
            &t.statuses,
            &t.audit,
            &t.signing_keys,
            &t.meta,
        )
            .transaction(|(keys, names, tokens, statuses, audit, signing, meta)| {
                for (i, (tree, key, value)) in writes.iter().enumerate() {
                    if crash_after == Some(i) {
                        return abort(StoreError::Internal(
                            "injected crash between a signing-key change and its audit entry"
                                .into(),
                        ));
                    }
                    let tree: &TransactionalTree = match tree {
                        T::Keys => keys,
                        T::Names => names,
                        T::Tokens => tokens,
                        T::Statuses => statuses,
                        T::Audit => audit,
                        T::Signing => signing,
                        T::Meta => meta,
                    };
                    match value {
                        Some(value) => {
                            tree.insert(key.as_slice(), value.as_slice())?;
                        }
                        None => {
                            tree.remove(key.as_slice())?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => internal(e),
            })?;
        let commit = StatusCommit {
            allocated: next_slot,
            changes: std::mem::take(&mut plan.changes),
            first_seq: self.status_seq + 1,
        };
        self.head = plan.head.clone();
        self.status_seq = plan.seq;
        if let Ok(hook) = self.hook.read()
            && let Some(hook) = hook.as_ref()
        {
            hook(&commit);
        }
        Ok(outcomes)
    }
}

fn abort<A>(e: StoreError) -> Tx<A> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Works out one job. A refusal of the job itself (taken name, lost
/// compare-and-set) is its outcome; only storage errors fail the batch.
fn plan_job(
    plan: &mut Plan<'_>,
    claimed: &mut HashSet<String>,
    job: &Job,
    crash: &AtomicBool,
) -> StoreResult<Vec<StoreResult<()>>> {
    let at = job.at;
    match &job.op {
        Op::Create(items) => {
            let mut results = Vec::with_capacity(items.len());
            for (new, bytes) in items {
                let folded = new.folded_name.as_str();
                if claimed.contains(folded) || plan.get(T::Names, folded.as_bytes())?.is_some() {
                    results.push(Err(StoreError::NameTaken(new.record.name.clone())));
                    continue;
                }
                claimed.insert(folded.to_owned());
                let id = new.record.id.as_bytes();
                plan.put(T::Names, folded.as_bytes(), Some(id.to_vec()));
                plan.put(T::Keys, id, Some(bytes.clone()));
                for token in &new.record.tokens {
                    plan.put(T::Tokens, token.jti.as_bytes(), Some(id.to_vec()));
                }
                plan.append(new.entry.clone(), at)?;
                results.push(Ok(()));
            }
            Ok(results)
        }
        Op::Update(update) => {
            let id = update.record.id.as_bytes();
            let Some(bytes) = plan.get(T::Keys, id)? else {
                return Ok(vec![Err(StoreError::NotFound)]);
            };
            let current: KeyRecord = decode("key", &bytes)?;
            if current != update.expected {
                return Ok(vec![Err(StoreError::Conflict(
                    "the key changed while this change was made".into(),
                ))]);
            }
            plan.put(T::Keys, id, Some(encode(&update.record)?));
            for jti in &update.new_jtis {
                plan.put(T::Tokens, jti.as_bytes(), Some(id.to_vec()));
            }
            for &(slot, status) in &update.statuses {
                plan.set_status(slot, status);
            }
            plan.append(update.entry.clone(), at)?;
            Ok(vec![Ok(())])
        }
        Op::Touch { id } => {
            if let Some(bytes) = plan.get(T::Keys, id.as_bytes())? {
                let mut record: KeyRecord = decode("key", &bytes)?;
                if record.last_used_at.is_none_or(|last| last < at) {
                    record.last_used_at = Some(at);
                    plan.put(T::Keys, id.as_bytes(), Some(encode(&record)?));
                }
            }
            Ok(vec![Ok(())])
        }
        Op::Audit(entries) => {
            for entry in entries {
                plan.append(entry.clone(), at)?;
            }
            Ok(vec![Ok(())])
        }
        Op::SigningKeys { changes, entries } => {
            // A change that adds a key names every recorded key: a key
            // added meanwhile (another rotation) makes it a conflict.
            if changes.iter().any(|c| c.expected.is_none()) {
                let named: HashSet<&[u8]> = changes.iter().map(|c| c.info.kid.as_bytes()).collect();
                let mut recorded: Vec<Vec<u8>> = Vec::new();
                for item in plan.trees.signing_keys.iter() {
                    recorded.push(item.map_err(internal)?.0.to_vec());
                }
                recorded.extend(
                    plan.pending
                        .iter()
                        .filter(|((t, _), v)| *t == T::Signing && v.is_some())
                        .map(|((_, k), _)| k.clone()),
                );
                if let Some(kid) = recorded.iter().find(|k| !named.contains(k.as_slice())) {
                    return Ok(vec![Err(StoreError::Conflict(format!(
                        "signing key {} was added meanwhile; try again",
                        String::from_utf8_lossy(kid)
                    )))]);
                }
            }
            for change in changes {
                let state = match plan.get(T::Signing, change.info.kid.as_bytes())? {
                    Some(bytes) => Some(decode::<SigningKeyInfo>("signing key", &bytes)?.state),
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
                plan.put(
                    T::Signing,
                    change.info.kid.as_bytes(),
                    Some(encode(&change.info)?),
                );
            }
            if crash.swap(false, Ordering::SeqCst) {
                plan.crash_after = Some(plan.writes.len());
            }
            for entry in entries {
                plan.append(entry.clone(), at)?;
            }
            Ok(vec![Ok(())])
        }
        Op::Meta { key, value } => {
            plan.put(T::Meta, key, value.clone());
            Ok(vec![Ok(())])
        }
        Op::Flush | Op::Backup(_) => Ok(vec![Ok(())]),
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
