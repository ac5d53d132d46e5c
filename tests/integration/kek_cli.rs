//! `latchkey kek generate` run as a binary (contract §9): it writes a
//! private key-encryption key file once and refuses to replace it.

use std::os::unix::fs::PermissionsExt;

use crate::support::{latchkey, run};

#[test]
fn kek_generate_writes_a_private_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.hex");

    let first = run(latchkey().args(["kek", "generate", "--out"]).arg(&path));
    assert!(first.success, "{first:?}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 65);
    let content = std::fs::read_to_string(&path).unwrap();
    let fingerprint = latchkey::kek::Kek::load(&path).unwrap().fingerprint();
    assert!(
        first.stderr.contains(&path.display().to_string()),
        "{first:?}"
    );
    assert!(first.stderr.contains(&fingerprint), "{first:?}");
    assert!(!first.stderr.contains(content.trim()), "{first:?}");
    assert!(!first.stdout.contains(content.trim()), "{first:?}");

    let second = run(latchkey().args(["kek", "generate", "--out"]).arg(&path));
    assert!(!second.success, "{second:?}");
    assert_ne!(second.code, Some(0));
    assert!(second.stderr.contains("the file exists"), "{second:?}");
    assert!(
        second.stderr.contains(&path.display().to_string()),
        "{second:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
}
