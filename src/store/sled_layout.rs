//! The sled engine's on-disk layout: tree and `meta` entry names, how
//! records are encoded, and bringing a data directory written by an older
//! version up to date when it is opened.
//!
//! | tree | key → value |
//! |---|---|
//! | `keys` | key id (UUIDv7, so byte order is creation order) → key record (JSON) |
//! | `names` | NFKC case-folded name → key id |
//! | `tokens` | `jti` → key id |
//! | `statuses` | status slot (u64 BE) → status byte; absent means VALID |
//! | `audit` | sequence (u64 BE) → audit entry (JSON) |
//! | `meta` | counters, the status epoch, the audit chain head, layout markers, the issuer, the pending bootstrap key |
//! | `signing_keys` | `kid` → state and dates (JSON; never key material) |

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::audit::ChainHead;
use crate::names::fold_name;
use crate::store::{StoreError, StoreResult};

pub const TREE_KEYS: &str = "keys";
pub const TREE_NAMES: &str = "names";
pub const TREE_TOKENS: &str = "tokens";
pub const TREE_STATUSES: &str = "statuses";
pub const TREE_AUDIT: &str = "audit";
pub const TREE_META: &str = "meta";
pub const TREE_SIGNING_KEYS: &str = "signing_keys";

pub const META_STATUS_NEXT: &[u8] = b"status_next";
pub const META_LIST_CAPACITY: &[u8] = b"status_list_capacity";
pub const META_STATUS_SEQ: &[u8] = b"status_seq";
/// The name of the status sequence space.
pub const META_STATUS_EPOCH: &[u8] = b"status_epoch";
pub const META_AUDIT_HEAD: &[u8] = b"audit_head";
/// The id of a bootstrap key whose token was not handed over yet.
pub const META_BOOTSTRAP_PENDING: &[u8] = b"bootstrap_pending";
/// The issuer recorded at initialisation.
pub const META_ISSUER: &[u8] = b"issuer";
/// The layout of the `names` index.
pub const META_NAMES_LAYOUT: &[u8] = b"names_layout";
/// The current layout: keys are [`fold_name`] of the name.
pub const NAMES_LAYOUT: &[u8] = b"nfkc-casefold-1";

/// The trees of one database.
#[derive(Debug, Clone)]
pub struct Trees {
    pub db: sled::Db,
    pub keys: sled::Tree,
    pub names: sled::Tree,
    pub tokens: sled::Tree,
    pub statuses: sled::Tree,
    pub audit: sled::Tree,
    pub meta: sled::Tree,
    pub signing_keys: sled::Tree,
}

impl Trees {
    pub fn open(db: sled::Db) -> StoreResult<Trees> {
        Ok(Trees {
            keys: db.open_tree(TREE_KEYS).map_err(internal)?,
            names: db.open_tree(TREE_NAMES).map_err(internal)?,
            tokens: db.open_tree(TREE_TOKENS).map_err(internal)?,
            statuses: db.open_tree(TREE_STATUSES).map_err(internal)?,
            audit: db.open_tree(TREE_AUDIT).map_err(internal)?,
            meta: db.open_tree(TREE_META).map_err(internal)?,
            signing_keys: db.open_tree(TREE_SIGNING_KEYS).map_err(internal)?,
            db,
        })
    }
}

pub fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// The one decoder of stored JSON records (keys, signing keys, audit entries).
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("{what} record is corrupt: {e}")))
}

pub fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(internal)
}

pub fn read_u64(bytes: &[u8]) -> StoreResult<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Internal("corrupt counter".into()))?;
    Ok(u64::from_be_bytes(array))
}

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn read_head(meta: &sled::Tree) -> StoreResult<ChainHead> {
    match meta.get(META_AUDIT_HEAD).map_err(internal)? {
        None => Ok(ChainHead::genesis()),
        Some(bytes) => decode("audit head", &bytes),
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

/// What [`ensure_names_layout`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexRebuild {
    /// Whether the index was rebuilt (it was in an older layout).
    pub rebuilt: bool,
    /// Keys indexed.
    pub keys: usize,
    /// Existing keys whose name folds to an earlier key's name: they keep
    /// working; the name stays taken by the earlier key's entry.
    pub collisions: Vec<(String, String)>,
}

/// Rebuilds the `names` index from the key records unless `meta` records
/// that it is in the current layout (versions before NFKC case folding
/// stored the lower-cased name). Safe to interrupt: the marker is written
/// last, so an interrupted rebuild runs again at the next open.
pub fn ensure_names_layout(trees: &Trees) -> StoreResult<IndexRebuild> {
    if trees
        .meta
        .get(META_NAMES_LAYOUT)
        .map_err(internal)?
        .is_some_and(|v| v.as_ref() == NAMES_LAYOUT)
    {
        return Ok(IndexRebuild::default());
    }
    trees.names.clear().map_err(internal)?;
    let mut report = IndexRebuild {
        rebuilt: true,
        ..IndexRebuild::default()
    };
    // Ids are UUIDv7, so this walks keys oldest first: on a collision the
    // older key keeps the index entry.
    for item in trees.keys.iter() {
        let (_, value) = item.map_err(internal)?;
        let record: crate::model::KeyRecord = decode("key", &value)?;
        let folded = fold_name(&record.name);
        match trees.names.get(folded.as_bytes()).map_err(internal)? {
            Some(holder) => report
                .collisions
                .push((record.id, String::from_utf8_lossy(&holder).into_owned())),
            None => {
                trees
                    .names
                    .insert(folded.as_bytes(), record.id.as_bytes())
                    .map_err(internal)?;
            }
        }
        report.keys += 1;
    }
    trees
        .meta
        .insert(META_NAMES_LAYOUT, NAMES_LAYOUT)
        .map_err(internal)?;
    Ok(report)
}

/// A fresh random name for a status sequence space (16 bytes, hex).
pub fn new_epoch() -> StoreResult<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Internal("no randomness for the status epoch".into()))?;
    Ok(hex::encode(bytes))
}
