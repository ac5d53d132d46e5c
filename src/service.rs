//! Opening the store (the embedded data directory, or PostgreSQL shared by
//! replicas), the signing keys and, on first start, initialisation with a
//! bootstrap admin key whose token is shown exactly once.
//!
//! With PostgreSQL several replicas may start on an empty database at
//! once: initialisation (the first signing key, the bootstrap admin) runs
//! under the store's initialisation lock, held until the bootstrap token is
//! handed over, so exactly one replica does it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::app::AppState;
use crate::audit::Actor;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::issuer::{Issuer, IssuerError, IssuerSettings};
use crate::kek::Kek;
use crate::keyring::KeyMaterial;
use crate::store::postgres::PgStore;
use crate::store::sled::SledStore;
use crate::store::{InitLock, Store};
use crate::validation::{DEFAULT_EXPIRY_MONTHS, ValidNewKey, add_months};

/// Name of the admin key created on first start.
pub const BOOTSTRAP_KEY_NAME: &str = "bootstrap-admin";

/// A token to hand to the operator once. `Debug` never shows it.
pub struct OneTimeToken {
    pub key_id: String,
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for OneTimeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneTimeToken")
            .field("key_id", &self.key_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An opened service and, if it was just initialised, the bootstrap token.
#[derive(Debug)]
pub struct Opened {
    pub state: AppState,
    pub bootstrap: Option<OneTimeToken>,
    /// Held while a bootstrap token is being handed over (other replicas
    /// wait); drop it once [`confirm_bootstrap_delivered`] succeeded.
    pub init_lock: Option<InitLock>,
}

/// The store the configuration names, and where its private keys live.
async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, KeyMaterial), String> {
    match &config.database_url {
        Some(url) => {
            let kek_file = config.key_encryption_key_file.as_deref().ok_or(
                "--database-url needs --key-encryption-key-file: signing keys are stored sealed under it",
            )?;
            let kek = Kek::load(kek_file).map_err(|e| e.to_string())?;
            let store = PgStore::open(url, config.status_list_capacity, &kek, kek_file).await?;
            Ok((Arc::new(store), KeyMaterial::Sealed(Arc::new(kek))))
        }
        None => {
            let store = SledStore::open_dir(&config.data_dir, config.status_list_capacity)?;
            Ok((Arc::new(store), KeyMaterial::Files(config.keys_dir.clone())))
        }
    }
}

/// Opens (and on an empty data directory, initialises) the service.
pub async fn open(mut config: Config, clock: SharedClock) -> Result<Opened, String> {
    latchkey_verifier::install_ring_provider();
    let (store, material) = open_store(&config).await?;
    let init_lock = store
        .lock_initialisation()
        .await
        .map_err(|e| format!("could not take the initialisation lock: {e}"))?;
    pin_issuer(&*store, &mut config).await?;
    let now = clock.now();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    crate::issuer::initialise_signing_keys(&*store, &material, config.signing_algorithm, now)
        .await
        .map_err(|e| e.to_string())?;
    let issuer = Issuer::open(
        store,
        IssuerSettings::from_config(&config),
        material,
        clock.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let pending = issuer
        .bootstrap_pending()
        .await
        .map_err(|e| e.to_string())?;
    let empty = issuer.has_no_keys().await.map_err(|e| e.to_string())?;
    let state = AppState::new(config, issuer, clock);
    let bootstrap = match (empty, pending) {
        (true, _) => Some(mint_bootstrap(&state, BOOTSTRAP_KEY_NAME).await?),
        (false, Some(undelivered)) => {
            // The last start minted a bootstrap key but never handed its token
            // over (it crashed, or could not write the token file): that key
            // is useless, so revoke it and make a new one.
            match state.issuer.revoke(&Actor::bootstrap(), &undelivered).await {
                Ok(_) | Err(IssuerError::NotFound | IssuerError::AlreadyRevoked) => {}
                Err(e) => {
                    return Err(format!(
                        "could not replace the undelivered bootstrap key: {e}"
                    ));
                }
            }
            let mut n = 2;
            loop {
                let name = format!("{BOOTSTRAP_KEY_NAME}-{n}");
                match mint_bootstrap(&state, &name).await {
                    Ok(token) => break Some(token),
                    Err(e) if e.contains("already exists") && n < 1000 => n += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        (false, None) => None,
    };
    let init_lock = bootstrap.as_ref().map(|_| init_lock);
    Ok(Opened {
        state,
        bootstrap,
        init_lock,
    })
}

/// Finishes a run of the service: writes the pending counts of refused
/// anonymous requests ([`crate::denials`]) and waits until everything is on
/// disk.
pub async fn shutdown(state: &AppState) -> Result<(), String> {
    state.issuer.shutdown().await.map_err(|e| e.to_string())
}

/// Keeps `iss` stable: a derived issuer yields to the one recorded when the
/// data directory was initialised (tokens are bound to it); an explicit one
/// is recorded.
async fn pin_issuer(store: &dyn Store, config: &mut Config) -> Result<(), String> {
    let recorded = store.recorded_issuer().await.map_err(|e| e.to_string())?;
    match recorded {
        Some(recorded) if !config.issuer_explicit => config.issuer = recorded,
        Some(recorded) if recorded == config.issuer => {}
        other => {
            if let Some(old) = other {
                tracing::warn!(old = %old, new = %config.issuer, "the issuer changed: tokens issued as the old issuer will be refused");
            }
            store
                .record_issuer(config.issuer.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn mint_bootstrap(state: &AppState, name: &str) -> Result<OneTimeToken, String> {
    let token = mint_admin(state, name, "Created on first start", "bootstrap").await?;
    state
        .issuer
        .set_bootstrap_pending(Some(token.key_id.clone()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(token)
}

/// Records that the bootstrap token reached the operator, so it is never
/// replaced.
pub async fn confirm_bootstrap_delivered(state: &AppState) -> Result<(), String> {
    state
        .issuer
        .set_bootstrap_pending(None)
        .await
        .map_err(|e| e.to_string())
}

/// Mints a `global_admin` key as the bootstrap actor (first start, recovery).
pub async fn mint_admin(
    state: &AppState,
    name: &str,
    description: &str,
    reason: &str,
) -> Result<OneTimeToken, String> {
    let now = state.now();
    let valid = ValidNewKey {
        name: name.to_owned(),
        description: description.to_owned(),
        roles: vec![latchkey_verifier::Role::GlobalAdmin],
        accounts: None,
        expires_at: add_months(now, DEFAULT_EXPIRY_MONTHS),
    };
    let minted = state
        .issuer
        .create_valid(&Actor::bootstrap(), valid)
        .await
        .map_err(|e| format!("could not create the {reason} admin key: {e}"))?;
    Ok(OneTimeToken {
        key_id: minted.record.id,
        name: minted.record.name,
        token: minted.token,
    })
}

/// Verifies the audit log of a data directory directly (server stopped):
/// numbering, links, hashes and the recorded head.
pub async fn verify_audit_offline(
    data_dir: &Path,
) -> Result<Result<crate::audit::ChainReport, String>, String> {
    let db = crate::store::sled::open_db(data_dir)?;
    let capacity = Config::default().status_list_capacity;
    let store = SledStore::open(db, capacity).map_err(|e| e.to_string())?;
    store.verify_audit().await.map_err(|e| e.to_string())
}

/// Hands a one-time token to the operator: to `file` (mode 0600, never
/// overwriting) or to stderr.
pub fn deliver_token(token: &OneTimeToken, file: Option<&Path>, what: &str) -> Result<(), String> {
    match file {
        Some(path) => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(path).map_err(|e| {
                format!(
                    "cannot create {} for the {what} token: {e} (it is never overwritten)",
                    path.display()
                )
            })?;
            writeln!(f, "{}", token.token)
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "latchkey: the {what} token for key {:?} ({}) was written to {}",
                token.name,
                token.key_id,
                path.display()
            );
        }
        None => {
            eprintln!(
                "\n=== latchkey {what} token for key {:?} ({}) ===\n{}\n=== Shown once: store it now. It is not saved anywhere. ===\n",
                token.name, token.key_id, token.token
            );
        }
    }
    Ok(())
}
