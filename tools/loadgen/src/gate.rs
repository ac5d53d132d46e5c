//! `loadgen gate`: the forward-auth gate under load, each figure beside a
//! baseline from the same run.
//!
//! Starts a `latchkey serve` child (issuer URL = its own loopback address),
//! a `latchkey gate` child following it, a static upstream (axum, in this
//! process) and one nginx (no daemon, no master process, one worker) with
//! two servers in front of that upstream: one with `auth_request` to the
//! gate (the configuration of `docs/gateways.md`), one straight through.
//! Then, in alternating rounds (ABBA, so drift on a shared machine falls on
//! both sides):
//!
//! 1. nginx → upstream vs nginx → gate → upstream: requests/s and p99
//!    (target: gated ≥ 0.6× direct);
//! 2. `GET /check` on the gate with one repeated valid key vs the issuer's
//!    own `GET /.well-known/jwks.json`: checks/s (targets: ≥ 40,000/s, and
//!    ≥ 0.8× the JWKS handler).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::LoadOpts;
use crate::cpu::CpuMeter;
use crate::load::{self, LoadResult, LoadSpec, round};
use crate::servers::{self, StaticServer};

const TARGET_PROXY_RATIO: f64 = 0.6;
const TARGET_CHECKS_PER_S: f64 = 40_000.0;
const TARGET_CHECK_VS_JWKS: f64 = 0.8;

/// The upstream's one route, under the gate's account pattern.
const PATH: &str = "/accounts/acct-1/data";

/// A child process killed on drop.
struct Owned(Child, &'static str);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("loadgen: {} did not stop on SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(command: &mut Command, log: &Path, what: &'static str) -> Result<Owned, String> {
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| e.to_string())?;
    let child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    Ok(Owned(child, what))
}

/// Polls `path` until it answers 200 (bounded).
async fn wait_ok(
    addr: SocketAddr,
    path: &str,
    owned: &mut Owned,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((status, _, _)) =
            servers::get_once(addr, path, &[], Duration::from_millis(500)).await
            && status == StatusCode::OK
        {
            return Ok(());
        }
        let exited = owned.0.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{} never answered {path} 200:\n{text}", owned.1));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nginx_conf(
    dir: &Path,
    gated: SocketAddr,
    direct: SocketAddr,
    gate: SocketAddr,
    app: SocketAddr,
) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # The load's connections stay open for the whole run.
    keepalive_requests 10000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream latchkey_gate {{ server {gate}; keepalive 64; keepalive_requests 10000000; }}
    upstream app {{ server {app}; keepalive 64; keepalive_requests 10000000; }}

    server {{
        listen {gated};
        location = /_latchkey_check {{
            internal;
            proxy_pass http://latchkey_gate/check;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
        }}
        location / {{
            auth_request /_latchkey_check;
            auth_request_set $latchkey_key_id $upstream_http_x_latchkey_key_id;
            auth_request_set $latchkey_key_name $upstream_http_x_latchkey_key_name;
            auth_request_set $latchkey_roles $upstream_http_x_latchkey_roles;
            auth_request_set $latchkey_accounts $upstream_http_x_latchkey_accounts;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Latchkey-Key-Id $latchkey_key_id;
            proxy_set_header X-Latchkey-Key-Name $latchkey_key_name;
            proxy_set_header X-Latchkey-Roles $latchkey_roles;
            proxy_set_header X-Latchkey-Accounts $latchkey_accounts;
        }}
    }}

    server {{
        listen {direct};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}

/// Several segments of one side, taken together.
#[derive(Default)]
struct Side {
    runs: Vec<LoadResult>,
}

impl Side {
    fn rate(&self) -> f64 {
        let ok: u64 = self.runs.iter().map(|r| r.ok).sum();
        let secs: f64 = self.runs.iter().map(|r| r.window.as_secs_f64()).sum();
        if secs > 0.0 { ok as f64 / secs } else { 0.0 }
    }

    fn p99_ms(&self) -> f64 {
        let mut hist = match load::new_histogram() {
            Ok(h) => h,
            Err(_) => return f64::NAN,
        };
        for run in &self.runs {
            let _ = hist.add(&run.hist);
        }
        hist.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.errors).sum()
    }

    fn cpu_us(&self) -> Option<f64> {
        let per: Vec<f64> = self
            .runs
            .iter()
            .filter_map(LoadResult::cpu_us_per_request)
            .collect();
        (!per.is_empty()).then(|| per.iter().sum::<f64>() / per.len() as f64)
    }

    /// CPU of every process of the stack (client included) per request.
    fn stack_cpu_us(&self) -> Option<f64> {
        let cpu: f64 = self.runs.iter().filter_map(|r| r.stack_cpu_s).sum();
        let done: u64 = self.runs.iter().map(|r| r.completed).sum();
        (done > 0 && cpu > 0.0).then(|| cpu * 1e6 / done as f64)
    }

    fn json(&self) -> Value {
        json!({
            "rate": round(self.rate(), 1),
            "p99_ms": round(self.p99_ms(), 3),
            "errors": self.errors(),
            "cpu_us_per_req": self.cpu_us().map(|c| round(c, 2)),
            "stack_cpu_us_per_req": self.stack_cpu_us().map(|c| round(c, 2)),
        })
    }

    fn line(&self, label: &str) -> String {
        let mut line = format!("{label}: {:.0}/s, p99 {:.2} ms", self.rate(), self.p99_ms());
        if let Some(cpu) = self.cpu_us() {
            line.push_str(&format!(", server CPU {cpu:.1} µs/req"));
        }
        if let Some(cpu) = self.stack_cpu_us() {
            line.push_str(&format!(", whole stack {cpu:.1} µs/req"));
        }
        if self.errors() > 0 {
            line.push_str(&format!(", {} errors", self.errors()));
        }
        line
    }
}

/// One segment: the load, with the CPU per completed request of each of
/// `meters` (the process under test first, then the rest of the stack).
async fn measure(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    load: &LoadOpts,
    meters: &[&CpuMeter],
) -> Result<LoadResult, String> {
    let spec = LoadSpec {
        addrs: vec![addr],
        connections: load.connections.max(1),
        warmup: load.warmup,
        duration: load.duration,
        max_requests: load.requests,
        expect: StatusCode::OK,
        make: servers::get_maker(addr, path, headers)?,
        stop: None,
    };
    let before: Vec<Option<f64>> = meters.iter().map(|m| m.seconds()).collect();
    let mut result = load::run(&spec).await?;
    let after: Vec<Option<f64>> = meters.iter().map(|m| m.seconds()).collect();
    let used: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => a - b,
            _ => 0.0,
        })
        .collect();
    result.server_cpu_s = used.first().copied();
    result.stack_cpu_s = Some(used.iter().sum());
    if let Some(e) = &result.first_error {
        eprintln!("loadgen: first unexpected response: {e}");
    }
    Ok(result)
}

/// The whole scenario; returns the results record.
pub async fn gate(
    latchkey_bin: &Path,
    nginx_bin: &Path,
    load: &LoadOpts,
    rounds: usize,
    revocations: usize,
) -> Result<Value, String> {
    let temp = tempfile::Builder::new()
        .prefix("loadgen-gate-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let dir = temp.path();

    let issuer_addr = servers::free_addr()?;
    let issuer_url = format!("http://{issuer_addr}");
    let token_file = dir.join("bootstrap.token");
    let issuer_log = dir.join("issuer.log");
    let mut issuer = spawn(
        Command::new(latchkey_bin)
            .arg("serve")
            .arg("--listen")
            .arg(issuer_addr.to_string())
            .arg("--issuer")
            .arg(&issuer_url)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--keys-dir")
            .arg(dir.join("keys"))
            .arg("--bootstrap-token-file")
            .arg(&token_file)
            .env("LATCHKEY_LOG", "warn"),
        &issuer_log,
        "latchkey serve",
    )?;
    wait_ok(issuer_addr, "/healthz", &mut issuer, &issuer_log).await?;
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| format!("{}: {e}", token_file.display()))?
        .trim()
        .to_owned();

    let gate_addr = servers::free_addr()?;
    let gate_log = dir.join("gate.log");
    let mut gate = spawn(
        Command::new(latchkey_bin)
            .arg("gate")
            .arg("--issuer")
            .arg(&issuer_url)
            .arg("--listen")
            .arg(gate_addr.to_string())
            .arg("--account-path")
            .arg("/accounts/{account}/")
            .env("LATCHKEY_LOG", "warn"),
        &gate_log,
        "latchkey gate",
    )?;
    wait_ok(gate_addr, "/readyz", &mut gate, &gate_log).await?;

    let upstream = StaticServer::start(
        PATH,
        Bytes::from_static(b"{\"ok\":true}"),
        "application/json",
    )?;
    let gated_addr = servers::free_addr()?;
    let direct_addr = servers::free_addr()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(dir, gated_addr, direct_addr, gate_addr, upstream.addr),
    )
    .map_err(|e| e.to_string())?;
    let nginx_log = dir.join("nginx.log");
    let mut nginx = spawn(
        Command::new(nginx_bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log")),
        &nginx_log,
        "nginx",
    )?;
    let auth = vec![("authorization".to_owned(), format!("Bearer {token}"))];
    // nginx answers 401 without the key: wait for the gated side with it.
    let start = Instant::now();
    loop {
        match servers::get_once(gated_addr, PATH, &auth, Duration::from_millis(500)).await {
            Ok((StatusCode::OK, _, _)) => break,
            other if start.elapsed() > Duration::from_secs(30) => {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                return Err(format!(
                    "nginx → gate → upstream never answered 200 ({other:?}):\n{log}"
                ));
            }
            _ => {
                if let Ok(Some(exit)) = nginx.0.try_wait() {
                    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    return Err(format!("nginx exited ({exit}):\n{log}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    let nginx_cpu = CpuMeter::Process(nginx.0.id());
    let gate_cpu = CpuMeter::Process(gate.0.id());
    let issuer_cpu = CpuMeter::Process(issuer.0.id());
    // This process: the load's client and the upstream.
    let own_cpu = CpuMeter::Process(std::process::id());
    let check_headers = vec![
        ("authorization".to_owned(), format!("Bearer {token}")),
        ("x-original-method".to_owned(), "GET".to_owned()),
        ("x-original-uri".to_owned(), PATH.to_owned()),
    ];
    let (mut direct, mut gated, mut checks, mut jwks) = (
        Side::default(),
        Side::default(),
        Side::default(),
        Side::default(),
    );
    for round_no in 0..rounds.max(1) {
        // ABBA: every other round starts with the target.
        let order: [bool; 2] = if round_no % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for target in order {
            if target {
                gated.runs.push(
                    measure(
                        gated_addr,
                        PATH,
                        &auth,
                        load,
                        &[&nginx_cpu, &gate_cpu, &own_cpu],
                    )
                    .await?,
                );
                checks.runs.push(
                    measure(
                        gate_addr,
                        "/check",
                        &check_headers,
                        load,
                        &[&gate_cpu, &own_cpu],
                    )
                    .await?,
                );
            } else {
                direct
                    .runs
                    .push(measure(direct_addr, PATH, &auth, load, &[&nginx_cpu, &own_cpu]).await?);
                jwks.runs.push(
                    measure(
                        issuer_addr,
                        "/.well-known/jwks.json",
                        &[],
                        load,
                        &[&issuer_cpu, &own_cpu],
                    )
                    .await?,
                );
            }
        }
    }
    let proxy_ratio = gated.rate() / direct.rate().max(f64::MIN_POSITIVE);
    let check_ratio = checks.rate() / jwks.rate().max(f64::MIN_POSITIVE);
    // What the ratio is when the machine's cores are the limit: the whole
    // stack's CPU per request, direct over gated (drifts far less).
    let cpu_ratio = match (direct.stack_cpu_us(), gated.stack_cpu_us()) {
        (Some(d), Some(g)) if g > 0.0 => Some(d / g),
        _ => None,
    };
    println!("{}", direct.line("nginx → upstream (baseline)"));
    println!("{}", gated.line("nginx → gate → upstream"));
    println!(
        "  gated/direct = {proxy_ratio:.2} (target ≥ {TARGET_PROXY_RATIO}): {}",
        verdict(proxy_ratio >= TARGET_PROXY_RATIO)
    );
    if let Some(cpu_ratio) = cpu_ratio {
        println!(
            "  whole-stack CPU per request, direct/gated = {cpu_ratio:.2} (the ratio when the cores are the limit)"
        );
    }
    println!(
        "{}",
        jwks.line("issuer GET /.well-known/jwks.json (baseline)")
    );
    println!("{}", checks.line("gate GET /check, one repeated valid key"));
    println!(
        "  checks/s {:.0} (target ≥ {TARGET_CHECKS_PER_S:.0}): {}; check/jwks = {check_ratio:.2} (target ≥ {TARGET_CHECK_VS_JWKS}): {}",
        checks.rate(),
        verdict(checks.rate() >= TARGET_CHECKS_PER_S),
        verdict(check_ratio >= TARGET_CHECK_VS_JWKS)
    );
    let revocation = revocation_latency(issuer_addr, gated_addr, &token, revocations).await?;
    println!(
        "revoke → refused through nginx, from the DELETE's 204, {} revocations: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 ≤ 50 ms): {}",
        revocation.len(),
        percentile_ms(&revocation, 0.50),
        percentile_ms(&revocation, 0.90),
        percentile_ms(&revocation, 0.99),
        percentile_ms(&revocation, 1.0),
        verdict(percentile_ms(&revocation, 0.99) <= 50.0)
    );
    drop(nginx);
    drop(gate);
    drop(issuer);
    drop(upstream);
    Ok(json!({
        "revocations": revocation.len(),
        "revoke_to_refused_ms": {
            "p50": round(percentile_ms(&revocation, 0.50), 3),
            "p90": round(percentile_ms(&revocation, 0.90), 3),
            "p99": round(percentile_ms(&revocation, 0.99), 3),
            "max": round(percentile_ms(&revocation, 1.0), 3),
        },
        "scenario": "gate",
        "connections": load.connections,
        "duration_s": load.duration.as_secs_f64(),
        "rounds": rounds,
        "nginx_direct": direct.json(),
        "nginx_gated": gated.json(),
        "gated_over_direct": round(proxy_ratio, 3),
        "stack_cpu_direct_over_gated": cpu_ratio.map(|r| round(r, 3)),
        "issuer_jwks": jwks.json(),
        "gate_check": checks.json(),
        "check_over_jwks": round(check_ratio, 3),
    }))
}

/// For each of `n` fresh keys: proves it passes through nginx and the gate,
/// revokes it at the issuer, and measures from the DELETE's 204 until a
/// request through nginx is refused (polled on fresh connections, bounded
/// at 5 s per key).
async fn revocation_latency(
    issuer: SocketAddr,
    gated: SocketAddr,
    admin: &str,
    n: usize,
) -> Result<Vec<Duration>, String> {
    let timeout = Duration::from_secs(5);
    let bearer = |t: &str| vec![("authorization".to_owned(), format!("Bearer {t}"))];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let (status, body, _) = servers::call_once(
            issuer,
            hyper::Method::POST,
            "/v1/keys",
            &bearer(admin),
            Some(&json!({"name": format!("revocation-{i}-{}", std::process::id()), "roles": ["global_viewer"]})),
            timeout,
        )
        .await?;
        if status != StatusCode::CREATED {
            return Err(format!("creating a key answered {status}"));
        }
        let created: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let (Some(id), Some(key)) = (created["key"]["id"].as_str(), created["token"].as_str())
        else {
            return Err("the create answer has no key id or token".into());
        };
        let (status, _, _) = servers::get_once(gated, PATH, &bearer(key), timeout).await?;
        if status != StatusCode::OK {
            return Err(format!("a fresh key answered {status} through nginx"));
        }
        let (status, _, _) = servers::call_once(
            issuer,
            hyper::Method::DELETE,
            &format!("/v1/keys/{id}"),
            &bearer(admin),
            None,
            timeout,
        )
        .await?;
        if status != StatusCode::NO_CONTENT {
            return Err(format!("revoking a key answered {status}"));
        }
        let revoked_at = Instant::now();
        loop {
            let (status, _, _) = servers::get_once(gated, PATH, &bearer(key), timeout).await?;
            if status == StatusCode::UNAUTHORIZED {
                samples.push(revoked_at.elapsed());
                break;
            }
            if revoked_at.elapsed() > timeout {
                return Err(format!(
                    "a revoked key still answered {status} after {timeout:?}"
                ));
            }
        }
    }
    samples.sort();
    Ok(samples)
}

pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// `nginx` on PATH or in /usr/sbin.
pub fn default_nginx() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}
