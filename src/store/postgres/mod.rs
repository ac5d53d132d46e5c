//! The PostgreSQL engine: any number of `serve` replicas share one
//! database (contract §9).
//!
//! - `connect`: the URL, TLS, the pool;
//! - `migrations`: the schema, applied under an advisory lock;
//! - `commit`: the write path, one batched transaction at a time per
//!   replica, all replicas taking turns on one chain row;
//! - `feed`: what other replicas changed, through `LISTEN`/`NOTIFY` and
//!   the status change log.
//!
//! Reads go to the database, so a read after a write on any replica sees
//! it. While the database is unreachable, writes fail with
//! [`StoreError::Unavailable`] (nothing is half-done: every write is one
//! transaction), [`Store::key`] answers from the records this replica last
//! saw (so admin keys keep authenticating), and [`Store::ready`] is false.
//! Private signing keys are stored sealed (see [`crate::kek`]); the
//! database holds the key-encryption key's fingerprint, never the key, so
//! a replica with another key-encryption key refuses to start.

mod commit;
pub mod connect;
mod feed;
pub mod migrations;
mod reseal;

pub use reseal::reseal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use latchkey_verifier::TokenStatus;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::audit::{self, AuditEntry, ChainHead, ChainReport, NewEntry};
use crate::model::{KeyRecord, SigningKeyInfo};
use crate::store::{
    Boot, CommitHook, Durability, InitLock, KeyUpdate, NewKey, SigningKeyChange, Store, StoreError,
    StoreFuture, StoreResult,
};
use commit::{Job, Op, Outcome};
pub use connect::{DatabaseUrl, is_postgres_url};
use feed::Feed;

/// Status slots are taken from the database in blocks of at most this many.
pub const SLOT_BLOCK: u64 = 64;

/// The block size for lists of `capacity` entries: small lists get small
/// blocks, so a replica does not publish lists far ahead of its tokens.
pub fn slot_block(capacity: u64) -> u64 {
    SLOT_BLOCK.min(capacity).max(1)
}
/// Connections per replica.
const POOL_SIZE: usize = 16;
/// Most records kept for authenticating while the database is away.
const REMEMBERED_RECORDS: usize = 20_000;

const META_LIST_CAPACITY: &str = "status_list_capacity";
const META_STATUS_EPOCH: &str = "status_epoch";
pub(crate) const META_KEK: &str = "key_encryption_key_fingerprint";
const META_ISSUER: &str = "issuer";
const META_BOOTSTRAP_PENDING: &str = "bootstrap_pending";

/// The issuer's store in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    url: DatabaseUrl,
    boot: Boot,
    list_capacity: u64,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    feed: Arc<Feed>,
    /// The block of slots this replica hands out: next, end.
    slots: tokio::sync::Mutex<(u64, u64)>,
    block: u64,
    records: Arc<Records>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.url)
            .finish_non_exhaustive()
    }
}

/// The last-known record of keys this replica read or wrote.
#[derive(Default)]
pub struct Records(Mutex<HashMap<String, KeyRecord>>);

impl Records {
    fn remember(&self, record: KeyRecord) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= REMEMBERED_RECORDS && !map.contains_key(&record.id) {
                map.clear();
            }
            map.insert(record.id.clone(), record);
        }
    }

    fn recall(&self, id: &str) -> Option<KeyRecord> {
        self.0.lock().ok().and_then(|map| map.get(id).cloned())
    }
}

/// A database error: unreachable (retry later) or a fault.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    // No SQLSTATE: the connection failed. Classes 08 (connection), 53
    // (resources), 57 (shutting down, starting up) and 40 (serialization,
    // deadlock) pass: the change was not made and may be retried.
    let passing = match e.code() {
        None => true,
        Some(code) => ["08", "53", "57", "40"]
            .iter()
            .any(|class| code.code().starts_with(class)),
    };
    if e.is_closed() || passing {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(format!("database: {e}"))
    }
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("{what} record is corrupt: {e}")))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Applies the migrations alone (`latchkey migrate`); returns the versions
/// applied now and the version the database is at.
pub async fn migrate(url: &DatabaseUrl) -> Result<(Vec<i32>, i32), String> {
    let pool = url.pool(1)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("cannot reach the database at {url}: {e}"))?;
    let applied = migrations::apply(&mut client).await?;
    Ok((applied, migrations::latest()))
}

impl PgStore {
    /// Connects, migrates, initialises an empty database (once, whichever
    /// replica gets there first) and checks the key-encryption key.
    pub async fn open(
        url: &DatabaseUrl,
        default_list_capacity: u64,
        kek: &crate::kek::Kek,
        kek_file: &std::path::Path,
    ) -> Result<PgStore, String> {
        let kek_fingerprint = kek.fingerprint();
        let kek_fingerprint = kek_fingerprint.as_str();
        let pool = url.pool(POOL_SIZE)?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| format!("cannot reach the database at {url}: {e}"))?;
        migrations::apply(&mut client).await?;
        let epoch = crate::store::sled_layout::new_epoch().map_err(|e| e.to_string())?;
        let genesis = ChainHead::genesis();
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        tx.execute(
            "INSERT INTO latchkey_chain (id, audit_seq, audit_hash, status_seq) VALUES (1, 0, $1, 0) ON CONFLICT DO NOTHING",
            &[&genesis.hash],
        )
        .await
        .map_err(|e| e.to_string())?;
        for (key, value) in [
            (META_LIST_CAPACITY, default_list_capacity.to_string()),
            (META_STATUS_EPOCH, epoch),
            (META_KEK, kek_fingerprint.to_owned()),
        ] {
            tx.execute(
                "INSERT INTO latchkey_meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&key, &value],
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        let meta = read_meta(&**client).await.map_err(|e| e.to_string())?;
        let stored_kek = meta.get(META_KEK).cloned().unwrap_or_default();
        kek.ensure_fingerprint(&stored_kek, kek_file).map_err(|e| {
            format!("{e}; start every replica with the same key-encryption key file")
        })?;
        let list_capacity: u64 = meta
            .get(META_LIST_CAPACITY)
            .and_then(|v| v.parse().ok())
            .ok_or("the database's status list capacity is missing or not a number")?;
        let status_epoch = meta
            .get(META_STATUS_EPOCH)
            .cloned()
            .ok_or("the database has no status epoch")?;

        // One consistent view of the statuses and the sequence.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| e.to_string())?;
        let status_seq: i64 = tx
            .query_one("SELECT status_seq FROM latchkey_chain WHERE id = 1", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        let statuses = tx
            .query(
                "SELECT slot, status FROM latchkey_statuses WHERE status <> 0",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .map(|row| {
                (
                    row.get::<_, i64>(0) as u64,
                    TokenStatus::from_bits(row.get::<_, i16>(1) as u8),
                )
            })
            .collect();
        let block = slot_block(list_capacity);
        let next_slot = feed::allocated(&*tx, block)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        drop(client);

        let feed = Arc::new(Feed::new(status_seq as u64, block));
        let records = Arc::new(Records::default());
        let (jobs, job_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(commit::run(
            pool.clone(),
            kek_fingerprint.to_owned(),
            Arc::clone(&feed),
            Arc::clone(&records),
            job_rx,
        ));
        feed::spawn_listener(url.clone(), Arc::downgrade(&feed));
        Ok(PgStore {
            pool,
            url: url.clone(),
            boot: Boot {
                list_capacity,
                next_slot,
                status_seq: status_seq as u64,
                status_epoch,
                statuses,
            },
            list_capacity,
            jobs,
            feed,
            slots: tokio::sync::Mutex::new((0, 0)),
            block,
            records,
        })
    }

    fn submit(&self, op: Op, at: OffsetDateTime) -> StoreFuture<'_, Vec<StoreResult<()>>> {
        let (reply, outcome) = tokio::sync::oneshot::channel::<Outcome>();
        let sent = self.jobs.send(Job { op, at, reply });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Internal("the store's writer has stopped".into()))?;
            outcome
                .await
                .map_err(|_| StoreError::Internal("the store's writer has stopped".into()))?
        })
    }

    fn submit_one(&self, op: Op, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        let outcome = self.submit(op, at);
        Box::pin(async move {
            outcome
                .await?
                .pop()
                .unwrap_or_else(|| Err(StoreError::Internal("a write had no outcome".into())))
        })
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn meta_value(&self, key: &str) -> StoreResult<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT value FROM latchkey_meta WHERE key = $1", &[&key])
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn read_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        if id.contains('\0') {
            // PostgreSQL text cannot hold NUL, and no id does.
            return Ok(None);
        }
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT record FROM latchkey_keys WHERE id = $1", &[&id])
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => {
                let record: KeyRecord = decode("key", row.get(0))?;
                self.records.remember(record.clone());
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    async fn scan(
        &self,
        before: Option<&str>,
        visit: &mut (dyn FnMut(KeyRecord) -> bool + Send),
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let mut cursor = before.map(str::to_owned);
        loop {
            let rows = client
                .query(
                    "SELECT id, record FROM latchkey_keys WHERE ($1::text IS NULL OR id < $1) ORDER BY id DESC LIMIT 256",
                    &[&cursor],
                )
                .await
                .map_err(db_error)?;
            let last = rows.len() < 256;
            for row in &rows {
                cursor = Some(row.get(0));
                if !visit(decode("key", row.get(1))?) {
                    return Ok(());
                }
            }
            if last {
                return Ok(());
            }
        }
    }

    async fn read_head(&self) -> StoreResult<ChainHead> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT audit_seq, audit_hash FROM latchkey_chain WHERE id = 1",
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(ChainHead {
            seq: row.get::<_, i64>(0) as u64,
            hash: row.get(1),
        })
    }

    async fn verify_chain(&self) -> StoreResult<Result<ChainReport, String>> {
        let client = self.client().await?;
        // One snapshot: the entries and the head as of the same moment.
        let mut client = client;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_error)?;
        let row = tx
            .query_one(
                "SELECT audit_seq, audit_hash FROM latchkey_chain WHERE id = 1",
                &[],
            )
            .await
            .map_err(db_error)?;
        let recorded = ChainHead {
            seq: row.get::<_, i64>(0) as u64,
            hash: row.get(1),
        };
        let mut head = ChainHead::genesis();
        loop {
            let rows = tx
                .query(
                    "SELECT seq, entry FROM latchkey_audit WHERE seq > $1 ORDER BY seq LIMIT 2000",
                    &[&(head.seq as i64)],
                )
                .await
                .map_err(db_error)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let expected_seq = head.seq + 1;
                let stored: i64 = row.get(0);
                let entry: AuditEntry = match serde_json::from_slice(row.get(1)) {
                    Ok(entry) => entry,
                    Err(_) => {
                        return Ok(Err(format!(
                            "entry {expected_seq}: not a valid audit entry (edited?)"
                        )));
                    }
                };
                if stored as u64 != entry.seq {
                    return Ok(Err(format!(
                        "entry stored under the wrong position near seq {expected_seq}"
                    )));
                }
                head = match audit::check_link(&head, entry) {
                    Ok(head) => head,
                    Err(problem) => return Ok(Err(problem)),
                };
            }
        }
        tx.commit().await.map_err(db_error)?;
        if recorded != head {
            return Ok(Err(format!(
                "the log ends at entry {} but the recorded head is entry {}: entries were removed from the end",
                head.seq, recorded.seq
            )));
        }
        Ok(Ok(ChainReport {
            entries: head.seq,
            head,
        }))
    }
}

async fn read_meta(
    client: &impl tokio_postgres::GenericClient,
) -> Result<HashMap<String, String>, tokio_postgres::Error> {
    Ok(client
        .query("SELECT key, value FROM latchkey_meta", &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

impl Store for PgStore {
    fn boot(&self) -> StoreFuture<'_, Boot> {
        crate::store::ready(Ok(self.boot.clone()))
    }

    fn set_commit_hook(&self, hook: CommitHook) {
        if let Ok(mut slot) = self.feed.hook.write() {
            *slot = Some(hook);
        }
    }

    fn list_capacity(&self) -> u64 {
        self.list_capacity
    }

    fn allocate_slot(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut block = self.slots.lock().await;
            if block.0 == block.1 {
                let client = self.client().await?;
                let row = client
                    .query_one(
                        "SELECT nextval('latchkey_status_slots'), pg_notify($1, '')",
                        &[&feed::SLOTS_CHANNEL],
                    )
                    .await
                    .map_err(db_error)?;
                let start = row.get::<_, i64>(0) as u64 * self.block;
                *block = (start, start + self.block);
                self.feed.report_allocated(start + self.block);
            }
            let slot = block.0;
            block.0 += 1;
            Ok(slot)
        })
    }

    fn insert_keys(
        &self,
        keys: Vec<NewKey>,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, Vec<StoreResult<()>>> {
        self.submit(Op::Create(keys), at)
    }

    fn update_key(&self, update: KeyUpdate, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        self.submit_one(Op::Update(Box::new(update)), at)
    }

    fn touch_last_used(&self, id: &str, at: OffsetDateTime) -> StoreFuture<'_, ()> {
        self.submit_one(Op::Touch { id: id.to_owned() }, at)
    }

    fn append_audit(
        &self,
        entries: Vec<NewEntry>,
        at: OffsetDateTime,
        _durability: Durability,
    ) -> StoreFuture<'_, ()> {
        self.submit_one(Op::Audit(entries), at)
    }

    fn change_signing_keys(
        &self,
        changes: Vec<SigningKeyChange>,
        entries: Vec<NewEntry>,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, ()> {
        self.submit_one(Op::SigningKeys { changes, entries }, at)
    }

    fn set_bootstrap_pending(&self, key_id: Option<String>) -> StoreFuture<'_, ()> {
        self.submit_one(
            Op::Meta {
                key: META_BOOTSTRAP_PENDING,
                value: key_id,
            },
            OffsetDateTime::now_utc(),
        )
    }

    fn record_issuer(&self, issuer: String) -> StoreFuture<'_, ()> {
        self.submit_one(
            Op::Meta {
                key: META_ISSUER,
                value: Some(issuer),
            },
            OffsetDateTime::now_utc(),
        )
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        self.submit_one(Op::Flush, OffsetDateTime::now_utc())
    }

    fn key<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<KeyRecord>> {
        Box::pin(async move {
            match self.read_key(id).await {
                Err(StoreError::Unavailable(e)) => match self.records.recall(id) {
                    Some(record) => Ok(Some(record)),
                    None => Err(StoreError::Unavailable(e)),
                },
                other => other,
            }
        })
    }

    fn key_id_for_jti<'a>(&'a self, jti: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            if jti.contains('\0') {
                return Ok(None);
            }
            let client = self.client().await?;
            let row = client
                .query_opt("SELECT key_id FROM latchkey_tokens WHERE jti = $1", &[&jti])
                .await
                .map_err(db_error)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn scan_keys<'a>(
        &'a self,
        before: Option<&'a str>,
        visit: &'a mut (dyn FnMut(KeyRecord) -> bool + Send),
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.scan(before, visit))
    }

    fn has_no_keys(&self) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM latchkey_keys)", &[])
                .await
                .map_err(db_error)?;
            Ok(row.get(0))
        })
    }

    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKeyInfo>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .query("SELECT info FROM latchkey_signing_keys", &[])
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| decode("signing key", row.get(0)))
                .collect()
        })
    }

    fn sealed_signing_keys(&self) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        Box::pin(async move {
            let client = self.client().await?;
            Ok(client
                .query(
                    "SELECT kid, sealed_key FROM latchkey_signing_keys WHERE sealed_key IS NOT NULL",
                    &[],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect())
        })
    }

    fn audit_page(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .query(
                    "SELECT entry FROM latchkey_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&(after.min(i64::MAX as u64) as i64), &(limit as i64)],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| decode("audit entry", row.get(0)))
                .collect()
        })
    }

    fn audit_head(&self) -> StoreFuture<'_, ChainHead> {
        Box::pin(self.read_head())
    }

    fn verify_audit(&self) -> StoreFuture<'_, Result<ChainReport, String>> {
        Box::pin(self.verify_chain())
    }

    fn bootstrap_pending(&self) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.meta_value(META_BOOTSTRAP_PENDING))
    }

    fn recorded_issuer(&self) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.meta_value(META_ISSUER))
    }

    fn lock_initialisation(&self) -> StoreFuture<'_, InitLock> {
        Box::pin(async move {
            let client = self.client().await?;
            // Taken out of the pool: the session lock ends when this
            // connection closes, i.e. when the guard is dropped.
            let client = deadpool_postgres::Object::take(client);
            client
                .execute("SELECT pg_advisory_lock($1)", &[&migrations::SCHEMA_LOCK])
                .await
                .map_err(db_error)?;
            Ok(InitLock::held(Box::new(client)))
        })
    }

    fn signing_key_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.feed.signing.subscribe())
    }

    fn ready(&self) -> bool {
        self.feed.listening() && !self.pool.is_closed()
    }

    fn backup(&self, _out: std::path::PathBuf) -> StoreFuture<'_, crate::store::BackupSummary> {
        crate::store::ready(Err(StoreError::Unsupported(
            "this issuer keeps its data in PostgreSQL: back it up with pg_dump (and keep the key-encryption key file apart from the dump)".into(),
        )))
    }
}
