//! `downstream`: the example service's binary. Reads its configuration
//! from the environment (see [`downstream::Config`]), syncs a verifier
//! with the issuer (retrying while the issuer starts), and serves.

use std::time::Duration;

use downstream::{AppState, Config, Store, router};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOWNSTREAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run().await {
        eprintln!("downstream: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let config = Config::from_env()?;
    // The issuer may still be starting (docker compose): retry for a minute.
    let mut attempt = 0;
    let verifier = loop {
        match config.verifier().await {
            Ok(verifier) => break verifier,
            Err(e) if attempt < 30 => {
                attempt += 1;
                tracing::warn!(error = %e, "cannot sync with the issuer yet; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(format!("cannot sync with the issuer: {e}")),
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(listen = %config.listen, issuer = %config.issuer, "downstream is serving");
    let app = router(AppState {
        verifier,
        store: Store::default(),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server error: {e}"))
}
