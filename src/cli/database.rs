//! Commands on the PostgreSQL store itself: `latchkey migrate`, `latchkey
//! store copy` (embedded → PostgreSQL) and `latchkey signing-keys reseal`.

use std::path::PathBuf;

use crate::cli::CliError;
use crate::kek::Kek;
use crate::store::postgres::{self, DatabaseUrl};

/// The database URL, from the flag or `LATCHKEY_DATABASE_URL`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=...).
    #[arg(
        long,
        env = "LATCHKEY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: String,
}

impl DatabaseArgs {
    fn url(&self) -> Result<DatabaseUrl, CliError> {
        DatabaseUrl::parse(self.database_url.trim())
            .map_err(|e| CliError::new(format!("--database-url: {e}")))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Issuer stopped: copy an embedded installation into an empty PostgreSQL database.
    Copy(CopyArgs),
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The embedded data directory (holding `db`).
    #[arg(long, value_name = "DATA_DIR")]
    pub from: PathBuf,
    /// The embedded issuer's keys directory.
    #[arg(long, value_name = "KEYS_DIR")]
    pub keys_dir: PathBuf,
    /// The PostgreSQL URL to copy into.
    #[arg(long, value_name = "URL", hide_env_values = true)]
    pub to: String,
    /// Key-encryption key file to seal the signing keys under.
    #[arg(long, env = "LATCHKEY_KEY_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub key_encryption_key_file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ResealArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The key-encryption key the keys are sealed under now.
    #[arg(long, env = "LATCHKEY_KEY_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub key_encryption_key_file: PathBuf,
    /// The key-encryption key to seal them under (`latchkey kek generate`).
    #[arg(long, value_name = "FILE")]
    pub new_kek_file: PathBuf,
}

/// `latchkey migrate`.
pub async fn migrate(args: DatabaseArgs) -> Result<(), CliError> {
    let url = args.url()?;
    let (applied, version) = postgres::migrate(&url).await?;
    if applied.is_empty() {
        eprintln!("latchkey: {url} is at schema version {version}; nothing to apply");
    } else {
        eprintln!(
            "latchkey: applied migrations {applied:?} to {url}; now at schema version {version}"
        );
    }
    Ok(())
}

/// `latchkey store copy`.
pub async fn store(command: StoreCommand) -> Result<(), CliError> {
    let StoreCommand::Copy(args) = command;
    let url =
        DatabaseUrl::parse(args.to.trim()).map_err(|e| CliError::new(format!("--to: {e}")))?;
    let kek = Kek::load(&args.key_encryption_key_file).map_err(|e| CliError::new(e.to_string()))?;
    latchkey_verifier::install_ring_provider();
    let report =
        crate::store::copy::copy_embedded_to_postgres(&args.from, &args.keys_dir, &url, &kek)
            .await?;
    eprintln!(
        "latchkey: copied {} keys, {} revoked or suspended statuses, {} audit entries and {} signing keys (sealed under key-encryption key {}) into {url}",
        report.keys,
        report.statuses,
        report.audit_entries,
        report.signing_keys,
        kek.fingerprint()
    );
    Ok(())
}

/// `latchkey signing-keys reseal`.
pub async fn reseal(args: ResealArgs) -> Result<(), CliError> {
    let url = args.database.url()?;
    let old = Kek::load(&args.key_encryption_key_file).map_err(|e| CliError::new(e.to_string()))?;
    let new = Kek::load(&args.new_kek_file).map_err(|e| CliError::new(e.to_string()))?;
    let count = postgres::reseal(&url, &old, &args.key_encryption_key_file, &new).await?;
    eprintln!(
        "latchkey: resealed {count} signing keys under key-encryption key {}; restart every replica with --key-encryption-key-file {}",
        new.fingerprint(),
        args.new_kek_file.display()
    );
    Ok(())
}
