//! Real reverse proxies in front of a service, with the gate behind them:
//! Debian's nginx (`auth_request`) and Caddy (`forward_auth`), each on
//! loopback with its own configuration in a temporary directory (the ones
//! `docs/gateways.md` gives), an axum upstream that echoes the headers it
//! receives, and a real issuer.
//!
//! When nginx (with the headers-more module) or Caddy is missing, the test
//! installs it with apt-get if it runs as root, and otherwise fails naming
//! the packages to install. It never skips.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, Method, Uri};
use latchkey::gate::{Gate, Policy};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::harness::{Child, Issuer, WAIT, accounts_pattern, eventually, foreign, free_port, gate};

/// The headers-more module, for clearing every client-sent `X-Latchkey-*`.
const HEADERS_MORE: &str = "/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so";

static INSTALLING: Mutex<()> = Mutex::new(());

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The program `name`, with `files` present; installed with apt-get from
/// `packages` when missing and running as root, else a failure that says
/// what to install.
pub fn require(name: &str, files: &[&str], packages: &[&str]) -> PathBuf {
    let _guard = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    let present = || find_program(name).filter(|_| files.iter().all(|f| Path::new(f).exists()));
    if let Some(program) = present() {
        return program;
    }
    let wanted = packages.join(" ");
    assert!(
        running_as_root(),
        "this test runs {name} on loopback: install it with `apt-get install {wanted}` (Debian), or run the tests as root to let them install it"
    );
    let apt = |args: &[&str]| {
        let status = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap_or_else(|e| panic!("cannot run apt-get to install {wanted}: {e}"));
        assert!(
            status.success(),
            "apt-get {args:?} failed; install {wanted} by hand"
        );
    };
    apt(&["update", "-qq"]);
    let mut install = vec!["install", "-y", "-qq"];
    install.extend_from_slice(packages);
    apt(&install);
    present().unwrap_or_else(|| panic!("{wanted} installed, but {name} is still not found"))
}

/// An upstream that answers every request with what it received.
async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
    let mut seen = serde_json::Map::new();
    for (name, value) in &headers {
        let list = seen
            .entry(name.as_str().to_owned())
            .or_insert_with(|| json!([]));
        list.as_array_mut()
            .unwrap()
            .push(json!(value.to_str().unwrap_or("<not text>")));
    }
    Json(json!({"method": method.as_str(), "uri": uri.to_string(), "headers": seen}))
}

/// A task serving `router` on a fresh loopback port.
struct Served {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(router: Router) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Served { port, task }
}

/// The nginx configuration of docs/gateways.md, for a non-system
/// instance: no daemon, no master process, everything under `dir`.
pub fn nginx_conf(dir: &Path, port: u16, gate_port: u16, app_port: u16) -> String {
    let dir = dir.display();
    format!(
        r#"load_module {HEADERS_MORE};
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream latchkey_gate {{
        server 127.0.0.1:{gate_port};
        keepalive 32;
    }}
    upstream app {{
        server 127.0.0.1:{app_port};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port};

        # No client may send an identity of its own to the upstream.
        more_clear_input_headers 'X-Latchkey-*';

        location = /_latchkey_check {{
            internal;
            proxy_pass http://latchkey_gate/check;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-Method "";
            proxy_set_header X-Forwarded-Uri "";
        }}

        # auth_request turns any status but 2xx, 401 and 403 into a 500:
        # give back the gate's 400 (ambiguous URI) and 503 (stale data).
        location @latchkey_error {{
            if ($latchkey_status = 400) {{
                return 400;
            }}
            add_header Retry-After 5 always;
            return 503;
        }}

        location / {{
            auth_request /_latchkey_check;
            auth_request_set $latchkey_status $upstream_status;
            auth_request_set $latchkey_key_id $upstream_http_x_latchkey_key_id;
            auth_request_set $latchkey_key_name $upstream_http_x_latchkey_key_name;
            auth_request_set $latchkey_roles $upstream_http_x_latchkey_roles;
            auth_request_set $latchkey_accounts $upstream_http_x_latchkey_accounts;
            error_page 500 = @latchkey_error;

            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Latchkey-Key-Id $latchkey_key_id;
            proxy_set_header X-Latchkey-Key-Name $latchkey_key_name;
            proxy_set_header X-Latchkey-Roles $latchkey_roles;
            proxy_set_header X-Latchkey-Accounts $latchkey_accounts;
        }}
    }}
}}
"#
    )
}

/// The Caddyfile of docs/gateways.md, with no admin endpoint, no
/// automatic HTTPS and its storage under `dir`.
pub fn caddyfile(dir: &Path, port: u16, gate_port: u16, app_port: u16) -> String {
    let dir = dir.display();
    format!(
        r#"{{
	admin off
	auto_https off
	storage file_system {dir}/caddy-data
}}

http://127.0.0.1:{port} {{
	route {{
		# No client may send an identity of its own to the upstream.
		request_header -X-Latchkey-*
		forward_auth 127.0.0.1:{gate_port} {{
			uri /check
			header_up -X-Original-Method
			header_up -X-Original-URI
			copy_headers X-Latchkey-Key-Id X-Latchkey-Key-Name X-Latchkey-Roles X-Latchkey-Accounts
		}}
		reverse_proxy 127.0.0.1:{app_port}
	}}
}}
"#
    )
}

/// Waits (bounded) until `port` accepts connections, failing with `log`
/// if the process exits or never listens.
pub async fn wait_listening(child: &mut Child, port: u16, log: &Path, what: &str) {
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "{what} exited ({status}) before listening: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < WAIT,
            "{what} never listened on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything the scenario needs: the issuer, the gate and upstream it
/// serves, and the proxy's base URL.
struct Stack {
    issuer: Issuer,
    gate: Arc<Gate>,
    _gate_server: Served,
    _upstream: Served,
    base: String,
    http: reqwest::Client,
}

const STALENESS: Duration = Duration::from_secs(3);

async fn stack_parts() -> (Issuer, Arc<Gate>, Served, Served) {
    let issuer = Issuer::start().await;
    let gate = gate(&issuer, accounts_pattern(), Policy::default(), STALENESS).await;
    let gate_server = serve(latchkey::gate::router(Arc::clone(&gate))).await;
    let upstream = serve(Router::new().fallback(echo)).await;
    (issuer, gate, gate_server, upstream)
}

impl Stack {
    async fn get(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, HeaderMap, String) {
        let mut request = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap_or_default())
    }

    /// A GET whose request target is sent exactly as given; the status.
    async fn raw_get(&self, target: &str, token: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("the proxy answered in time")
            .unwrap();
        let text = String::from_utf8_lossy(&response);
        let status_line = text.lines().next().unwrap_or_default();
        status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {text}"))
    }

    async fn status(&self, method: &str, path: &str, token: &str) -> u16 {
        let auth = format!("Bearer {token}");
        self.get(method, path, &[("authorization", &auth)]).await.0
    }

    /// The §10 scenario through the proxy, `name` in messages.
    async fn exercise(&self, name: &str) {
        let issuer = &self.issuer;
        let cav = issuer
            .create(
                &format!("{name}-cav"),
                &["cloud_account_viewer"],
                Some(&["acct-1", "acct-2"]),
            )
            .await;
        let viewer = issuer
            .create(&format!("{name}-viewer"), &["global_viewer"], None)
            .await;

        // No key: 401 with the gate's challenge; the upstream is not reached.
        let (status, headers, _) = self.get("GET", "/accounts/acct-1/data", &[]).await;
        assert_eq!(status, 401, "{name}: no key");
        assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer", "{name}");

        // A valid key: the upstream answers and sees the identity, and
        // only the gate's, whatever the client sent.
        let auth = format!("Bearer {}", cav.token);
        let (status, _, body) = self
            .get(
                "GET",
                "/accounts/acct-1/data?page=2",
                &[
                    ("authorization", &auth),
                    ("X-Latchkey-Key-Id", "forged-id"),
                    ("x-latchkey-roles", "global_admin"),
                    ("X-LATCHKEY-ACCOUNTS", "*"),
                    ("X-Latchkey-Key-Name", "forged-name"),
                    ("X-Latchkey-Extra", "forged"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["uri"], "/accounts/acct-1/data?page=2", "{name}");
        let headers = &seen["headers"];
        assert_eq!(
            headers["x-latchkey-key-id"],
            json!([cav.id]),
            "{name}: {seen}"
        );
        assert_eq!(
            headers["x-latchkey-key-name"],
            json!([format!("{name}-cav")]),
            "{name}"
        );
        assert_eq!(
            headers["x-latchkey-roles"],
            json!(["cloud_account_viewer"]),
            "{name}"
        );
        assert_eq!(
            headers["x-latchkey-accounts"],
            json!(["acct-1,acct-2"]),
            "{name}"
        );
        let latchkey_headers: Vec<&String> = headers
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("x-latchkey-"))
            .collect();
        assert_eq!(latchkey_headers.len(), 4, "{name}: {latchkey_headers:?}");
        assert!(
            !body.contains("forged"),
            "{name}: a forged header reached the upstream: {body}"
        );

        // Policy refusals.
        assert_eq!(
            self.status("POST", "/accounts/acct-1/data", &viewer.token)
                .await,
            403,
            "{name}: viewer POST"
        );
        assert_eq!(
            self.status("GET", "/accounts/acct-9/data", &cav.token)
                .await,
            403,
            "{name}: other account"
        );
        assert_eq!(
            self.status("GET", "/accounts/acct-1/data", &viewer.token)
                .await,
            200,
            "{name}"
        );

        // Refused keys.
        let suspended = issuer
            .create(&format!("{name}-suspended"), &["global_viewer"], None)
            .await;
        issuer.suspend(&suspended.id).await;
        let expired = issuer.expired(&viewer.token);
        let forged = foreign(&viewer.token);
        assert!(
            eventually(WAIT, || async {
                self.status("GET", "/accounts/acct-1/data", &suspended.token)
                    .await
                    == 401
            })
            .await,
            "{name}: suspended key"
        );
        assert_eq!(
            self.status("GET", "/accounts/acct-1/data", &expired).await,
            401,
            "{name}: expired"
        );
        assert_eq!(
            self.status("GET", "/accounts/acct-1/data", &forged).await,
            401,
            "{name}: foreign"
        );

        // Ambiguous URIs never reach the upstream (the proxy or the gate
        // answers 400). Sent raw: an HTTP client would resolve `%2e%2e`.
        for path in [
            "/accounts/acct-1/..%2Facct-9/data",
            "/accounts/acct-1/%2e%2e/acct-9/data",
            "/accounts/acct-1/..;/acct-9/data",
            "/accounts/acct-1/../acct-9/data",
        ] {
            let status = self.raw_get(path, &cav.token).await;
            assert_eq!(status, 400, "{name}: {path}");
        }

        // Revocation: refused soon after the DELETE returns.
        let revoked = issuer
            .create(&format!("{name}-revoked"), &["global_viewer"], None)
            .await;
        assert_eq!(
            self.status("GET", "/accounts/acct-1/data", &revoked.token)
                .await,
            200
        );
        issuer.revoke(&revoked.id).await;
        let deleted = Instant::now();
        assert!(
            eventually(WAIT, || async {
                self.status("GET", "/accounts/acct-1/data", &revoked.token)
                    .await
                    == 401
            })
            .await,
            "{name}: the revoked key was still accepted after {WAIT:?}"
        );
        eprintln!(
            "{name}: revoked key refused through the proxy {:?} after the DELETE returned",
            deleted.elapsed()
        );

        // The issuer stops: keys keep working until the staleness bound,
        // then every check is a 503.
        issuer.stop();
        let stopped = Instant::now();
        assert_eq!(
            self.status("GET", "/accounts/acct-1/data", &cav.token)
                .await,
            200,
            "{name}: a key stopped working as soon as the issuer stopped"
        );
        assert!(
            eventually(WAIT + STALENESS, || async {
                self.status("GET", "/accounts/acct-1/data", &cav.token)
                    .await
                    == 503
            })
            .await,
            "{name}: the gate never failed closed"
        );
        eprintln!(
            "{name}: 503 through the proxy {:?} after the issuer stopped (bound {STALENESS:?})",
            stopped.elapsed()
        );
        let (status, headers, _) = self
            .get("GET", "/accounts/acct-1/data", &[("authorization", &auth)])
            .await;
        assert_eq!(status, 503, "{name}");
        assert_eq!(headers.get("retry-after").unwrap(), "5", "{name}");
        assert!(
            self.gate
                .metrics()
                .count("unavailable", "status_unavailable")
                >= 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_of_a_service() {
    let nginx = require(
        "nginx",
        &[HEADERS_MORE],
        &["nginx", "libnginx-mod-http-headers-more-filter"],
    );
    let (issuer, gate, gate_server, upstream) = stack_parts().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(dir.path(), port, gate_server.port, upstream.port),
    )
    .unwrap();
    let log = dir.path().join("error.log");
    let child = std::process::Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    wait_listening(&mut child, port, &log, "nginx").await;
    let stack = Stack {
        issuer,
        gate,
        _gate_server: gate_server,
        _upstream: upstream,
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    stack.exercise("nginx").await;
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_in_front_of_a_service() {
    let caddy = require("caddy", &[], &["caddy"]);
    let (issuer, gate, gate_server, upstream) = stack_parts().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("Caddyfile");
    std::fs::write(
        &config,
        caddyfile(dir.path(), port, gate_server.port, upstream.port),
    )
    .unwrap();
    let log = dir.path().join("caddy.log");
    let child = std::process::Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    wait_listening(&mut child, port, &log, "caddy").await;
    let stack = Stack {
        issuer,
        gate,
        _gate_server: gate_server,
        _upstream: upstream,
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    stack.exercise("caddy").await;
    drop(child);
}
