//! Throwaway PostgreSQL clusters for tests: `initdb` in a temporary
//! directory, a server on a free port of 127.0.0.1 with password
//! (SCRAM-SHA-256) authentication, and one fresh database per test.
//!
//! [`shared()`] is the cluster most tests use, one per test process;
//! [`PgCluster::start`] makes a private one for tests that stop and restart
//! the database. A watchdog shell started beside each cluster stops it
//! (`pg_ctl stop -m immediate`) and removes its directory once the test
//! process is gone, so a crashed or killed test run leaves no server behind
//! (the shared cluster, a static, is never dropped and relies on it).
//!
//! PostgreSQL's server programs refuse to run as root; when the tests do,
//! the cluster runs as the system user `latchkey-test` (created when
//! missing, `nobody` when it cannot be). A machine without PostgreSQL gets it
//! from apt-get when the tests run as root; otherwise the first test that
//! needs it fails saying what to install. Nothing is ever skipped.
//!
//! Self-contained (std, tempfile, tokio-postgres in its own test) so other
//! test binaries can include it with
//! `#[path = "../integration/pg_cluster.rs"] mod pg_cluster;`.

// Each test binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The role that owns every test database; neither superuser nor able to
/// create databases, as an installation's application role would be.
pub const APP_ROLE: &str = "latchkey";

/// How long the watchdog keeps a cluster alive at most: 5400 polls of 0.5 s.
const WATCHDOG_POLLS: u32 = 5400;

/// The unprivileged user clusters run as when the tests run as root.
const TEST_USER: &str = "latchkey-test";

static INSTALLING: Mutex<()> = Mutex::new(());

/// The cluster shared by every test of this process, started on first use.
pub fn shared() -> &'static PgCluster {
    static SHARED: OnceLock<PgCluster> = OnceLock::new();
    SHARED.get_or_init(PgCluster::start)
}

/// An unprivileged user and its ids.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// One running (or stopped) PostgreSQL cluster in a temporary directory.
pub struct PgCluster {
    /// Holds `data/`, `sock/` and `postgres.log`; removed on drop.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Password of both the superuser `postgres` and [`APP_ROLE`].
    password: String,
    /// The user the server programs run as, when not the current one.
    run_as: Option<RunAs>,
    databases: AtomicU64,
    watchdog: Mutex<Option<Child>>,
}

impl std::fmt::Debug for PgCluster {
    // The password stays out of test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("run_as", &self.run_as)
            .finish_non_exhaustive()
    }
}

impl PgCluster {
    /// Initialises and starts a new cluster; panics saying why when it cannot.
    pub fn start() -> PgCluster {
        Self::start_watching(std::process::id(), WATCHDOG_POLLS)
    }

    /// [`PgCluster::start`] whose watchdog waits for process `watched`, at
    /// most `polls` half-seconds.
    fn start_watching(watched: u32, polls: u32) -> PgCluster {
        let bin = postgres_bin();
        let run_as = running_as_root().then(unprivileged_user);
        let dir = tempfile::Builder::new()
            .prefix("latchkey-pg-")
            .tempdir()
            .expect("create a temporary directory for PostgreSQL");
        let mut cluster = PgCluster {
            password: random_hex(16),
            port: 0,
            bin,
            run_as,
            databases: AtomicU64::new(0),
            watchdog: Mutex::new(None),
            dir,
        };
        let sock = cluster.dir.path().join("sock");
        std::fs::create_dir(&sock).expect("create the socket directory");
        cluster.give_to_user(cluster.dir.path());
        cluster.give_to_user(&sock);
        cluster.initdb();
        cluster.spawn_watchdog(watched, polls);
        // The port is free when picked but may be taken before the server
        // binds it; a few tries with fresh ports make that harmless.
        for attempt in 1..=3 {
            cluster.port = free_port();
            cluster.write_settings();
            match cluster.pg_ctl_start() {
                Ok(()) => break,
                Err(log) if attempt == 3 => panic!("PostgreSQL did not start:\n{log}"),
                Err(_) => {}
            }
        }
        cluster.psql(
            "postgres",
            &format!(
                "CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{}'",
                cluster.password
            ),
        );
        cluster
    }

    /// A new, empty database owned by [`APP_ROLE`]; its URL,
    /// `postgres://latchkey:PASSWORD@127.0.0.1:PORT/NAME`.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("latchkey_test_{n}");
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {APP_ROLE}"),
        );
        format!(
            "postgres://{APP_ROLE}:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// The superuser's URL for `database`, for tests that inspect or
    /// disturb what the application does (read raw rows, end sessions).
    pub fn superuser_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Runs `sql` as the superuser in `database` with psql; its unaligned,
    /// tuples-only output. Panics with psql's message when it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = self
            .client_command("psql")
            .args(["-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql failed in {database}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server with a fast shutdown (sessions are ended, nothing
    /// committed is lost), waiting until it is down.
    pub fn stop(&self) {
        let output = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60", "-s", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            output.status.success(),
            "pg_ctl stop failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// Starts the stopped server again, same port and data.
    pub fn start_again(&self) {
        if let Err(log) = self.pg_ctl_start() {
            panic!("PostgreSQL did not start again:\n{log}");
        }
    }

    /// What the server wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn initdb(&self) {
        let pwfile = self.dir.path().join("pwfile");
        std::fs::write(&pwfile, &self.password).expect("write the initdb password file");
        self.give_to_user(&pwfile);
        let run = |locale: &[&str]| {
            self.server_command("initdb")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-U", "postgres", "-E", "UTF8", "--no-sync"])
                .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .args(locale)
                .output()
                .expect("run initdb")
        };
        // C.UTF-8 where the system has it (case mapping beyond ASCII), else C.
        let mut output = run(&["--locale=C.UTF-8"]);
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(self.data_dir());
            output = run(&["--no-locale"]);
        }
        let _ = std::fs::remove_file(&pwfile);
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The settings the tests rely on, included from `postgresql.conf`.
    fn write_settings(&self) {
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = on\n\
             shared_buffers = 32MB\n\
             max_connections = 200\n",
            self.port,
            self.dir.path().join("sock").display()
        );
        let file = self.data_dir().join("latchkey-test.conf");
        std::fs::write(&file, settings).expect("write the test settings");
        self.give_to_user(&file);
        let conf = self.data_dir().join("postgresql.conf");
        let text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        let include = "include = 'latchkey-test.conf'\n";
        if !text.contains(include) {
            std::fs::write(&conf, format!("{text}\n{include}")).expect("write postgresql.conf");
        }
    }

    /// `pg_ctl start`, waiting until connections are accepted; the log on failure.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let output = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "-s", "start"])
            .output()
            .expect("run pg_ctl start");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log()
            ))
        }
    }

    /// A shell, in its own process group so a ctrl-c of the test run does
    /// not reach it, that polls the test process every 0.5 s and, once it
    /// is gone (or after 45 minutes), stops the cluster and removes its
    /// directory.
    fn spawn_watchdog(&self, watched: u32, polls: u32) {
        const SCRIPT: &str = r#"
i=0
while [ "$i" -lt "$2" ] && kill -0 "$1" 2>/dev/null; do
  sleep 0.5
  i=$((i + 1))
done
if [ -n "$6" ]; then
  runuser -u "$6" -- "$3" -D "$4" -m immediate -w -t 30 -s stop
else
  "$3" -D "$4" -m immediate -w -t 30 -s stop
fi
rm -rf "$5"
"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("latchkey-pg-watchdog")
            .arg(watched.to_string())
            .arg(polls.to_string())
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data_dir())
            .arg(self.dir.path())
            .arg(self.run_as.as_ref().map_or("", |u| u.name.as_str()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the PostgreSQL watchdog");
        *self.watchdog.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
    }

    /// A server program (initdb, pg_ctl), run as the unprivileged user
    /// when the tests run as root.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &user.name, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        clean_env(&mut command);
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    /// A client program (psql) with the superuser's password.
    fn client_command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        clean_env(&mut command);
        command
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        command
    }

    /// Hands `path` to the unprivileged user, if there is one.
    fn give_to_user(&self, path: &Path) {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {} to {}: {e}", path.display(), user.name));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Best effort: a failed stop must not turn into a panic in drop.
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60", "-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let watchdog = self.watchdog.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = watchdog.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// No `PG*` variable of the caller's environment (PGDATA, PGHOST, …)
/// reaches the programs.
fn clean_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `latchkey-test`, created as a system user when missing; `nobody` when
/// it cannot be created.
fn unprivileged_user() -> RunAs {
    let id = |flag: &str, user: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, user])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let lookup = |user: &str| {
        Some(RunAs {
            name: user.to_owned(),
            uid: id("-u", user)?,
            gid: id("-g", user)?,
        })
    };
    let _guard = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    if lookup(TEST_USER).is_none() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(TEST_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    lookup(TEST_USER)
        .or_else(|| lookup("nobody"))
        .expect("neither the user latchkey-test nor nobody exists to run PostgreSQL as")
}

/// The directory of initdb, pg_ctl, postgres and psql: the highest version
/// under `/usr/lib/postgresql`, else initdb's directory on PATH; installed
/// with apt-get when missing and running as root.
fn postgres_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let _guard = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bin) = find_postgres_bin() {
            return bin;
        }
        assert!(
            running_as_root(),
            "PostgreSQL is not installed: run `apt-get install postgresql` (Debian) or put initdb on PATH"
        );
        for args in [&["update", "-qq"][..], &["install", "-y", "-qq", "postgresql"]] {
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("cannot run apt-get to install postgresql: {e}"));
            assert!(
                status.success(),
                "apt-get {args:?} failed: PostgreSQL is not installed: run `apt-get install postgresql` (Debian) or put initdb on PATH"
            );
        }
        find_postgres_bin().expect("postgresql was installed, but initdb is still not found")
    })
    .clone()
}

fn find_postgres_bin() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    let versioned = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    versioned.or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).find(|dir| complete(dir))
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{PgCluster, shared};

    async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn select_one(url: &str) -> i32 {
        let client = connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", redact(url)));
        client
            .query_one("SELECT 1", &[])
            .await
            .expect("SELECT 1")
            .get(0)
    }

    /// `postgres://USER:`, the password and `@HOST…` of a database URL.
    fn split_password(url: &str) -> (&str, &str, &str) {
        let user_start = url.find("://").expect("a URL") + 3;
        let colon = user_start + url[user_start..].find(':').expect("user:password");
        let at = url.find('@').expect("@host");
        (&url[..=colon], &url[colon + 1..at], &url[at..])
    }

    /// The URL without its password, for failure messages.
    fn redact(url: &str) -> String {
        let (user, _, host) = split_password(url);
        format!("{user}***{host}")
    }

    fn with_password(url: &str, password: &str) -> String {
        let (user, _, host) = split_password(url);
        format!("{user}{password}{host}")
    }

    #[tokio::test]
    async fn a_cluster_serves_separate_databases_and_survives_a_restart() {
        let cluster = PgCluster::start();
        let first = cluster.create_database();
        let second = cluster.create_database();
        assert_ne!(first, second);
        let port = cluster.port();
        assert!(first.starts_with("postgres://latchkey:"));
        assert!(
            first.contains(&format!("@127.0.0.1:{port}/")),
            "{}",
            redact(&first)
        );
        assert_eq!(select_one(&first).await, 1);
        assert_eq!(select_one(&second).await, 1);

        // What the tests rely on: loopback only, durable writes, password auth.
        assert_eq!(
            cluster.psql("postgres", "SHOW listen_addresses"),
            "127.0.0.1"
        );
        assert_eq!(cluster.psql("postgres", "SHOW fsync"), "on");
        let stored = cluster.psql(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'latchkey'",
        );
        assert!(
            stored.starts_with("SCRAM-SHA-256$"),
            "password stored as SCRAM"
        );
        let Err(wrong) = connect(&with_password(&first, "not-the-password")).await else {
            panic!("a wrong password is accepted");
        };
        assert_eq!(
            wrong.code(),
            Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
            "{wrong}"
        );

        // The application role owns its database but is no superuser.
        let client = connect(&first).await.unwrap();
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!superuser);
        client
            .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')")
            .await
            .unwrap();
        let other = connect(&second).await.unwrap();
        assert!(
            other.query("SELECT v FROM kept", &[]).await.is_err(),
            "a table of one database is not in another"
        );
        drop((client, other));

        cluster.stop();
        assert!(
            connect(&first).await.is_err(),
            "a stopped cluster refuses connections"
        );
        cluster.start_again();
        assert_eq!(cluster.port(), port);
        let client = connect(&first).await.unwrap();
        let kept: String = client
            .query_one("SELECT v FROM kept", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, "before");
    }

    #[tokio::test]
    async fn the_shared_cluster_hands_out_fresh_databases() {
        let a = shared().create_database();
        let b = shared().create_database();
        assert_ne!(a, b);
        assert_eq!(select_one(&a).await, 1);
        assert_eq!(select_one(&b).await, 1);
        let (_, password, _) = split_password(&a);
        assert_eq!(password.len(), 32, "a random password");
        assert!(
            !format!("{:?}", shared()).contains(password),
            "Debug shows no password"
        );
    }

    /// Waits (bounded) until nothing listens on `port` and `dir` is gone.
    fn wait_gone(port: u16, dir: &std::path::Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if !listening && !dir.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    #[test]
    fn the_watchdog_stops_a_cluster_whose_test_process_is_gone() {
        let mut stand_in = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("start sleep");
        let cluster = PgCluster::start_watching(stand_in.id(), super::WATCHDOG_POLLS);
        let port = cluster.port();
        let dir = cluster.dir.path().to_owned();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        stand_in.kill().unwrap();
        stand_in.wait().unwrap();
        assert!(
            wait_gone(port, &dir),
            "the cluster outlived its process:\n{}",
            cluster.log()
        );
    }

    #[test]
    fn the_watchdog_stops_a_cluster_after_its_time_limit() {
        // Watching this very process, alive throughout: only the cap ends it.
        let cluster = PgCluster::start_watching(std::process::id(), 20);
        let port = cluster.port();
        let dir = cluster.dir.path().to_owned();
        assert!(
            wait_gone(port, &dir),
            "the cluster outlived the watchdog's limit:\n{}",
            cluster.log()
        );
    }
}
