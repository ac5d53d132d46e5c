//! The signing-key lifecycle policy (contract §5): staging a new key with a
//! lead time, activating it when the time comes, retiring a previous key once
//! every token it signed has expired or been revoked, and rotating on a
//! period. Every change is written to the audit log.

use std::time::Duration;

use serde_json::json;

use crate::app::AppState;
use crate::audit::{Actor, NewEntry};
use crate::keyring::{KeyEvent, KeyRingError, SigningKeyInfo, SigningKeyState};

/// How often the maintenance task looks at the key states.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);

async fn audit(
    state: &AppState,
    actor: &Actor,
    action: &'static str,
    kid: &str,
    details: serde_json::Value,
) {
    let entry = NewEntry {
        actor: actor.clone(),
        action,
        target: Some(kid.to_owned()),
        details,
    };
    if let Err(e) = state
        .registry
        .record_event_durably(entry, state.now())
        .await
    {
        tracing::error!(error = %e, action, kid, "could not audit a signing key change");
    }
}

/// Stages a new signing key of the configured algorithm.
pub async fn rotate(
    state: &AppState,
    actor: &Actor,
    immediate: bool,
) -> Result<SigningKeyInfo, KeyRingError> {
    let now = state.now();
    let lead = time::Duration::seconds(state.config.rotation_lead_time_secs as i64);
    let alg = state.config.signing_algorithm;
    let info = state.keyring.rotate(alg, now, lead, immediate)?;
    audit(
        state,
        actor,
        "signing_key.rotate",
        &info.kid,
        json!({"alg": info.alg, "state": info.state, "activates_at": info.activates_at.map(crate::registry::rfc3339), "immediate": immediate}),
    )
    .await;
    Ok(info)
}

/// Retires a signing key by hand; its tokens stop verifying.
pub async fn retire(
    state: &AppState,
    actor: &Actor,
    kid: &str,
) -> Result<SigningKeyInfo, KeyRingError> {
    let info = state.keyring.retire(kid, state.now())?;
    audit(
        state,
        actor,
        "signing_key.retire",
        kid,
        json!({"manual": true}),
    )
    .await;
    Ok(info)
}

/// One pass of the lifecycle: periodic rotation, activation, retirement.
pub async fn maintain(state: &AppState) -> Result<Vec<KeyEvent>, KeyRingError> {
    let now = state.now();
    if let Some(period_days) = state.config.rotation_period_days {
        let snapshot = state.keyring.snapshot();
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
            rotate(state, &Actor::system(), false).await?;
        }
    }
    let events = state.keyring.maintain(now, |kid| {
        state.registry.kid_in_use(kid, now).unwrap_or(true)
    })?;
    for event in &events {
        match event {
            KeyEvent::Activated { kid, previous } => {
                audit(
                    state,
                    &Actor::system(),
                    "signing_key.activate",
                    kid,
                    json!({"previous": previous}),
                )
                .await
            }
            KeyEvent::Retired { kid } => {
                audit(
                    state,
                    &Actor::system(),
                    "signing_key.retire",
                    kid,
                    json!({"reason": "no live tokens left"}),
                )
                .await
            }
        }
    }
    Ok(events)
}

/// Runs [`maintain`] (and writes closed windows of refused requests) every
/// [`MAINTENANCE_INTERVAL`] until the task is aborted.
pub fn spawn_maintenance(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
        loop {
            ticker.tick().await;
            // A minute of refused anonymous requests is audited even when
            // no request comes after it.
            crate::denials::flush_due(&state);
            if let Err(e) = maintain(&state).await {
                tracing::error!(error = %e, "signing key maintenance failed");
            }
        }
    })
}
