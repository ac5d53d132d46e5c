//! The key-encryption key (KEK, contract §9): the secret that seals signing
//! keys before they are written to a shared database, so that a dump of the
//! database alone signs nothing.
//!
//! This module owns the KEK file, the sealed-key format and the KEK's
//! fingerprint; it knows nothing about storage. The KEK itself never leaves
//! this type: not into the database, a log, an error message or `Debug`.
//!
//! **The file** (`latchkey kek generate --out FILE`) is text: 64 lowercase
//! hexadecimal characters (the 32 random bytes) and a newline, 65 bytes in
//! all, so it can be pasted into a secret manager or an environment file.
//! It is created mode 0600 and never overwritten. [`Kek::load`] accepts 64
//! hexadecimal characters of either case with surrounding whitespace, and on
//! unix refuses a file that group or others may read or write.
//!
//! **A sealed key** is `1` (format version) ‖ 12-byte random nonce ‖
//! AES-256-GCM ciphertext ‖ 16-byte tag. The additional authenticated data is
//! `"latchkey signing key v1\0"` followed by the key's `kid`, so a sealed key
//! copied onto another `kid`'s row fails to open. Random 96-bit nonces are
//! safe for far more seals than a KEK ever makes (one per signing key and
//! per reseal).
//!
//! **The fingerprint** is HMAC-SHA256(KEK, `"latchkey key-encryption-key
//! fingerprint v1"`), its first 16 bytes in hex. It is stored beside the
//! sealed keys so that a replica started with another KEK can say which key
//! the database expects, and it reveals nothing about the KEK.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Length of the KEK in bytes.
pub const KEK_LEN: usize = 32;

/// The format version byte that starts every sealed key.
pub const SEALED_VERSION: u8 = 1;

/// Bytes a sealed key adds to its plaintext: version, nonce and tag.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

const TAG_LEN: usize = 16;
const HEX_LEN: usize = KEK_LEN * 2;
const AAD_PREFIX: &[u8] = b"latchkey signing key v1\0";
const FINGERPRINT_LABEL: &[u8] = b"latchkey key-encryption-key fingerprint v1";
const FINGERPRINT_BYTES: usize = 16;
/// A KEK file is 65 bytes; anything much larger is the wrong file, and is
/// not read into memory whole.
const MAX_FILE_BYTES: u64 = 4096;

/// Why a KEK could not be made, loaded or used. No variant carries the
/// KEK, the file's content or a sealed key's bytes.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error(
        "refusing to write key-encryption key file {path}: the file exists, and a key-encryption key is never overwritten (choose another path)"
    )]
    Exists { path: PathBuf },
    #[error("cannot write key-encryption key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key-encryption key file {path} does not exist; create one with `latchkey kek generate --out {path}`"
    )]
    Missing { path: PathBuf },
    #[error("cannot read key-encryption key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key-encryption key file {path} may be read or written by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "key-encryption key file {path} is larger than {MAX_FILE_BYTES} bytes; a key-encryption key file holds 64 hex characters (32 bytes), as `latchkey kek generate` writes"
    )]
    TooLarge { path: PathBuf },
    #[error(
        "key-encryption key file {path} is not text; a key-encryption key file holds 64 hex characters (32 bytes), as `latchkey kek generate` writes"
    )]
    NotText { path: PathBuf },
    #[error(
        "key-encryption key file {path} holds {len} characters; a key-encryption key file holds 64 hex characters (32 bytes), as `latchkey kek generate` writes"
    )]
    WrongLength { path: PathBuf, len: usize },
    #[error(
        "key-encryption key file {path}: character {position} is not a hexadecimal digit (0-9, a-f); a key-encryption key file holds 64 hex characters (32 bytes), as `latchkey kek generate` writes"
    )]
    NotHex { path: PathBuf, position: usize },
    #[error(
        "this database's signing keys are sealed under key-encryption key {stored}; --key-encryption-key-file {path} holds key {ours}"
    )]
    WrongKek {
        stored: String,
        ours: String,
        path: PathBuf,
    },
    #[error("the system random number generator failed")]
    Random,
    #[error("sealing signing key {kid:?} failed")]
    Seal { kid: String },
    #[error(
        "sealed signing key {kid:?} is {len} bytes, shorter than the {SEALED_OVERHEAD} bytes every sealed key has: it was cut off"
    )]
    Truncated { kid: String, len: usize },
    #[error(
        "sealed signing key {kid:?} has format version {version}; this latchkey reads version {SEALED_VERSION} (was it sealed by a newer latchkey?)"
    )]
    UnknownVersion { kid: String, version: u8 },
    #[error(
        "sealed signing key {kid:?} could not be opened with key-encryption key {fingerprint}: it was sealed under another key-encryption key, or it was altered"
    )]
    Open { kid: String, fingerprint: String },
}

/// A key-encryption key: seals and opens signing keys. `Debug` shows only
/// the fingerprint.
#[derive(Clone)]
pub struct Kek {
    aead: LessSafeKey,
    fingerprint: String,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// A KEK from its 32 bytes (tests, and keys from elsewhere than a file).
    pub fn from_bytes(bytes: [u8; KEK_LEN]) -> Kek {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            FINGERPRINT_LABEL,
        );
        let fingerprint = hex::encode(&tag.as_ref()[..FINGERPRINT_BYTES]);
        let aead = match UnboundKey::new(&AES_256_GCM, &bytes) {
            Ok(key) => LessSafeKey::new(key),
            // ring refuses only a key of the wrong length, and the type
            // guarantees 32 bytes.
            Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
        };
        Kek { aead, fingerprint }
    }

    /// Generates a new KEK and writes it to `path` (64 hex characters and a
    /// newline, mode 0600, fsynced). Refuses to replace an existing file.
    pub fn generate_file(path: &Path) -> Result<Kek, KekError> {
        let mut bytes = [0u8; KEK_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KekError::Random)?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KekError::Exists {
                    path: path.to_owned(),
                }
            } else {
                KekError::Write {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let mut text = hex::encode(bytes);
        text.push('\n');
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            drop(file);
            // A partial file would hold no usable key and block a retry.
            let _ = fs::remove_file(path);
            return Err(KekError::Write {
                path: path.to_owned(),
                source,
            });
        }
        sync_parent(path);
        Ok(Kek::from_bytes(bytes))
    }

    /// Reads a KEK file written by [`Kek::generate_file`] (or by hand: 64
    /// hex characters, whitespace around them ignored).
    pub fn load(path: &Path) -> Result<Kek, KekError> {
        let read_err = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                KekError::Missing {
                    path: path.to_owned(),
                }
            } else {
                KekError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let file = fs::File::open(path).map_err(read_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KekError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let mut content = Vec::with_capacity(HEX_LEN + 1);
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut content)
            .map_err(read_err)?;
        if content.len() as u64 > MAX_FILE_BYTES {
            return Err(KekError::TooLarge {
                path: path.to_owned(),
            });
        }
        let bytes = parse_hex(path, &content)?;
        Ok(Kek::from_bytes(bytes))
    }

    /// The KEK's public fingerprint (32 hex characters).
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Checks that this KEK is the one a database's keys are sealed under,
    /// given the fingerprint stored there; `kek_file` is named in the error.
    pub fn ensure_fingerprint(&self, stored: &str, kek_file: &Path) -> Result<(), KekError> {
        if stored == self.fingerprint {
            return Ok(());
        }
        Err(KekError::WrongKek {
            stored: stored.to_owned(),
            ours: self.fingerprint.clone(),
            path: kek_file.to_owned(),
        })
    }

    /// Seals the private key of signing key `kid`.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KekError::Random)?;
        let mut sealed = Vec::with_capacity(SEALED_OVERHEAD + plaintext.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(kid)),
                &mut sealed[1 + NONCE_LEN..],
            )
            .map_err(|_| KekError::Seal {
                kid: kid.to_owned(),
            })?;
        sealed.extend_from_slice(tag.as_ref());
        Ok(sealed)
    }

    /// Opens what [`Kek::seal`] sealed for the same `kid`.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        let truncated = || KekError::Truncated {
            kid: kid.to_owned(),
            len: sealed.len(),
        };
        let (&version, rest) = sealed.split_first().ok_or_else(truncated)?;
        if version != SEALED_VERSION {
            return Err(KekError::UnknownVersion {
                kid: kid.to_owned(),
                version,
            });
        }
        if sealed.len() < SEALED_OVERHEAD {
            return Err(truncated());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let failed = || KekError::Open {
            kid: kid.to_owned(),
            fingerprint: self.fingerprint.clone(),
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failed())?;
        let mut in_out = ciphertext.to_vec();
        let len = self
            .aead
            .open_in_place(nonce, Aad::from(aad(kid)), &mut in_out)
            .map_err(|_| failed())?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }
}

fn aad(kid: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + kid.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(kid.as_bytes());
    aad
}

/// The 32 bytes of a KEK file's content; errors say what is wrong, never
/// what the file holds.
fn parse_hex(path: &Path, content: &[u8]) -> Result<[u8; KEK_LEN], KekError> {
    let text = std::str::from_utf8(content).map_err(|_| KekError::NotText {
        path: path.to_owned(),
    })?;
    let text = text.trim();
    let len = text.chars().count();
    if len != HEX_LEN {
        return Err(KekError::WrongLength {
            path: path.to_owned(),
            len,
        });
    }
    if let Some(position) = text.bytes().position(|b| !b.is_ascii_hexdigit()) {
        return Err(KekError::NotHex {
            path: path.to_owned(),
            position: position + 1,
        });
    }
    let mut bytes = [0u8; KEK_LEN];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| KekError::NotHex {
        path: path.to_owned(),
        position: 1,
    })?;
    Ok(bytes)
}

/// Makes the new file's directory entry durable; best effort, because some
/// platforms and file systems cannot open or sync a directory.
fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests;
