//! `Verifier::verify` — the full downstream check (signature, claims,
//! expiry, signing key still published, status list entry, usage note) —
//! against ring's raw Ed25519 verify of the same token, in one run. The
//! verifier is synced from a mock issuer on a loopback port, as in
//! production.
//!
//! Targets (issue): a first verification ≤ 1.10× `ring_raw_verify`; a
//! repeated token ≤ 2 µs.
//!
//! Run: `cargo bench -p latchkey-verifier --bench cached_verify`
//!
//! - `first_verify_no_cache`: a verifier with the cache off, so every call
//!   is a first verification (everything except the cache insert).
//! - `repeated_token`: the same token again and again (cache hit).
//! - The printed paired figures time a first verification *with* the cache
//!   insert: 5000 distinct tokens, each verified once right after ring's
//!   raw verify of its signature, reporting the ratio of the medians.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mock_issuer.rs"]
mod mock_issuer;

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_verifier::Verifier;
use mock_issuer::{AUDIENCE, MockIssuer};
use ring::signature::{ED25519, UnparsedPublicKey};

struct Fixture {
    _runtime: tokio::runtime::Runtime,
    _mock: MockIssuer,
    cached: Verifier,
    uncached: Verifier,
    public_key: Vec<u8>,
    token: String,
    pool: Vec<String>,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (mock, cached, uncached) = runtime.block_on(async {
        let mock = MockIssuer::start().await;
        let cached = Verifier::builder(&mock.url, AUDIENCE)
            .usage_reporting("bench-reporter")
            .usage_interval(Duration::from_secs(3600))
            .build()
            .await
            .unwrap();
        let uncached = Verifier::builder(&mock.url, AUDIENCE)
            .cache_capacity(0)
            .build()
            .await
            .unwrap();
        (mock, cached, uncached)
    });
    // A realistic key: a cloud-account viewer of a few accounts.
    let accounts = ["prod-eu-1", "prod-us-2", "staging:analytics", "acct.42"];
    let (token, _) = mock.mint_with(&["cloud_account_viewer"], Some(&accounts), 180 * 86_400);
    let pool = (0..5000)
        .map(|_| {
            mock.mint_with(&["cloud_account_viewer"], Some(&accounts), 180 * 86_400)
                .0
        })
        .collect();
    let (_, public_key) = mock.active_key();
    Fixture {
        _runtime: runtime,
        _mock: mock,
        cached,
        uncached,
        public_key,
        token,
        pool,
    }
}

fn raw_verify(public_key: &[u8], token: &str) {
    let (message, signature_b64) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message.as_bytes(), &signature)
        .unwrap();
}

/// Ring's raw verify needs the decoded signature; decode it outside the
/// timed region, as the `verify` bench does.
fn split(token: &str) -> (&[u8], Vec<u8>) {
    let (message, signature_b64) = token.rsplit_once('.').unwrap();
    (
        message.as_bytes(),
        URL_SAFE_NO_PAD.decode(signature_b64).unwrap(),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn paired(f: &Fixture) {
    // First verifications, with the cache insert, against raw verify.
    let public = UnparsedPublicKey::new(&ED25519, &f.public_key);
    let mut raw_times = Vec::with_capacity(f.pool.len());
    let mut first_times = Vec::with_capacity(f.pool.len());
    for token in &f.pool {
        let (message, signature) = split(token);
        let start = Instant::now();
        public
            .verify(black_box(message), black_box(&signature))
            .unwrap();
        let mid = Instant::now();
        black_box(f.cached.verify(black_box(token)).unwrap());
        first_times.push(mid.elapsed());
        raw_times.push(mid - start);
    }
    let (raw, first) = (median(raw_times), median(first_times));
    println!(
        "eddsa: paired first Verifier::verify (cache insert included) / ring_raw_verify over {} tokens: median {:.3} ({first:.2?} vs {raw:.2?})",
        f.pool.len(),
        first.as_secs_f64() / raw.as_secs_f64(),
    );
    // Repeated: the same tokens again, all cache hits now.
    let mut repeat_times = Vec::with_capacity(f.pool.len());
    for token in &f.pool {
        let start = Instant::now();
        black_box(f.cached.verify(black_box(token)).unwrap());
        repeat_times.push(start.elapsed());
    }
    println!(
        "eddsa: repeated Verifier::verify over {} cached tokens: median {:.2?}",
        f.pool.len(),
        median(repeat_times)
    );
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    raw_verify(&f.public_key, &f.token);
    assert!(f.cached.verify(&f.token).is_ok());
    assert!(f.uncached.verify(&f.token).is_ok());
    paired(&f);

    let (message, signature) = split(&f.token);
    let mut group = c.benchmark_group("eddsa");
    group.bench_function("ring_raw_verify", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ED25519, black_box(&f.public_key))
                .verify(black_box(message), black_box(&signature))
                .unwrap()
        })
    });
    group.bench_function("first_verify_no_cache", |b| {
        b.iter(|| f.uncached.verify(black_box(&f.token)).unwrap())
    });
    group.bench_function("repeated_token", |b| {
        b.iter(|| f.cached.verify(black_box(&f.token)).unwrap())
    });
    group.finish();
}

criterion_group!(cached_verify, benches);
criterion_main!(cached_verify);
