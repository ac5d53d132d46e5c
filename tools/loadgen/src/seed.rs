//! `seed`: a registry of N real keys, made in-process through the latchkey
//! library exactly as `POST /v1/keys` makes them (`Registry::create_valid`:
//! status slot, signed token, one sled transaction with the record, name,
//! `jti` index and audit entry), with a flush every `flush_every` keys
//! instead of one per key.

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
    let signing_key = state.keyring.snapshot().active.clone();
    let next = Arc::new(AtomicU64::new(0));
    let handle = tokio::runtime::Handle::current();
    let flush_every = flush_every.max(1);
    let mut workers = Vec::new();
    for _ in 0..threads.max(1) {
        let state = state.clone();
        let signing_key = Arc::clone(&signing_key);
        let next = Arc::clone(&next);
        let handle = handle.clone();
        workers.push(tokio::task::spawn_blocking(
            move || -> Result<(), String> {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return Ok(());
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
                        .registry
                        .create_valid(
                            &Actor::bootstrap(),
                            valid,
                            &signing_key,
                            &state.settings,
                            now,
                        )
                        .map_err(|e| format!("key {n}: {e}"))?;
                    if (n + 1).is_multiple_of(flush_every) {
                        handle
                            .block_on(state.registry.flush())
                            .map_err(|e| e.to_string())?;
                        eprintln!(
                            "loadgen: seeded {} keys in {:.1} s",
                            n + 1,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            },
        ));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    state.registry.flush().await.map_err(|e| e.to_string())?;
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
