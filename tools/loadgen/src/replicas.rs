//! PostgreSQL replicas under test: N `latchkey serve` children on free
//! 127.0.0.1 ports sharing one database, as `docs/operations` runs them
//! behind a balancer.
//!
//! The first replica starts alone on the (empty) database, initialises it
//! and writes the bootstrap admin token; once its `/readyz` answers 200 the
//! others start. All get the same `--issuer` (tokens carry `iss`) and one
//! key-encryption key, generated with `latchkey kek generate` into a
//! temporary directory that also holds the logs. The database URL (it
//! holds a password) reaches the children through their environment, never
//! their command line, and loadgen never prints it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::servers::{LatchkeyChild, Launch};

/// The environment variable `latchkey serve` reads the database URL from.
pub const DATABASE_URL_ENV: &str = "LATCHKEY_DATABASE_URL";

/// Most replicas one scenario starts.
pub const MAX_REPLICAS: usize = 8;

/// Running replicas; stopped (SIGTERM) on drop, then the scratch directory goes.
pub struct Replicas {
    /// Declared before `_temp`, so they stop before their logs are removed.
    pub children: Vec<LatchkeyChild>,
    /// The bootstrap admin's token, from the first replica.
    pub token: String,
    _temp: tempfile::TempDir,
}

impl Replicas {
    /// Starts `count` replicas of `bin` on the database at `database_url`,
    /// which must be empty (a fresh database for every run: the bootstrap
    /// token is only written when a replica initialises it).
    pub async fn start(bin: &Path, database_url: &str, count: usize) -> Result<Replicas, String> {
        if !(1..=MAX_REPLICAS).contains(&count) {
            return Err(format!(
                "--replicas {count}: give 1 to {MAX_REPLICAS} replicas"
            ));
        }
        let url = database_url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "--database-url: give a postgres://USER:PASSWORD@HOST:PORT/DATABASE URL".into(),
            );
        }
        let temp = tempfile::Builder::new()
            .prefix("loadgen-replicas-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let kek = temp.path().join("kek");
        generate_kek(bin, &kek)?;
        let token_file = temp.path().join("bootstrap.token");
        let mut children = Vec::with_capacity(count);
        for i in 0..count {
            let mut args: Vec<std::ffi::OsString> =
                vec!["--key-encryption-key-file".into(), kek.clone().into()];
            // Only the first replica initialises the database and writes the token.
            if i == 0 {
                args.push("--bootstrap-token-file".into());
                args.push(token_file.clone().into());
            }
            let launch = Launch {
                bin: bin.to_owned(),
                args,
                envs: vec![(DATABASE_URL_ENV.to_owned(), url.to_owned())],
                // The embedded store's default directories would land here; it is not used.
                cwd: Some(temp.path().to_owned()),
                log_file: temp.path().join(format!("replica-{i}.log")),
                ready_path: "/readyz",
                token_file: (i == 0).then(|| token_file.clone()),
            };
            let child = LatchkeyChild::launch(&launch).await?;
            eprintln!(
                "loadgen: replica {i} (pid {}) on {} ready in {:.0} ms",
                child.pid(),
                child.addr,
                child.startup.as_secs_f64() * 1000.0
            );
            children.push(child);
        }
        let token = children
            .first()
            .and_then(|c| c.token.clone())
            .ok_or("the first replica wrote no bootstrap token: the database was initialised before; give loadgen a fresh, empty database")?;
        Ok(Replicas {
            children,
            token,
            _temp: temp,
        })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.children.iter().map(|c| c.addr).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(LatchkeyChild::pid).collect()
    }
}

/// `latchkey kek generate --out FILE`; its output (which names the file,
/// not the key) is discarded.
fn generate_kek(bin: &Path, out: &Path) -> Result<(), String> {
    let output = Command::new(bin)
        .args(["kek", "generate", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} kek generate: {e}", bin.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} kek generate failed ({}): {}",
            bin.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
