//! `latchkey serve`: bind, serve until SIGTERM or ctrl-c, then flush.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::service;

/// Runs the service until a shutdown signal, then flushes the database.
pub async fn serve(config: Config) -> Result<(), String> {
    let listen = config.listen;
    let token_file = config.bootstrap_token_file.clone();
    // Bind first: a taken port must fail before anything is initialised.
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let opened = service::open(config, Arc::new(SystemClock)).await?;
    let state = opened.state;
    if let Some(token) = &opened.bootstrap {
        service::deliver_token(token, token_file.as_deref(), "bootstrap admin")?;
        service::confirm_bootstrap_delivered(&state).await?;
    }
    // Other replicas waiting to start may go on now.
    drop(opened.init_lock);
    tracing::info!(listen = %listen, issuer = %state.config.issuer, "latchkey is serving");
    let maintenance = crate::rotation::spawn_maintenance(state.clone());
    let app = crate::http::router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    maintenance.abort();
    tracing::info!("shutting down: flushing the database");
    service::shutdown(&state).await
}

/// SIGTERM or ctrl-c: what stops `latchkey serve` and `latchkey gate`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
