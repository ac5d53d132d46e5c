//! The set of signing keys: which one signs, which ones are published, and
//! the JWKS and metadata documents prepared from them.
//!
//! Key metadata (state and dates) lives in the store, which the domain
//! reads and writes. Private keys live where [`KeyMaterial`] says: files in
//! the keys directory with the embedded engine (see [`crate::signing`]),
//! or sealed under the key-encryption key in the store with PostgreSQL
//! (see [`crate::kek`]), so every replica can load them. This module decides what a change of
//! the key set is (the new states, each with the state it must replace) and
//! loads the keys of a recorded set; it writes no records itself. Readers take a
//! [`KeySnapshot`] through an `ArcSwap`, so minting and serving the JWKS
//! never wait for a lock; a change of the key set builds a new snapshot,
//! including the JWKS bytes and ETag, once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use latchkey_verifier::jwk::{KeySet, SigningAlgorithm};
use time::OffsetDateTime;

use crate::kek::Kek;
pub use crate::model::{SigningKeyInfo, SigningKeyState};
use crate::signing::{self, SigningKey, SigningKeyError};

/// Where private signing keys are kept.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// PEM files in the keys directory (the embedded engine).
    Files(PathBuf),
    /// Sealed under this key-encryption key, in the store (PostgreSQL).
    Sealed(Arc<Kek>),
}

/// Sealed private keys by kid, as the store holds them.
pub type SealedKeys = HashMap<String, Vec<u8>>;

impl KeyMaterial {
    /// Keeps a new key's private half: writes its file, or returns it
    /// sealed for the store to record with the key.
    fn keep(&self, kid: &str, pkcs8: &[u8]) -> Result<Option<Vec<u8>>, KeyRingError> {
        match self {
            KeyMaterial::Files(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| SigningKeyError::Write {
                    path: dir.to_owned(),
                    source,
                })?;
                signing::write_key_file(&signing::key_file_path(dir, kid), pkcs8)?;
                Ok(None)
            }
            KeyMaterial::Sealed(kek) => {
                let pem = signing::pkcs8_to_pem(&signing::portable_pkcs8(pkcs8));
                Ok(Some(
                    kek.seal(kid, pem.as_bytes())
                        .map_err(|e| KeyRingError::Sealed(e.to_string()))?,
                ))
            }
        }
    }

    fn load(
        &self,
        info: &SigningKeyInfo,
        alg: SigningAlgorithm,
        sealed: &SealedKeys,
    ) -> Result<SigningKey, KeyRingError> {
        match self {
            KeyMaterial::Files(dir) => {
                let path = signing::key_file_path(dir, &info.kid);
                if !path.exists() {
                    return Err(KeyRingError::MissingFile {
                        kid: info.kid.clone(),
                        dir: dir.to_owned(),
                    });
                }
                Ok(signing::read_key_file(&path, alg)?)
            }
            KeyMaterial::Sealed(kek) => {
                let blob = sealed
                    .get(&info.kid)
                    .ok_or_else(|| KeyRingError::MissingSealed(info.kid.clone()))?;
                let pem = kek
                    .open(&info.kid, blob)
                    .map_err(|e| KeyRingError::Sealed(e.to_string()))?;
                let invalid = || {
                    KeyRingError::Sealed(format!(
                        "sealed signing key {} is not a valid {} private key",
                        info.kid,
                        alg.as_str()
                    ))
                };
                let text = std::str::from_utf8(&pem).map_err(|_| invalid())?;
                let der = signing::pkcs8_from_pem(text).map_err(|_| invalid())?;
                SigningKey::from_pkcs8(alg, &der).ok_or_else(invalid)
            }
        }
    }

    /// A retired key's private half is no longer needed: removes its file
    /// (the store drops a sealed key when the key is recorded retired).
    fn forget(&self, kid: &str) {
        if let KeyMaterial::Files(dir) = self {
            let path = signing::key_file_path(dir, kid);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(kid, error = %e, "could not remove a retired key's file");
            }
        }
    }
}

/// A document served from prepared bytes with an ETag.
#[derive(Debug, Clone)]
pub struct PreparedDocument {
    pub body: bytes::Bytes,
    pub etag: String,
}

impl PreparedDocument {
    pub fn json(value: &serde_json::Value) -> PreparedDocument {
        PreparedDocument::bytes(serde_json::to_vec(value).unwrap_or_default().into())
    }

    /// A document whose ETag is a digest of its bytes.
    pub fn bytes(body: bytes::Bytes) -> PreparedDocument {
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        PreparedDocument {
            etag: format!("\"{}\"", hex::encode(&digest.as_ref()[..16])),
            body,
        }
    }
}

/// An immutable view of the key set.
#[derive(Debug)]
pub struct KeySnapshot {
    pub active: Arc<SigningKey>,
    /// Every key in the JWKS (next, active, previous).
    pub published: Vec<Arc<SigningKey>>,
    /// The published keys, as the verifier crate checks them.
    pub verification: KeySet,
    pub infos: Vec<SigningKeyInfo>,
    pub jwks: PreparedDocument,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error(transparent)]
    Key(#[from] SigningKeyError),
    #[error("database error: {0}")]
    Db(String),
    #[error(
        "no active signing key is recorded; the data directory is not initialised (run `latchkey init`)"
    )]
    NoActiveKey,
    #[error(
        "signing key {kid} is recorded but its file is missing from {dir}; restore it or retire the key"
    )]
    MissingFile { kid: String, dir: PathBuf },
    #[error("signing key {0} is recorded but the database holds no sealed private key for it")]
    MissingSealed(String),
    #[error("{0}")]
    Sealed(String),
    #[error("no signing key with kid {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// A signing key's new record and the state it must still be in (`None`:
/// not recorded yet), as the store writes it.
pub type StateChange = (SigningKeyInfo, Option<SigningKeyState>);

/// The signing keys of this issuer.
#[derive(Debug)]
pub struct KeyRing {
    material: KeyMaterial,
    current: ArcSwap<KeySnapshot>,
}

/// A state change made by [`plan_maintenance`], for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    Activated { kid: String, previous: Vec<String> },
    Retired { kid: String },
}

/// A new key, its private half kept (file written, or sealed here), and
/// the changes that add it.
#[derive(Debug)]
pub struct Staged {
    pub info: SigningKeyInfo,
    pub changes: Vec<StateChange>,
    /// The private key sealed for the store (with [`KeyMaterial::Sealed`]).
    pub sealed: Option<Vec<u8>>,
}

impl KeyRing {
    /// Generates the first signing key and keeps its private half; the
    /// caller records it (with the sealed key, if any).
    pub fn generate_first(
        material: &KeyMaterial,
        alg: SigningAlgorithm,
        now: OffsetDateTime,
    ) -> Result<(SigningKeyInfo, Option<Vec<u8>>), KeyRingError> {
        let (key, pkcs8) = SigningKey::generate(alg)?;
        let sealed = material.keep(key.kid(), &pkcs8)?;
        Ok((
            SigningKeyInfo {
                kid: key.kid().to_owned(),
                alg: alg.as_str().to_owned(),
                state: SigningKeyState::Active,
                created_at: now,
                activates_at: Some(now),
                retired_at: None,
            },
            sealed,
        ))
    }

    /// Loads the keys of the recorded set.
    pub fn open(
        material: KeyMaterial,
        infos: Vec<SigningKeyInfo>,
        sealed: &SealedKeys,
    ) -> Result<KeyRing, KeyRingError> {
        let snapshot = load_snapshot(&material, infos, sealed)?;
        Ok(KeyRing {
            material,
            current: ArcSwap::from_pointee(snapshot),
        })
    }

    /// The current key set.
    pub fn snapshot(&self) -> Arc<KeySnapshot> {
        self.current.load_full()
    }

    /// Installs the key set after a recorded change.
    pub fn install(
        &self,
        infos: Vec<SigningKeyInfo>,
        sealed: &SealedKeys,
    ) -> Result<(), KeyRingError> {
        let snapshot = load_snapshot(&self.material, infos, sealed)?;
        self.current.store(Arc::new(snapshot));
        Ok(())
    }

    /// Where private keys are kept.
    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }

    /// Stages a generated key: its file is written now; the changes publish
    /// it, signing from `now + lead` (or at once when `immediate`).
    pub fn stage_generated(
        &self,
        infos: &[SigningKeyInfo],
        alg: SigningAlgorithm,
        now: OffsetDateTime,
        lead: time::Duration,
        immediate: bool,
    ) -> Result<Staged, KeyRingError> {
        let (key, pkcs8) = SigningKey::generate(alg)?;
        self.stage(infos, key, &pkcs8, now, lead, immediate)
    }

    /// Stages an imported PKCS#8 key (e.g. RSA for RS256) the same way.
    pub fn stage_imported(
        &self,
        infos: &[SigningKeyInfo],
        alg: SigningAlgorithm,
        pkcs8: &[u8],
        now: OffsetDateTime,
        lead: time::Duration,
        immediate: bool,
    ) -> Result<Staged, KeyRingError> {
        let key = SigningKey::from_pkcs8(alg, pkcs8).ok_or_else(|| {
            SigningKeyError::Import(format!(
                "the key is not a valid {} PKCS#8 private key",
                alg.as_str()
            ))
        })?;
        self.stage(infos, key, pkcs8, now, lead, immediate)
    }

    fn stage(
        &self,
        infos: &[SigningKeyInfo],
        key: SigningKey,
        pkcs8: &[u8],
        now: OffsetDateTime,
        lead: time::Duration,
        immediate: bool,
    ) -> Result<Staged, KeyRingError> {
        if infos.iter().any(|i| i.kid == key.kid()) {
            return Err(SigningKeyError::Import(format!(
                "signing key {} is already known",
                key.kid()
            ))
            .into());
        }
        let sealed = self.material.keep(key.kid(), pkcs8)?;
        let info = SigningKeyInfo {
            kid: key.kid().to_owned(),
            alg: key.alg().as_str().to_owned(),
            state: if immediate {
                SigningKeyState::Active
            } else {
                SigningKeyState::Next
            },
            created_at: now,
            activates_at: Some(if immediate { now } else { now + lead }),
            retired_at: None,
        };
        let mut changes = Vec::new();
        if immediate {
            for old in infos.iter().filter(|i| i.state == SigningKeyState::Active) {
                let mut old = old.clone();
                old.state = SigningKeyState::Previous;
                changes.push((old, Some(SigningKeyState::Active)));
            }
        }
        changes.push((info.clone(), None));
        Ok(Staged {
            info,
            changes,
            sealed,
        })
    }

    /// A retired (or never recorded) key's private half is no longer
    /// needed: forget it.
    pub fn remove_key_file(&self, kid: &str) {
        self.material.forget(kid);
    }
}

/// Activates `next` keys whose time has come and retires `previous` keys
/// for which `in_use(kid)` is false (every token they signed has expired or
/// been revoked): the changes and what they mean.
pub fn plan_maintenance(
    infos: &[SigningKeyInfo],
    now: OffsetDateTime,
    in_use: impl Fn(&str) -> bool,
) -> (Vec<StateChange>, Vec<KeyEvent>) {
    let mut infos = infos.to_vec();
    infos.sort_by_key(|i| i.created_at);
    let mut changes = Vec::new();
    let mut events = Vec::new();
    let due = infos
        .iter()
        .filter(|i| i.state == SigningKeyState::Next && i.activates_at.is_some_and(|t| t <= now))
        .map(|i| i.kid.clone())
        .next_back();
    if let Some(kid) = due {
        let mut previous = Vec::new();
        for info in infos.iter_mut() {
            if info.state == SigningKeyState::Active {
                info.state = SigningKeyState::Previous;
                previous.push(info.kid.clone());
                changes.push((info.clone(), Some(SigningKeyState::Active)));
            } else if info.kid == kid {
                info.state = SigningKeyState::Active;
                info.activates_at = Some(now);
                changes.push((info.clone(), Some(SigningKeyState::Next)));
            }
        }
        events.push(KeyEvent::Activated { kid, previous });
    }
    for info in infos
        .iter_mut()
        .filter(|i| i.state == SigningKeyState::Previous)
    {
        if !in_use(&info.kid) {
            info.state = SigningKeyState::Retired;
            info.retired_at = Some(now);
            // A key made previous by this same pass is expected active.
            let expected = changes
                .iter()
                .find(|(c, _)| c.kid == info.kid)
                .map(|(_, e)| *e)
                .unwrap_or(Some(SigningKeyState::Previous));
            changes.retain(|(c, _)| c.kid != info.kid);
            changes.push((info.clone(), expected));
            events.push(KeyEvent::Retired {
                kid: info.kid.clone(),
            });
        }
    }
    (changes, events)
}

/// Retires a key by hand: it leaves the JWKS and its tokens stop verifying.
pub fn plan_retire(
    infos: &[SigningKeyInfo],
    kid: &str,
    now: OffsetDateTime,
) -> Result<StateChange, KeyRingError> {
    let mut info = infos
        .iter()
        .find(|i| i.kid == kid)
        .cloned()
        .ok_or_else(|| KeyRingError::NotFound(kid.to_owned()))?;
    match info.state {
        SigningKeyState::Active => {
            return Err(KeyRingError::Conflict(
                "the active key cannot be retired: rotate with --now first, then retire it".into(),
            ));
        }
        SigningKeyState::Retired => {
            return Err(KeyRingError::Conflict("the key is already retired".into()));
        }
        SigningKeyState::Next | SigningKeyState::Previous => {}
    }
    let expected = Some(info.state);
    info.state = SigningKeyState::Retired;
    info.retired_at = Some(now);
    Ok((info, expected))
}

fn load_snapshot(
    material: &KeyMaterial,
    mut infos: Vec<SigningKeyInfo>,
    sealed: &SealedKeys,
) -> Result<KeySnapshot, KeyRingError> {
    infos.sort_by_key(|info| info.created_at);
    let mut active = None;
    let mut published = Vec::new();
    for info in infos.iter().filter(|i| i.state != SigningKeyState::Retired) {
        let alg = SigningAlgorithm::from_jose(&info.alg)
            .ok_or_else(|| KeyRingError::Db(format!("unknown algorithm {}", info.alg)))?;
        let key = Arc::new(material.load(info, alg, sealed)?);
        if info.state == SigningKeyState::Active {
            active = Some(Arc::clone(&key));
        }
        published.push(key);
    }
    let active = active.ok_or(KeyRingError::NoActiveKey)?;
    let verification = KeySet::from_keys(published.iter().filter_map(|k| k.verification_key()));
    let jwks = PreparedDocument::json(&serde_json::json!({
        "keys": published.iter().map(|k| k.public_jwk().clone()).collect::<Vec<_>>(),
    }));
    Ok(KeySnapshot {
        active,
        published,
        verification,
        infos,
        jwks,
    })
}
