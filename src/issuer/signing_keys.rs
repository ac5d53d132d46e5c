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
use std::path::Path;

use latchkey_verifier::jwk::SigningAlgorithm;
use serde_json::json;

use crate::audit::{Actor, NewEntry};
use crate::issuer::{Issuer, IssuerError, IssuerResult};
use crate::keyring::{self, KeyEvent, KeyRing, StateChange};
use crate::model::{SigningKeyInfo, SigningKeyState, rfc3339};
use crate::store::{SigningKeyChange, Store};

fn to_store(changes: Vec<StateChange>) -> Vec<SigningKeyChange> {
    changes
        .into_iter()
        .map(|(info, expected)| SigningKeyChange { info, expected })
        .collect()
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
    keys_dir: &Path,
    alg: SigningAlgorithm,
    now: time::OffsetDateTime,
) -> IssuerResult<()> {
    if !store.signing_keys().await?.is_empty() {
        return Ok(());
    }
    let info = KeyRing::generate_first(keys_dir, alg, now)?;
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
        entries: Vec<NewEntry>,
    ) -> IssuerResult<()> {
        self.store
            .change_signing_keys(to_store(changes), entries, self.now())
            .await?;
        self.keyring.install(self.store.signing_keys().await?)?;
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
        if let Err(e) = self.commit_key_change(staged.changes, vec![audit]).await {
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
        if let Err(e) = self.commit_key_change(staged.changes, vec![audit]).await {
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
        self.commit_key_change(vec![(info.clone(), expected)], vec![audit])
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
                self.rotate(&Actor::system(), false).await?;
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
        self.commit_key_change(changes, entries).await?;
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
