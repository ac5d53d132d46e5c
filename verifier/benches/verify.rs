//! `verify_signed` against ring's raw signature check of the same bytes, for
//! EdDSA and ES256. The goal is a `verify_signed` within 1.10x of
//! `ring_raw_verify`: everything but the signature must be noise.
//!
//! Run: `cargo bench -p latchkey-verifier --bench verify`
//!
//! `ring_raw_verify` and `verify_signed` are each timed interleaved with the
//! other, so each run takes about twice its nominal measurement time.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_verifier::{
    AccessClaims, Expectations, KeySet, SigningAlgorithm, VerificationKey, verify_signed,
};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, UnparsedPublicKey, VerificationAlgorithm,
};
use serde_json::json;

const ISS: &str = "https://latchkey.example.com";
const AUD: &str = "latchkey";
const NOW: i64 = 1_750_000_000;

/// A realistic access key payload (contract §1).
fn claims() -> String {
    json!({
        "iss": ISS,
        "sub": "01978f3a-6f0e-7b3c-9a51-2f4d8e6c1a90",
        "client_id": "01978f3a-6f0e-7b3c-9a51-2f4d8e6c1a90",
        "aud": AUD,
        "iat": NOW - 86_400,
        "nbf": NOW - 86_400,
        "exp": NOW + 180 * 86_400,
        "jti": "01978f3a-7a21-7e44-8c3b-5d6e7f8091a2",
        "name": "billing-dashboard-reader",
        "roles": ["global_viewer", "cloud_account_viewer"],
        "accounts": ["prod-eu-1", "prod-us-2", "staging:analytics", "acct.42"],
        "status": {"status_list": {"idx": 48_213, "uri": "https://latchkey.example.com/v1/status/1"}}
    })
    .to_string()
}

struct Case {
    token: String,
    public_key: Vec<u8>,
    keys: KeySet,
}

fn case(alg: SigningAlgorithm, public_key: &[u8], sign: impl Fn(&[u8]) -> Vec<u8>) -> Case {
    // kid: a 43-character RFC 7638 thumbprint in real tokens.
    let kid = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
    let header = json!({"alg": alg.as_str(), "typ": "at+jwt", "kid": kid}).to_string();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims())
    );
    let signature = sign(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let key = VerificationKey::from_public_key(kid, alg, public_key).unwrap();
    Case {
        token,
        public_key: public_key.to_vec(),
        keys: KeySet::from_keys([key]),
    }
}

fn bench_case(c: &mut Criterion, name: &str, case: &Case, alg: &'static dyn VerificationAlgorithm) {
    let expect = Expectations::new(ISS, AUD);
    assert!(verify_signed(&case.token, &case.keys, &expect, NOW).is_ok());

    let (message, signature_b64) = case.token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();
    let public = UnparsedPublicKey::new(alg, &case.public_key);
    public.verify(message.as_bytes(), &signature).unwrap();

    let raw = || {
        UnparsedPublicKey::new(alg, black_box(&case.public_key))
            .verify(black_box(message.as_bytes()), black_box(&signature))
            .unwrap()
    };
    let full =
        || verify_signed(black_box(&case.token), &case.keys, &expect, black_box(NOW)).unwrap();

    paired_ratio(name, &raw, &full);

    let mut group = c.benchmark_group(name);
    group.bench_function("ring_raw_verify", |b| b.iter(raw));
    group.bench_function("verify_signed", |b| b.iter(full));
    // For reference: the non-signature work verify_signed does (base64 of
    // the three segments and the claims JSON), which is the whole overhead.
    let (header_b64, rest) = case.token.split_once('.').unwrap();
    let (payload_b64, _) = rest.split_once('.').unwrap();
    group.bench_function("decode_and_parse_only", |b| {
        b.iter(|| {
            let header = URL_SAFE_NO_PAD.decode(black_box(header_b64)).unwrap();
            let payload = URL_SAFE_NO_PAD.decode(black_box(payload_b64)).unwrap();
            let signature = URL_SAFE_NO_PAD.decode(black_box(signature_b64)).unwrap();
            let claims: AccessClaims = serde_json::from_slice(&payload).unwrap();
            (header, signature, claims)
        })
    });
    group.finish();
}

/// Times `raw` and `full` alternately, call by call, and prints the ratio of
/// their per-call medians (and minimums). Load from other processes hits
/// both alike and a preempted call is an outlier the median ignores, so the
/// ratio holds on a busy machine where the two separate criterion
/// measurements (taken seconds apart) can disagree by 20% or more.
fn paired_ratio<A, B>(name: &str, raw: &impl Fn() -> A, full: &impl Fn() -> B) {
    const CALLS: usize = 5_000;
    let mut raw_times = Vec::with_capacity(CALLS);
    let mut full_times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        black_box(raw());
        let mid = Instant::now();
        black_box(full());
        full_times.push(mid.elapsed());
        raw_times.push(mid - start);
    }
    raw_times.sort_unstable();
    full_times.sort_unstable();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "{name}: paired verify_signed / ring_raw_verify over {CALLS} calls: median {:.3} \
         ({:.2?} vs {:.2?}), min {:.3} ({:.2?} vs {:.2?})",
        ratio(full_times[CALLS / 2], raw_times[CALLS / 2]),
        full_times[CALLS / 2],
        raw_times[CALLS / 2],
        ratio(full_times[0], raw_times[0]),
        full_times[0],
        raw_times[0],
    );
}

fn benches(c: &mut Criterion) {
    let rng = SystemRandom::new();

    let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
    let ed_case = case(SigningAlgorithm::EdDSA, ed.public_key().as_ref(), |m| {
        ed.sign(m).as_ref().to_vec()
    });
    bench_case(c, "eddsa", &ed_case, &ED25519);

    let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
        .unwrap();
    let ec_case = case(SigningAlgorithm::ES256, ec.public_key().as_ref(), |m| {
        ec.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    bench_case(c, "es256", &ec_case, &ECDSA_P256_SHA256_FIXED);
}

criterion_group!(verify, benches);
criterion_main!(verify);
