//! Real `latchkey serve` processes on one database behind a balancer:
//! `kill -9` of one replica while creates run on both, and the database
//! stopped and started again under load (contract §9). Nothing a client
//! was told succeeded may be missing afterwards.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::balancer::Balancer;
use crate::pg_cluster::PgCluster;
use crate::replica::Replica;

const ISSUER: &str = "http://latchkey.test";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_latchkey"))
}

fn http() -> reqwest::Client {
    latchkey::cli::client::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Two replicas (the first initialises and writes the admin token) on a
/// fresh database of `cluster`, and the admin token.
async fn two_replicas(cluster: &PgCluster, dir: &Path) -> (Replica, Replica, String) {
    let url = cluster.create_database();
    let kek = dir.join("kek");
    latchkey::kek::Kek::generate_file(&kek).unwrap();
    let token_file = dir.join("admin.token");
    let kek = kek.to_str().unwrap().to_owned();
    let common = [
        "--database-url",
        &url,
        "--key-encryption-key-file",
        &kek,
        "--issuer",
        ISSUER,
    ];
    let mut first: Vec<&str> = common.to_vec();
    first.extend(["--bootstrap-token-file", token_file.to_str().unwrap()]);
    let a = Replica::spawn(bin(), &first, &[]).await;
    let b = Replica::spawn(bin(), &common, &[]).await;
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    (a, b, token)
}

/// What the clients saw.
#[derive(Default)]
struct Outcomes {
    /// Ids of keys whose create got 201.
    acknowledged: Vec<String>,
    unavailable: usize,
    retry_after: usize,
    other: Vec<String>,
}

/// `workers` clients creating keys through `base` until `stop`.
fn create_load(
    base: String,
    token: String,
    workers: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Arc<Mutex<Outcomes>>, Vec<tokio::task::JoinHandle<()>>) {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let handles = (0..workers)
        .map(|w| {
            let (base, token, stop, outcomes) = (
                base.clone(),
                token.clone(),
                Arc::clone(&stop),
                Arc::clone(&outcomes),
            );
            tokio::spawn(async move {
                let client = http();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let sent = client
                        .post(format!("{base}/v1/keys"))
                        .bearer_auth(&token)
                        .json(&json!({"name": format!("load-{w}-{n}"), "roles": ["global_viewer"]}))
                        .send()
                        .await;
                    match sent {
                        Ok(reply) => {
                            let status = reply.status().as_u16();
                            let retry = reply.headers().contains_key("retry-after");
                            let body: Value = reply.json().await.unwrap_or(Value::Null);
                            let mut o = outcomes.lock().unwrap();
                            match status {
                                201 => o
                                    .acknowledged
                                    .push(body["key"]["id"].as_str().unwrap().to_owned()),
                                503 => {
                                    o.unavailable += 1;
                                    o.retry_after += usize::from(retry);
                                }
                                other => o.other.push(format!("{other}: {body}")),
                            }
                        }
                        // A connection cut by a killed replica: not acknowledged.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    (outcomes, handles)
}

/// Every acknowledged key is in the database, read through `replica`.
async fn all_present(replica: &Replica, token: &str, ids: &[String]) {
    let client = http();
    let mut missing = Vec::new();
    for id in ids {
        let reply = client
            .get(format!("{}/v1/keys/{id}", replica.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if reply.status() != 200 {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates are missing: {missing:?}",
        missing.len(),
        ids.len()
    );
}

async fn audit_verifies(replica: &Replica, token: &str) {
    let ran = crate::support::run(
        std::process::Command::new(bin())
            .args(["audit", "verify", "--server", &replica.url()])
            .env("LATCHKEY_TOKEN", token),
    );
    assert!(ran.success, "audit verify: {}{}", ran.stdout, ran.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_replica_loses_no_acknowledged_create_and_the_other_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b, token) = two_replicas(crate::pg_cluster::shared(), dir.path()).await;
    let balancer = Balancer::start(vec![a.addr(), b.addr()]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (outcomes, workers) = create_load(balancer.url(), token.clone(), 8, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = outcomes.lock().unwrap().acknowledged.len();
    a.kill9();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let o = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(o.other.is_empty(), "unexpected answers: {:?}", o.other);
    assert!(before_kill > 0, "no create succeeded before the kill");
    assert!(
        o.acknowledged.len() > before_kill + 10,
        "B stopped answering after A was killed: {before_kill} before, {} in all ({:?} since)",
        o.acknowledged.len(),
        killed_at.elapsed()
    );
    let unique: HashSet<&String> = o.acknowledged.iter().collect();
    assert_eq!(unique.len(), o.acknowledged.len());
    all_present(&b, &token, &o.acknowledged).await;
    audit_verifies(&b, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_and_started_under_load_loses_nothing_and_replicas_recover() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, token) = two_replicas(&cluster, dir.path()).await;
    let balancer = Balancer::start(vec![a.addr(), b.addr()]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (outcomes, workers) = create_load(balancer.url(), token.clone(), 6, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // While it is down: writes 503 with Retry-After (counted below), both
    // replicas not ready but alive, documents and admin authentication
    // served from memory.
    let client = http();
    for replica in [&a, &b] {
        let status = |path: &'static str| {
            let client = client.clone();
            let url = replica.url();
            async move {
                client
                    .get(format!("{url}{path}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(status("/readyz").await, 503);
        assert_eq!(status("/healthz").await, 200);
        assert_eq!(status("/.well-known/jwks.json").await, 200);
        assert_eq!(status("/v1/status/0").await, 200);
        let introspected: Value = client
            .post(format!("{}/v1/introspect", replica.url()))
            .bearer_auth(&token)
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            introspected["active"], true,
            "admin authentication from memory"
        );
    }
    let acknowledged_while_down = outcomes.lock().unwrap().acknowledged.len();
    cluster.start_again();
    // Both replicas recover by themselves.
    for replica in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if crate::replica::http_status(replica.addr(), "/readyz").await == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a replica never became ready again: {}",
                replica.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let o = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(o.other.is_empty(), "unexpected answers: {:?}", o.other);
    assert!(
        o.unavailable > 0,
        "no write was refused while the database was down"
    );
    assert_eq!(o.retry_after, o.unavailable, "every 503 says when to retry");
    assert!(
        o.acknowledged.len() > acknowledged_while_down,
        "creates did not succeed again after the database came back"
    );
    all_present(&a, &token, &o.acknowledged).await;
    audit_verifies(&b, &token).await;
}
