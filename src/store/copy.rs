//! `latchkey store copy`: moves an embedded installation (sled data
//! directory and key files) into an empty PostgreSQL database, with both
//! issuers stopped.
//!
//! Everything is copied as it is: key records, the name index, token ids,
//! status bits, the status sequence and its epoch (verifiers following the
//! old issuer keep their place), the audit entries with their hashes (the
//! chain still verifies, and the copy is checked before it commits), the
//! signing-key records, and the private keys, sealed under the
//! key-encryption key. Slots continue after the last one handed out, so
//! no status index is reused. It is one transaction: a failure leaves the
//! database as it was.

use std::path::Path;

use crate::audit::{AuditEntry, ChainHead};
use crate::kek::Kek;
use crate::model::{SigningKeyInfo, SigningKeyState};
use crate::signing;
use crate::store::postgres::{self, DatabaseUrl, slot_block};
use crate::store::sled_layout::*;

/// What was copied.
#[derive(Debug, Default)]
pub struct CopyReport {
    pub keys: u64,
    pub audit_entries: u64,
    pub signing_keys: u64,
    pub statuses: u64,
}

const CHUNK: usize = 1000;

/// Copies `data_dir` (+ `keys_dir`) into the database at `url`, which must
/// hold no latchkey data yet.
pub async fn copy_embedded_to_postgres(
    data_dir: &Path,
    keys_dir: &Path,
    url: &DatabaseUrl,
    kek: &Kek,
) -> Result<CopyReport, String> {
    if !data_dir.join("db").exists() {
        return Err(format!(
            "{} holds no latchkey database (expected {}/db)",
            data_dir.display(),
            data_dir.display()
        ));
    }
    let db = open_db(data_dir)?;
    let trees = Trees::open(db).map_err(|e| e.to_string())?;
    let meta = |key: &[u8]| -> Result<Option<Vec<u8>>, String> {
        Ok(trees
            .meta
            .get(key)
            .map_err(|e| e.to_string())?
            .map(|v| v.to_vec()))
    };
    let text = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8_lossy(&v).into_owned());
    let u64_of = |v: Option<Vec<u8>>| -> Result<u64, String> {
        match v {
            Some(bytes) => read_u64(&bytes).map_err(|e| e.to_string()),
            None => Ok(0),
        }
    };
    let capacity = u64_of(meta(META_LIST_CAPACITY)?)?;
    let next_slot = u64_of(meta(META_STATUS_NEXT)?)?;
    let status_seq = u64_of(meta(META_STATUS_SEQ)?)?;
    let epoch = text(meta(META_STATUS_EPOCH)?).ok_or("the data directory has no status epoch; open it once with this version (`latchkey serve`) first")?;
    let issuer = text(meta(META_ISSUER)?);
    let bootstrap = text(meta(META_BOOTSTRAP_PENDING)?);
    let head: ChainHead = match meta(META_AUDIT_HEAD)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string())?,
        None => ChainHead::genesis(),
    };

    // Signing keys: records, and each live key's private half, sealed.
    let mut signing_rows = Vec::new();
    for item in trees.signing_keys.iter() {
        let (_, value) = item.map_err(|e| e.to_string())?;
        let info: SigningKeyInfo = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
        let sealed = if info.state == SigningKeyState::Retired {
            None
        } else {
            let alg = latchkey_verifier::jwk::SigningAlgorithm::from_jose(&info.alg).ok_or_else(
                || {
                    format!(
                        "signing key {} has unknown algorithm {}",
                        info.kid, info.alg
                    )
                },
            )?;
            let path = signing::key_file_path(keys_dir, &info.kid);
            if !path.exists() {
                return Err(format!(
                    "signing key {} is recorded but its file is missing from {}: pass the keys directory the issuer used (--keys-dir)",
                    info.kid,
                    keys_dir.display()
                ));
            }
            // Read and parsed as the issuer would: a bad file stops the copy.
            signing::read_key_file(&path, alg).map_err(|e| e.to_string())?;
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let pem = if bytes.starts_with(b"-----BEGIN") {
                bytes
            } else {
                signing::pkcs8_to_pem(&signing::portable_pkcs8(&bytes)).into_bytes()
            };
            Some(kek.seal(&info.kid, &pem).map_err(|e| e.to_string())?)
        };
        signing_rows.push((info.kid.clone(), value.to_vec(), sealed));
    }
    if signing_rows.is_empty() {
        return Err("the data directory has no signing key; it was never initialised".into());
    }

    let pool = url.pool(1)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("cannot reach the database at {url}: {e}"))?;
    postgres::migrations::apply(&mut client).await?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let occupied: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM latchkey_keys) OR EXISTS (SELECT 1 FROM latchkey_signing_keys) OR EXISTS (SELECT 1 FROM latchkey_audit)",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if occupied {
        return Err(format!(
            "the database at {url} already holds latchkey data; copy into an empty database"
        ));
    }
    let e = |e: tokio_postgres::Error| e.to_string();
    tx.execute("DELETE FROM latchkey_chain", &[])
        .await
        .map_err(e)?;
    tx.execute("DELETE FROM latchkey_meta", &[])
        .await
        .map_err(e)?;
    tx.execute(
        "INSERT INTO latchkey_chain (id, audit_seq, audit_hash, status_seq) VALUES (1, $1, $2, $3)",
        &[&(head.seq as i64), &head.hash, &(status_seq as i64)],
    )
    .await
    .map_err(e)?;
    let mut meta_rows = vec![
        ("status_list_capacity", capacity.to_string()),
        ("status_epoch", epoch),
        ("key_encryption_key_fingerprint", kek.fingerprint()),
    ];
    if let Some(issuer) = issuer {
        meta_rows.push(("issuer", issuer));
    }
    if let Some(pending) = bootstrap {
        meta_rows.push(("bootstrap_pending", pending));
    }
    for (key, value) in &meta_rows {
        tx.execute(
            "INSERT INTO latchkey_meta (key, value) VALUES ($1, $2)",
            &[key, value],
        )
        .await
        .map_err(e)?;
    }
    let mut report = CopyReport::default();
    for (kid, info, sealed) in &signing_rows {
        tx.execute(
            "INSERT INTO latchkey_signing_keys (kid, info, sealed_key) VALUES ($1, $2, $3)",
            &[kid, info, sealed],
        )
        .await
        .map_err(e)?;
        report.signing_keys += 1;
    }
    // Key records first (names refer to them).
    let mut ids = Vec::new();
    let mut records = Vec::new();
    for item in trees.keys.iter() {
        let (k, v) = item.map_err(|e| e.to_string())?;
        ids.push(String::from_utf8_lossy(&k).into_owned());
        records.push(v.to_vec());
        if ids.len() == CHUNK {
            insert_pairs(&tx, "INSERT INTO latchkey_keys (id, record) SELECT * FROM unnest($1::text[], $2::bytea[])", &mut ids, &mut records, &mut report.keys).await?;
        }
    }
    insert_pairs(
        &tx,
        "INSERT INTO latchkey_keys (id, record) SELECT * FROM unnest($1::text[], $2::bytea[])",
        &mut ids,
        &mut records,
        &mut report.keys,
    )
    .await?;
    for (tree, sql) in [
        (
            &trees.names,
            "INSERT INTO latchkey_names (folded, key_id) SELECT * FROM unnest($1::text[], $2::text[])",
        ),
        (
            &trees.tokens,
            "INSERT INTO latchkey_tokens (jti, key_id) SELECT * FROM unnest($1::text[], $2::text[])",
        ),
    ] {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut n = 0;
        for item in tree.iter() {
            let (k, v) = item.map_err(|e| e.to_string())?;
            a.push(String::from_utf8_lossy(&k).into_owned());
            b.push(String::from_utf8_lossy(&v).into_owned());
            if a.len() == CHUNK {
                insert_pairs(&tx, sql, &mut a, &mut b, &mut n).await?;
            }
        }
        insert_pairs(&tx, sql, &mut a, &mut b, &mut n).await?;
    }
    let mut slots = Vec::new();
    let mut bits = Vec::new();
    for item in trees.statuses.iter() {
        let (k, v) = item.map_err(|e| e.to_string())?;
        slots.push(read_u64(&k).map_err(|e| e.to_string())? as i64);
        bits.push(i16::from(v.first().copied().unwrap_or(1)));
        if slots.len() == CHUNK {
            insert_pairs(&tx, "INSERT INTO latchkey_statuses (slot, status) SELECT * FROM unnest($1::bigint[], $2::smallint[])", &mut slots, &mut bits, &mut report.statuses).await?;
        }
    }
    insert_pairs(&tx, "INSERT INTO latchkey_statuses (slot, status) SELECT * FROM unnest($1::bigint[], $2::smallint[])", &mut slots, &mut bits, &mut report.statuses).await?;
    let mut seqs = Vec::new();
    let mut entries = Vec::new();
    let mut chain = ChainHead::genesis();
    for item in trees.audit.iter() {
        let (_, v) = item.map_err(|e| e.to_string())?;
        let entry: AuditEntry = serde_json::from_slice(&v).map_err(|_| {
            format!(
                "audit entry after {} is not valid; run `latchkey audit verify --data-dir` first",
                chain.seq
            )
        })?;
        seqs.push(entry.seq as i64);
        chain = crate::audit::check_link(&chain, entry).map_err(|p| {
            format!("the embedded audit log does not verify ({p}); nothing was copied")
        })?;
        entries.push(v.to_vec());
        if seqs.len() == CHUNK {
            insert_pairs(&tx, "INSERT INTO latchkey_audit (seq, entry) SELECT * FROM unnest($1::bigint[], $2::bytea[])", &mut seqs, &mut entries, &mut report.audit_entries).await?;
        }
    }
    insert_pairs(
        &tx,
        "INSERT INTO latchkey_audit (seq, entry) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
        &mut seqs,
        &mut entries,
        &mut report.audit_entries,
    )
    .await?;
    if chain != head {
        return Err(format!(
            "the embedded audit log ends at entry {} but its recorded head is entry {}; nothing was copied",
            chain.seq, head.seq
        ));
    }
    // Slots continue after the last block that may be in use.
    let blocks = next_slot.div_ceil(slot_block(capacity));
    if blocks > 0 {
        tx.execute(
            "SELECT setval('latchkey_status_slots', $1, true)",
            &[&((blocks - 1) as i64)],
        )
        .await
        .map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    Ok(report)
}

async fn insert_pairs<A, B>(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    a: &mut Vec<A>,
    b: &mut Vec<B>,
    count: &mut u64,
) -> Result<(), String>
where
    Vec<A>: tokio_postgres::types::ToSql + Sync,
    Vec<B>: tokio_postgres::types::ToSql + Sync,
{
    if a.is_empty() {
        return Ok(());
    }
    tx.execute(sql, &[&*a, &*b])
        .await
        .map_err(|e| format!("copy failed: {e}"))?;
    *count += a.len() as u64;
    a.clear();
    b.clear();
    Ok(())
}
