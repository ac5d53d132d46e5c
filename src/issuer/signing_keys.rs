//! Signing keys (contract §5): the first key, rotation with a lead time,
//! import, emergency retirement, and the periodic lifecycle pass
//! (activation, retirement once no live token needs a key, rotation on a
//! period).
//!
//! Every change of the key set and its audit entries are one store
//! transaction: a crash leaves both or neither. A new key's file is written
//! before that transaction (a crash then leaves only an unrecorded file,
//! removed if the transaction fails); a retired key's file is removed after.

use std::collections::HashSet;

use latchkey_verifier::jwk::SigningAlgorithm;
use serde_json::json;

use crate::audit::{Actor, NewEntry};
use crate::issuer::{Issuer, IssuerError, IssuerResult};
use crate::keyring::{self, KeyEvent, KeyMaterial, KeyRing, StateChange};
use crate::model::{SigningKeyInfo, SigningKeyState, rfc3339};
use crate::store::{SigningKeyChange, Store};

/// The store's form of a change; `sealed` is the private key of the new
/// key `kid`, if one is added and the store keeps key material.
fn to_store(changes: Vec<StateChange>, sealed: Option<(&str, Vec<u8>)>) -> Vec<SigningKeyChange> {
    changes
        .into_iter()
        .map(|(info, expected)| SigningKeyChange {
            sealed: sealed
                .as_ref()
                .filter(|(kid, _)| *kid == info.kid)
                .map(|(_, s)| s.clone()),
            info,
            expected,
        })
        .collect()
}

/// `changes` plus, for every other recorded key, a change to the state it
/// is in: the whole change then holds only if no key moved meanwhile, so
/// two replicas rotating at once end with one new key, not two.
fn guarded(mut changes: Vec<StateChange>, infos: &[SigningKeyInfo]) -> Vec<StateChange> {
    for info in infos {
        if !changes.iter().any(|(c, _)| c.kid == info.kid) {
            changes.push((info.clone(), Some(info.state)));
        }
    }
    changes
}

fn entry(actor: &Actor, action: &'static str, kid: &str, details: serde_json::Value) -> NewEntry {
    NewEntry {
        actor: actor.clone(),
        action,
        target: Some(kid.to_owned()),
        details,
    }
}

/// Generates and records the first signing key of a new store (with its
/// audit entry, in one transaction). Does nothing if a key is recorded.
pub async fn initialise(
    store: &dyn Store,
    material: &KeyMaterial,
    alg: SigningAlgorithm,
    now: time::OffsetDateTime,
) -> IssuerResult<()> {
    if !store.signing_keys().await?.is_empty() {
        return Ok(());
    }
    let (info, sealed) = KeyRing::generate_first(material, alg, now)?;
    let created = entry(
        &Actor::bootstrap(),
        "signing_key.create",
        &info.kid,
        json!({"alg": info.alg, "state": "active"}),
    );
    store
        .change_signing_keys(
            vec![SigningKeyChange {
                info,
                expected: None,
                sealed,
            }],
            vec![created],
            now,
        )
        .await?;
    Ok(())
}

impl Issuer {
    /// Every signing key, oldest first.
    pub fn signing_keys(&self) -> Vec<SigningKeyInfo> {
        self.keyring.snapshot().infos.clone()
    }

    /// Records a change of the key set with its audit entries, then
    /// installs the recorded set.
    async fn commit_key_change(
        &self,
        changes: Vec<StateChange>,
        sealed: Option<(&str, Vec<u8>)>,
        entries: Vec<NewEntry>,
    ) -> IssuerResult<()> {
        let result = self
            .store
            .change_signing_keys(to_store(changes, sealed), entries, self.now())
            .await;
        if let Err(crate::store::StoreError::Conflict(_)) = &result {
            // Another replica changed the key set first: show its result.
            // (If that fails too, the conflict is still the answer.)
            if let Err(e) = self.reload_signing_keys().await {
                tracing::warn!(error = %e, "could not load the signing keys after a conflict");
            }
        }
        result?;
        self.reload_signing_keys().await
    }

    /// Loads the recorded key set again (after a change here, or one
    /// another replica made).
    pub async fn reload_signing_keys(&self) -> IssuerResult<()> {
        let sealed = self
            .store
            .sealed_signing_keys()
            .await?
            .into_iter()
            .collect();
        self.keyring
            .install(self.store.signing_keys().await?, &sealed)?;
        Ok(())
    }

    /// Stages a new signing key of the configured algorithm: published at
    /// once, signing after the lead time (or at once when `immediate`).
    pub async fn rotate(&self, actor: &Actor, immediate: bool) -> IssuerResult<SigningKeyInfo> {
        let now = self.now();
        let lead = time::Duration::seconds(self.settings.rotation_lead_time_secs as i64);
        let infos = self.store.signing_keys().await?;
        let staged = self.keyring.stage_generated(
            &infos,
            self.settings.signing_algorithm,
            now,
            lead,
            immediate,
        )?;
        let info = staged.info;
        let audit = entry(
            actor,
            "signing_key.rotate",
            &info.kid,
            json!({"alg": info.alg, "state": info.state, "activates_at": info.activates_at.map(rfc3339), "immediate": immediate}),
        );
        let changes = guarded(staged.changes, &infos);
        let sealed = staged.sealed.map(|s| (info.kid.as_str(), s));
        if let Err(e) = self.commit_key_change(changes, sealed, vec![audit]).await {
            self.keyring.remove_key_file(&info.kid);
            return Err(e);
        }
        Ok(info)
    }

    /// Adds a PKCS#8 private key (e.g. RSA for RS256) the same way as [`Issuer::rotate`].
    pub async fn import(
        &self,
        actor: &Actor,
        alg: SigningAlgorithm,
        pkcs8: &[u8],
        immediate: bool,
    ) -> IssuerResult<SigningKeyInfo> {
        let now = self.now();
        let lead = time::Duration::seconds(self.settings.rotation_lead_time_secs as i64);
        let infos = self.store.signing_keys().await?;
        let staged = self
            .keyring
            .stage_imported(&infos, alg, pkcs8, now, lead, immediate)?;
        let info = staged.info;
        let audit = entry(
            actor,
            "signing_key.import",
            &info.kid,
            json!({"alg": info.alg, "state": info.state}),
        );
        let changes = guarded(staged.changes, &infos);
        let sealed = staged.sealed.map(|s| (info.kid.as_str(), s));
        if let Err(e) = self.commit_key_change(changes, sealed, vec![audit]).await {
            self.keyring.remove_key_file(&info.kid);
            return Err(e);
        }
        Ok(info)
    }

    /// Retires a signing key by hand; its tokens stop verifying.
    pub async fn retire(&self, actor: &Actor, kid: &str) -> IssuerResult<SigningKeyInfo> {
        let infos = self.store.signing_keys().await?;
        let (info, expected) = keyring::plan_retire(&infos, kid, self.now())?;
        let audit = entry(actor, "signing_key.retire", kid, json!({"manual": true}));
        self.commit_key_change(vec![(info.clone(), expected)], None, vec![audit])
            .await?;
        self.keyring.remove_key_file(kid);
        Ok(info)
    }

    /// Which of `kids` signed a live token (not expired, not revoked):
    /// one scan of the registry, stopping once every one is found.
    async fn kids_in_use(&self, kids: &[String]) -> IssuerResult<HashSet<String>> {
        let now = self.now().unix_timestamp();
        let mut found = HashSet::new();
        if kids.is_empty() {
            return Ok(found);
        }
        self.store
            .scan_keys(None, &mut |record| {
                for kid in kids {
                    if !found.contains(kid) && record.has_live_token_of(kid, now) {
                        found.insert(kid.clone());
                    }
                }
                found.len() < kids.len()
            })
            .await?;
        Ok(found)
    }

    /// One pass of the lifecycle: periodic rotation, activation, retirement.
    pub async fn maintain(&self) -> IssuerResult<Vec<KeyEvent>> {
        let now = self.now();
        if let Some(period_days) = self.settings.rotation_period_days {
            let snapshot = self.keyring.snapshot();
            let has_next = snapshot
                .infos
                .iter()
                .any(|i| i.state == SigningKeyState::Next);
            let active_since = snapshot
                .infos
                .iter()
                .find(|i| i.state == SigningKeyState::Active)
                .and_then(|i| i.activates_at.or(Some(i.created_at)));
            if !has_next
                && let Some(since) = active_since
                && now - since >= time::Duration::days(i64::from(period_days))
            {
                match self.rotate(&Actor::system(), false).await {
                    // Another replica rotated first; its key is loaded now.
                    Ok(_) | Err(IssuerError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let infos = self.store.signing_keys().await?;
        let previous: Vec<String> = infos
            .iter()
            .filter(|i| i.state == SigningKeyState::Previous || i.state == SigningKeyState::Active)
            .map(|i| i.kid.clone())
            .collect();
        let in_use = self.kids_in_use(&previous).await?;
        let (changes, events) = keyring::plan_maintenance(&infos, now, |kid| in_use.contains(kid));
        if events.is_empty() {
            return Ok(events);
        }
        let entries = events
            .iter()
            .map(|event| match event {
                KeyEvent::Activated { kid, previous } => entry(
                    &Actor::system(),
                    "signing_key.activate",
                    kid,
                    json!({"previous": previous}),
                ),
                KeyEvent::Retired { kid } => entry(
                    &Actor::system(),
                    "signing_key.retire",
                    kid,
                    json!({"reason": "no live tokens left"}),
                ),
            })
            .collect();
        match self.commit_key_change(changes, None, entries).await {
            Ok(()) => {}
            // Another replica made this pass's changes first.
            Err(IssuerError::Conflict(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        for event in &events {
            if let KeyEvent::Retired { kid } = event {
                self.keyring.remove_key_file(kid);
            }
        }
        Ok(events)
    }
}

impl From<crate::signing::SigningKeyError> for IssuerError {
    fn from(e: crate::signing::SigningKeyError) -> Self {
        IssuerError::Internal(e.to_string())
    }
}
