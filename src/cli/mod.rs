//! The command line (contract §6): one subcommand per file, each with its
//! options and a `run`. `main` only parses and dispatches.

pub mod audit;
pub mod backup;
pub mod client;
pub mod database;
pub mod kek;
pub mod keys;
pub mod offline;
pub mod signing_keys;
pub mod verify;

use clap::{Parser, Subcommand};

use crate::config::ServerArgs;

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Issues signed JWT access keys that services verify offline",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (initialising an empty data directory first).
    Serve(ServerArgs),
    /// Initialise an empty data directory and print the bootstrap admin token.
    Init(ServerArgs),
    /// Offline, with the server stopped: mint a new global_admin key.
    RecoverAdmin(offline::RecoverAdminArgs),
    /// Manage access keys on a running server.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Read or verify the audit log.
    Audit(audit::AuditArgs),
    /// Inspect, rotate and retire signing keys.
    #[command(subcommand)]
    SigningKeys(signing_keys::SigningKeysCommand),
    /// Verify an access key offline against an issuer's JWKS and status lists.
    Verify(verify::VerifyArgs),
    /// Run a forward-auth server for reverse proxies (nginx, Caddy, Traefik, Envoy).
    Gate(crate::gate::GateArgs),
    /// Create the key-encryption key that seals signing keys in PostgreSQL.
    #[command(subcommand)]
    Kek(kek::KekCommand),
    /// Apply the PostgreSQL schema migrations and exit.
    Migrate(database::DatabaseArgs),
    /// Move an embedded installation into PostgreSQL.
    #[command(subcommand)]
    Store(database::StoreCommand),
    /// Download a consistent backup from a running server (embedded store).
    Backup(backup::BackupArgs),
    /// Offline, with the server stopped: restore a backup into an empty data directory.
    Restore(backup::RestoreArgs),
}

/// A command's failure: the message to print and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::new(message)
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => {
            let config =
                crate::config::Config::resolve(&args).map_err(|e| CliError::new(e.to_string()))?;
            init_logging(&config);
            crate::server::serve(config).await.map_err(CliError::new)
        }
        Command::Init(args) => offline::init(&args).await,
        Command::RecoverAdmin(args) => offline::recover_admin(&args).await,
        Command::Keys(command) => keys::run(command).await,
        Command::Audit(args) => audit::run(args).await,
        Command::SigningKeys(command) => signing_keys::run(command).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Gate(args) => crate::gate::run(args).await.map_err(CliError::new),
        Command::Kek(command) => kek::run(command),
        Command::Migrate(args) => database::migrate(args).await,
        Command::Store(command) => database::store(command).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args).await,
    }
}

fn init_logging(config: &crate::config::Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
