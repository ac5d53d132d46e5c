//! The maintenance schedule: every [`MAINTENANCE_INTERVAL`], the signing-key
//! lifecycle pass ([`crate::issuer::Issuer::maintain`]: periodic rotation,
//! activation, retirement) and the audit entries of refused requests whose
//! minute has closed.

use std::time::Duration;

use crate::app::AppState;
use crate::issuer::IssuerResult;
use crate::keyring::KeyEvent;

/// How often the maintenance task looks at the key states.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);

/// One pass of the signing-key lifecycle.
pub async fn maintain(state: &AppState) -> IssuerResult<Vec<KeyEvent>> {
    state.issuer.maintain().await
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
            state.issuer.flush_due_denials().await;
            if let Err(e) = maintain(&state).await {
                tracing::error!(error = %e, "signing key maintenance failed");
            }
        }
    })
}
