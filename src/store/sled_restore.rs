//! Restoring a sled backup (contract §9), with the server stopped, into a
//! data directory that holds no database. The new database is built in a
//! staging directory inside the data directory and renamed into place only
//! once it is complete, flushed and checked, so a failed or interrupted
//! restore leaves no half-written database where `serve` would open it.
//!
//! A restored store is not the store it was copied from, and it says so to
//! verifiers in two ways:
//!
//! - **A new status epoch.** Its status changes are numbered in a new
//!   sequence space, so verifiers start over instead of comparing sequence
//!   numbers across the restore (they would refuse the restored lists as
//!   stale copies, or take the restored history for the lost one).
//! - **Status slots of tokens it does not know are invalid.** Tokens
//!   minted after the backup was taken carry status indexes the backup never
//!   recorded for any token: slots handed to writes that were still in
//!   flight when the snapshot was taken (allocation runs ahead of commits),
//!   and slots beyond its allocation counter. Restore marks every slot below
//!   the counter that no token of the backup holds invalid, and the next
//!   `reserve` slots too, and allocates only after them: those tokens fail
//!   verification and no index is handed out twice (as long as fewer than
//!   `reserve` tokens were minted after the backup).
//!
//! The restore is the restored audit log's last entry (`backup.restore`).

use std::path::Path;

use latchkey_verifier::TokenStatus;
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{self, Actor, ChainHead, NewEntry};
use crate::model::KeyRecord;
use crate::store::sled::verify_stored_chain;
use crate::store::sled_backup::{BackupContents, read_backup, tree};
use crate::store::sled_layout::*;

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub contents: BackupContents,
    /// The restored store's status epoch (new).
    pub epoch: String,
    /// Status slots marked invalid for tokens minted after the backup.
    pub reserved: std::ops::Range<u64>,
    /// Slots below the backup's allocation counter that no token of the
    /// backup holds, marked invalid.
    pub unheld: usize,
    /// Audit entries in the restored log, its `backup.restore` entry included.
    pub audit_entries: u64,
}

/// Whether `data_dir` holds a latchkey database.
pub fn holds_database(data_dir: &Path) -> bool {
    data_dir.join("db").exists()
}

fn holds_database_error(data_dir: &Path) -> String {
    format!(
        "{} already holds a database ({}); restore never overwrites one: move it away first",
        data_dir.display(),
        data_dir.join("db").display()
    )
}

/// Restores the backup `file`, which [`read_backup`] found valid as
/// `expected`, into `data_dir`. `now` is the time of the audit entry.
pub fn restore(
    file: &Path,
    expected: &BackupContents,
    data_dir: &Path,
    reserve: u64,
    now: OffsetDateTime,
) -> Result<Restored, String> {
    if holds_database(data_dir) {
        return Err(holds_database_error(data_dir));
    }
    let created_dir = !data_dir.exists();
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let suffix = new_epoch().map_err(|e| e.to_string())?;
    let staging = data_dir.join(format!(".restore-{}", &suffix[..12]));
    let outcome = build(file, expected, &staging, reserve, now).and_then(|restored| {
        std::fs::rename(staging.join("db"), data_dir.join("db")).map_err(|e| {
            if holds_database(data_dir) {
                holds_database_error(data_dir)
            } else {
                format!("cannot move the restored database into place: {e}")
            }
        })?;
        Ok(restored)
    });
    let _ = std::fs::remove_dir_all(&staging);
    match outcome {
        Ok(restored) => {
            std::fs::File::open(data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| format!("cannot sync {}: {e}", data_dir.display()))?;
            Ok(restored)
        }
        Err(e) => {
            if created_dir {
                let _ = std::fs::remove_dir(data_dir);
            }
            Err(e)
        }
    }
}

/// Builds the restored database in `staging/db`.
fn build(
    file: &Path,
    expected: &BackupContents,
    staging: &Path,
    reserve: u64,
    now: OffsetDateTime,
) -> Result<Restored, String> {
    let trees = Trees::open(open_db(staging)?).map_err(|e| e.to_string())?;
    let input =
        std::fs::File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let contents = read_backup(input, &mut |name, key, value| {
        let tree = tree(&trees, name).ok_or_else(|| format!("unknown tree {name:?}"))?;
        tree.insert(key, value)
            .map(|_| ())
            .map_err(|e| format!("cannot write the new database: {e}"))
    })?;
    if contents.sha256 != expected.sha256 {
        return Err(format!(
            "{} changed while it was being restored; run restore again",
            file.display()
        ));
    }
    let write = |e: sled::Error| format!("cannot write the new database: {e}");
    let meta = &trees.meta;
    let epoch = new_epoch().map_err(|e| e.to_string())?;
    meta.insert(META_STATUS_EPOCH, epoch.as_bytes())
        .map_err(write)?;

    let next = match meta.get(META_STATUS_NEXT).map_err(write)? {
        Some(bytes) => read_u64(&bytes).map_err(|e| e.to_string())?,
        None => 0,
    };
    let end = next
        .checked_add(reserve)
        .ok_or("--reserve-slots is too large")?;
    let unheld = unheld_slots(&trees, next)?;
    let mut reserved = sled::Batch::default();
    for &slot in unheld.iter().chain(&(next..end).collect::<Vec<_>>()) {
        reserved.insert(&slot.to_be_bytes(), &[TokenStatus::Invalid.bits()]);
    }
    trees.statuses.apply_batch(reserved).map_err(write)?;
    meta.insert(META_STATUS_NEXT, &end.to_be_bytes())
        .map_err(write)?;

    let head = read_head(meta).map_err(|e| e.to_string())?;
    let entry = audit::next_entry(
        &head,
        NewEntry {
            actor: Actor::bootstrap(),
            action: "backup.restore",
            target: None,
            details: json!({
                "backup_created_at": contents.header.created_at,
                "sha256": contents.sha256,
                "keys": contents.keys,
                "status_epoch": epoch,
                "reserved_slots": {"from": next, "to": end},
                "unheld_slots_invalidated": unheld.len(),
            }),
        },
        now,
    );
    trees
        .audit
        .insert(
            seq_key(entry.seq),
            encode(&entry).map_err(|e| e.to_string())?,
        )
        .map_err(write)?;
    let head = ChainHead {
        seq: entry.seq,
        hash: entry.hash,
    };
    meta.insert(META_AUDIT_HEAD, encode(&head).map_err(|e| e.to_string())?)
        .map_err(write)?;

    let report = verify_stored_chain(&trees)
        .map_err(|e| format!("the restored audit log does not verify: {e}"))?;
    trees.db.flush().map_err(write)?;
    Ok(Restored {
        contents,
        epoch,
        reserved: next..end,
        unheld: unheld.len(),
        audit_entries: report.entries,
    })
}

/// Most slots a backup may have allocated (4,096 full default lists).
const MAX_SLOTS: u64 = 1 << 32;

/// The slots below `next` that no token of any key holds and whose status
/// is still VALID: handed to writes the snapshot did not include.
fn unheld_slots(trees: &Trees, next: u64) -> Result<Vec<u64>, String> {
    if next > MAX_SLOTS {
        return Err(format!(
            "the backup's status slot counter ({next}) is implausible: it is not a latchkey data directory"
        ));
    }
    let mut held = vec![0u64; next.div_ceil(64) as usize];
    for item in trees.keys.iter() {
        let (_, value) = item.map_err(|e| e.to_string())?;
        let record: KeyRecord = decode("key", &value).map_err(|e| e.to_string())?;
        for token in record.tokens.iter().filter(|t| t.slot < next) {
            held[(token.slot / 64) as usize] |= 1 << (token.slot % 64);
        }
    }
    let mut unheld = Vec::new();
    for slot in 0..next {
        if held[(slot / 64) as usize] & (1 << (slot % 64)) == 0
            && !trees
                .statuses
                .contains_key(slot.to_be_bytes())
                .map_err(|e| e.to_string())?
        {
            unheld.push(slot);
        }
    }
    Ok(unheld)
}
