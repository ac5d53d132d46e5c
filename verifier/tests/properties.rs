//! Properties of `verify_signed`, the verifier's token parsing and checking
//! (docs/security.md): whatever it is given it returns (never panics), it
//! never accepts a token that differs from one the issuer signed, and it
//! always accepts a token the issuer did sign with valid claims.
//!
//! Case counts are modest so that this runs in seconds under `cargo test`;
//! the fuzz target (`fuzz/`) explores the same code for longer.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_verifier::{
    AccessClaims, Expectations, KeySet, SigningAlgorithm, VerificationKey, verify_signed,
};
use proptest::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

const ISS: &str = "https://latchkey.example";
const AUD: &str = "latchkey";
const KID: &str = "test-kid";
const NOW: i64 = 1_750_000_000;

struct Fixture {
    pair: Ed25519KeyPair,
    keys: KeySet,
    expect: Expectations,
    /// A valid token and its claims.
    token: String,
    claims: AccessClaims,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = VerificationKey::from_public_key(
            KID,
            SigningAlgorithm::EdDSA,
            pair.public_key().as_ref(),
        )
        .unwrap();
        let claims = claims(
            "ci-reader",
            &["cloud_account_viewer"],
            Some(&["acct-1"]),
            3600,
        );
        let token = sign(&pair, &header(), &claims);
        let claims = serde_json::from_value(claims).unwrap();
        Fixture {
            pair,
            keys: KeySet::from_keys([key]),
            expect: Expectations::new(ISS, AUD),
            token,
            claims,
        }
    })
}

fn header() -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": KID})
}

fn claims(name: &str, roles: &[&str], accounts: Option<&[&str]>, lifetime: i64) -> Value {
    let mut claims = json!({
        "iss": ISS,
        "sub": "0197a0b2-0000-7000-8000-000000000001",
        "client_id": "0197a0b2-0000-7000-8000-000000000001",
        "aud": AUD,
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "exp": NOW + lifetime,
        "jti": "0197a0b2-0000-7000-8000-0000000000aa",
        "name": name,
        "roles": roles,
        "status": {"status_list": {"idx": 7, "uri": "https://latchkey.example/v1/status/0"}}
    });
    if let Some(accounts) = accounts {
        claims["accounts"] = json!(accounts);
    }
    claims
}

fn sign(pair: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = pair.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature.as_ref()))
}

fn verify(token: &str) -> Result<AccessClaims, latchkey_verifier::VerifyError> {
    let f = fixture();
    verify_signed(token, &f.keys, &f.expect, NOW)
}

/// A token that is not byte-for-byte the issuer's must be refused.
fn refused_unless_original(candidate: &[u8]) -> Result<(), TestCaseError> {
    let f = fixture();
    if let Ok(text) = std::str::from_utf8(candidate) {
        let result = verify(text);
        if text == f.token {
            prop_assert_eq!(result, Ok(f.claims.clone()));
        } else {
            prop_assert!(result.is_err(), "accepted a mutated token: {:?}", text);
        }
    }
    Ok(())
}

fn base64url(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9_-]{{0,{max}}}")).unwrap()
}

/// A JOSE header a forger might try: each member chosen from values that
/// matter (the real `kid`, `none`, HMAC, forbidden parameters, ...).
fn hostile_header() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "EdDSA", "none", "HS256", "ES256", "RS256", "", "eddsa",
        ]),
        prop::sample::select(vec![KID, "", "other", "../test-kid"]),
        prop::sample::select(vec!["at+jwt", "JWT", "application/at+jwt", ""]),
        prop::sample::select(vec!["", "jku", "x5u", "jwk", "x5c", "crit", "cty"]),
    )
        .prop_map(|(alg, kid, typ, extra)| {
            let mut h = json!({"alg": alg, "kid": kid, "typ": typ});
            if !extra.is_empty() {
                h[extra] = json!("x");
            }
            h
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        prop_assert!(verify(&text).is_err());
    }

    #[test]
    fn arbitrary_text_is_refused(text in ".{0,300}") {
        prop_assert!(verify(&text).is_err());
    }

    #[test]
    fn arbitrary_three_segment_base64_is_refused(
        h in base64url(200), p in base64url(400), s in base64url(120)
    ) {
        let token = format!("{h}.{p}.{s}");
        prop_assert!(verify(&token).is_err());
    }

    #[test]
    fn well_formed_json_with_a_random_signature_is_refused(
        header in hostile_header(),
        claims_bytes in prop::collection::vec(any::<u8>(), 0..300),
        signature in prop::collection::vec(any::<u8>(), 0..80),
        use_real_claims in any::<bool>(),
    ) {
        let f = fixture();
        let payload = if use_real_claims {
            B64.encode(serde_json::to_vec(&f.claims).unwrap())
        } else {
            B64.encode(&claims_bytes)
        };
        let token = format!(
            "{}.{payload}.{}",
            B64.encode(header.to_string()),
            B64.encode(&signature)
        );
        prop_assert!(verify(&token).is_err());
    }

    #[test]
    fn bit_flips_are_refused(flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)) {
        let mut bytes = fixture().token.clone().into_bytes();
        for (at, bit) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        refused_unless_original(&bytes)?;
    }

    #[test]
    fn truncations_are_refused(at in any::<prop::sample::Index>()) {
        let token = fixture().token.as_bytes();
        let end = at.index(token.len());
        prop_assert!(end < token.len());
        refused_unless_original(&token[..end])?;
        refused_unless_original(&token[token.len() - end..])?;
    }

    #[test]
    fn insertions_are_refused(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = fixture().token.clone().into_bytes();
        let i = at.index(bytes.len() + 1);
        bytes.insert(i, byte);
        refused_unless_original(&bytes)?;
    }

    #[test]
    fn segment_rearrangements_are_refused(
        order in prop::collection::vec(0usize..3, 1..6),
    ) {
        let f = fixture();
        let parts: Vec<&str> = f.token.split('.').collect();
        let candidate: Vec<&str> = order.iter().map(|&i| parts[i]).collect();
        refused_unless_original(candidate.join(".").as_bytes())?;
    }

    #[test]
    fn a_segment_from_another_valid_token_is_refused(
        swap in 0usize..3,
        name in "[a-z]{1,20}",
    ) {
        let f = fixture();
        let other = sign(&f.pair, &header(), &claims(&name, &["global_admin"], None, 7200));
        let mut parts: Vec<&str> = f.token.split('.').collect();
        let other_parts: Vec<&str> = other.split('.').collect();
        parts[swap] = other_parts[swap];
        refused_unless_original(parts.join(".").as_bytes())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn valid_tokens_always_verify(
        name in "[ -~]{1,100}",
        roles in prop::sample::subsequence(vec!["global_admin", "global_viewer", "cloud_account_viewer"], 1..=3),
        accounts in prop::collection::vec("[A-Za-z0-9._:-]{1,128}", 1..20),
        lifetime in 31i64..(730 * 86_400),
    ) {
        let f = fixture();
        let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
        let accounts = roles.contains(&"cloud_account_viewer").then_some(accounts.as_slice());
        let claims = claims(&name, &roles, accounts, lifetime);
        let token = sign(&f.pair, &header(), &claims);
        let expected: AccessClaims = serde_json::from_value(claims).unwrap();
        prop_assert_eq!(verify(&token), Ok(expected));
    }
}
