//! The PostgreSQL engine's write path: one committer task per replica.
//!
//! Writes queue as [`Job`]s; the committer takes everything queued and
//! applies it in **one** transaction, like the embedded engine: each job
//! on its own (a taken name or a lost compare-and-set fails only its job).
//! The transaction first locks the single chain row, so writers on every
//! replica take turns: audit entries get one total order and status
//! changes contiguous sequence numbers. Reads, checks, hashing and
//! encoding happen in Rust; the writes go out as a handful of array
//! statements, pipelined on the connection, whatever the batch size.
//!
//! After the commit (which PostgreSQL makes durable), the replica's own
//! published lists catch up with the log before the writes resolve, so a
//! 2xx revoke is on this replica's lists and stream; other replicas hear
//! of it through `NOTIFY`, sent by the same transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::future::try_join_all;
use latchkey_verifier::TokenStatus;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use crate::audit::{self, ChainHead, NewEntry};
use crate::model::{KeyRecord, SigningKeyInfo, SigningKeyState};
use crate::store::postgres::feed::{Feed, SIGNING_CHANNEL, STATUS_CHANNEL};
use crate::store::postgres::{Records, db_error, decode, encode, pool_error};
use crate::store::{KeyUpdate, NewKey, SigningKeyChange, StoreError, StoreResult};

/// Most jobs in one transaction.
const MAX_BATCH: usize = 512;

pub enum Op {
    Create(Vec<NewKey>),
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
        key: &'static str,
        value: Option<String>,
    },
    /// Resolves once every write queued before it is committed.
    Flush,
}

pub type Outcome = StoreResult<Vec<StoreResult<()>>>;

pub struct Job {
    pub op: Op,
    pub at: OffsetDateTime,
    pub reply: tokio::sync::oneshot::Sender<Outcome>,
}

/// Runs until every sender is gone.
pub async fn run(
    pool: deadpool_postgres::Pool,
    kek_fingerprint: String,
    feed: Arc<Feed>,
    records: Arc<Records>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = match commit(&pool, &kek_fingerprint, &feed, &records, &batch).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => {
                if matches!(e, StoreError::Unavailable(_)) {
                    tracing::warn!(error = %e, writes = batch.len(), "writes refused: the database is unavailable");
                }
                vec![Err(e); batch.len()]
            }
        };
        metrics::histogram!("latchkey_pg_batch_size").record(batch.len() as f64);
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// A signing key's row: kid, record, sealed key, whether it is retired.
type SigningWrite = (String, Vec<u8>, Option<Vec<u8>>, bool);

/// The writes a batch works out, applied after its reads.
#[derive(Default)]
struct Writes {
    key_inserts: Vec<(String, Vec<u8>)>,
    key_updates: HashMap<String, Vec<u8>>,
    tokens: Vec<(String, String)>,
    statuses: HashMap<u64, TokenStatus>,
    events: Vec<(u64, u64, TokenStatus)>,
    audit: Vec<(u64, Vec<u8>)>,
    signing: Vec<SigningWrite>,
    meta: Vec<(&'static str, Option<String>)>,
}

struct Plan {
    head: ChainHead,
    seq: u64,
    writes: Writes,
    /// Records as this batch leaves them (for later jobs of the batch).
    records: HashMap<String, Option<KeyRecord>>,
    signing: HashMap<String, SigningKeyState>,
    /// Records written, to refresh the replica's last-known copies.
    written: Vec<KeyRecord>,
    /// Whether this replica's key-encryption key is the database's.
    kek_ok: bool,
}

impl Plan {
    fn append(&mut self, entry: NewEntry, at: OffsetDateTime) -> StoreResult<()> {
        let entry = audit::next_entry(&self.head, entry, at);
        self.writes.audit.push((entry.seq, encode(&entry)?));
        self.head = ChainHead {
            seq: entry.seq,
            hash: entry.hash,
        };
        Ok(())
    }

    fn set_status(&mut self, slot: u64, status: TokenStatus) {
        self.seq += 1;
        self.writes.statuses.insert(slot, status);
        self.writes.events.push((self.seq, slot, status));
    }
}

async fn commit(
    pool: &deadpool_postgres::Pool,
    kek_fingerprint: &str,
    feed: &Feed,
    records: &Records,
    batch: &[Job],
) -> StoreResult<Vec<Vec<StoreResult<()>>>> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    let row = tx
        .query_one(
            "SELECT audit_seq, audit_hash, status_seq FROM latchkey_chain WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(db_error)?;
    let head = ChainHead {
        seq: row.get::<_, i64>(0) as u64,
        hash: row.get(1),
    };
    let status_seq = row.get::<_, i64>(2) as u64;

    // Reads: name claims, the records that change, the signing keys.
    let mut folded = Vec::new();
    let mut folded_ids = Vec::new();
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let mut wants_signing = false;
    for job in batch {
        match &job.op {
            Op::Create(keys) => {
                for key in keys {
                    if seen.insert(key.folded_name.clone()) {
                        folded.push(key.folded_name.clone());
                        folded_ids.push(key.record.id.clone());
                    }
                }
            }
            Op::Update(update) => ids.push(update.record.id.clone()),
            Op::Touch { id } => ids.push(id.clone()),
            Op::SigningKeys { .. } => wants_signing = true,
            _ => {}
        }
    }
    let claimed: HashSet<(String, String)> = if folded.is_empty() {
        HashSet::new()
    } else {
        tx.query(
            "INSERT INTO latchkey_names (folded, key_id) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING RETURNING folded, key_id",
            &[&folded, &folded_ids],
        )
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let mut plan = Plan {
        head: head.clone(),
        seq: status_seq,
        writes: Writes::default(),
        records: HashMap::new(),
        signing: HashMap::new(),
        written: Vec::new(),
        kek_ok: true,
    };
    if !ids.is_empty() {
        for row in tx
            .query(
                "SELECT id, record FROM latchkey_keys WHERE id = ANY($1) FOR UPDATE",
                &[&ids],
            )
            .await
            .map_err(db_error)?
        {
            let record: KeyRecord = decode("key", row.get(1))?;
            plan.records.insert(row.get(0), Some(record));
        }
    }
    let mut kek_ok = true;
    if wants_signing {
        // A key sealed under a key-encryption key the database no longer
        // uses (it was resealed) could not be opened by other replicas.
        let sealing = batch.iter().any(|job| {
            matches!(&job.op, Op::SigningKeys { changes, .. } if changes.iter().any(|c| c.sealed.is_some()))
        });
        if sealing {
            let stored: Option<String> = tx
                .query_opt(
                    "SELECT value FROM latchkey_meta WHERE key = $1",
                    &[&crate::store::postgres::META_KEK],
                )
                .await
                .map_err(db_error)?
                .map(|r| r.get(0));
            kek_ok = stored.as_deref() == Some(kek_fingerprint);
        }
        for row in tx
            .query("SELECT info FROM latchkey_signing_keys FOR UPDATE", &[])
            .await
            .map_err(db_error)?
        {
            let info: SigningKeyInfo = decode("signing key", row.get(0))?;
            plan.signing.insert(info.kid, info.state);
        }
    }

    plan.kek_ok = kek_ok;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        outcomes.push(plan_job(&mut plan, &claimed, job)?);
    }
    let Plan {
        head: new_head,
        seq: new_seq,
        writes,
        written,
        ..
    } = plan;
    let status_changed = new_seq != status_seq;
    let signing_changed = !writes.signing.is_empty();
    apply(&tx, writes).await?;
    if new_head != head || status_changed {
        tx.execute(
            "UPDATE latchkey_chain SET audit_seq = $1, audit_hash = $2, status_seq = $3 WHERE id = 1",
            &[&(new_head.seq as i64), &new_head.hash, &(new_seq as i64)],
        )
        .await
        .map_err(db_error)?;
    }
    if status_changed {
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&STATUS_CHANNEL, &new_seq.to_string()],
        )
        .await
        .map_err(db_error)?;
    }
    if signing_changed {
        tx.execute("SELECT pg_notify($1, '')", &[&SIGNING_CHANNEL])
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    for record in written {
        records.remember(record);
    }
    if status_changed {
        // This replica's lists show the change before it is acknowledged.
        feed.catch_up(&**client).await?;
    }
    Ok(outcomes)
}

fn plan_job(
    plan: &mut Plan,
    claimed: &HashSet<(String, String)>,
    job: &Job,
) -> StoreResult<Vec<StoreResult<()>>> {
    let at = job.at;
    match &job.op {
        Op::Create(keys) => {
            let mut results = Vec::with_capacity(keys.len());
            for new in keys {
                if !claimed.contains(&(new.folded_name.clone(), new.record.id.clone())) {
                    results.push(Err(StoreError::NameTaken(new.record.name.clone())));
                    continue;
                }
                let id = new.record.id.clone();
                plan.writes
                    .key_inserts
                    .push((id.clone(), encode(&new.record)?));
                for token in &new.record.tokens {
                    plan.writes.tokens.push((token.jti.clone(), id.clone()));
                }
                plan.append(new.entry.clone(), at)?;
                plan.written.push(new.record.clone());
                results.push(Ok(()));
            }
            Ok(results)
        }
        Op::Update(update) => {
            let id = update.record.id.clone();
            let Some(Some(current)) = plan.records.get(&id) else {
                return Ok(vec![Err(StoreError::NotFound)]);
            };
            if *current != update.expected {
                return Ok(vec![Err(StoreError::Conflict(
                    "the key changed while this change was made".into(),
                ))]);
            }
            plan.writes
                .key_updates
                .insert(id.clone(), encode(&update.record)?);
            plan.records.insert(id.clone(), Some(update.record.clone()));
            for jti in &update.new_jtis {
                plan.writes.tokens.push((jti.clone(), id.clone()));
            }
            for &(slot, status) in &update.statuses {
                plan.set_status(slot, status);
            }
            plan.append(update.entry.clone(), at)?;
            plan.written.push(update.record.clone());
            Ok(vec![Ok(())])
        }
        Op::Touch { id } => {
            if let Some(Some(record)) = plan.records.get(id)
                && record.last_used_at.is_none_or(|last| last < at)
            {
                let mut record = record.clone();
                record.last_used_at = Some(at);
                plan.writes.key_updates.insert(id.clone(), encode(&record)?);
                plan.records.insert(id.clone(), Some(record));
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
            if !plan.kek_ok && changes.iter().any(|c| c.sealed.is_some()) {
                return Ok(vec![Err(StoreError::Conflict(
                    "the database's signing keys were resealed under another key-encryption key; restart this replica with the new --key-encryption-key-file".into(),
                ))]);
            }
            // A change that adds a key names every recorded key: a key
            // added meanwhile (a rotation on another replica) makes it a
            // conflict.
            if changes.iter().any(|c| c.expected.is_none())
                && let Some(kid) = plan
                    .signing
                    .keys()
                    .find(|kid| !changes.iter().any(|c| &c.info.kid == *kid))
            {
                return Ok(vec![Err(StoreError::Conflict(format!(
                    "signing key {kid} was added meanwhile; try again"
                )))]);
            }
            for change in changes {
                if plan.signing.get(&change.info.kid).copied() != change.expected {
                    return Ok(vec![Err(StoreError::Conflict(format!(
                        "signing key {} changed meanwhile; try again",
                        change.info.kid
                    )))]);
                }
            }
            for change in changes {
                plan.signing
                    .insert(change.info.kid.clone(), change.info.state);
                plan.writes.signing.push((
                    change.info.kid.clone(),
                    encode(&change.info)?,
                    change.sealed.clone(),
                    change.info.state == SigningKeyState::Retired,
                ));
            }
            for entry in entries {
                plan.append(entry.clone(), at)?;
            }
            Ok(vec![Ok(())])
        }
        Op::Meta { key, value } => {
            plan.writes.meta.push((key, value.clone()));
            Ok(vec![Ok(())])
        }
        Op::Flush => Ok(vec![Ok(())]),
    }
}

/// Sends a batch's writes, pipelined on the transaction's connection.
async fn apply(tx: &deadpool_postgres::Transaction<'_>, writes: Writes) -> StoreResult<()> {
    let (insert_ids, insert_records): (Vec<String>, Vec<Vec<u8>>) =
        writes.key_inserts.into_iter().unzip();
    let (update_ids, update_records): (Vec<String>, Vec<Vec<u8>>) =
        writes.key_updates.into_iter().unzip();
    let (jtis, jti_keys): (Vec<String>, Vec<String>) = writes.tokens.into_iter().unzip();
    let (slots, bits): (Vec<i64>, Vec<i16>) = writes
        .statuses
        .into_iter()
        .map(|(slot, status)| (slot as i64, i16::from(status.bits())))
        .unzip();
    let mut event_seqs = Vec::new();
    let mut event_slots = Vec::new();
    let mut event_bits = Vec::new();
    for (seq, slot, status) in writes.events {
        event_seqs.push(seq as i64);
        event_slots.push(slot as i64);
        event_bits.push(i16::from(status.bits()));
    }
    let (audit_seqs, audit_entries): (Vec<i64>, Vec<Vec<u8>>) = writes
        .audit
        .into_iter()
        .map(|(seq, entry)| (seq as i64, entry))
        .unzip();

    let mut statements: Vec<(&str, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
    if !insert_ids.is_empty() {
        statements.push((
            "INSERT INTO latchkey_keys (id, record) SELECT * FROM unnest($1::text[], $2::bytea[])",
            vec![&insert_ids, &insert_records],
        ));
    }
    if !update_ids.is_empty() {
        statements.push((
            "UPDATE latchkey_keys SET record = u.record FROM unnest($1::text[], $2::bytea[]) AS u(id, record) WHERE latchkey_keys.id = u.id",
            vec![&update_ids, &update_records],
        ));
    }
    if !jtis.is_empty() {
        statements.push((
            "INSERT INTO latchkey_tokens (jti, key_id) SELECT * FROM unnest($1::text[], $2::text[])",
            vec![&jtis, &jti_keys],
        ));
    }
    if !slots.is_empty() {
        statements.push((
            "INSERT INTO latchkey_statuses (slot, status) SELECT * FROM unnest($1::bigint[], $2::smallint[]) ON CONFLICT (slot) DO UPDATE SET status = EXCLUDED.status",
            vec![&slots, &bits],
        ));
        statements.push((
            "INSERT INTO latchkey_status_events (seq, slot, status) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[])",
            vec![&event_seqs, &event_slots, &event_bits],
        ));
    }
    if !audit_seqs.is_empty() {
        statements.push((
            "INSERT INTO latchkey_audit (seq, entry) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
            vec![&audit_seqs, &audit_entries],
        ));
    }
    for (kid, info, sealed, retired) in &writes.signing {
        // A retired key's private half is dropped with it.
        statements.push((
            "INSERT INTO latchkey_signing_keys (kid, info, sealed_key) VALUES ($1, $2, CASE WHEN $4 THEN NULL ELSE $3::bytea END) ON CONFLICT (kid) DO UPDATE SET info = EXCLUDED.info, sealed_key = CASE WHEN $4 THEN NULL ELSE COALESCE(EXCLUDED.sealed_key, latchkey_signing_keys.sealed_key) END",
            vec![kid, info, sealed, retired],
        ));
    }
    for (key, value) in &writes.meta {
        match value {
            Some(value) => statements.push((
                "INSERT INTO latchkey_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                vec![key, value],
            )),
            None => statements.push(("DELETE FROM latchkey_meta WHERE key = $1", vec![key])),
        }
    }
    try_join_all(
        statements
            .iter()
            .map(|(sql, params)| tx.execute(*sql, params.as_slice())),
    )
    .await
    .map_err(db_error)?;
    Ok(())
}
