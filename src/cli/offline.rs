//! Commands that open the data directory directly: `init` and
//! `recover-admin`. They refuse while a server holds the database.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::CliError;
use crate::clock::SystemClock;
use crate::config::{Config, ServerArgs};
use crate::service;

#[derive(Debug, Clone, clap::Args)]
pub struct RecoverAdminArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Name of the new admin key [default: recovery-admin-<UTC timestamp>].
    #[arg(long)]
    pub name: Option<String>,
    /// Write the token to this file (0600) instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

fn resolve(args: &ServerArgs) -> Result<Config, CliError> {
    Config::resolve(args).map_err(|e| CliError::new(e.to_string()))
}

/// `latchkey init`.
pub async fn init(args: &ServerArgs) -> Result<(), CliError> {
    let config = resolve(args)?;
    let token_file = config.bootstrap_token_file.clone();
    let opened = service::open(config, Arc::new(SystemClock)).await?;
    match opened.bootstrap {
        Some(token) => {
            service::deliver_token(&token, token_file.as_deref(), "bootstrap admin")?;
            service::confirm_bootstrap_delivered(&opened.state).await?;
            eprintln!(
                "latchkey: initialised {}",
                opened.state.config.data_dir.display()
            );
            Ok(())
        }
        None => Err(CliError::new(format!(
            "{} is already initialised; the bootstrap token is only shown once (use `latchkey recover-admin` if every admin key is lost)",
            opened.state.config.data_dir.display()
        ))),
    }
}

/// `latchkey recover-admin`.
pub async fn recover_admin(args: &RecoverAdminArgs) -> Result<(), CliError> {
    let config = resolve(&args.server)?;
    let data_dir = config.data_dir.clone();
    if !data_dir.join("db").exists() {
        return Err(CliError::new(format!(
            "{} holds no latchkey database; run `latchkey init` or `latchkey serve` first",
            data_dir.display()
        )));
    }
    let opened = service::open(config, Arc::new(SystemClock)).await?;
    if let Some(token) = opened.bootstrap {
        // The data directory held no key (or its bootstrap token never reached anyone):
        // that admin key is the recovery.
        service::deliver_token(&token, args.token_file.as_deref(), "bootstrap admin")?;
        service::confirm_bootstrap_delivered(&opened.state).await?;
        return Ok(());
    }
    let name = args.name.clone().unwrap_or_else(|| {
        let now = opened.state.now();
        format!(
            "recovery-admin-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        )
    });
    crate::validation::validate_name(&name)
        .map_err(|e| CliError::new(format!("--name {}", e.message)))?;
    let token = service::mint_admin(
        &opened.state,
        &name,
        "Created by latchkey recover-admin",
        "recovery",
    )
    .await?;
    service::deliver_token(&token, args.token_file.as_deref(), "recovery admin")?;
    Ok(())
}
