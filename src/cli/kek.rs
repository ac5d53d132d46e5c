//! `latchkey kek generate --out FILE`: writes a new key-encryption key, the
//! secret under which a shared database's signing keys are sealed (contract
//! §9; the file format is in `crate::kek`). Prints only the file's path and
//! the key's public fingerprint.

use std::path::PathBuf;

use crate::cli::CliError;
use crate::kek::Kek;

#[derive(Debug, clap::Subcommand)]
pub enum KekCommand {
    /// Write a new random key-encryption key to a file (mode 0600; never overwrites).
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The file to create; it must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(command: KekCommand) -> Result<(), CliError> {
    match command {
        KekCommand::Generate(args) => {
            let kek = Kek::generate_file(&args.out).map_err(|e| CliError::new(e.to_string()))?;
            eprintln!(
                "wrote key-encryption key {} (fingerprint {}); start every replica with \
                 --key-encryption-key-file {0}, and keep a copy apart from the database's backups",
                args.out.display(),
                kek.fingerprint()
            );
            Ok(())
        }
    }
}
