//! The tamper-evident audit log.
//!
//! Entries are appended by the store in the same transaction as the change
//! they record, numbered without gaps, and chained: each
//! entry stores the hash of the one before it, and its own hash covers every
//! field plus that link. The store also keeps the newest hash, so editing,
//! removing or truncating entries is detected ([`verify_entries`], and the
//! store's own check of the recorded head). This module is the chain's
//! rules only; it knows no storage.

use serde::{Deserialize, Serialize};

/// The hash that precedes the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Checks that `entry` follows `head`: its number, its link and its own hash.
pub fn check_link(head: &ChainHead, entry: AuditEntry) -> Result<ChainHead, String> {
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
