//! A `latchkey serve` child process on a free port of 127.0.0.1: started
//! with the caller's arguments, its stderr captured to a file, ready once
//! `GET /healthz` answers 200, killed when dropped. The CLI, crash and
//! PostgreSQL replica tests all drive the real binary through it.
//!
//! Self-contained (std, tempfile, tokio) so other test binaries can include
//! it with `#[path = "../integration/replica.rs"] mod replica;`.

// Each test binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long [`Replica::spawn`] waits for `/healthz`.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// One `latchkey serve` process (running or not) and how it was started.
#[derive(Debug)]
pub struct Replica {
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    addr: SocketAddr,
    child: Option<Child>,
    /// Holds `stderr.log`, appended to by every start.
    logs: tempfile::TempDir,
}

impl Replica {
    /// Starts `bin serve --listen 127.0.0.1:PORT ARGS…` with `envs` (and
    /// no inherited `LATCHKEY_*` variable; `LATCHKEY_LOG=warn` unless
    /// given) and waits until it is healthy. Panics with its stderr when it
    /// exits first or is not healthy within [`READY_WITHIN`].
    pub async fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Replica {
        let mut replica = Self::launch(bin, args, envs);
        replica.wait_healthy().await;
        replica
    }

    /// [`Replica::spawn`] without waiting: for a start that should fail.
    pub fn launch(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Replica {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a free port on 127.0.0.1")
            .port();
        let mut replica = Replica {
            bin: bin.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            logs: tempfile::tempdir().expect("create a directory for the replica's stderr"),
        };
        replica.start_process();
        replica
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process (every start of it) wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// SIGKILL: no shutdown hook, no final flush. Waits until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then up to 10 s for a graceful exit, then SIGKILL; the exit
    /// status when it exited by itself.
    pub async fn terminate(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = self.wait_exit(Duration::from_secs(10)).await;
        self.kill9();
        status
    }

    /// Waits (bounded) for the process to exit by itself; its status, or
    /// `None` when it still runs (or was never running).
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("poll the replica") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills the process if it runs and starts it again with the same
    /// port, arguments and environment; waits until it is healthy.
    pub async fn restart(&mut self) {
        self.kill9();
        self.start_process();
        self.wait_healthy().await;
    }

    /// Waits until `GET /healthz` answers 200; panics with stderr when the
    /// process exits first or [`READY_WITHIN`] passes.
    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("the replica is not running");
            if let Some(status) = child.try_wait().expect("poll the replica") {
                self.child = None;
                panic!("serve exited with {status}:\n{}", self.stderr_text());
            }
            if http_status(self.addr, "/healthz").await == Some(200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "serve was not healthy within {READY_WITHIN:?}:\n{}",
            self.stderr_text()
        );
    }

    /// Waits (up to `limit`) until stderr contains `needle`; whether it did.
    pub async fn stderr_shows(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.stderr_text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr_path(&self) -> PathBuf {
        self.logs.path().join("stderr.log")
    }

    fn start_process(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open the replica's stderr file");
        let mut command = Command::new(&self.bin);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LATCHKEY_") {
                command.env_remove(name);
            }
        }
        command
            .env("LATCHKEY_LOG", "warn")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen", &self.addr.to_string()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.child = Some(child);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The status code of `GET path` on `addr` over plain HTTP/1.1, or `None`
/// when nothing (or nothing HTTP) answers within 2 s.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let text = std::str::from_utf8(&head).ok()?;
        text.strip_prefix("HTTP/1.1 ")?.trim().parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{Replica, http_status};

    fn latchkey() -> &'static Path {
        Path::new(env!("CARGO_BIN_EXE_latchkey"))
    }

    #[tokio::test]
    async fn a_replica_is_healthy_until_killed_and_comes_back_on_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data").display().to_string();
        let keys = dir.path().join("keys").display().to_string();
        let token = dir.path().join("token").display().to_string();
        let mut replica = Replica::spawn(
            latchkey(),
            &[
                "--data-dir",
                &data,
                "--keys-dir",
                &keys,
                "--bootstrap-token-file",
                &token,
            ],
            &[("LATCHKEY_LOG", "info")],
        )
        .await;
        let addr = replica.addr();
        assert_eq!(replica.url(), format!("http://{addr}"));
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_eq!(http_status(addr, "/healthz").await, Some(200));
        assert!(
            !replica.stderr_text().is_empty(),
            "info logs reach the file"
        );

        replica.kill9();
        assert_eq!(replica.pid(), None);
        assert_eq!(http_status(addr, "/healthz").await, None);

        replica.restart().await;
        assert_eq!(replica.addr(), addr);
        assert_eq!(http_status(addr, "/healthz").await, Some(200));
        let status = replica.terminate().await.expect("exits on SIGTERM");
        assert!(status.success(), "graceful exit: {status}");
    }

    #[tokio::test]
    async fn a_replica_that_cannot_start_reports_why() {
        let mut replica = Replica::launch(latchkey(), &["--no-such-flag"], &[]);
        let status = replica
            .wait_exit(Duration::from_secs(30))
            .await
            .expect("serve exits on an unknown flag");
        assert!(!status.success());
        assert!(
            replica.stderr_text().contains("--no-such-flag"),
            "stderr names the flag: {}",
            replica.stderr_text()
        );
    }
}
