//! An example downstream service: per-account data behind
//! `latchkey-verifier`.
//!
//! - `GET /accounts/{account}/data` — the account's items; needs a key that
//!   may read the account (`global_admin`, `global_viewer`, or a
//!   `cloud_account_viewer` of that account or of `*`).
//! - `POST /accounts/{account}/data` — appends a JSON item; needs
//!   `global_admin`.
//! - `GET /healthz` — 200 while the verifier's status data is fresh, 503
//!   once it is past the staleness bound (when every key is refused).
//!
//! The [`Authorized`] extractor does all the checking: it verifies the
//! bearer key offline (no call to latchkey per request) and applies the
//! contract's §1 policy to the method and the `{account}` path parameter,
//! answering 401 (`WWW-Authenticate: Bearer error="invalid_token"`) or 403
//! (`error="insufficient_scope"`) itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use latchkey_verifier::{Authorized, Verifier};
use serde_json::{Value, json};

/// Items stored per account (in memory: this is an example).
#[derive(Debug, Clone, Default)]
pub struct Store(Arc<Mutex<HashMap<String, Vec<Value>>>>);

impl Store {
    fn items(&self, account: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(account)
            .cloned()
            .unwrap_or_default()
    }

    fn push(&self, account: &str, item: Value) -> usize {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let items = map.entry(account.to_owned()).or_default();
        items.push(item);
        items.len()
    }
}

/// The service's state; the extractors find the [`Verifier`] in it through
/// `FromRef`.
#[derive(Debug, Clone, FromRef)]
pub struct AppState {
    pub verifier: Verifier,
    pub store: Store,
}

/// The whole service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/accounts/{account}/data", get(read).post(write))
        .route("/healthz", get(health))
        .with_state(state)
}

async fn read(
    Authorized(key): Authorized,
    State(store): State<Store>,
    Path(account): Path<String>,
) -> Json<Value> {
    Json(json!({
        "account": account,
        "items": store.items(&account),
        "read_by": key.name,
    }))
}

async fn write(
    Authorized(key): Authorized,
    State(store): State<Store>,
    Path(account): Path<String>,
    Json(item): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let count = store.push(&account, item);
    (
        StatusCode::CREATED,
        Json(json!({"account": account, "items": count, "written_by": key.name})),
    )
}

async fn health(State(verifier): State<Verifier>) -> Response {
    let sync = verifier.sync_status();
    let body = json!({
        "status_age_secs": sync.status_age.map(|age| age.as_secs()),
        "stale": sync.stale,
        "stream_connected": sync.stream_connected,
        "signing_keys": sync.keys,
        "last_sync_error": sync.last_error,
    });
    let status = if sync.stale {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

/// Configuration from the environment.
#[derive(Clone)]
pub struct Config {
    /// `LATCHKEY_ISSUER`: the issuer URL (as in its tokens' `iss`).
    pub issuer: String,
    /// `LATCHKEY_AUDIENCE` (default `latchkey`).
    pub audience: String,
    /// `DOWNSTREAM_LISTEN` (default `127.0.0.1:9090`).
    pub listen: SocketAddr,
    /// `DOWNSTREAM_STALENESS_SECS` (default 300): refuse every key once the
    /// status data is this old.
    pub staleness: Duration,
    /// `DOWNSTREAM_REPORTER_TOKEN` (optional): this service's own access key,
    /// to send usage reports so that keys' `last_used_at` moves.
    pub reporter_token: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("listen", &self.listen)
            .field("staleness", &self.staleness)
            .field("usage_reports", &self.reporter_token.is_some())
            .finish()
    }
}

impl Config {
    /// Reads the configuration; the error says which variable is wrong.
    pub fn from_env() -> Result<Config, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let issuer = var("LATCHKEY_ISSUER")
            .ok_or("set LATCHKEY_ISSUER to the issuer URL, e.g. http://127.0.0.1:8080")?;
        let listen = var("DOWNSTREAM_LISTEN").unwrap_or_else(|| "127.0.0.1:9090".into());
        let listen = listen
            .parse()
            .map_err(|e| format!("DOWNSTREAM_LISTEN={listen:?} is not an address: {e}"))?;
        let staleness = match var("DOWNSTREAM_STALENESS_SECS") {
            Some(secs) => Duration::from_secs(
                secs.parse()
                    .map_err(|e| format!("DOWNSTREAM_STALENESS_SECS={secs:?}: {e}"))?,
            ),
            None => latchkey_verifier::sync::DEFAULT_STALENESS,
        };
        Ok(Config {
            issuer: issuer.trim().to_owned(),
            audience: var("LATCHKEY_AUDIENCE").unwrap_or_else(|| "latchkey".into()),
            listen,
            staleness,
            reporter_token: var("DOWNSTREAM_REPORTER_TOKEN"),
        })
    }

    /// Builds the verifier this configuration describes.
    pub async fn verifier(&self) -> Result<Verifier, latchkey_verifier::SyncError> {
        let mut builder = Verifier::builder(&self.issuer, &self.audience).staleness(self.staleness);
        if let Some(token) = &self.reporter_token {
            builder = builder.usage_reporting(token);
        }
        builder.build().await
    }
}
