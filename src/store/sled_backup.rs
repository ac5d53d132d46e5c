//! Backups of the sled engine (contract §9): the file format, the snapshot
//! the committer writes, and the reader that validates a file before
//! anything is restored from it (its per-record rules: `sled_backup_check`;
//! restore itself: `sled_restore`).
//!
//! A backup is line-oriented JSON, so that ordinary tools can inspect it and
//! a cut-off copy is recognisable:
//!
//! ```text
//! {"format":"latchkey-backup","version":1,"created_at":"…","issuer":"…"}
//! {"tree":"keys","key":"<base64url>","value":"<base64url>"}
//! …
//! {"end":true,"records":N,"sha256":"<hex SHA-256 of every byte before this line>"}
//! ```
//!
//! One record per entry of every tree of the layout (`sled_layout`), the
//! trees in [`TREES`] order and each tree's keys in sled's (byte) order, so
//! a reader finds a repeated or misplaced record without holding the file.
//!
//! The snapshot is consistent because the committer thread, the engine's
//! only writer, takes it between two batches ([`write_snapshot`]): no write
//! lands while it iterates, and every write acknowledged before the backup
//! was asked for is in it. Writes queue meanwhile (the pause is counted in
//! `latchkey_backup_pause_seconds`). No private key is in a backup: the
//! signing keys' files live in the keys directory.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::SigningKeyInfo;
use crate::store::sled_backup::check::Checker;
use crate::store::sled_layout::*;
use crate::store::{BackupSummary, StoreError, StoreResult};

/// The `format` of a backup's header.
pub const FORMAT: &str = "latchkey-backup";
/// The version of the format this build writes and reads.
pub const VERSION: u64 = 1;
/// Longest line a reader accepts (a key record with 1000 accounts is ~40 KiB).
const MAX_LINE_BYTES: u64 = 16 << 20;

/// The trees a backup holds, in the order it lists them.
pub const TREES: [&str; 7] = [
    TREE_META,
    TREE_SIGNING_KEYS,
    TREE_KEYS,
    TREE_NAMES,
    TREE_TOKENS,
    TREE_STATUSES,
    TREE_AUDIT,
];

pub(crate) fn tree<'a>(trees: &'a Trees, name: &str) -> Option<&'a sled::Tree> {
    Some(match name {
        TREE_META => &trees.meta,
        TREE_SIGNING_KEYS => &trees.signing_keys,
        TREE_KEYS => &trees.keys,
        TREE_NAMES => &trees.names,
        TREE_TOKENS => &trees.tokens,
        TREE_STATUSES => &trees.statuses,
        TREE_AUDIT => &trees.audit,
        _ => return None,
    })
}

/// The first line of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u64,
    /// RFC 3339 time the snapshot was taken.
    pub created_at: String,
    /// The issuer recorded in the data directory, if any.
    pub issuer: Option<String>,
}

#[derive(Serialize)]
struct RecordLine<'a> {
    tree: &'a str,
    key: String,
    value: String,
}

#[derive(Serialize)]
struct EndLine {
    end: bool,
    records: u64,
    sha256: String,
}

/// Any line after the header: a record or the end line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    tree: Option<String>,
    key: Option<String>,
    value: Option<String>,
    end: Option<bool>,
    records: Option<u64>,
    sha256: Option<String>,
}

/// A backup job for the committer: where to write, and whom to answer
/// (with the file still open, so the caller can fsync it off the thread).
#[derive(Debug)]
pub struct BackupRequest {
    pub path: PathBuf,
    pub reply: tokio::sync::oneshot::Sender<StoreResult<(BackupSummary, File)>>,
}

impl BackupRequest {
    /// Takes the snapshot and answers; called by the committer between batches.
    pub(crate) fn run(self, trees: &Trees, at: OffsetDateTime) {
        let _ = self.reply.send(write_snapshot(trees, &self.path, at));
    }
}

/// Counts and hashes what goes through it.
struct Hashing<W> {
    inner: W,
    digest: ring::digest::Context,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Creates `path` for writing: new (never overwriting), mode 0600.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Writes every tree to a new file at `path`; a failure removes the file.
/// Not fsynced: the caller does that, so that the committer is not held.
pub fn write_snapshot(
    trees: &Trees,
    path: &Path,
    at: OffsetDateTime,
) -> StoreResult<(BackupSummary, File)> {
    let started = std::time::Instant::now();
    let file = create_private(path).map_err(|e| {
        StoreError::Internal(format!("cannot create the backup {}: {e}", path.display()))
    })?;
    match write_trees(trees, &file, at) {
        Ok(summary) => {
            metrics::histogram!("latchkey_backup_pause_seconds")
                .record(started.elapsed().as_secs_f64());
            Ok((summary, file))
        }
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            Err(StoreError::Internal(format!(
                "cannot write the backup {}: {e}",
                path.display()
            )))
        }
    }
}

fn write_line<W: Write>(out: &mut W, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

fn write_trees(trees: &Trees, file: &File, at: OffsetDateTime) -> Result<BackupSummary, String> {
    let mut out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        digest: ring::digest::Context::new(&ring::digest::SHA256),
        bytes: 0,
    };
    let io = |e: std::io::Error| e.to_string();
    let issuer = trees
        .meta
        .get(META_ISSUER)
        .map_err(|e| e.to_string())?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created_at: crate::model::rfc3339(at.replace_nanosecond(0).unwrap_or(at)),
        issuer,
    };
    write_line(&mut out, &header).map_err(io)?;
    let mut counts = Counts::default();
    for name in TREES {
        let Some(tree) = tree(trees, name) else {
            continue;
        };
        for item in tree.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let line = RecordLine {
                tree: name,
                key: B64.encode(&key),
                value: B64.encode(&value),
            };
            write_line(&mut out, &line).map_err(io)?;
            counts.add(name);
        }
    }
    let body = hex::encode(out.digest.clone().finish());
    let end = EndLine {
        end: true,
        records: counts.records,
        sha256: body,
    };
    write_line(&mut out, &end).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(BackupSummary {
        keys: counts.keys,
        audit_entries: counts.audit,
        signing_keys: counts.signing_keys,
        bytes: out.bytes,
        sha256: hex::encode(out.digest.finish()),
    })
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) records: u64,
    pub(crate) keys: u64,
    pub(crate) audit: u64,
    pub(crate) signing_keys: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, tree: &str) {
        self.records += 1;
        match tree {
            TREE_KEYS => self.keys += 1,
            TREE_AUDIT => self.audit += 1,
            TREE_SIGNING_KEYS => self.signing_keys += 1,
            _ => {}
        }
    }
}

/// What a valid backup holds.
#[derive(Debug, Clone)]
pub struct BackupContents {
    pub header: Header,
    pub records: u64,
    pub keys: u64,
    pub audit_entries: u64,
    /// Every signing key's record (to check the keys directory against).
    pub signing_keys: Vec<SigningKeyInfo>,
    pub bytes: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
}

/// What [`read_backup`] hands each record to: tree, key, value.
pub type Visit<'a> = dyn FnMut(&str, &[u8], &[u8]) -> Result<(), String> + 'a;

/// Reads and validates a whole backup, handing each record to `visit`
/// (tree, key, value) as it goes. The error names the line and what is
/// wrong with it. A caller that writes what `visit` gets must discard it
/// unless this returns `Ok`: the checksum is known only at the end.
pub fn read_backup(input: impl Read, visit: &mut Visit<'_>) -> Result<BackupContents, String> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut body = ring::digest::Context::new(&ring::digest::SHA256);
    let mut whole = ring::digest::Context::new(&ring::digest::SHA256);
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    let mut check = Checker::default();
    let mut header = None;
    let mut number = 0u64;
    loop {
        buf.clear();
        let read = (&mut input)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read the backup: {e}"))?;
        number += 1;
        if read == 0 {
            return Err(match header {
                None => "the file is empty: not a latchkey backup".into(),
                Some(_) => format!(
                    "the file ends after line {} without its end line: it is truncated",
                    number - 1
                ),
            });
        }
        if buf.len() as u64 > MAX_LINE_BYTES {
            return Err(format!(
                "line {number} is longer than {MAX_LINE_BYTES} bytes: not a latchkey backup"
            ));
        }
        whole.update(&buf);
        bytes += buf.len() as u64;
        if buf.last() != Some(&b'\n') {
            return Err(format!(
                "line {number} is cut off (no line end): the file is truncated"
            ));
        }
        if header.is_none() {
            header = Some(parse_header(&buf)?);
            body.update(&buf);
            continue;
        }
        let line: Line = serde_json::from_slice(&buf).map_err(|e| {
            format!("line {number}: not a backup record ({e}): the file is damaged")
        })?;
        if line.end.is_some() {
            check_end(&line, &check, body, number)?;
            if input
                .fill_buf()
                .map(|rest| !rest.is_empty())
                .unwrap_or(true)
            {
                return Err(format!(
                    "line {}: data after the end line: not a single backup",
                    number + 1
                ));
            }
            let header = header.ok_or("the backup has no header")?;
            check.finish()?;
            return Ok(BackupContents {
                header,
                records: check.counts.records,
                keys: check.counts.keys,
                audit_entries: check.counts.audit,
                signing_keys: check.signing_keys,
                bytes,
                sha256: hex::encode(whole.finish()),
            });
        }
        body.update(&buf);
        let (tree, key, value) = match (line.tree, line.key, line.value, line.records, line.sha256)
        {
            (Some(tree), Some(key), Some(value), None, None) => (tree, key, value),
            _ => {
                return Err(format!(
                    "line {number}: a record needs exactly tree, key and value"
                ));
            }
        };
        let decode = |what: &str, text: &str| {
            B64.decode(text)
                .map_err(|_| format!("line {number}: the {what} is not base64url"))
        };
        let (key, value) = (decode("key", &key)?, decode("value", &value)?);
        check
            .record(&tree, &key, &value)
            .map_err(|e| format!("line {number}: {e}"))?;
        visit(&tree, &key, &value).map_err(|e| format!("line {number}: {e}"))?;
    }
}

fn parse_header(line: &[u8]) -> Result<Header, String> {
    let not_backup =
        "line 1: not a latchkey backup (its first line is not a latchkey-backup header)";
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|_| not_backup)?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(not_backup.into());
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(VERSION) => {}
        Some(other) => {
            return Err(format!(
                "line 1: backup format version {other}; this latchkey reads version {VERSION} (use the latchkey version that wrote it, or a newer one)"
            ));
        }
        None => return Err("line 1: the header has no format version".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("line 1: invalid header: {e}"))
}

fn check_end(
    line: &Line,
    check: &Checker,
    body: ring::digest::Context,
    number: u64,
) -> Result<(), String> {
    let (Some(true), Some(records), Some(sha256), None, None, None) = (
        line.end,
        line.records,
        line.sha256.as_deref(),
        &line.tree,
        &line.key,
        &line.value,
    ) else {
        return Err(format!(
            "line {number}: the end line needs exactly end: true, records and sha256"
        ));
    };
    if records != check.counts.records {
        return Err(format!(
            "line {number}: the end line counts {records} records but the file holds {}: records are missing or were added",
            check.counts.records
        ));
    }
    let computed = hex::encode(body.finish());
    if computed != sha256 {
        return Err(format!(
            "line {number}: the checksum does not match (recorded {sha256}, computed {computed}): the file was changed or damaged"
        ));
    }
    Ok(())
}

#[path = "sled_backup_check.rs"]
mod check;
#[cfg(test)]
#[path = "sled_backup_tests.rs"]
mod tests;
