//! Feeds arbitrary bytes (as `&str` when they are UTF-8) to
//! `latchkey_verifier::verify_signed` with a fixed key set.
//!
//! Oracle: besides "never panics, never hangs, never over-allocates", the
//! only tokens it may ever accept are the valid seed tokens in
//! `seeds/verify_token/` (signed with the fixed key below): the fuzzer
//! cannot forge an Ed25519 signature, so anything else that verifies is a
//! bug.

#![no_main]

use std::sync::LazyLock;

use latchkey_verifier::{Expectations, KeySet, SigningAlgorithm, VerificationKey, verify_signed};
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// 2025-06-15T15:06:40Z; the seed tokens are valid then.
const NOW: i64 = 1_750_000_000;

/// The valid tokens among the seeds.
const ACCEPTABLE: [&str; 2] = [
    include_str!("../seeds/verify_token/valid-viewer.jwt"),
    include_str!("../seeds/verify_token/valid-admin.jwt"),
];

struct Fixed {
    keys: KeySet,
    expect: Expectations,
}

static FIXED: LazyLock<Fixed> = LazyLock::new(|| {
    // A fixed Ed25519 key (seed 0x07 × 32), so the seeds stay valid.
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("a valid seed");
    let key = VerificationKey::from_public_key(
        "fuzz-ed25519",
        SigningAlgorithm::EdDSA,
        pair.public_key().as_ref(),
    )
    .expect("a valid Ed25519 public key");
    Fixed {
        keys: KeySet::from_keys([key]),
        expect: Expectations::new("https://latchkey.example", "latchkey"),
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let fixed = &*FIXED;
    if verify_signed(token, &fixed.keys, &fixed.expect, NOW).is_ok() {
        assert!(
            ACCEPTABLE.iter().any(|seed| seed.trim_end() == token),
            "accepted a token that is not one of the valid seeds: {token:?}"
        );
    }
});
