//! The servers under test: the release `latchkey` binary as a child process
//! (stopped by `Drop`), and the static-bytes axum baseline on its own
//! runtime in this process.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use crate::load;

/// Issuer URL given to every spawned server and to `seed`, so a token minted
/// by `seed` is accepted by a server started later on any port.
pub const ISSUER: &str = "http://latchkey.loadgen.test";

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_addr() -> Result<SocketAddr, String> {
    let listener = StdListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// Parses `http://127.0.0.1:PORT[/…]` into the socket address; loopback only.
pub fn loopback_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs on 127.0.0.1 are supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = authority
        .replace("localhost", "127.0.0.1")
        .parse()
        .map_err(|_| format!("{url:?}: give the address as 127.0.0.1:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{url:?}: loopback addresses only (127.0.0.0/8, ::1)"
        ));
    }
    Ok(addr)
}

/// The path and query of a URL (`/` when absent).
pub fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].to_owned(),
        None => "/".to_owned(),
    }
}

/// A GET request with the headers the scenarios need.
pub fn get_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::get(path).header(header::HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())
}

/// One GET on a fresh connection, with a timeout.
pub async fn get_once(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(StatusCode, Bytes, Option<String>), String> {
    let request = get_request(addr, path, headers)?;
    request_once(addr, request, timeout).await
}

/// One request of any method (with a JSON body if given) on a fresh connection.
pub async fn call_once(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    headers: &[(String, String)],
    json_body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes, Option<String>), String> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = match json_body {
        Some(json) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(json.to_string())
        }
        None => Bytes::new(),
    };
    let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
    request_once(addr, request, timeout).await
}

async fn request_once(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes, Option<String>), String> {
    let path = request.uri().path().to_owned();
    tokio::time::timeout(timeout, async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body, content_type))
    })
    .await
    .map_err(|_| format!("{path} timed out"))?
}

/// Waits until `GET path` answers 200 (bounded by `limit`); returns when it did.
pub async fn wait_ok(
    addr: SocketAddr,
    path: &str,
    child: &mut Child,
    limit: Duration,
) -> Result<Instant, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok((status, _, _)) = get_once(addr, path, &[], Duration::from_millis(500)).await
            && status == StatusCode::OK
        {
            return Ok(Instant::now());
        }
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(format!("latchkey exited before answering: {exit}"));
        }
        if Instant::now() > deadline {
            return Err(format!("latchkey did not answer {path} within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Where a spawned server keeps its state.
pub struct ServerDirs {
    pub data_dir: PathBuf,
    pub keys_dir: PathBuf,
    pub token_file: PathBuf,
    pub log_file: PathBuf,
}

impl ServerDirs {
    pub fn under(root: &Path) -> ServerDirs {
        ServerDirs {
            data_dir: root.join("data"),
            keys_dir: root.join("keys"),
            token_file: root.join("bootstrap.token"),
            log_file: root.join("latchkey.log"),
        }
    }
}

/// How to start one `latchkey serve` child.
pub struct Launch {
    pub bin: PathBuf,
    /// Arguments after `serve --listen ADDR --issuer ISSUER`.
    pub args: Vec<std::ffi::OsString>,
    /// Environment for the child (secrets go here, not into its command line).
    pub envs: Vec<(String, String)>,
    /// Working directory, if not this process's.
    pub cwd: Option<PathBuf>,
    pub log_file: PathBuf,
    /// Polled until it answers 200.
    pub ready_path: &'static str,
    /// Where the server writes the bootstrap token, if it is given one.
    pub token_file: Option<PathBuf>,
}

/// A `latchkey serve` child process; SIGTERM (then SIGKILL) on drop.
pub struct LatchkeyChild {
    child: Child,
    pub addr: SocketAddr,
    /// From spawn until `/healthz` answered.
    pub startup: Duration,
    pub token: Option<String>,
    _temp: Option<tempfile::TempDir>,
}

impl LatchkeyChild {
    /// Starts `bin serve` on a free loopback port over `dirs`, or over a new
    /// temporary directory when `dirs` is `None`.
    pub async fn start(bin: &Path, dirs: Option<ServerDirs>) -> Result<LatchkeyChild, String> {
        let (temp, dirs) = match dirs {
            Some(d) => (None, d),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("loadgen-latchkey-")
                    .tempdir()
                    .map_err(|e| format!("temp dir: {e}"))?;
                let dirs = ServerDirs::under(temp.path());
                (Some(temp), dirs)
            }
        };
        let launch = Launch {
            bin: bin.to_owned(),
            args: vec![
                "--data-dir".into(),
                dirs.data_dir.clone().into(),
                "--keys-dir".into(),
                dirs.keys_dir.clone().into(),
                "--bootstrap-token-file".into(),
                dirs.token_file.clone().into(),
            ],
            envs: Vec::new(),
            cwd: None,
            log_file: dirs.log_file.clone(),
            ready_path: "/healthz",
            token_file: Some(dirs.token_file.clone()),
        };
        let mut child = LatchkeyChild::launch(&launch).await?;
        child._temp = temp;
        Ok(child)
    }

    /// Runs `bin serve --listen <free port> --issuer ISSUER <args>`, output
    /// to the log file, until `ready_path` answers 200 (bounded); then reads
    /// the bootstrap token if the server wrote one.
    pub async fn launch(launch: &Launch) -> Result<LatchkeyChild, String> {
        let addr = free_addr()?;
        let log = std::fs::File::create(&launch.log_file)
            .map_err(|e| format!("{}: {e}", launch.log_file.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let spawned_at = Instant::now();
        let mut command = Command::new(&launch.bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--issuer")
            .arg(ISSUER)
            .args(&launch.args)
            // The store is what the scenario says, whatever this shell exports.
            .env_remove("LATCHKEY_DATABASE_URL")
            .env_remove("LATCHKEY_KEY_ENCRYPTION_KEY_FILE")
            .env_remove("LATCHKEY_CONFIG")
            .envs(launch.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some(dir) = &launch.cwd {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.bin.display()))?;
        let limit = Duration::from_secs(300);
        let ready = match wait_ok(addr, launch.ready_path, &mut child, limit).await {
            Ok(t) => t,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&launch.log_file).unwrap_or_default();
                return Err(format!("{e}\n--- latchkey log ---\n{log}"));
            }
        };
        let token = launch
            .token_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        Ok(LatchkeyChild {
            child,
            addr,
            startup: ready.duration_since(spawned_at),
            token,
            _temp: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait up to 30 s for the final flush, then SIGKILL.
    pub fn stop(&mut self) -> Result<Duration, String> {
        if let Ok(Some(_)) = self.child.try_wait() {
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        // `kill` the command: sending a signal needs no `unsafe` this way.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err("latchkey did not stop within 30 s of SIGTERM; killed".into())
    }
}

impl Drop for LatchkeyChild {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("loadgen: {e}");
        }
    }
}

/// Name of the baseline server's threads (15 characters: what `comm` keeps).
pub const BASELINE_THREAD: &str = "static-baseline";

/// The baseline: an axum handler that returns the same bytes with the same
/// content type, on its own multi-threaded runtime (as many workers as
/// cores, like `latchkey serve`), without middleware.
pub struct StaticServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticServer {
    pub fn start(path: &str, body: Bytes, content_type: &str) -> Result<StaticServer, String> {
        let listener = StdListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let content_type = HeaderValue::from_str(content_type).map_err(|e| e.to_string())?;
        let route = path.split('?').next().unwrap_or("/").to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(BASELINE_THREAD)
            .build()
            .map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    &route,
                    axum::routing::get(move || {
                        let body = body.clone();
                        let content_type = content_type.clone();
                        async move { ([(header::CONTENT_TYPE, content_type)], body) }
                    }),
                );
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("loadgen: static baseline: {e}");
                        return;
                    }
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(StaticServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Parses `Name: value` header arguments.
pub fn parse_headers(args: &[String]) -> Result<Vec<(String, String)>, String> {
    args.iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("header {h:?}: use \"Name: value\""))
        })
        .collect()
}

/// A request maker for repeated GETs of one path.
pub fn get_maker(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<load::MakeRequest, String> {
    // Build once to validate; then per request.
    get_request(addr, path, headers)?;
    let path = path.to_owned();
    let headers = headers.to_vec();
    Ok(std::sync::Arc::new(move |_| {
        get_request(addr, &path, &headers).unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }))
}
