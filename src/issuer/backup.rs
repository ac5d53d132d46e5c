//! Online backup (contract §9): the store writes a consistent snapshot to a
//! file, and the issuer records who took it, with the file's checksum, in
//! the audit log (`backup.create`). The entry follows the snapshot, so a
//! backup never holds its own entry.

use std::path::PathBuf;

use serde_json::json;

use crate::audit::{Actor, NewEntry};
use crate::issuer::{Issuer, IssuerResult};
use crate::store::{BackupSummary, Durability};

impl Issuer {
    /// Writes a snapshot of the store to `out` (a new file) and audits it.
    /// A store that cannot write backups refuses with
    /// [`IssuerError::Unsupported`](crate::issuer::IssuerError::Unsupported).
    pub async fn backup(&self, actor: &Actor, out: PathBuf) -> IssuerResult<BackupSummary> {
        let summary = self.store.backup(out).await?;
        let entry = NewEntry {
            actor: actor.clone(),
            action: "backup.create",
            target: None,
            details: json!({
                "keys": summary.keys,
                "audit_entries": summary.audit_entries,
                "signing_keys": summary.signing_keys,
                "bytes": summary.bytes,
                "sha256": summary.sha256,
            }),
        };
        self.store
            .append_audit(vec![entry], self.now(), Durability::Durable)
            .await?;
        Ok(summary)
    }
}
