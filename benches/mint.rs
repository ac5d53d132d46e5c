//! Minting an access key against ring's raw signature over the same bytes,
//! in one run, per algorithm. Target (issue): mint ≤ 1.15× raw sign.
//!
//! Run: `cargo bench --bench mint`

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::signing::SigningKey;
use latchkey_verifier::jwk::SigningAlgorithm;
use latchkey_verifier::{AccessClaims, Audience, Role, StatusClaim, StatusListRef};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "https://latchkey.example.com".into(),
        sub: "01a202c8-22e5-76ec-9e7a-ec301b7543b6".into(),
        client_id: "01a202c8-22e5-76ec-9e7a-ec301b7543b6".into(),
        aud: Audience::One("latchkey".into()),
        iat: 1_780_000_000,
        nbf: 1_780_000_000,
        exp: 1_795_000_000,
        jti: "01a202c8-22e5-76ec-9e7a-ec301b7543b7".into(),
        name: "billing-reader".into(),
        roles: vec![Role::CloudAccountViewer],
        accounts: Some(vec!["acct-1001".into(), "acct-1002".into()]),
        status: StatusClaim {
            status_list: StatusListRef {
                idx: 123_456,
                uri: "https://latchkey.example.com/v1/status/0".into(),
            },
        },
    }
}

fn bench_mint(c: &mut Criterion) {
    let claims = claims();
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let (key, _) = SigningKey::generate(alg).expect("generate");
        let token = key.mint(&claims).expect("mint");
        // The exact bytes a mint signs: header.payload.
        let signing_input = token
            .rsplit_once('.')
            .expect("compact JWS")
            .0
            .as_bytes()
            .to_vec();
        let mut group = c.benchmark_group(format!("mint/{}", alg.as_str()));
        group.bench_function("ring_raw_sign", |b| {
            b.iter(|| black_box(key.sign_raw(black_box(&signing_input)).expect("sign")))
        });
        group.bench_function("latchkey_mint", |b| {
            b.iter(|| black_box(key.mint(black_box(&claims)).expect("mint")))
        });
        group.finish();
        paired_ratio(
            alg.as_str(),
            &|| key.sign_raw(&signing_input).expect("sign"),
            &|| key.mint(&claims).expect("mint"),
        );
    }
}

/// Alternates the two calls so both see the same machine load, and reports
/// the median and minimum of each: on a shared machine this ratio is steadier
/// than two criterion groups measured seconds apart.
fn paired_ratio<A, B>(name: &str, raw: &impl Fn() -> A, mint: &impl Fn() -> B) {
    const CALLS: usize = 5_000;
    let mut raw_times = Vec::with_capacity(CALLS);
    let mut mint_times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        black_box(raw());
        let mid = Instant::now();
        black_box(mint());
        mint_times.push(mid.elapsed());
        raw_times.push(mid - start);
    }
    raw_times.sort_unstable();
    mint_times.sort_unstable();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "mint/{name}: paired latchkey_mint / ring_raw_sign over {CALLS} calls: median {:.3} ({:.2?} vs {:.2?}), min {:.3} ({:.2?} vs {:.2?})",
        ratio(mint_times[CALLS / 2], raw_times[CALLS / 2]),
        mint_times[CALLS / 2],
        raw_times[CALLS / 2],
        ratio(mint_times[0], raw_times[0]),
        mint_times[0],
        raw_times[0],
    );
}

criterion_group!(benches, bench_mint);
criterion_main!(benches);
