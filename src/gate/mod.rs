//! `latchkey gate`: a forward-auth server for reverse proxies (contract
//! §10), so services in any language get the full check — signature,
//! claims, status list and push revocation — without code.
//!
//! A proxy (nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `forwardAuth`, Envoy `ext_authz`) asks the gate about each request; the
//! gate verifies the bearer key with the verifier crate (no I/O on the hot
//! path) and applies the policy to the request's normalised path and
//! account. One module per concern:
//!
//! - [`args`]: flags and environment, resolved into a [`GateConfig`];
//! - [`uri`]: the original URI's normalisation (ambiguity is a 400);
//! - [`policy`]: the request's account and the decision;
//! - [`policy_file`]: the optional TOML rules;
//! - [`check`]: the check endpoint and its answers;
//! - [`metrics`]: decision counters and latency;
//! - [`server`]: start-up, `/healthz`, `/readyz`, `/metrics`, shutdown.

pub mod args;
pub mod check;
pub mod metrics;
pub mod policy;
pub mod policy_file;
pub mod server;
pub mod uri;

#[cfg(test)]
mod uri_props;

use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use latchkey_verifier::Verifier;

pub use args::{GateArgs, GateConfig};
pub use metrics::Metrics;
pub use policy::{AccountPattern, AccountSource, Policy};
pub use server::run;

/// The gate's state: the verifier (once it has synced), how to find a
/// request's account, the policy, and the counters.
#[derive(Debug)]
pub struct Gate {
    verifier: OnceLock<Verifier>,
    account: AccountSource,
    policy: Policy,
    metrics: Metrics,
    /// Why the verifier is not running yet (for `/readyz`).
    startup_error: Mutex<Option<String>>,
}

impl Gate {
    /// A gate with no verifier yet: every check answers 503 until
    /// [`install`](Self::install).
    pub fn new(account: AccountSource, policy: Policy) -> Gate {
        Gate {
            verifier: OnceLock::new(),
            account,
            policy,
            metrics: Metrics::default(),
            startup_error: Mutex::new(None),
        }
    }

    /// A gate checking with `verifier`.
    pub fn with_verifier(verifier: Verifier, account: AccountSource, policy: Policy) -> Gate {
        let gate = Gate::new(account, policy);
        gate.install(verifier);
        gate
    }

    /// Starts checking with `verifier` (once; later calls are ignored).
    pub fn install(&self, verifier: Verifier) {
        let _ = self.verifier.set(verifier);
        self.set_startup_error(None);
    }

    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.get()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn set_startup_error(&self, error: Option<String>) {
        *self
            .startup_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    fn startup_error(&self) -> Option<String> {
        self.startup_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The gate's routes: `/check` and `/check/...`, `/healthz`, `/readyz`,
/// `/metrics`.
pub fn router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/healthz", get(server::healthz))
        .route("/readyz", get(server::readyz))
        .route("/metrics", get(server::metrics))
        .fallback(dispatch)
        .with_state(gate)
}

/// `/check` and everything below it (any method: Envoy sends the
/// original's); anything else is a 404.
async fn dispatch(state: State<Arc<Gate>>, request: Request) -> Response {
    let path = request.uri().path();
    if path == check::CHECK_PATH || path.starts_with("/check/") {
        return check::check(state, request).await;
    }
    server::not_found().into_response()
}
