//! Running the gate: listen first, then sync the verifier (retrying in the
//! background while the issuer is unreachable, `/readyz` saying why), serve
//! until SIGTERM or ctrl-c, then send the pending usage reports.
//!
//! `GET /healthz` is liveness (the process answers); `GET /readyz` is 200
//! only once the JWKS and status lists are loaded and not past the
//! staleness bound; `GET /metrics` is the Prometheus exposition.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use latchkey_verifier::{SyncError, Verifier, VerifierBuilder};
use serde_json::json;
use tokio::net::TcpListener;

use super::args::{GateArgs, GateConfig, UsageToken};
use super::{Gate, router};

/// The longest wait between two attempts to reach the issuer at start.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// `latchkey gate`: resolve, listen, sync, serve until a shutdown signal.
pub async fn run(args: GateArgs) -> Result<(), String> {
    init_logging();
    let config = args.resolve()?;
    serve(config, crate::server::shutdown_signal()).await
}

/// Serves `config` until `shutdown` completes.
pub async fn serve(
    config: GateConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let gate = Arc::new(Gate::new(config.account.clone(), config.policy.clone()));
    let builder = verifier_builder(&config);
    // The first attempt decides whether the issuer URL is usable at all.
    let sync_task = match builder.clone().build().await {
        Ok(verifier) => {
            install(&gate, verifier, config.usage_token.as_ref());
            None
        }
        Err(e @ SyncError::InvalidIssuer { .. }) => return Err(format!("--issuer: {e}")),
        Err(e) => {
            tracing::warn!(error = %e, "latchkey gate: the issuer cannot be reached yet; retrying (checks answer 503 meanwhile)");
            gate.set_startup_error(Some(e.to_string()));
            Some(tokio::spawn(keep_trying(
                Arc::clone(&gate),
                builder,
                config.usage_token.clone(),
            )))
        }
    };
    tracing::info!(
        listen = %config.listen,
        issuer = %config.issuer,
        audience = %config.audience,
        rules = config.policy.rules().len(),
        usage_reports = config.usage_token.is_some(),
        "latchkey gate is serving"
    );
    let listener = listener.tap_io(|tcp| {
        // Checks are tiny request/response pairs on kept-alive connections.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(Arc::clone(&gate)))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("server error: {e}"))?;
    if let Some(task) = sync_task {
        task.abort();
    }
    if config.usage_token.is_some()
        && let Some(verifier) = gate.verifier()
    {
        match tokio::time::timeout(Duration::from_secs(5), verifier.flush_usage()).await {
            Ok(Ok(sent)) => tracing::info!(sent, "latchkey gate: sent the last usage reports"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "latchkey gate: the last usage reports failed")
            }
            Err(_) => tracing::warn!("latchkey gate: the last usage reports timed out"),
        }
    }
    tracing::info!("latchkey gate stopped");
    Ok(())
}

fn verifier_builder(config: &GateConfig) -> VerifierBuilder {
    let mut builder =
        Verifier::builder(&config.issuer, &config.audience).staleness(config.max_staleness);
    if let Some(token) = &config.usage_token {
        builder = builder.usage_reporting(token.0.clone());
    }
    builder
}

/// Retries the first sync with exponential backoff until it succeeds.
async fn keep_trying(gate: Arc<Gate>, builder: VerifierBuilder, usage: Option<UsageToken>) {
    let mut wait = Duration::from_millis(500);
    loop {
        tokio::time::sleep(wait).await;
        match builder.clone().build().await {
            Ok(verifier) => {
                tracing::info!("latchkey gate: synced with the issuer");
                install(&gate, verifier, usage.as_ref());
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "latchkey gate: the issuer cannot be reached yet");
                gate.set_startup_error(Some(e.to_string()));
            }
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// Starts checking with `verifier`, after telling whether the usage key
/// is one the issuer accepts (by its refusal code only, never its value).
fn install(gate: &Gate, verifier: Verifier, usage: Option<&UsageToken>) {
    if let Some(token) = usage
        && let Err(e) = verifier.verify(&token.0)
    {
        tracing::error!(
            reason = e.code(),
            "latchkey gate: the key in --usage-token-file is refused ({e}); usage reports will fail until it is replaced"
        );
    }
    gate.install(verifier);
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 once the JWKS and status lists are loaded and fresh.
pub async fn readyz(State(gate): State<Arc<Gate>>) -> Response {
    let Some(verifier) = gate.verifier() else {
        let body = json!({
            "status": "starting",
            "detail": "the JWKS and status lists are not loaded yet",
            "last_error": gate.startup_error(),
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    };
    let sync = verifier.sync_status();
    let ready = sync.keys > 0 && !sync.stale;
    let body = json!({
        "status": if ready { "ready" } else { "stale" },
        "signing_keys": sync.keys,
        "status_lists": sync.status_lists,
        "status_age_ms": sync.status_age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
        "stream_connected": sync.stream_connected,
        "last_error": sync.last_error,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(gate): State<Arc<Gate>>) -> Response {
    let sync = gate.verifier().map(Verifier::sync_status);
    let mut response = gate.metrics.render(sync.as_ref()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Anything but the gate's routes.
pub fn not_found() -> Response {
    let body = json!({
        "type": "urn:latchkey:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "no such route: the gate serves /check, /check/<path> (Envoy), /healthz, /readyz and /metrics",
    });
    let mut response = (StatusCode::NOT_FOUND, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LATCHKEY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
