//! The backup format: what the writer produces reads back, and a damaged,
//! cut-off, reordered or foreign file is refused with the line and reason.

#![allow(clippy::unwrap_used)]

use super::*;

/// A small store written to a backup: its bytes and the writer's summary.
fn sample() -> (Vec<u8>, BackupSummary) {
    let dir = tempfile::tempdir().unwrap();
    let trees = Trees::open(open_db(dir.path()).unwrap()).unwrap();
    trees
        .meta
        .insert(META_LIST_CAPACITY, &1024u64.to_be_bytes())
        .unwrap();
    trees
        .meta
        .insert(META_ISSUER, "http://issuer.test")
        .unwrap();
    trees.statuses.insert(3u64.to_be_bytes(), &[1u8]).unwrap();
    trees.statuses.insert(9u64.to_be_bytes(), &[2u8]).unwrap();
    trees.names.insert("alice", "id-1").unwrap();
    let path = dir.path().join("backup");
    let at = time::macros::datetime!(2026-06-01 0:00 UTC);
    let (summary, file) = write_snapshot(&trees, &path, at).unwrap();
    drop(file);
    (std::fs::read(&path).unwrap(), summary)
}

fn read(bytes: &[u8]) -> Result<BackupContents, String> {
    read_backup(bytes, &mut |_, _, _| Ok(()))
}

#[test]
fn a_backup_reads_back_record_by_record() {
    let (bytes, summary) = sample();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with(
        r#"{"format":"latchkey-backup","version":1,"created_at":"2026-06-01T00:00:00Z","issuer":"http://issuer.test"}"#
    ));
    let mut seen = Vec::new();
    let contents = read_backup(bytes.as_slice(), &mut |tree, key, value| {
        seen.push((tree.to_owned(), key.to_vec(), value.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(contents.records, 5);
    assert_eq!(contents.bytes, bytes.len() as u64);
    assert_eq!(summary.bytes, bytes.len() as u64);
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    assert_eq!(contents.sha256, digest);
    assert_eq!(summary.sha256, digest);
    let trees: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(trees, ["meta", "meta", "names", "statuses", "statuses"]);
    assert_eq!(seen[2].1, b"alice");
    assert_eq!(
        seen[4],
        ("statuses".into(), 9u64.to_be_bytes().to_vec(), vec![2])
    );
}

#[test]
fn every_cut_off_copy_is_refused() {
    let (bytes, _) = sample();
    for len in 0..bytes.len() {
        let error = read(&bytes[..len]).expect_err("a cut-off copy must not validate");
        assert!(
            error.contains("truncated") || error.contains("empty"),
            "cut at {len}: {error}"
        );
    }
}

#[test]
fn every_flipped_bit_is_refused() {
    let (bytes, _) = sample();
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x01;
        assert!(read(&damaged).is_err(), "flipped byte {i} went unnoticed");
    }
}

#[test]
fn a_changed_value_fails_the_checksum() {
    let (bytes, _) = sample();
    let text = String::from_utf8(bytes).unwrap();
    let damaged = text.replace("http://issuer.test", "http://issuer.tesu");
    let error = read(damaged.as_bytes()).unwrap_err();
    assert!(error.contains("checksum does not match"), "{error}");
    assert!(error.starts_with("line 7:"), "{error}");
}

#[test]
fn reordered_records_name_their_line() {
    let (bytes, _) = sample();
    let text = String::from_utf8(bytes).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(4, 5);
    let damaged = lines.join("\n") + "\n";
    let error = read(damaged.as_bytes()).unwrap_err();
    assert!(
        error.starts_with("line 6: record of tree \"statuses\" out of order"),
        "{error}"
    );
}

#[test]
fn other_files_and_versions_are_named_as_such() {
    let error = read(b"hello\n").unwrap_err();
    assert!(error.contains("not a latchkey backup"), "{error}");
    let error = read(b"").unwrap_err();
    assert!(error.contains("empty"), "{error}");
    let (bytes, _) = sample();
    let text = String::from_utf8(bytes).unwrap();
    let newer = text.replacen("\"version\":1", "\"version\":2", 1);
    let error = read(newer.as_bytes()).unwrap_err();
    assert!(error.contains("version 2"), "{error}");
}

#[test]
fn nothing_may_follow_the_end_line() {
    let (mut bytes, _) = sample();
    let copy = bytes.clone();
    bytes.extend_from_slice(&copy);
    let error = read(&bytes).unwrap_err();
    assert!(error.contains("data after the end line"), "{error}");
}

#[test]
fn a_miscounted_end_line_is_refused() {
    let (bytes, _) = sample();
    let text = String::from_utf8(bytes).unwrap();
    let damaged = text.replace("\"records\":5", "\"records\":6");
    let error = read(damaged.as_bytes()).unwrap_err();
    assert!(
        error.contains("counts 6 records but the file holds 5"),
        "{error}"
    );
}
