//! The set of signing keys: which one signs, which ones are published, and
//! the JWKS and metadata documents prepared from them.
//!
//! Key metadata (state and dates, never key material) lives in sled; private
//! keys live in the keys directory (see [`crate::signing`]). Readers take a
//! [`KeySnapshot`] through an `ArcSwap`, so minting and serving the JWKS
//! never wait for a lock; a change of the key set builds a new snapshot,
//! including the JWKS bytes and ETag, once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use latchkey_verifier::jwk::{KeySet, SigningAlgorithm};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::signing::{self, SigningKey, SigningKeyError};

/// Where a signing key is in its life (contract §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SigningKeyState {
    /// Published in the JWKS, not yet signing.
    Next,
    /// Signs new tokens and status lists.
    Active,
    /// No longer signs; published until its last token expires or is revoked.
    Previous,
    /// Removed from the JWKS; its tokens no longer verify.
    Retired,
}

/// A signing key's public record, as `GET /v1/signing-keys` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SigningKeyInfo {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    pub alg: String,
    pub state: SigningKeyState,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When a `next` key becomes active.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activates_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<OffsetDateTime>,
}

/// A document served from prepared bytes with an ETag.
#[derive(Debug, Clone)]
pub struct PreparedDocument {
    pub body: axum::body::Bytes,
    pub etag: String,
}

impl PreparedDocument {
    pub fn json(value: &serde_json::Value) -> PreparedDocument {
        PreparedDocument::bytes(serde_json::to_vec(value).unwrap_or_default().into())
    }

    /// A document whose ETag is a digest of its bytes.
    pub fn bytes(body: axum::body::Bytes) -> PreparedDocument {
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
    #[error("no signing key with kid {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<sled::Error> for KeyRingError {
    fn from(e: sled::Error) -> Self {
        KeyRingError::Db(e.to_string())
    }
}

/// The signing keys of this issuer.
#[derive(Debug)]
pub struct KeyRing {
    tree: sled::Tree,
    keys_dir: PathBuf,
    current: ArcSwap<KeySnapshot>,
    /// Serialises changes of key states.
    changes: std::sync::Mutex<()>,
}

/// A state change made by [`KeyRing::maintain`], for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    Activated { kid: String, previous: Vec<String> },
    Retired { kid: String },
}

impl KeyRing {
    /// Whether any signing key has been recorded.
    pub fn is_initialised(tree: &sled::Tree) -> bool {
        !tree.is_empty()
    }

    /// Generates the first signing key, writes its file and records it as active.
    pub fn initialise(
        tree: &sled::Tree,
        keys_dir: &Path,
        alg: SigningAlgorithm,
        now: OffsetDateTime,
    ) -> Result<SigningKeyInfo, KeyRingError> {
        std::fs::create_dir_all(keys_dir).map_err(|source| SigningKeyError::Write {
            path: keys_dir.to_owned(),
            source,
        })?;
        let (key, pkcs8) = SigningKey::generate(alg)?;
        signing::write_key_file(&signing::key_file_path(keys_dir, key.kid()), &pkcs8)?;
        let info = SigningKeyInfo {
            kid: key.kid().to_owned(),
            alg: alg.as_str().to_owned(),
            state: SigningKeyState::Active,
            created_at: now,
            activates_at: Some(now),
            retired_at: None,
        };
        Self::record(tree, &info)?;
        Ok(info)
    }

    fn record(tree: &sled::Tree, info: &SigningKeyInfo) -> Result<(), KeyRingError> {
        let bytes = serde_json::to_vec(info).map_err(|e| KeyRingError::Db(e.to_string()))?;
        tree.insert(info.kid.as_bytes(), bytes)?;
        Ok(())
    }

    /// Loads the recorded keys from their files.
    pub fn open(tree: sled::Tree, keys_dir: &Path) -> Result<KeyRing, KeyRingError> {
        let snapshot = Self::load_snapshot(&tree, keys_dir)?;
        Ok(KeyRing {
            tree,
            keys_dir: keys_dir.to_owned(),
            current: ArcSwap::from_pointee(snapshot),
            changes: std::sync::Mutex::new(()),
        })
    }

    fn load_snapshot(tree: &sled::Tree, keys_dir: &Path) -> Result<KeySnapshot, KeyRingError> {
        let mut infos = read_infos(tree)?;
        infos.sort_by_key(|info| info.created_at);
        let mut active = None;
        let mut published = Vec::new();
        for info in infos.iter().filter(|i| i.state != SigningKeyState::Retired) {
            let alg = SigningAlgorithm::from_jose(&info.alg)
                .ok_or_else(|| KeyRingError::Db(format!("unknown algorithm {}", info.alg)))?;
            let path = signing::key_file_path(keys_dir, &info.kid);
            if !path.exists() {
                return Err(KeyRingError::MissingFile {
                    kid: info.kid.clone(),
                    dir: keys_dir.to_owned(),
                });
            }
            let key = Arc::new(signing::read_key_file(&path, alg)?);
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

    /// The current key set.
    pub fn snapshot(&self) -> Arc<KeySnapshot> {
        self.current.load_full()
    }

    /// Re-reads the key set after a change to the recorded states.
    pub fn reload(&self) -> Result<(), KeyRingError> {
        let snapshot = Self::load_snapshot(&self.tree, &self.keys_dir)?;
        self.current.store(Arc::new(snapshot));
        Ok(())
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stages a new key: written to its file and published in the JWKS at
    /// once, signing from `now + lead` (or at once when `immediate`).
    pub fn rotate(
        &self,
        alg: SigningAlgorithm,
        now: OffsetDateTime,
        lead: time::Duration,
        immediate: bool,
    ) -> Result<SigningKeyInfo, KeyRingError> {
        let (key, pkcs8) = SigningKey::generate(alg)?;
        self.add(key, &pkcs8, now, lead, immediate)
    }

    /// Adds an imported PKCS#8 key (e.g. RSA for RS256) the same way as [`KeyRing::rotate`].
    pub fn import(
        &self,
        alg: SigningAlgorithm,
        pkcs8: &[u8],
        now: OffsetDateTime,
        lead: time::Duration,
        immediate: bool,
    ) -> Result<SigningKeyInfo, KeyRingError> {
        let key = SigningKey::from_pkcs8(alg, pkcs8).ok_or_else(|| {
            SigningKeyError::Import(format!(
                "the key is not a valid {} PKCS#8 private key",
                alg.as_str()
            ))
        })?;
        self.add(key, pkcs8, now, lead, immediate)
    }

    fn add(
        &self,
        key: SigningKey,
        pkcs8: &[u8],
        now: OffsetDateTime,
        lead: time::Duration,
        immediate: bool,
    ) -> Result<SigningKeyInfo, KeyRingError> {
        let _guard = self.lock_changes();
        let infos = read_infos(&self.tree)?;
        if infos.iter().any(|i| i.kid == key.kid()) {
            return Err(SigningKeyError::Import(format!(
                "signing key {} is already known",
                key.kid()
            ))
            .into());
        }
        signing::write_key_file(&signing::key_file_path(&self.keys_dir, key.kid()), pkcs8)?;
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
        if immediate {
            for mut old in infos
                .into_iter()
                .filter(|i| i.state == SigningKeyState::Active)
            {
                old.state = SigningKeyState::Previous;
                Self::record(&self.tree, &old)?;
            }
        }
        Self::record(&self.tree, &info)?;
        self.tree.flush()?;
        self.reload()?;
        Ok(info)
    }

    /// Activates `next` keys whose time has come and retires `previous`
    /// keys for which `in_use(kid)` is false (every token they signed has
    /// expired or been revoked).
    pub fn maintain(
        &self,
        now: OffsetDateTime,
        in_use: impl Fn(&str) -> bool,
    ) -> Result<Vec<KeyEvent>, KeyRingError> {
        let _guard = self.lock_changes();
        let mut infos = read_infos(&self.tree)?;
        infos.sort_by_key(|i| i.created_at);
        let mut events = Vec::new();
        let due = infos
            .iter()
            .filter(|i| {
                i.state == SigningKeyState::Next && i.activates_at.is_some_and(|t| t <= now)
            })
            .map(|i| i.kid.clone())
            .next_back();
        if let Some(kid) = due {
            let mut previous = Vec::new();
            for info in infos.iter_mut() {
                if info.state == SigningKeyState::Active {
                    info.state = SigningKeyState::Previous;
                    previous.push(info.kid.clone());
                    Self::record(&self.tree, info)?;
                } else if info.kid == kid {
                    info.state = SigningKeyState::Active;
                    info.activates_at = Some(now);
                    Self::record(&self.tree, info)?;
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
                Self::record(&self.tree, info)?;
                Self::remove_key_file(&self.keys_dir, &info.kid);
                events.push(KeyEvent::Retired {
                    kid: info.kid.clone(),
                });
            }
        }
        if !events.is_empty() {
            self.tree.flush()?;
            self.reload()?;
        }
        Ok(events)
    }

    /// Retires a key by hand: it leaves the JWKS and its tokens stop verifying.
    pub fn retire(&self, kid: &str, now: OffsetDateTime) -> Result<SigningKeyInfo, KeyRingError> {
        let _guard = self.lock_changes();
        let mut info = read_infos(&self.tree)?
            .into_iter()
            .find(|i| i.kid == kid)
            .ok_or_else(|| KeyRingError::NotFound(kid.to_owned()))?;
        match info.state {
            SigningKeyState::Active => {
                return Err(KeyRingError::Conflict(
                    "the active key cannot be retired: rotate with --now first, then retire it"
                        .into(),
                ));
            }
            SigningKeyState::Retired => {
                return Err(KeyRingError::Conflict("the key is already retired".into()));
            }
            SigningKeyState::Next | SigningKeyState::Previous => {}
        }
        info.state = SigningKeyState::Retired;
        info.retired_at = Some(now);
        Self::record(&self.tree, &info)?;
        self.tree.flush()?;
        Self::remove_key_file(&self.keys_dir, kid);
        self.reload()?;
        Ok(info)
    }

    /// A retired key's private half is no longer needed: remove it.
    fn remove_key_file(keys_dir: &Path, kid: &str) {
        let path = signing::key_file_path(keys_dir, kid);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(kid, error = %e, "could not remove a retired key's file");
        }
    }

    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }
}

/// Every recorded signing key (state and dates).
fn read_infos(tree: &sled::Tree) -> Result<Vec<SigningKeyInfo>, KeyRingError> {
    let mut infos = Vec::new();
    for item in tree.iter() {
        let (_, value) = item?;
        infos.push(
            serde_json::from_slice::<SigningKeyInfo>(&value)
                .map_err(|e| KeyRingError::Db(format!("signing key record is corrupt: {e}")))?,
        );
    }
    Ok(infos)
}
