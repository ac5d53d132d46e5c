//! `loadgen`: HTTP load tool for latchkey, on loopback only.
//!
//! Scenarios (subcommands): `create-keys` (sled, or PostgreSQL replicas),
//! `replica-latency` (a revocation on one PostgreSQL replica → another's
//! status stream), `get`, `compare` (a target
//! document against a static-bytes axum handler serving the same bytes, in
//! one run), `seed` (a registry of N keys, in-process through the library),
//! `startup` (start-up time, resident memory and list latency of a seeded
//! registry), `fsync-probe` (the disk's fsync latency, the floor under
//! durable writes), `gate` (the forward-auth gate behind nginx and alone,
//! against same-run baselines) and `summary` (the results file as a
//! Markdown table).
//! See `tools/loadgen/README.md` and `docs/benchmarks.md`.

mod cpu;
mod create_pg;
mod gate;
mod load;
mod replica_latency;
mod replicas;
mod scenarios;
mod seed;
mod servers;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "HTTP load tool for latchkey (loopback only)"
)]
struct Cli {
    /// Append each scenario's figures as one JSON line to this file.
    #[arg(long, global = true, value_name = "FILE")]
    results: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Which server to load: a running one, or a `latchkey serve` child.
#[derive(Args, Clone)]
struct Target {
    /// Base URL of a running latchkey, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long, value_name = "URL", conflicts_with = "spawn")]
    server: Option<String>,
    /// Start this latchkey binary (`serve`) on a free 127.0.0.1 port and a
    /// temporary data directory, and stop it at the end.
    #[arg(long, value_name = "BIN")]
    spawn: Option<PathBuf>,
    /// File with the bearer token (the bootstrap admin's, for a spawned server).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// The PostgreSQL engine instead of sled, for `--spawn`.
#[derive(Args, Clone)]
struct PgOpts {
    /// An empty PostgreSQL database, postgres://USER:PASSWORD@HOST:PORT/DB:
    /// `--spawn` starts `--replicas` servers sharing it. Prefer the
    /// environment variable: a command line is visible to every local user.
    #[arg(
        long,
        value_name = "URL",
        env = "LOADGEN_DATABASE_URL",
        hide_env_values = true,
        requires = "spawn"
    )]
    database_url: Option<String>,
    /// Replicas on the database; the connections go round-robin over them,
    /// as a balancer would spread them.
    #[arg(long, default_value_t = 1, requires = "database_url")]
    replicas: usize,
    /// PID of the PostgreSQL postmaster: reports its CPU (backends included) per request.
    #[arg(long, value_name = "PID", requires = "database_url")]
    postgres_pid: Option<u32>,
}

#[derive(Args, Clone)]
struct LoadOpts {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured time (10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = load::parse_duration)]
    duration: std::time::Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "1s", value_parser = load::parse_duration)]
    warmup: std::time::Duration,
    /// Stop after this many requests (warm-up included), if sooner.
    #[arg(long)]
    requests: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// POST /v1/keys with unique names (load-<run>-<n>): keys/s and latency.
    CreateKeys {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        postgres: PgOpts,
        #[command(flatten)]
        load: LoadOpts,
    },
    /// Two PostgreSQL replicas A and B: revoke keys on A one at a time and
    /// time each until B's /v1/status/stream (and A's own) delivers its event.
    ReplicaLatency {
        /// The latchkey binary (runs `serve` twice and `kek generate`).
        #[arg(long, value_name = "BIN")]
        spawn: PathBuf,
        /// An empty PostgreSQL database, postgres://USER:PASSWORD@HOST:PORT/DB.
        #[arg(
            long,
            value_name = "URL",
            env = "LOADGEN_DATABASE_URL",
            hide_env_values = true
        )]
        database_url: String,
        /// Keys created on A, then revoked one at a time.
        #[arg(long, default_value_t = 200)]
        revocations: usize,
        /// Meanwhile, create keys on this many connections spread over A and
        /// B (0: measure on an otherwise idle cluster).
        #[arg(long, default_value_t = 0)]
        load_connections: usize,
    },
    /// Repeated GETs of one URL: requests/s and latency.
    Get {
        #[command(flatten)]
        target: Target,
        /// Full URL (with --server's host) or, with --spawn, only the path is used.
        #[arg(long, value_name = "URL", conflicts_with = "path")]
        url: Option<String>,
        /// Path and query, e.g. /.well-known/jwks.json.
        #[arg(long)]
        path: Option<String>,
        /// Extra request header, "Name: value" (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Send the token as Authorization: Bearer.
        #[arg(long)]
        auth: bool,
        #[command(flatten)]
        load: LoadOpts,
        /// Label in the results.
        #[arg(long)]
        label: Option<String>,
    },
    /// A GET target against an in-process axum handler serving the same
    /// bytes, alternating baseline/target (ABBA), in one run; prints the ratio.
    Compare {
        #[command(flatten)]
        target: Target,
        /// Path and query, e.g. /v1/status/0.
        #[arg(long)]
        path: String,
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        #[arg(long)]
        auth: bool,
        #[command(flatten)]
        load: LoadOpts,
        /// Pairs of (baseline, target) segments, each --duration long.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Target ratio target/baseline.
        #[arg(long, default_value_t = 0.8)]
        min_ratio: f64,
        #[arg(long)]
        label: Option<String>,
    },
    /// Fill a new registry with N real keys, in-process (latchkey library).
    Seed {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        keys_dir: PathBuf,
        /// Where the bootstrap admin token goes (0600).
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Creating threads (signing runs in parallel; commits are serialised).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Flush to disk every this many keys.
        #[arg(long, default_value_t = 50_000)]
        flush_every: u64,
    },
    /// Start `latchkey serve` on a (seeded) data directory: time until
    /// /healthz answers, VmRSS after start, then a list load and VmRSS after.
    Startup {
        /// The latchkey binary.
        #[arg(long)]
        latchkey_bin: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        keys_dir: PathBuf,
        /// Token for the list load (seed writes it).
        #[arg(long)]
        token_file: PathBuf,
        /// Start-ups to time (the list load runs after the last).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Path of the list load.
        #[arg(long, default_value = "/v1/keys?limit=50")]
        path: String,
        #[command(flatten)]
        load: LoadOpts,
    },
    /// fsync latency of 4 KiB appends in DIR: the floor under a durable write.
    FsyncProbe {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        count: u32,
    },
    /// The forward-auth gate: nginx with auth_request to `latchkey gate` vs
    /// nginx straight to the same upstream, and the gate's /check vs the
    /// issuer's JWKS handler, alternating (ABBA) in one run.
    Gate {
        /// The latchkey binary (runs `serve` and `gate`).
        #[arg(long)]
        latchkey_bin: PathBuf,
        /// The nginx binary (default: nginx on PATH or in /usr/sbin).
        #[arg(long)]
        nginx: Option<PathBuf>,
        #[command(flatten)]
        load: LoadOpts,
        /// Pairs of (baseline, target) segments of each comparison.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Keys revoked one at a time to measure revoke → refused through nginx.
        #[arg(long, default_value_t = 200)]
        revocations: usize,
    },
    /// Print the results file as a Markdown table.
    Summary {
        /// The file written with --results.
        file: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let results = cli.results.clone();
    if let Err(e) = runtime.block_on(scenarios::dispatch(cli.command, results)) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}
