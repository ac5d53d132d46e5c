//! `seed`: a registry of N real keys, made in-process through the latchkey
//! library exactly as `POST /v1/keys` makes them (`Issuer::create_valid`:
//! status slot, signed token, one store transaction with the record, name,
//! `jti` index and audit entry), with up to `flush_every` creates in flight
//! so the store's group commit covers many keys per flush.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use latchkey::audit::Actor;
use latchkey::clock::SystemClock;
use latchkey::config::Config;
use latchkey::validation::{ValidNewKey, add_months};
use latchkey_verifier::Role;
use serde_json::{Value, json};

use crate::load::round;
use crate::servers::ISSUER;

pub async fn seed(
    data_dir: &Path,
    keys_dir: &Path,
    token_file: &Path,
    count: u64,
    threads: usize,
    flush_every: u64,
) -> Result<Value, String> {
    if data_dir.join("db").exists() {
        return Err(format!(
            "{} already holds a database; seed needs a new directory",
            data_dir.display()
        ));
    }
    let config = Config {
        data_dir: data_dir.to_owned(),
        keys_dir: keys_dir.to_owned(),
        issuer: ISSUER.to_owned(),
        ..Config::default()
    };
    let started = Instant::now();
    let opened = latchkey::service::open(config, Arc::new(SystemClock)).await?;
    let bootstrap = opened
        .bootstrap
        .ok_or("the registry was not new: no bootstrap token")?;
    latchkey::service::deliver_token(&bootstrap, Some(token_file), "bootstrap admin")?;
    let state = opened.state;
    // Otherwise the next start revokes the bootstrap key as never delivered.
    latchkey::service::confirm_bootstrap_delivered(&state).await?;
    // Up to `in_flight` creates wait on the store at once, so its group
    // commit covers many keys per transaction and flush.
    let in_flight = (flush_every.max(1) as usize).clamp(threads.max(1), 4096);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let state = state.clone();
        let next = Arc::clone(&next);
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<(), String>(());
                }
                let now = state.now();
                let (roles, accounts) = match n % 4 {
                    0 => (vec![Role::GlobalViewer], None),
                    1 => (vec![Role::GlobalAdmin], None),
                    _ => (
                        vec![Role::CloudAccountViewer],
                        Some(vec![format!("acct-{}", n % 5000), "acct-shared".to_owned()]),
                    ),
                };
                let valid = ValidNewKey {
                    name: format!("seed-{n:07}"),
                    description: format!("seeded key {n} for the one-million-key benchmark"),
                    roles,
                    accounts,
                    expires_at: add_months(now, 6),
                };
                state
                    .issuer
                    .create_valid(&Actor::bootstrap(), valid)
                    .await
                    .map_err(|e| format!("key {n}: {e}"))?;
                if (n + 1).is_multiple_of(100_000) {
                    eprintln!(
                        "loadgen: seeded {} keys in {:.1} s",
                        n + 1,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.map_err(|e| e.to_string())??;
    }
    state.issuer.flush().await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::write(data_dir.join("loadgen-seed-count"), format!("{count}\n"));
    let rate = count as f64 / elapsed;
    println!(
        "seeded {count} keys (plus the bootstrap admin) in {elapsed:.1} s: {rate:.0} keys/s, {} threads",
        threads.max(1)
    );
    Ok(json!({
        "scenario": "seed",
        "label": format!("seed {count} keys"),
        "count": count,
        "threads": threads.max(1),
        "result": {"rate": round(rate, 1), "seconds": round(elapsed, 2)},
    }))
}
