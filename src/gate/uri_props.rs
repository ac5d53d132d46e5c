//! Property tests of the URI normalisation with the account pattern: no
//! path the gate lets through for account A is, to any usual reader, a
//! path of another account.
//!
//! The "lenient reader" models the most permissive upstream: it decodes
//! every escape (twice, for double decoders), takes `\` for `/`, strips
//! `;` path parameters, resolves dot segments and merges slashes. Whenever
//! the gate accepts a URI, that reader must find the same account in it.

use proptest::prelude::*;

use super::policy::{AccountPattern, AccountSource};
use super::uri::normalise;

fn pattern() -> AccountPattern {
    AccountPattern::parse("/accounts/{account}/").expect("a valid pattern")
}

fn decode_once(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The account a lenient upstream would see in `raw`.
fn lenient_account(raw: &str) -> Option<String> {
    let raw = raw.split(['?', '#']).next().unwrap_or("");
    let decoded = decode_once(&decode_once(raw.as_bytes()));
    let text: String = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        // Windows-style readers trim trailing dots and spaces: "..." and
        // ".. " are ".." to them.
        let trimmed = segment.trim_end_matches(' ');
        let dotted = !trimmed.is_empty() && trimmed.bytes().all(|b| b == b'.');
        let segment = match (dotted, trimmed.len()) {
            (true, 1) => ".",
            (true, _) => "..",
            (false, _) => segment,
        };
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    match segments.as_slice() {
        ["accounts", account, ..] => Some((*account).to_owned()),
        _ => None,
    }
}

/// The account the gate would check for `raw`, if it accepts it.
fn gate_account(raw: &str) -> Option<Result<Option<String>, ()>> {
    let path = normalise(raw).ok()?;
    let source = AccountSource::Path(pattern());
    let headers = axum::http::HeaderMap::new();
    Some(
        source
            .account(&path, &headers)
            .map(|a| a.map(str::to_owned))
            .map_err(|_| ()),
    )
}

fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "//", ".", "..", "...", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", ";", "%3b", "%3B",
        "%25", "%32", "%45", "%46", "%20", " ", "accounts", "A", "B", "%41", "%42", "x", "?", "#",
        "%", "%00", "%c0%ae", "~", "-", "_", ":", "%3a", "%7e",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, .. ProptestConfig::default() })]

    /// Anything appended below /accounts/A/ stays in A, or is refused.
    #[test]
    fn a_suffix_never_leaves_its_account(suffix in prop::collection::vec(piece(), 0..12)) {
        let raw = format!("/accounts/A/{}", suffix.concat());
        if let Some(Ok(account)) = gate_account(&raw) {
            prop_assert_eq!(account.as_deref(), Some("A"), "{}", raw);
            let upstream = lenient_account(&raw);
            prop_assert_eq!(upstream.as_deref(), Some("A"), "{}", raw);
            let path = normalise(&raw).unwrap();
            prop_assert!(path.starts_with("/accounts/A/"), "{} -> {}", raw, path);
            prop_assert!(!path.starts_with("/accounts/B"), "{} -> {}", raw, path);
        }
    }

    /// Whatever the URI, an account the gate checks is the account a
    /// lenient upstream serves. (With no account the gate asks for a key
    /// of all accounts, which covers whatever the upstream reads.)
    #[test]
    fn the_gate_and_a_lenient_upstream_agree(pieces in prop::collection::vec(piece(), 0..14)) {
        let raw = format!("/{}", pieces.concat());
        if let Some(Ok(Some(account))) = gate_account(&raw) {
            prop_assert_eq!(Some(account), lenient_account(&raw), "{}", raw);
        }
    }

    /// Normalising twice changes nothing (the gate's output is stable).
    #[test]
    fn normalisation_is_idempotent(pieces in prop::collection::vec(piece(), 0..14)) {
        let raw = format!("/{}", pieces.concat());
        if let Ok(once) = normalise(&raw) {
            let twice = normalise(&once).map(|p| p.into_owned());
            prop_assert_eq!(Ok(once.into_owned()), twice, "{}", raw);
        }
    }
}

#[test]
fn the_lenient_reader_is_lenient() {
    // The model itself: these are the classic escapes it must see through.
    assert_eq!(
        lenient_account("/accounts/A/..%2F..%2Faccounts/B/x").as_deref(),
        Some("B")
    );
    assert_eq!(lenient_account("/accounts/A/..\\B").as_deref(), Some("B"));
    assert_eq!(lenient_account("/accounts/A/..;/B").as_deref(), Some("B"));
    assert_eq!(
        lenient_account("/accounts/A/%252e%252e/B").as_deref(),
        Some("B")
    );
    assert_eq!(lenient_account("/accounts/A/x").as_deref(), Some("A"));
    // And the gate refuses each of them.
    for raw in [
        "/accounts/A/..%2F..%2Faccounts/B/x",
        "/accounts/A/..\\B",
        "/accounts/A/..;/B",
        "/accounts/A/%252e%252e/B",
    ] {
        assert!(normalise(raw).is_err(), "{raw}");
    }
}
