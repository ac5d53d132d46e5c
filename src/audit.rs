//! The tamper-evident audit log.
//!
//! Entries are appended in the same sled transaction as the change they
//! record, numbered without gaps, and chained: each entry stores the hash of
//! the one before it, and its own hash covers every field plus that link. The
//! newest hash is also kept in the `meta` tree, so editing, removing or
//! truncating entries is detected by [`verify_chain`].

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use utoipa::ToSchema;

/// The hash that precedes the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
pub(crate) const META_AUDIT_HEAD: &[u8] = b"audit_head";

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Actor {
    /// An access key: its id and name.
    Key { id: String, name: String },
    /// The service itself: `bootstrap` (first start, `init`, `recover-admin`),
    /// `system` (automatic work) or `anonymous` (a request without a valid key).
    Named(String),
}

impl Actor {
    pub fn bootstrap() -> Actor {
        Actor::Named("bootstrap".into())
    }
    pub fn system() -> Actor {
        Actor::Named("system".into())
    }
    pub fn anonymous() -> Actor {
        Actor::Named("anonymous".into())
    }
}

/// What an entry hashes: everything but its own hash.
#[derive(Debug, Clone, Serialize)]
struct EntryBody<'a> {
    seq: u64,
    time: &'a str,
    actor: &'a Actor,
    action: &'a str,
    target: Option<&'a str>,
    details: &'a serde_json::Value,
    prev_hash: &'a str,
}

/// One audit log entry, as stored and as served by `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// RFC 3339 UTC time of the change.
    pub time: String,
    pub actor: Actor,
    /// e.g. `key.create`, `key.revoke`, `auth.denied`.
    pub action: String,
    /// Usually the id of the key or signing key concerned.
    pub target: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous entry (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over this entry's other fields.
    pub hash: String,
}

impl AuditEntry {
    fn compute_hash(&self) -> String {
        let body = EntryBody {
            seq: self.seq,
            time: &self.time,
            actor: &self.actor,
            action: &self.action,
            target: self.target.as_deref(),
            details: &self.details,
            prev_hash: &self.prev_hash,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
    }
}

/// The end of the chain: the last sequence number and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.into(),
        }
    }
}

/// An entry to be appended.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub actor: Actor,
    pub action: &'static str,
    pub target: Option<String>,
    pub details: serde_json::Value,
}

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Builds the entry that follows `head`.
pub fn next_entry(head: &ChainHead, entry: NewEntry, time: time::OffsetDateTime) -> AuditEntry {
    let time = time
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut built = AuditEntry {
        seq: head.seq + 1,
        time,
        actor: entry.actor,
        action: entry.action.to_owned(),
        target: entry.target,
        details: entry.details,
        prev_hash: head.hash.clone(),
        hash: String::new(),
    };
    built.hash = built.compute_hash();
    built
}

/// Writes `entry` and the new head inside a transaction.
pub fn append_in_tx(
    audit: &TransactionalTree,
    meta: &TransactionalTree,
    entry: &AuditEntry,
) -> Result<(), ConflictableTransactionError<crate::registry::RegistryError>> {
    let bytes = serde_json::to_vec(entry).map_err(|e| {
        ConflictableTransactionError::Abort(crate::registry::RegistryError::Internal(e.to_string()))
    })?;
    audit.insert(&seq_key(entry.seq), bytes)?;
    let head = ChainHead {
        seq: entry.seq,
        hash: entry.hash.clone(),
    };
    let head = serde_json::to_vec(&head).map_err(|e| {
        ConflictableTransactionError::Abort(crate::registry::RegistryError::Internal(e.to_string()))
    })?;
    meta.insert(META_AUDIT_HEAD, head)?;
    Ok(())
}

/// Reads the recorded head of the chain.
pub fn read_head(meta: &sled::Tree) -> Result<ChainHead, String> {
    match meta.get(META_AUDIT_HEAD).map_err(|e| e.to_string())? {
        None => Ok(ChainHead::genesis()),
        Some(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| format!("audit head is corrupt: {e}"))
        }
    }
}

/// Reads entries with `seq > after`, at most `limit`.
pub fn read_page(audit: &sled::Tree, after: u64, limit: usize) -> Result<Vec<AuditEntry>, String> {
    let start = seq_key(after.saturating_add(1));
    audit
        .range(start..)
        .take(limit)
        .map(|item| {
            let (_, value) = item.map_err(|e| e.to_string())?;
            serde_json::from_slice(&value).map_err(|e| format!("audit entry is corrupt: {e}"))
        })
        .collect()
}

/// What [`verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub entries: u64,
    pub head: ChainHead,
}

/// Checks numbering, links and hashes of entries given in order from the
/// first; returns the head they end at.
pub fn verify_entries(entries: impl Iterator<Item = AuditEntry>) -> Result<ChainReport, String> {
    let mut head = ChainHead::genesis();
    for entry in entries {
        head = check_link(&head, entry)?;
    }
    Ok(ChainReport {
        entries: head.seq,
        head,
    })
}

fn check_link(head: &ChainHead, entry: AuditEntry) -> Result<ChainHead, String> {
    let expected_seq = head.seq + 1;
    if entry.seq != expected_seq {
        return Err(format!(
            "entry {expected_seq} is missing (found {} next): entries were removed",
            entry.seq
        ));
    }
    if entry.prev_hash != head.hash {
        return Err(format!(
            "entry {} does not link to entry {}: the chain was altered",
            entry.seq, head.seq
        ));
    }
    if entry.compute_hash() != entry.hash {
        return Err(format!(
            "entry {} was edited: its hash does not match its contents",
            entry.seq
        ));
    }
    Ok(ChainHead {
        seq: entry.seq,
        hash: entry.hash,
    })
}

/// Walks the whole stored log and checks numbering, links, hashes and the
/// recorded head (which catches entries removed from the end).
pub fn verify_chain(audit: &sled::Tree, meta: &sled::Tree) -> Result<ChainReport, String> {
    let mut head = ChainHead::genesis();
    for item in audit.iter() {
        let (key, value) = item.map_err(|e| e.to_string())?;
        let expected_seq = head.seq + 1;
        let entry: AuditEntry = serde_json::from_slice(&value)
            .map_err(|_| format!("entry {expected_seq}: not a valid audit entry (edited?)"))?;
        if key.as_ref() != seq_key(entry.seq) {
            return Err(format!(
                "entry stored under the wrong position near seq {expected_seq}"
            ));
        }
        head = check_link(&head, entry)?;
    }
    let recorded = read_head(meta)?;
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
