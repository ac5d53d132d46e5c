//! The rules every record of a backup must follow, checked as it is read:
//! known trees in the writer's order, keys increasing (so a repeated or
//! moved record is caught without holding the file), values of the shape
//! their tree stores, and an audit chain that links from its first entry to
//! the recorded head.

use crate::audit::{self, AuditEntry, ChainHead};
use crate::model::{KeyRecord, SigningKeyInfo};
use crate::store::sled_backup::{Counts, TREES};
use crate::store::sled_layout::*;

/// The per-record rules: known trees in order, keys increasing, values of
/// the right shape, and the audit chain linked from its first entry to the
/// recorded head.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) counts: Counts,
    position: Option<(usize, Vec<u8>)>,
    chain: Option<ChainHead>,
    recorded_head: Option<ChainHead>,
    has_capacity: bool,
    pub(super) signing_keys: Vec<SigningKeyInfo>,
}

impl Checker {
    pub(super) fn record(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        let index = TREES
            .iter()
            .position(|t| *t == tree)
            .ok_or_else(|| format!("unknown tree {tree:?}"))?;
        if let Some((last, last_key)) = &self.position
            && (index < *last || (index == *last && key <= last_key.as_slice()))
        {
            return Err(format!(
                "record of tree {tree:?} out of order or repeated: the file was edited"
            ));
        }
        self.position = Some((index, key.to_vec()));
        let text = |what: &str| {
            std::str::from_utf8(value).map_err(|_| format!("{tree} {what} is not text"))
        };
        match tree {
            TREE_KEYS => {
                let record: KeyRecord = decode("key", value).map_err(|e| e.to_string())?;
                if record.id.as_bytes() != key {
                    return Err("a key record stored under another id".into());
                }
            }
            TREE_SIGNING_KEYS => {
                let info: SigningKeyInfo =
                    decode("signing key", value).map_err(|e| e.to_string())?;
                if info.kid.as_bytes() != key {
                    return Err("a signing key stored under another kid".into());
                }
                self.signing_keys.push(info);
            }
            TREE_AUDIT => {
                let entry: AuditEntry = decode("audit entry", value).map_err(|e| e.to_string())?;
                if key != seq_key(entry.seq) {
                    return Err(format!("audit entry {} stored out of place", entry.seq));
                }
                let head = self.chain.take().unwrap_or_else(ChainHead::genesis);
                self.chain = Some(audit::check_link(&head, entry)?);
            }
            TREE_STATUSES => {
                if key.len() != 8 || value.len() != 1 {
                    return Err("a status entry is not a slot and a status byte".into());
                }
            }
            TREE_NAMES | TREE_TOKENS => {
                text("value")?;
            }
            _ => self.meta(key, value)?,
        }
        self.counts.add(tree);
        Ok(())
    }

    fn meta(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        if key == META_STATUS_NEXT || key == META_STATUS_SEQ || key == META_LIST_CAPACITY {
            read_u64(value).map_err(|_| "a counter in meta is not 8 bytes".to_owned())?;
            self.has_capacity |= key == META_LIST_CAPACITY;
        } else if key == META_AUDIT_HEAD {
            self.recorded_head = Some(decode("audit head", value).map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    /// The checks that need the whole file.
    pub(super) fn finish(&self) -> Result<(), String> {
        if !self.has_capacity {
            return Err(
                "the backup records no status list capacity: it is not a complete data directory"
                    .into(),
            );
        }
        let head = self.chain.clone().unwrap_or_else(ChainHead::genesis);
        let recorded = self
            .recorded_head
            .clone()
            .unwrap_or_else(ChainHead::genesis);
        if head != recorded {
            return Err(format!(
                "the audit log ends at entry {} but its recorded head is entry {}: entries are missing",
                head.seq, recorded.seq
            ));
        }
        Ok(())
    }
}
