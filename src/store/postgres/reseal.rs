//! `latchkey signing-keys reseal`: re-encrypts every stored private key
//! under a new key-encryption key, in one transaction that also records the
//! new key's fingerprint and an audit entry. Replicas still running with
//! the old key keep signing with the keys they loaded, refuse to seal a new
//! one under the old key, and must be restarted with the new file.

use std::path::Path;

use serde_json::json;

use crate::audit::{self, Actor, ChainHead, NewEntry};
use crate::kek::Kek;
use crate::store::postgres::{DatabaseUrl, META_KEK};

/// Reseals every key; returns how many.
pub async fn reseal(
    url: &DatabaseUrl,
    old: &Kek,
    old_file: &Path,
    new: &Kek,
) -> Result<usize, String> {
    let pool = url.pool(1)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("cannot reach the database at {url}: {e}"))?;
    let e = |e: tokio_postgres::Error| e.to_string();
    let tx = client.transaction().await.map_err(e)?;
    // Writers on every replica take this row first: no key changes meanwhile.
    let row = tx
        .query_one(
            "SELECT audit_seq, audit_hash FROM latchkey_chain WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(|e| format!("the database is not initialised for latchkey: {e}"))?;
    let head = ChainHead {
        seq: row.get::<_, i64>(0) as u64,
        hash: row.get(1),
    };
    let stored: String = tx
        .query_opt(
            "SELECT value FROM latchkey_meta WHERE key = $1",
            &[&META_KEK],
        )
        .await
        .map_err(e)?
        .map(|r| r.get(0))
        .unwrap_or_default();
    old.ensure_fingerprint(&stored, old_file)
        .map_err(|e| e.to_string())?;
    if new.fingerprint() == old.fingerprint() {
        return Err("the new key-encryption key is the same as the current one".into());
    }
    let rows = tx
        .query(
            "SELECT kid, sealed_key FROM latchkey_signing_keys WHERE sealed_key IS NOT NULL FOR UPDATE",
            &[],
        )
        .await
        .map_err(e)?;
    let mut kids = Vec::new();
    for row in &rows {
        let kid: String = row.get(0);
        let sealed: Vec<u8> = row.get(1);
        let plain = old.open(&kid, &sealed).map_err(|e| e.to_string())?;
        let resealed = new.seal(&kid, &plain).map_err(|e| e.to_string())?;
        tx.execute(
            "UPDATE latchkey_signing_keys SET sealed_key = $2 WHERE kid = $1",
            &[&kid, &resealed],
        )
        .await
        .map_err(e)?;
        kids.push(kid);
    }
    tx.execute(
        "UPDATE latchkey_meta SET value = $2 WHERE key = $1",
        &[&META_KEK, &new.fingerprint()],
    )
    .await
    .map_err(e)?;
    let entry = audit::next_entry(
        &head,
        NewEntry {
            actor: Actor::bootstrap(),
            action: "signing_key.reseal",
            target: None,
            details: json!({"keys": kids, "from": old.fingerprint(), "to": new.fingerprint()}),
        },
        time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc()),
    );
    let bytes = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
    tx.execute(
        "INSERT INTO latchkey_audit (seq, entry) VALUES ($1, $2)",
        &[&(entry.seq as i64), &bytes],
    )
    .await
    .map_err(e)?;
    tx.execute(
        "UPDATE latchkey_chain SET audit_seq = $1, audit_hash = $2 WHERE id = 1",
        &[&(entry.seq as i64), &entry.hash],
    )
    .await
    .map_err(e)?;
    tx.execute("SELECT pg_notify('latchkey_signing', '')", &[])
        .await
        .map_err(e)?;
    tx.commit().await.map_err(e)?;
    Ok(kids.len())
}
