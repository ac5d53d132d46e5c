//! `latchkey backup` (a client of the running server: downloads a
//! consistent snapshot) and `latchkey restore` (offline, server stopped:
//! validates a backup and restores it into an empty data directory).
//!
//! A backup holds the database, not the private signing keys: those are
//! files in the keys directory, backed up separately. Restore therefore
//! checks that the keys directory holds every key the backup still needs
//! before it writes anything.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use latchkey_verifier::jwk::SigningAlgorithm;

use crate::cli::CliError;
use crate::cli::client::{Client, ClientArgs, print_json};
use crate::config::{Config, ServerArgs};
use crate::model::{SigningKeyInfo, SigningKeyState};
use crate::store::sled_backup::{self, BackupContents};
use crate::store::sled_restore;

/// Longest a download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most status slots `--reserve-slots` may reserve.
const MAX_RESERVE_SLOTS: u64 = 10_000_000;

#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Write the backup to this new file (mode 0600; an existing file is never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup file (from `latchkey backup`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Status slots after the backup's last one to mark invalid: tokens
    /// minted after the backup was taken use them, and must not verify.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub reserve_slots: u64,
}

/// Deletes a file this command created unless told the command succeeded.
struct Partial<'a> {
    path: &'a Path,
    keep: bool,
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// `latchkey backup --out FILE`.
pub async fn backup(args: BackupArgs) -> Result<(), CliError> {
    let client = Client::new(&args.client)?;
    let out = &args.out;
    let mut file = sled_backup::create_private(out).map_err(|e| {
        CliError::new(format!(
            "cannot create {}: {e} (an existing file is never overwritten)",
            out.display()
        ))
    })?;
    let mut partial = Partial {
        path: out,
        keep: false,
    };
    let mut response = client.download("/v1/backup", DOWNLOAD_TIMEOUT).await?;
    let announced = response
        .headers()
        .get(crate::http::backup::SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let failed = |e: &dyn std::fmt::Display| {
        CliError::new(format!("the download failed: {e}; nothing was kept"))
    };
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
        file.write_all(&chunk)
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", out.display())))?;
    }
    file.sync_all()
        .map_err(|e| CliError::new(format!("cannot sync {}: {e}", out.display())))?;
    drop(file);
    sync_parent(out)?;
    let contents = validate(out).map_err(|e| {
        CliError::new(format!(
            "the server's backup did not validate ({e}); nothing was kept"
        ))
    })?;
    if let Some(announced) = announced
        && announced != contents.sha256
    {
        return Err(CliError::new(format!(
            "the received file's SHA-256 is {} but the server sent {announced}: it was damaged in transit; nothing was kept",
            contents.sha256
        )));
    }
    partial.keep = true;
    if args.client.json {
        return print_json(&serde_json::json!({
            "file": out,
            "created_at": contents.header.created_at,
            "issuer": contents.header.issuer,
            "keys": contents.keys,
            "audit_entries": contents.audit_entries,
            "signing_keys": contents.signing_keys.len(),
            "bytes": contents.bytes,
            "sha256": contents.sha256,
        }));
    }
    println!(
        "wrote {}: {} keys, {} audit entries, {} signing keys, {} bytes\nsha256 {}\nThe private signing keys are not in it: back up the keys directory too.",
        out.display(),
        contents.keys,
        contents.audit_entries,
        contents.signing_keys.len(),
        contents.bytes,
        contents.sha256
    );
    Ok(())
}

fn sync_parent(path: &Path) -> Result<(), CliError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| CliError::new(format!("cannot sync {}: {e}", parent.display())))
}

/// Reads a whole backup file and checks every line of it.
pub fn validate(file: &Path) -> Result<BackupContents, String> {
    let input =
        std::fs::File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    sled_backup::read_backup(input, &mut |_, _, _| Ok(()))
}

/// The signing keys the restored store needs whose file in `keys_dir` is
/// missing or unusable, each with the reason.
pub fn missing_key_files(keys_dir: &Path, infos: &[SigningKeyInfo]) -> Vec<String> {
    let mut problems = Vec::new();
    for info in infos.iter().filter(|i| i.state != SigningKeyState::Retired) {
        let path = crate::signing::key_file_path(keys_dir, &info.kid);
        let Some(alg) = SigningAlgorithm::from_jose(&info.alg) else {
            problems.push(format!("{} (unknown algorithm {})", info.kid, info.alg));
            continue;
        };
        if !path.exists() {
            problems.push(format!("{} (no file {})", info.kid, path.display()));
            continue;
        }
        match crate::signing::read_key_file(&path, alg) {
            Ok(key) if key.kid() == info.kid => {}
            Ok(_) => problems.push(format!(
                "{} ({} holds another key)",
                info.kid,
                path.display()
            )),
            Err(e) => problems.push(format!("{} ({e})", info.kid)),
        }
    }
    problems
}

/// `latchkey restore FILE`.
pub async fn restore(args: RestoreArgs) -> Result<(), CliError> {
    let config = Config::resolve(&args.server).map_err(|e| CliError::new(e.to_string()))?;
    if let Some(url) = &config.database_url {
        return Err(CliError::new(format!(
            "latchkey restore restores the embedded store; {url} is PostgreSQL: restore a pg_dump with pg_restore instead"
        )));
    }
    if args.reserve_slots > MAX_RESERVE_SLOTS {
        return Err(CliError::new(format!(
            "--reserve-slots {} is more than {MAX_RESERVE_SLOTS}",
            args.reserve_slots
        )));
    }
    let data_dir = &config.data_dir;
    if sled_restore::holds_database(data_dir) {
        return Err(CliError::new(format!(
            "{} already holds a database; restore never overwrites one: move it away first (server stopped), then run restore again",
            data_dir.display()
        )));
    }
    let contents = validate(&args.file).map_err(|e| {
        CliError::new(format!(
            "{} is not a usable backup: {e}; nothing was restored",
            args.file.display()
        ))
    })?;
    let missing = missing_key_files(&config.keys_dir, &contents.signing_keys);
    if !missing.is_empty() {
        return Err(CliError::new(format!(
            "the keys directory {} lacks signing keys the backup needs: {}. Private keys are not in backups: restore the keys directory from its own backup first, then run restore again; nothing was restored",
            config.keys_dir.display(),
            missing.join(", ")
        )));
    }
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let restored = sled_restore::restore(&args.file, &contents, data_dir, args.reserve_slots, now)
        .map_err(|e| CliError::new(format!("{e}; nothing was restored")))?;
    println!(
        "restored {} keys and {} audit entries (backup of {}) into {}\nissuer: {}\nnew status epoch {}; status slots {}..{} reserved and {} unheld slots marked invalid, for tokens minted after the backup\nThe audit log verifies. Start the server with the same --keys-dir.",
        restored.contents.keys,
        restored.audit_entries,
        restored.contents.header.created_at,
        data_dir.display(),
        restored
            .contents
            .header
            .issuer
            .as_deref()
            .unwrap_or("(none recorded)"),
        restored.epoch,
        restored.reserved.start,
        restored.reserved.end,
        restored.unheld,
    );
    Ok(())
}
