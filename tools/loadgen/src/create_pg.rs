//! `loadgen create-keys --database-url URL --replicas N --spawn BIN`:
//! durable creates against N PostgreSQL replicas sharing one database.
//!
//! The connections are spread round-robin over the replicas (connection i
//! to replica i mod N), which models a balancer without spending the
//! machine's cores on a proxy process. Besides the figures of the sled
//! path it reports each replica's mean commit batch (the engine commits
//! everything queued in one transaction per replica, see
//! `latchkey_pg_batch_size`), the replicas' CPU per create and, given the
//! postmaster's PID, PostgreSQL's.

use serde_json::{Value, json};

use crate::cpu::CpuMeter;
use crate::load::{self, round};
use crate::replicas::Replicas;
use crate::scenarios::{batch_metric, check, create_maker, report_errors, spec};
use crate::{LoadOpts, PgOpts, Target};

/// Target from the issue tracker: creates/s with two replicas on this machine.
pub const TARGET_PG_KEYS_PER_S: f64 = 1500.0;

const BATCH_METRIC: &str = "latchkey_pg_batch_size";

pub async fn create_keys(
    target: &Target,
    database_url: &str,
    pg: &PgOpts,
    opts: &LoadOpts,
) -> Result<Value, String> {
    let bin = target
        .spawn
        .as_ref()
        .ok_or("--database-url needs --spawn PATH_TO_LATCHKEY (loadgen starts the replicas)")?;
    let replicas = Replicas::start(bin, database_url, pg.replicas).await?;
    let addrs = replicas.addrs();
    let first = addrs[0];
    let make = create_maker(first, &replicas.token);
    let mut load_spec = spec(first, opts, hyper::StatusCode::CREATED, make);
    load_spec.addrs = addrs.clone();
    let servers = CpuMeter::Processes(replicas.pids());
    let postgres = pg.postgres_pid.map(CpuMeter::Tree);
    let client = CpuMeter::Process(std::process::id());
    let mut before = Vec::new();
    for addr in &addrs {
        before.push(batch_metric(*addr, BATCH_METRIC).await);
    }
    let pg_before = postgres.as_ref().and_then(CpuMeter::seconds);
    let client_before = client.seconds();
    let result = load::run_metered(&load_spec, Some(&servers)).await?;
    let pg_after = postgres.as_ref().and_then(CpuMeter::seconds);
    let client_after = client.seconds();
    let n = addrs.len();
    let what = if n == 1 { "replica" } else { "replicas" };
    let label = format!(
        "POST /v1/keys (PostgreSQL, {n} {what}), {} conns",
        opts.connections
    );
    println!("{}", result.line(&label));
    report_errors(&result);
    let mut record = json!({
        "scenario": "create-keys",
        "engine": "postgres",
        "replicas": n,
        "label": label,
        "connections": opts.connections,
        "result": result.json(),
    });
    let seconds = (opts.duration + opts.warmup).as_secs_f64();
    let mut batches = Vec::new();
    for (i, (addr, before)) in addrs.iter().zip(before).enumerate() {
        let after = batch_metric(*addr, BATCH_METRIC).await;
        // A replica that has not committed yet has no such metric.
        let (s0, c0) = before.unwrap_or((0.0, 0.0));
        if let Some((s1, c1)) = after
            && c1 > c0
        {
            // Warm-up commits are included; close enough for the mean batch.
            let batch = (s1 - s0) / (c1 - c0);
            let commits = (c1 - c0) / seconds;
            println!(
                "  replica {i}: {batch:.1} writes per transaction, {commits:.0} transactions/s"
            );
            batches.push(json!({"replica": i, "batch_mean": round(batch, 2), "transactions_per_s": round(commits, 1)}));
        }
    }
    record["batches"] = json!(batches);
    let per_request = |s: f64| round(s * 1e6 / result.completed.max(1) as f64, 2);
    if let (Some(b), Some(a)) = (pg_before, pg_after) {
        println!(
            "  PostgreSQL CPU {:.1} µs per create ({:.2} cores)",
            per_request(a - b),
            (a - b) / seconds
        );
        record["postgres_cpu_us_per_req"] = json!(per_request(a - b));
    }
    if let (Some(b), Some(a)) = (client_before, client_after) {
        println!("  loadgen CPU {:.1} µs per create", per_request(a - b));
        record["client_cpu_us_per_req"] = json!(per_request(a - b));
    }
    if opts.connections == 64 && n >= 2 {
        record["checks"] = json!([check(
            &format!("creates/s, {n} replicas"),
            result.rate(),
            ">=",
            TARGET_PG_KEYS_PER_S
        )]);
    }
    drop(replicas);
    Ok(record)
}
