//! Unit tests of the KEK: the sealed format, its failures, the file and
//! what errors and `Debug` may show.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

const KID: &str = "kid-2026";
const SECRET: &[u8] = b"-----BEGIN PRIVATE KEY----- a signing key";

fn counting_bytes() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn kek() -> Kek {
    Kek::from_bytes(counting_bytes())
}

fn write_file(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn load_error(content: &str) -> (String, KekError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.hex");
    write_file(&path, content, 0o600);
    let err = Kek::load(&path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    if !content.trim().is_empty() {
        assert!(!message.contains(content.trim()), "{message}");
    }
    (message, err)
}

#[test]
fn sealed_key_opens_with_the_same_kek_and_kid() {
    let sealed = kek().seal(KID, SECRET).unwrap();
    assert_eq!(sealed.len(), SEALED_OVERHEAD + SECRET.len());
    assert_eq!(sealed[0], 1);
    assert!(!sealed.windows(SECRET.len()).any(|w| w == SECRET));
    assert_eq!(kek().open(KID, &sealed).unwrap(), SECRET);
    assert_eq!(
        kek().open(KID, &kek().seal(KID, b"").unwrap()).unwrap(),
        b""
    );
}

#[test]
fn each_seal_uses_a_fresh_nonce() {
    let first = kek().seal(KID, SECRET).unwrap();
    let second = kek().seal(KID, SECRET).unwrap();
    assert_ne!(first[1..13], second[1..13]);
    assert_ne!(first, second);
}

#[test]
fn a_key_sealed_by_another_implementation_of_the_format_opens() {
    // AES-256-GCM under bytes 0..32, nonce bytes 100..112, AAD
    // "latchkey signing key v1\0kid-2026", made with Python's `cryptography`:
    // the format is fixed, so keys sealed by earlier versions keep opening.
    let sealed = hex::decode(
        "016465666768696a6b6c6d6e6f293bad0f1e873ff05942348da395d8b106a1b0947ba8ab0ec5511da7f5",
    )
    .unwrap();
    assert_eq!(kek().open(KID, &sealed).unwrap(), b"a signing key");
}

#[test]
fn another_kek_cannot_open_and_the_error_names_the_kid_only() {
    let sealed = kek().seal(KID, SECRET).unwrap();
    let other = Kek::from_bytes([7; 32]);
    let err = other.open(KID, &sealed).unwrap_err();
    assert!(matches!(err, KekError::Open { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(KID), "{message}");
    assert!(message.contains(&other.fingerprint()), "{message}");
    assert!(message.contains("another key-encryption key"), "{message}");
    assert!(!message.contains(&hex::encode(&sealed)), "{message}");
    assert!(!message.contains(&hex::encode(&sealed[1..13])), "{message}");
}

#[test]
fn a_sealed_key_moved_to_another_kid_does_not_open() {
    let sealed = kek().seal(KID, SECRET).unwrap();
    for kid in ["kid-2027", "kid-202", "kid-20266", ""] {
        let err = kek().open(kid, &sealed).unwrap_err();
        assert!(matches!(err, KekError::Open { .. }), "{kid}: {err:?}");
    }
}

#[test]
fn any_flipped_byte_is_refused() {
    let sealed = kek().seal(KID, SECRET).unwrap();
    for i in 1..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut altered = sealed.clone();
            altered[i] ^= bit;
            let err = kek().open(KID, &altered).unwrap_err();
            assert!(matches!(err, KekError::Open { .. }), "byte {i}: {err:?}");
        }
    }
}

#[test]
fn a_cut_off_sealed_key_is_refused() {
    let sealed = kek().seal(KID, SECRET).unwrap();
    for len in 0..sealed.len() {
        let err = kek().open(KID, &sealed[..len]).unwrap_err();
        if len < SEALED_OVERHEAD {
            assert!(matches!(err, KekError::Truncated { .. }), "{len}: {err:?}");
            assert!(err.to_string().contains("cut off"), "{err}");
        } else {
            assert!(matches!(err, KekError::Open { .. }), "{len}: {err:?}");
        }
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(
        kek().open(KID, &longer),
        Err(KekError::Open { .. })
    ));
}

#[test]
fn an_unknown_format_version_is_named() {
    let mut sealed = kek().seal(KID, SECRET).unwrap();
    for version in [0u8, 2, 255] {
        sealed[0] = version;
        let err = kek().open(KID, &sealed).unwrap_err();
        assert!(
            matches!(err, KekError::UnknownVersion { version: v, .. } if v == version),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&format!("format version {version}")));
        assert!(message.contains(KID), "{message}");
    }
}

#[test]
fn fingerprint_is_the_documented_hmac_and_differs_between_keks() {
    // HMAC-SHA256(key, "latchkey key-encryption-key fingerprint v1")[..16],
    // computed with Python's hmac module.
    assert_eq!(kek().fingerprint(), "add8f302ab7c96662287e8cff376b6cc");
    assert_eq!(
        Kek::from_bytes([0; 32]).fingerprint(),
        "17a37ca8fb035f610e88164578c4f9fd"
    );
    assert_eq!(kek().fingerprint(), kek().clone().fingerprint());
    assert_ne!(kek().fingerprint(), Kek::from_bytes([1; 32]).fingerprint());
}

#[test]
fn ensure_fingerprint_names_both_keks_and_the_file() {
    let ours = kek();
    let path = Path::new("/etc/latchkey/kek.hex");
    ours.ensure_fingerprint(&ours.fingerprint(), path).unwrap();
    let stored = Kek::from_bytes([9; 32]).fingerprint();
    let message = ours
        .ensure_fingerprint(&stored, path)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        format!(
            "this database's signing keys are sealed under key-encryption key {stored}; \
             --key-encryption-key-file /etc/latchkey/kek.hex holds key {}",
            ours.fingerprint()
        )
    );
}

#[test]
fn debug_shows_the_fingerprint_and_not_the_key() {
    let shown = format!("{:?}", kek());
    assert!(shown.contains(&kek().fingerprint()), "{shown}");
    assert!(!shown.contains(&hex::encode(counting_bytes())), "{shown}");
    assert!(!shown.contains("0102030405"), "{shown}");
    assert!(!shown.contains("[0, 1, 2"), "{shown}");
}

#[test]
fn generate_writes_a_private_hex_file_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.hex");
    let generated = Kek::generate_file(&path).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let content = fs::read_to_string(&path).unwrap();
    assert_eq!(content.len(), 65);
    assert!(content.ends_with('\n'));
    assert!(
        content[..64]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert!(!format!("{generated:?}").contains(&content[..64]));
    let loaded = Kek::load(&path).unwrap();
    assert_eq!(loaded.fingerprint(), generated.fingerprint());
    let sealed = generated.seal(KID, SECRET).unwrap();
    assert_eq!(loaded.open(KID, &sealed).unwrap(), SECRET);
    let again = Kek::generate_file(&dir.path().join("second.hex")).unwrap();
    assert_ne!(again.fingerprint(), generated.fingerprint());
}

#[test]
fn generate_never_overwrites_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.hex");
    write_file(&path, "keep me\n", 0o600);
    let err = Kek::generate_file(&path).unwrap_err();
    assert!(matches!(err, KekError::Exists { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("exists"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "keep me\n");
}

#[test]
fn generate_into_a_missing_directory_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent").join("kek.hex");
    let err = Kek::generate_file(&path).unwrap_err();
    assert!(matches!(err, KekError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn load_accepts_surrounding_whitespace_and_either_case() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.hex");
    let upper = hex::encode_upper(counting_bytes());
    write_file(&path, &format!("  \n{upper}\r\n\n"), 0o400);
    assert_eq!(Kek::load(&path).unwrap().fingerprint(), kek().fingerprint());
}

#[test]
fn load_refuses_a_file_others_may_read_or_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek.hex");
    let content = hex::encode(counting_bytes());
    for mode in [0o644, 0o640, 0o620, 0o602] {
        write_file(&path, &content, mode);
        let err = Kek::load(&path).unwrap_err();
        assert!(matches!(err, KekError::Permissions { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        assert!(message.contains(&format!("{mode:o}")), "{message}");
        assert!(!message.contains(&content), "{message}");
    }
}

#[test]
fn load_names_a_wrong_length_without_showing_the_content() {
    let (message, err) = load_error(&format!("{}\n", "ab".repeat(31) + "c"));
    assert!(
        matches!(err, KekError::WrongLength { len: 63, .. }),
        "{err:?}"
    );
    assert!(
        message.contains(
            "holds 63 characters; a key-encryption key file holds 64 hex characters (32 bytes), as `latchkey kek generate` writes"
        ),
        "{message}"
    );
    let (message, _) = load_error(&"ab".repeat(33));
    assert!(message.contains("holds 66 characters"), "{message}");
    let (message, _) = load_error("\n");
    assert!(message.contains("holds 0 characters"), "{message}");
}

#[test]
fn load_names_the_first_character_that_is_not_hex() {
    let content = format!("{}g{}", "a".repeat(10), "b".repeat(53));
    let (message, err) = load_error(&content);
    assert!(
        matches!(err, KekError::NotHex { position: 11, .. }),
        "{err:?}"
    );
    assert!(message.contains("character 11 is not a hexadecimal digit"));
    // 32 bytes written raw instead of as hex are not text, or not hex.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.bin");
    fs::write(&path, [0xffu8; 32]).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(Kek::load(&path), Err(KekError::NotText { .. })));
}

#[test]
fn load_refuses_a_large_file_without_reading_it_whole() {
    let (message, err) = load_error(&"a".repeat(5000));
    assert!(matches!(err, KekError::TooLarge { .. }), "{err:?}");
    assert!(message.contains("larger than 4096 bytes"), "{message}");
}

#[test]
fn load_of_a_missing_file_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.hex");
    let err = Kek::load(&path).unwrap_err();
    assert!(matches!(err, KekError::Missing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("does not exist"), "{message}");
    assert!(
        message.contains(&format!("latchkey kek generate --out {}", path.display())),
        "{message}"
    );
}
