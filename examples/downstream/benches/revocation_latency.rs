//! Revoke-to-rejection latency through the push stream: the real issuer
//! runs in-process on a loopback port, a `Verifier` subscribes to it, and
//! for each of N keys (default 200) the benchmark revokes the key with
//! `DELETE /v1/keys/{id}` and measures from the moment the 204 arrives to
//! the first `verify` of its token that fails (polled in a tight loop).
//! Prints p50, p90, p99 and max. The target is rejection within
//! 100 ms.
//!
//! Run: `cargo bench -p downstream --bench revocation_latency`
//! (`REVOCATIONS=1000` for more samples).
//!
//! The issuer publishes a change when it commits, before the fsync that
//! precedes the 204, so the verifier usually refuses the key before the 204
//! arrives: such a sample counts as 0 from the 204, and the time from
//! sending the DELETE is reported too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::clock::SystemClock;
use latchkey::config::Config;
use latchkey_verifier::{Verifier, VerifyError};
use serde_json::{Value, json};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let revocations: usize = std::env::var("REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(revocations));
}

async fn run(revocations: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}");
    let config = Config {
        listen: addr,
        issuer: issuer.clone(),
        data_dir: dir.path().join("data"),
        keys_dir: dir.path().join("keys"),
        ..Config::default()
    };
    let opened = latchkey::service::open(config, Arc::new(SystemClock))
        .await
        .unwrap();
    let admin = opened.bootstrap.expect("fresh data directory").token;
    let app = latchkey::http::router(opened.state.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });

    let verifier = Verifier::builder(&issuer, "latchkey")
        .build()
        .await
        .unwrap();
    assert!(
        verifier.sync_status().stream_connected,
        "stream not connected"
    );
    let http = reqwest::Client::new();

    // From the 204's arrival (0 when the verifier already refused the key
    // by then), and from sending the DELETE.
    let mut samples = Vec::with_capacity(revocations);
    let mut from_request = Vec::with_capacity(revocations);
    let mut already_rejected = 0;
    for i in 0..revocations {
        let created: Value = http
            .post(format!("{issuer}/v1/keys"))
            .bearer_auth(&admin)
            .json(&json!({"name": format!("latency-{i}"), "roles": ["global_viewer"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = created["token"].as_str().unwrap().to_owned();
        let id = created["key"]["id"].as_str().unwrap().to_owned();
        assert!(verifier.verify(&token).is_ok(), "fresh key refused");

        // Send the DELETE from a task and poll `verify` here meanwhile, so
        // that both "since the request was sent" and "since its 204
        // arrived" can be measured.
        let delete = http
            .delete(format!("{issuer}/v1/keys/{id}"))
            .bearer_auth(&admin);
        let sent_at = Instant::now();
        let pending = tokio::spawn(async move {
            let response = delete.send().await;
            (response, Instant::now())
        });
        let deadline = sent_at + Duration::from_secs(5);
        let rejected_at = loop {
            match verifier.verify(&token) {
                Err(VerifyError::Revoked) => break Instant::now(),
                Err(other) => panic!("unexpected refusal {other:?}"),
                Ok(_) if Instant::now() > deadline => panic!("not rejected within 5 s"),
                Ok(_) => std::hint::spin_loop(),
            }
        };
        let (response, answered_at) = pending.await.unwrap();
        assert_eq!(response.unwrap().status().as_u16(), 204);
        if rejected_at <= answered_at {
            already_rejected += 1;
        }
        from_request.push(rejected_at - sent_at);
        samples.push(rejected_at.saturating_duration_since(answered_at));
    }
    samples.sort_unstable();
    from_request.sort_unstable();
    println!(
        "revoke-to-rejection over {} revocations, push stream on loopback:",
        samples.len()
    );
    for (what, sorted) in [
        ("DELETE 204 received -> verify refuses", &samples),
        ("DELETE sent -> verify refuses", &from_request),
    ] {
        println!(
            "  {what}: p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  max {:.2?}",
            percentile(sorted, 0.50),
            percentile(sorted, 0.90),
            percentile(sorted, 0.99),
            sorted[sorted.len() - 1],
        );
    }
    println!(
        "  refused before the 204 arrived: {already_rejected}/{}",
        samples.len()
    );
    let within = samples
        .iter()
        .filter(|d| **d <= Duration::from_millis(100))
        .count();
    println!("  within 100 ms: {within}/{}", samples.len());
}
