//! The scenarios behind each subcommand, and the results file.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use crate::cpu::CpuMeter;
use crate::load::{self, LoadResult, LoadSpec, round};
use crate::servers::{self, LatchkeyChild, ServerDirs, StaticServer};
use crate::{Command, LoadOpts, Target};

/// Targets from the issue tracker.
const TARGET_KEYS_PER_S: f64 = 3000.0;
const TARGET_CREATE_P99_MS: f64 = 25.0;
const TARGET_STARTUP_S: f64 = 3.0;
const TARGET_LIST_P99_MS: f64 = 10.0;

pub async fn dispatch(command: Command, results: Option<PathBuf>) -> Result<(), String> {
    let record = match command {
        Command::CreateKeys {
            target,
            postgres,
            load,
        } => match &postgres.database_url {
            Some(url) => crate::create_pg::create_keys(&target, url, &postgres, &load).await?,
            None => create_keys(&target, &load).await?,
        },
        Command::ReplicaLatency {
            spawn,
            database_url,
            revocations,
            load_connections,
        } => {
            crate::replica_latency::replica_latency(
                &spawn,
                &database_url,
                revocations,
                load_connections,
            )
            .await?
        }
        Command::Get {
            target,
            url,
            path,
            headers,
            auth,
            load,
            label,
        } => {
            let (target, path) = match url {
                Some(url) => (
                    Target {
                        server: target.server.or_else(|| Some(url.clone())),
                        ..target
                    },
                    servers::path_of(&url),
                ),
                None => (target, path.unwrap_or_else(|| "/".into())),
            };
            get(&target, &path, &headers, auth, &load, label).await?
        }
        Command::Compare {
            target,
            path,
            headers,
            auth,
            load,
            rounds,
            min_ratio,
            label,
        } => {
            compare(
                &target, &path, &headers, auth, &load, rounds, min_ratio, label,
            )
            .await?
        }
        Command::Seed {
            data_dir,
            keys_dir,
            token_file,
            count,
            threads,
            flush_every,
        } => {
            crate::seed::seed(
                &data_dir,
                &keys_dir,
                &token_file,
                count,
                threads,
                flush_every,
            )
            .await?
        }
        Command::Startup {
            latchkey_bin,
            data_dir,
            keys_dir,
            token_file,
            runs,
            path,
            load,
        } => {
            startup(
                &latchkey_bin,
                &data_dir,
                &keys_dir,
                &token_file,
                runs,
                &path,
                &load,
            )
            .await?
        }
        Command::FsyncProbe { dir, count } => fsync_probe(&dir, count)?,
        Command::Gate {
            latchkey_bin,
            nginx,
            load,
            rounds,
            revocations,
        } => {
            let nginx = nginx.unwrap_or_else(crate::gate::default_nginx);
            crate::gate::gate(&latchkey_bin, &nginx, &load, rounds, revocations).await?
        }
        Command::Summary { file } => {
            print!("{}", summary(&file)?);
            return Ok(());
        }
    };
    if let Some(file) = results {
        let mut record = record;
        // The machine is shared: keep its load next to every figure.
        record["loadavg"] = json!(
            std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        );
        append_result(&file, &record)?;
    }
    Ok(())
}

fn append_result(file: &Path, record: &Value) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    writeln!(f, "{record}").map_err(|e| format!("{}: {e}", file.display()))
}

/// The server a scenario loads, and the child if it started one.
struct Resolved {
    addr: SocketAddr,
    token: Option<String>,
    /// CPU of the spawned server (none for --server).
    meter: Option<CpuMeter>,
    /// Kept alive for the scenario; stopped when dropped.
    _child: Option<LatchkeyChild>,
}

async fn resolve(target: &Target) -> Result<Resolved, String> {
    let file_token = match &target.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    match (&target.server, &target.spawn) {
        (Some(url), _) => Ok(Resolved {
            addr: servers::loopback_addr(url)?,
            token: file_token,
            meter: None,
            _child: None,
        }),
        (None, Some(bin)) => {
            let child = LatchkeyChild::start(bin, None).await?;
            eprintln!(
                "loadgen: started latchkey (pid {}) on {} in {:.0} ms",
                child.pid(),
                child.addr,
                child.startup.as_secs_f64() * 1000.0
            );
            Ok(Resolved {
                addr: child.addr,
                token: file_token.or_else(|| child.token.clone()),
                meter: Some(CpuMeter::Process(child.pid())),
                _child: Some(child),
            })
        }
        (None, None) => Err("give --server URL or --spawn PATH_TO_LATCHKEY".into()),
    }
}

pub fn spec(
    addr: SocketAddr,
    load: &LoadOpts,
    expect: StatusCode,
    make: load::MakeRequest,
) -> LoadSpec {
    LoadSpec {
        addrs: vec![addr],
        connections: load.connections.max(1),
        warmup: load.warmup,
        duration: load.duration,
        max_requests: load.requests,
        expect,
        make,
        stop: None,
    }
}

pub fn report_errors(result: &LoadResult) {
    if let Some(e) = &result.first_error {
        eprintln!("loadgen: first unexpected response: {e}");
    }
}

/// Scrapes `latchkey_flush_batch_size` (sum, count) from /metrics.
async fn flush_batches(addr: SocketAddr) -> Option<(f64, f64)> {
    batch_metric(addr, "latchkey_flush_batch_size").await
}

/// Scrapes a summary's (sum, count) from /metrics.
pub async fn batch_metric(addr: SocketAddr, metric: &str) -> Option<(f64, f64)> {
    let (status, body, _) = servers::get_once(addr, "/metrics", &[], Duration::from_secs(10))
        .await
        .ok()?;
    if status != StatusCode::OK {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((
        value(&format!("{metric}_sum "))?,
        value(&format!("{metric}_count "))?,
    ))
}

/// Request `n` of a create load: `POST /v1/keys` with a name unique to the
/// run (`load-<run>-<n>`).
pub fn create_maker(addr: SocketAddr, token: &str) -> load::MakeRequest {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let authorization = format!("Bearer {token}");
    Arc::new(move |n| {
        let body = format!(
            r#"{{"name":"load-{run}-{n}","description":"loadgen","roles":["cloud_account_viewer"],"accounts":["acct-1001","acct-1002"]}}"#
        );
        Request::post("/v1/keys")
            .header(header::HOST, addr.to_string())
            .header(header::AUTHORIZATION, authorization.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    })
}

async fn create_keys(target: &Target, opts: &LoadOpts) -> Result<Value, String> {
    let resolved = resolve(target).await?;
    let token = resolved
        .token
        .clone()
        .ok_or("create-keys needs --token-file (or --spawn)")?;
    let addr = resolved.addr;
    let make = create_maker(addr, &token);
    let before = flush_batches(addr).await;
    let result = load::run_metered(
        &spec(addr, opts, StatusCode::CREATED, make),
        resolved.meter.as_ref(),
    )
    .await?;
    let after = flush_batches(addr).await;
    println!(
        "{}",
        result.line(&format!("POST /v1/keys, {} connections", opts.connections))
    );
    report_errors(&result);
    let mut record = json!({
        "scenario": "create-keys",
        "label": format!("POST /v1/keys (durable), {} conns", opts.connections),
        "connections": opts.connections,
        "result": result.json(),
    });
    if let (Some((s0, c0)), Some((s1, c1))) = (before, after)
        && c1 > c0
    {
        // Warm-up flushes are included; close enough for the mean batch.
        let batch = (s1 - s0) / (c1 - c0);
        let flushes = (c1 - c0) / (opts.duration + opts.warmup).as_secs_f64();
        println!("  group commit: {batch:.1} writes per flush, {flushes:.0} flushes/s");
        record["flush_batch_mean"] = json!(round(batch, 2));
        record["flushes_per_s"] = json!(round(flushes, 1));
    }
    if opts.connections == 64 {
        record["checks"] = json!([
            check("keys/s", result.rate(), ">=", TARGET_KEYS_PER_S),
            check("p99 ms", result.ms(0.99), "<=", TARGET_CREATE_P99_MS),
        ]);
    }
    drop(resolved);
    Ok(record)
}

pub fn check(what: &str, value: f64, op: &str, target: f64) -> Value {
    let pass = match op {
        ">=" => value >= target,
        _ => value <= target,
    };
    json!({"what": what, "value": round(value, 3), "op": op, "target": target, "pass": pass})
}

fn request_headers(
    headers: &[String],
    auth: bool,
    token: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let mut list = servers::parse_headers(headers)?;
    if auth {
        let token = token.ok_or("--auth needs --token-file (or --spawn)")?;
        list.push(("authorization".into(), format!("Bearer {token}")));
    }
    Ok(list)
}

async fn get(
    target: &Target,
    path: &str,
    headers: &[String],
    auth: bool,
    opts: &LoadOpts,
    label: Option<String>,
) -> Result<Value, String> {
    let resolved = resolve(target).await?;
    let headers = request_headers(headers, auth, resolved.token.as_deref())?;
    let make = servers::get_maker(resolved.addr, path, &headers)?;
    let result = load::run_metered(
        &spec(resolved.addr, opts, StatusCode::OK, make),
        resolved.meter.as_ref(),
    )
    .await?;
    let label = label.unwrap_or_else(|| format!("GET {path}"));
    println!(
        "{}",
        result.line(&format!("{label}, {} connections", opts.connections))
    );
    report_errors(&result);
    Ok(json!({
        "scenario": "get",
        "label": label,
        "connections": opts.connections,
        "result": result.json(),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn compare(
    target: &Target,
    path: &str,
    headers: &[String],
    auth: bool,
    opts: &LoadOpts,
    rounds: usize,
    min_ratio: f64,
    label: Option<String>,
) -> Result<Value, String> {
    let resolved = resolve(target).await?;
    let headers = request_headers(headers, auth, resolved.token.as_deref())?;
    let (status, body, content_type) =
        servers::get_once(resolved.addr, path, &headers, Duration::from_secs(10)).await?;
    if status != StatusCode::OK {
        return Err(format!("GET {path} answered {status}, not 200"));
    }
    let content_type = content_type.unwrap_or_else(|| "application/octet-stream".into());
    let size = body.len();
    let baseline = StaticServer::start(path, body, &content_type)?;
    let base_meter = CpuMeter::OwnThreads(servers::BASELINE_THREAD);
    let target_make = servers::get_maker(resolved.addr, path, &headers)?;
    let base_make = servers::get_maker(baseline.addr, path, &headers)?;
    let label = label.unwrap_or_else(|| format!("GET {path}"));
    eprintln!(
        "loadgen: {label}: {size} bytes of {content_type}; baseline on {}",
        baseline.addr
    );
    let mut target_total: Option<LoadResult> = None;
    let mut base_total: Option<LoadResult> = None;
    let mut per_round = Vec::new();
    for r in 0..rounds.max(1) {
        // ABBA: baseline first in even rounds, target first in odd ones.
        let order = if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut pair = [0.0f64; 2];
        for is_base in order {
            let (addr, make, meter) = if is_base {
                (baseline.addr, Arc::clone(&base_make), Some(&base_meter))
            } else {
                (
                    resolved.addr,
                    Arc::clone(&target_make),
                    resolved.meter.as_ref(),
                )
            };
            let result = load::run_metered(&spec(addr, opts, StatusCode::OK, make), meter).await?;
            let who = if is_base { "baseline" } else { "latchkey" };
            println!("  round {} {}", r + 1, result.line(who));
            report_errors(&result);
            pair[usize::from(!is_base)] = result.rate();
            let total = if is_base {
                &mut base_total
            } else {
                &mut target_total
            };
            match total {
                None => *total = Some(result),
                Some(t) => add_into(t, result)?,
            }
        }
        per_round.push(round(pair[1] / pair[0].max(1e-9), 3));
    }
    let (Some(t), Some(b)) = (target_total, base_total) else {
        return Err("no rounds ran".into());
    };
    let ratio = t.rate() / b.rate().max(1e-9);
    println!("{}", t.line(&format!("{label} latchkey")));
    println!("{}", b.line(&format!("{label} static baseline")));
    println!(
        "  ratio latchkey/baseline: {ratio:.3} (per round {per_round:?}; target >= {min_ratio})"
    );
    let cpu_ratio = match (t.cpu_us_per_request(), b.cpu_us_per_request()) {
        (Some(tc), Some(bc)) if bc > 0.0 => {
            println!(
                "  server CPU per request latchkey/baseline: {:.2}x",
                tc / bc
            );
            Some(round(tc / bc, 3))
        }
        _ => None,
    };
    drop(baseline);
    drop(resolved);
    Ok(json!({
        "scenario": "compare",
        "label": label,
        "connections": opts.connections,
        "body_bytes": size,
        "content_type": content_type,
        "result": t.json(),
        "baseline": b.json(),
        "ratio": round(ratio, 3),
        "ratio_per_round": per_round,
        "cpu_per_request_ratio": cpu_ratio,
        "checks": [check("ratio to static", ratio, ">=", min_ratio)],
    }))
}

/// Adds `more` into `total`: counts, windows and histograms.
fn add_into(total: &mut LoadResult, more: LoadResult) -> Result<(), String> {
    total.completed += more.completed;
    total.server_cpu_s = match (total.server_cpu_s, more.server_cpu_s) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    total.ok += more.ok;
    total.errors += more.errors;
    total.window += more.window;
    total.hist.add(&more.hist).map_err(|e| e.to_string())?;
    for (k, v) in more.statuses {
        *total.statuses.entry(k).or_default() += v;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn startup(
    bin: &Path,
    data_dir: &Path,
    keys_dir: &Path,
    token_file: &Path,
    runs: usize,
    path: &str,
    opts: &LoadOpts,
) -> Result<Value, String> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("{}: {e}", token_file.display()))?
        .trim()
        .to_owned();
    let scratch = tempfile::Builder::new()
        .prefix("loadgen-startup-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let db_bytes = dir_size(data_dir);
    let mut startups = Vec::new();
    let mut record = json!({"scenario": "startup", "db_bytes": db_bytes});
    for run in 1..=runs.max(1) {
        let dirs = ServerDirs {
            data_dir: data_dir.to_owned(),
            keys_dir: keys_dir.to_owned(),
            token_file: scratch.path().join(format!("unused-{run}.token")),
            log_file: scratch.path().join(format!("latchkey-{run}.log")),
        };
        let mut child = LatchkeyChild::start(bin, Some(dirs)).await?;
        let pid = child.pid();
        let (rss_start, _) = servers::memory_kib(pid)?;
        println!(
            "start-up {run}: /healthz answered {:.0} ms after spawn, VmRSS {:.1} MiB",
            child.startup.as_secs_f64() * 1000.0,
            rss_start as f64 / 1024.0
        );
        startups.push(child.startup.as_secs_f64());
        if run == runs.max(1) {
            let headers = vec![("authorization".to_owned(), format!("Bearer {token}"))];
            let t0 = Instant::now();
            let (status, _, _) =
                servers::get_once(child.addr, path, &headers, Duration::from_secs(60)).await?;
            let first_ms = t0.elapsed().as_secs_f64() * 1000.0;
            if status != StatusCode::OK {
                return Err(format!("GET {path} answered {status}"));
            }
            let make = servers::get_maker(child.addr, path, &headers)?;
            let meter = CpuMeter::Process(pid);
            // Latency of one client alone, then throughput at N connections.
            let single = LoadOpts {
                connections: 1,
                ..opts.clone()
            };
            let alone = load::run_metered(
                &spec(child.addr, &single, StatusCode::OK, Arc::clone(&make)),
                Some(&meter),
            )
            .await?;
            println!("{}", alone.line(&format!("GET {path}, 1 connection")));
            report_errors(&alone);
            record["result_1conn"] = alone.json();
            let result =
                load::run_metered(&spec(child.addr, opts, StatusCode::OK, make), Some(&meter))
                    .await?;
            let (rss_after, hwm) = servers::memory_kib(pid)?;
            println!("  first GET {path}: {first_ms:.1} ms");
            println!(
                "{}",
                result.line(&format!("GET {path}, {} connections", opts.connections))
            );
            report_errors(&result);
            println!(
                "  VmRSS after the list load {:.1} MiB (peak {:.1} MiB)",
                rss_after as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
            record["rss_start_kib"] = json!(rss_start);
            record["rss_after_list_kib"] = json!(rss_after);
            record["rss_peak_kib"] = json!(hwm);
            record["first_list_ms"] = json!(round(first_ms, 2));
            record["list_path"] = json!(path);
            record["connections"] = json!(opts.connections);
            record["result"] = result.json();
            let stopped = child.stop()?;
            println!(
                "  stopped (SIGTERM) in {:.0} ms",
                stopped.as_secs_f64() * 1000.0
            );
            record["stop_ms"] = json!(round(stopped.as_secs_f64() * 1000.0, 1));
            record["checks"] = json!([
                check(
                    "start-up s (max of runs)",
                    max(&startups),
                    "<=",
                    TARGET_STARTUP_S
                ),
                check(
                    "list p99 ms, 1 connection",
                    alone.ms(0.99),
                    "<=",
                    TARGET_LIST_P99_MS
                ),
                check(
                    &format!("list p99 ms, {} connections", opts.connections),
                    result.ms(0.99),
                    "<=",
                    TARGET_LIST_P99_MS
                ),
            ]);
        } else {
            child.stop()?;
        }
    }
    record["startup_s"] = json!(startups.iter().map(|s| round(*s, 3)).collect::<Vec<_>>());
    record["label"] = json!(format!("{} keys registry", count_hint(data_dir)));
    Ok(record)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

fn count_hint(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("loadgen-seed-count"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "seeded".into())
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for entry in entries.flatten() {
                match entry.metadata() {
                    Ok(m) if m.is_dir() => stack.push(entry.path()),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
        }
    }
    total
}

fn fsync_probe(dir: &Path, count: u32) -> Result<Value, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file_path = dir.join("loadgen-fsync-probe");
    let mut file = std::fs::File::create(&file_path).map_err(|e| e.to_string())?;
    let block = vec![0x5au8; 4096];
    let mut hist = load::new_histogram()?;
    for _ in 0..count.max(1) {
        let t = Instant::now();
        file.write_all(&block).map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        hist.saturating_record(
            u64::try_from(t.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
    }
    drop(file);
    let _ = std::fs::remove_file(&file_path);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "fsync of a 4 KiB append in {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        dir.display(),
        ms(0.5),
        ms(0.99),
        hist.max() as f64 / 1000.0,
        hist.len()
    );
    Ok(json!({
        "scenario": "fsync-probe",
        "label": "write 4 KiB + fsync",
        "result": {"p50_ms": round(ms(0.5), 3), "p99_ms": round(ms(0.99), 3), "max_ms": round(hist.max() as f64 / 1000.0, 3), "samples": hist.len()},
    }))
}

fn row(name: &str, connections: &Value, res: &Value, base: &str, ratio: &str) -> String {
    let f = |k: &str| res.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    format!(
        "| {name} | {connections} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {base} | {ratio} |\n",
        f("rate"),
        f("p50_ms"),
        f("p90_ms"),
        f("p99_ms"),
        f("max_ms"),
        res["errors"],
        f("server_cpu_us_per_req"),
    )
}

/// The results file as Markdown: one table of figures, one of the targets.
pub fn summary(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let records: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let mut out = String::new();
    out.push_str("| scenario | conns | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU µs/req | static baseline: req/s, p99 ms, CPU µs/req | ratio |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut checks = Vec::new();
    for r in &records {
        let label = r["label"].as_str().unwrap_or("?");
        let scenario = r["scenario"].as_str().unwrap_or("?");
        let res = &r["result"];
        match scenario {
            "seed" => {
                out.push_str(&format!(
                    "| seed: {} keys in-process | – | {:.0} keys/s | | | | | | | | |\n",
                    r["count"],
                    f(res, "rate")
                ));
            }
            "replica-latency" => {
                if let Some(background) = r.get("background").filter(|b| b.is_object()) {
                    out.push_str(&row(
                        &format!("{label}: the creates meanwhile"),
                        &r["load_connections"],
                        background,
                        "",
                        "",
                    ));
                }
                for (what, key) in [
                    ("DELETE on A → 204", "delete_ms"),
                    ("DELETE on A → event on A's stream", "own_stream_ms"),
                    ("DELETE on A → event on B's stream", "other_stream_ms"),
                ] {
                    let ms = &r[key];
                    out.push_str(&format!(
                        "| {label}: {what} ({} revocations; p95 {:.2} ms) | 1 | | {:.2} | | {:.2} | {:.2} | | | | |\n",
                        r["revocations"],
                        f(ms, "p95"),
                        f(ms, "p50"),
                        f(ms, "p99"),
                        f(ms, "max")
                    ));
                }
            }
            "fsync-probe" => {
                out.push_str(&format!(
                    "| fsync of a 4 KiB append | 1 | | {:.2} | | {:.2} | {:.2} | | | | |\n",
                    f(res, "p50_ms"),
                    f(res, "p99_ms"),
                    f(res, "max_ms")
                ));
            }
            _ => {
                let (base, ratio) = match r.get("baseline") {
                    Some(b) => (
                        format!(
                            "{:.0}, {:.2}, {:.1}",
                            f(b, "rate"),
                            f(b, "p99_ms"),
                            f(b, "server_cpu_us_per_req")
                        ),
                        format!("{:.3}", f(r, "ratio")),
                    ),
                    None => (String::new(), String::new()),
                };
                let name = if scenario == "startup" {
                    format!("{label}: GET {}", r["list_path"].as_str().unwrap_or("?"))
                } else {
                    label.to_owned()
                };
                out.push_str(&row(&name, &r["connections"], res, &base, &ratio));
                if let Some(alone) = r.get("result_1conn") {
                    out.push_str(&row(&name, &json!(1), alone, "", ""));
                }
            }
        }
        if scenario == "startup" {
            out.push_str(&format!(
                "| {label}: start-up to /healthz, s (runs) | | {} | | | | | | | | |\n",
                r["startup_s"]
            ));
            out.push_str(&format!(
                "| {label}: VmRSS MiB after start / after list load / peak | | {:.0} / {:.0} / {:.0} | | | | | | | | |\n",
                f(r, "rss_start_kib") / 1024.0,
                f(r, "rss_after_list_kib") / 1024.0,
                f(r, "rss_peak_kib") / 1024.0
            ));
        }
        if let Some(list) = r.get("checks").and_then(Value::as_array) {
            for c in list {
                checks.push(format!(
                    "| {label} | {} | {} | {} {} | {} |\n",
                    c["what"].as_str().unwrap_or("?"),
                    c["value"],
                    c["op"].as_str().unwrap_or("?"),
                    c["target"],
                    if c["pass"].as_bool() == Some(true) {
                        "met"
                    } else {
                        "**missed**"
                    }
                ));
            }
        }
    }
    out.push_str("\n| target | figure | measured | target | verdict |\n|---|---|---:|---|---|\n");
    for c in checks {
        out.push_str(&c);
    }
    Ok(out)
}
