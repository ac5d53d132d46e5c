//! Offline verification of a compact-serialised access key.
//!
//! [`verify_signed`] checks, in this order: size, structure and base64, the
//! header (forbidden parameters, `alg`, `kid`), the signature with the key the
//! `kid` names, and only then the claims (`typ`, `iss`, `aud`, `exp`/`nbf`,
//! roles and accounts). The token's status (revocation) is separate: look it
//! up in the status list and pass it to [`check_status`].
//!
//! The one place that reads token content before the signature has been
//! checked is [`decode_header_unverified`]: it decodes the JOSE header, which
//! is needed to find the key. Nothing it returns is trusted beyond choosing
//! that key, and the key (not the header) fixes the algorithm.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use crate::claims::{ACCESS_TOKEN_TYP, AccessClaims, Role, TokenStatus};
use crate::error::VerifyError;
use crate::jwk::{KeySet, SigningAlgorithm};

/// The clock skew tolerated on `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: i64 = 30;

/// The longest token accepted, in bytes. Real access keys are well under
/// 1 KiB; anything this large is refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The most bytes the three segments of a token of at most
/// [`MAX_TOKEN_BYTES`] can decode to.
const MAX_DECODED_BYTES: usize = MAX_TOKEN_BYTES / 4 * 3;

/// What a token must say to be accepted by this verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// The exact `iss` (the issuer URL as in its metadata document).
    pub issuer: String,
    /// An audience that must appear in `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (negative values
    /// count as zero).
    pub leeway_secs: i64,
}

impl Expectations {
    /// Expect this issuer and audience, with [`DEFAULT_LEEWAY_SECS`].
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Expectations {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// A string from the header: borrowed from the decoded bytes unless the JSON
/// escaped something.
struct HeaderStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for HeaderStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = HeaderStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(HeaderStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(HeaderStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(HeaderStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// Set when a header parameter is present at all, whatever its value
/// (`null` included).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Present(true))
    }
}

/// The JOSE header, as read before the signature is checked. serde's derive
/// rejects a duplicate of any field named here, so `alg`, `typ`, `kid` and
/// the forbidden parameters cannot be smuggled in twice.
#[derive(Deserialize)]
struct UnverifiedHeader<'a> {
    #[serde(borrow)]
    alg: HeaderStr<'a>,
    #[serde(borrow, default)]
    typ: Option<HeaderStr<'a>>,
    #[serde(borrow, default)]
    kid: Option<HeaderStr<'a>>,
    #[serde(default)]
    jku: Present,
    #[serde(default)]
    x5u: Present,
    #[serde(default)]
    jwk: Present,
    #[serde(default)]
    x5c: Present,
    #[serde(default)]
    crit: Present,
}

/// The exact decoded length of unpadded base64 of `len` characters, or
/// `None` if no such encoding exists.
fn decoded_len(len: usize) -> Option<usize> {
    match len % 4 {
        1 => None,
        rem => Some(len / 4 * 3 + rem * 3 / 4),
    }
}

/// Strict base64url (no padding, canonical trailing bits) of `input` into
/// the front of `buf`; returns the decoded bytes and the rest of `buf`.
fn decode_segment<'b>(
    input: &str,
    buf: &'b mut [u8],
    part: &'static str,
) -> Result<(&'b mut [u8], &'b mut [u8]), VerifyError> {
    let len = decoded_len(input.len())
        .filter(|&len| len <= buf.len())
        .ok_or(VerifyError::Malformed(part))?;
    let (out, rest) = buf.split_at_mut(len);
    match URL_SAFE_NO_PAD.decode_slice(input, out) {
        Ok(written) if written == len => Ok((out, rest)),
        _ => Err(VerifyError::Malformed(part)),
    }
}

/// JSON that must be an object (serde's struct derive would also take an
/// array of field values).
fn is_json_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// **Unverified**: parses the JOSE header before the signature is checked,
/// only to find the signing key. Rejects forbidden parameters here so that no
/// later step could ever be tempted to follow them.
fn decode_header_unverified(bytes: &[u8]) -> Result<UnverifiedHeader<'_>, VerifyError> {
    if !is_json_object(bytes) {
        return Err(VerifyError::Malformed("header"));
    }
    let header: UnverifiedHeader<'_> =
        serde_json::from_slice(bytes).map_err(|_| VerifyError::Malformed("header"))?;
    for (present, name) in [
        (header.jku.0, "jku"),
        (header.x5u.0, "x5u"),
        (header.jwk.0, "jwk"),
        (header.x5c.0, "x5c"),
        (header.crit.0, "crit"),
    ] {
        if present {
            return Err(VerifyError::ForbiddenHeader(name));
        }
    }
    Ok(header)
}

/// `at+jwt`, or `application/at+jwt`, compared case-insensitively
/// (RFC 9068 §4, RFC 7515 §4.1.9).
fn is_access_token_typ(typ: &str) -> bool {
    let typ = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
}

/// Verifies a compact JWS access key against `keys` and `expect` at time
/// `now_unix` (seconds), and returns its claims.
///
/// The signature is checked with the key named by the header's `kid`, using
/// that key's algorithm; the header's `alg` must name the same algorithm. The
/// claims are parsed only after the signature verifies. Revocation status is
/// not checked here: see [`check_status`].
pub fn verify_signed(
    token: &str,
    keys: &KeySet,
    expect: &Expectations,
    now_unix: i64,
) -> Result<AccessClaims, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("structure"));
    };
    if header_b64.is_empty() {
        return Err(VerifyError::Malformed("header"));
    }
    if payload_b64.is_empty() {
        return Err(VerifyError::Malformed("payload"));
    }
    if signature_b64.is_empty() {
        return Err(VerifyError::Malformed("signature"));
    }

    let mut buf = [0u8; MAX_DECODED_BYTES];
    let (header_bytes, rest) = decode_segment(header_b64, &mut buf, "header")?;
    let header = decode_header_unverified(header_bytes)?;

    let alg =
        SigningAlgorithm::from_jose(&header.alg.0).ok_or(VerifyError::UnsupportedAlgorithm)?;
    let key = match &header.kid {
        Some(kid) if !kid.0.is_empty() => keys.get(&kid.0).ok_or(VerifyError::UnknownKey)?,
        _ => return Err(VerifyError::UnknownKey),
    };
    if key.alg() != alg {
        return Err(VerifyError::UnsupportedAlgorithm);
    }

    let (signature, rest) = decode_segment(signature_b64, rest, "signature")?;
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify_signature(signing_input, signature) {
        return Err(VerifyError::BadSignature);
    }

    // Signature verified: from here on the header and payload are trusted.
    let (payload, _) = decode_segment(payload_b64, rest, "payload")?;
    if !is_json_object(payload) {
        return Err(VerifyError::Malformed("claims"));
    }
    let claims: AccessClaims =
        serde_json::from_slice(payload).map_err(|_| VerifyError::Malformed("claims"))?;

    match &header.typ {
        Some(typ) if is_access_token_typ(&typ.0) => {}
        _ => return Err(VerifyError::WrongType),
    }
    check_claims(&claims, expect, now_unix)?;
    Ok(claims)
}

/// The claim rules of contract §1 and §2, on claims whose signature verified.
fn check_claims(
    claims: &AccessClaims,
    expect: &Expectations,
    now_unix: i64,
) -> Result<(), VerifyError> {
    if claims.iss != expect.issuer {
        return Err(VerifyError::WrongIssuer);
    }
    if !claims.aud.contains(&expect.audience) {
        return Err(VerifyError::WrongAudience);
    }
    let leeway = expect.leeway_secs.max(0);
    if claims.exp <= now_unix.saturating_sub(leeway) {
        return Err(VerifyError::Expired);
    }
    if claims.nbf > now_unix.saturating_add(leeway) {
        return Err(VerifyError::NotYetValid);
    }
    if claims.roles.is_empty() {
        return Err(VerifyError::InvalidClaims("roles is empty"));
    }
    let account_viewer = claims.roles.contains(&Role::CloudAccountViewer);
    match (&claims.accounts, account_viewer) {
        (None, false) => {}
        (None, true) => {
            return Err(VerifyError::InvalidClaims(
                "cloud_account_viewer without accounts",
            ));
        }
        (Some(_), false) => {
            return Err(VerifyError::InvalidClaims(
                "accounts without cloud_account_viewer",
            ));
        }
        (Some(accounts), true) => {
            if accounts.is_empty() {
                return Err(VerifyError::InvalidClaims("accounts is empty"));
            }
            if accounts.iter().any(String::is_empty) {
                return Err(VerifyError::InvalidClaims("empty account id"));
            }
        }
    }
    Ok(())
}

/// Maps a token's status-list entry to the verification outcome: `Valid` is
/// accepted, `Invalid` is [`VerifyError::Revoked`], `Suspended` is
/// [`VerifyError::Suspended`].
pub fn check_status(status: TokenStatus) -> Result<(), VerifyError> {
    match status {
        TokenStatus::Valid => Ok(()),
        TokenStatus::Invalid => Err(VerifyError::Revoked),
        TokenStatus::Suspended => Err(VerifyError::Suspended),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jwk::VerificationKey;
    use crate::testutil::{self, TestKey, b64};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
    use serde_json::{Value, json};

    const ISS: &str = "https://latchkey.example";
    const AUD: &str = "latchkey";
    const NOW: i64 = 1_750_000_000;
    const EXP: i64 = NOW + 3600;
    const NBF: i64 = NOW - 60;

    enum Signer {
        Ed(TestKey<Ed25519KeyPair>),
        Ec(TestKey<EcdsaKeyPair>),
        Rsa(RsaKeyPair),
    }

    impl Signer {
        fn sign(&self, msg: &[u8]) -> Vec<u8> {
            match self {
                Signer::Ed(k) => k.pair.sign(msg).as_ref().to_vec(),
                Signer::Ec(k) => k
                    .pair
                    .sign(&SystemRandom::new(), msg)
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Signer::Rsa(k) => {
                    let mut sig = vec![0; k.public().modulus_len()];
                    k.sign(
                        &ring::signature::RSA_PKCS1_SHA256,
                        &SystemRandom::new(),
                        msg,
                        &mut sig,
                    )
                    .unwrap();
                    sig
                }
            }
        }

        fn verification_key(&self, kid: &str) -> VerificationKey {
            match self {
                Signer::Ed(k) => VerificationKey::from_public_key(
                    kid,
                    SigningAlgorithm::EdDSA,
                    k.public_key().as_ref(),
                )
                .unwrap(),
                Signer::Ec(k) => VerificationKey::from_public_key(
                    kid,
                    SigningAlgorithm::ES256,
                    k.public_key().as_ref(),
                )
                .unwrap(),
                Signer::Rsa(k) => {
                    let c = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                    VerificationKey::from_rsa_components(kid, &c.n, &c.e).unwrap()
                }
            }
        }
    }

    struct Fixture {
        ed: Signer,
        ec: Signer,
        rsa: Signer,
        keys: KeySet,
        expect: Expectations,
    }

    fn fixture() -> Fixture {
        let ed = Signer::Ed(testutil::ed25519());
        let ec = Signer::Ec(testutil::p256());
        let rsa = Signer::Rsa(testutil::rsa());
        let keys = KeySet::from_keys([
            ed.verification_key("ed-1"),
            ec.verification_key("ec-1"),
            rsa.verification_key("rs-1"),
        ]);
        Fixture {
            ed,
            ec,
            rsa,
            keys,
            expect: Expectations::new(ISS, AUD),
        }
    }

    fn claims() -> Value {
        json!({
            "iss": ISS,
            "sub": "0197a0b2-0000-7000-8000-000000000001",
            "client_id": "0197a0b2-0000-7000-8000-000000000001",
            "aud": AUD,
            "iat": NBF,
            "nbf": NBF,
            "exp": EXP,
            "jti": "0197a0b2-0000-7000-8000-0000000000aa",
            "name": "ci-reader",
            "roles": ["cloud_account_viewer"],
            "accounts": ["acct-1", "acct-2"],
            "status": {"status_list": {"idx": 7, "uri": "https://latchkey.example/v1/status/1"}}
        })
    }

    fn header(alg: &str, kid: &str) -> String {
        json!({"alg": alg, "typ": "at+jwt", "kid": kid}).to_string()
    }

    /// Signs raw header and payload JSON text.
    fn token_raw(signer: &Signer, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = signer.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    fn token(signer: &Signer, header: &str, claims: &Value) -> String {
        token_raw(signer, header, &claims.to_string())
    }

    fn ed_token(f: &Fixture, claims: &Value) -> String {
        token(&f.ed, &header("EdDSA", "ed-1"), claims)
    }

    fn check(f: &Fixture, token: &str) -> Result<AccessClaims, VerifyError> {
        verify_signed(token, &f.keys, &f.expect, NOW)
    }

    fn check_at(f: &Fixture, token: &str, now: i64) -> Result<AccessClaims, VerifyError> {
        verify_signed(token, &f.keys, &f.expect, now)
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    #[test]
    fn valid_tokens_are_accepted() {
        let f = fixture();
        let got = check(&f, &ed_token(&f, &claims())).unwrap();
        assert_eq!(got.name, "ci-reader");
        assert_eq!(got.roles, [Role::CloudAccountViewer]);
        assert_eq!(got.status.status_list.idx, 7);
        assert_eq!(
            got,
            serde_json::from_value::<AccessClaims>(claims()).unwrap()
        );

        let es = token(&f.ec, &header("ES256", "ec-1"), &claims());
        assert!(check(&f, &es).is_ok());
        let rs = token(&f.rsa, &header("RS256", "rs-1"), &claims());
        assert!(check(&f, &rs).is_ok());

        let admin = with(
            without(claims(), "accounts"),
            "roles",
            json!(["global_admin", "global_viewer"]),
        );
        assert!(check(&f, &ed_token(&f, &admin)).is_ok());
        let all = with(claims(), "accounts", json!(["*"]));
        assert!(check(&f, &ed_token(&f, &all)).is_ok());
        // Unknown claims and header parameters are ignored.
        let extra = with(claims(), "scope", json!("x"));
        let hdr = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "ed-1", "x5t": "abc"}).to_string();
        assert!(check(&f, &token(&f.ed, &hdr, &extra)).is_ok());
        // Escaped strings in the header are fine.
        let hdr = r#"{"alg":"Ed\u0044SA","typ":"at\u002bjwt","kid":"ed\u002d1"}"#;
        assert!(check(&f, &token(&f.ed, hdr, &claims())).is_ok());
    }

    #[test]
    fn typ_variants() {
        let f = fixture();
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+JWT",
        ] {
            let hdr = json!({"alg": "EdDSA", "typ": typ, "kid": "ed-1"}).to_string();
            assert!(check(&f, &token(&f.ed, &hdr, &claims())).is_ok(), "{typ}");
        }
        for typ in [
            "JWT",
            "jwt",
            "at+jwt ",
            "application/jwt",
            "application/",
            "statuslist+jwt",
            "",
        ] {
            let hdr = json!({"alg": "EdDSA", "typ": typ, "kid": "ed-1"}).to_string();
            assert_eq!(
                check(&f, &token(&f.ed, &hdr, &claims())),
                Err(VerifyError::WrongType),
                "{typ}"
            );
        }
        let hdr = json!({"alg": "EdDSA", "kid": "ed-1"}).to_string();
        assert_eq!(
            check(&f, &token(&f.ed, &hdr, &claims())),
            Err(VerifyError::WrongType)
        );
        let hdr = json!({"alg": "EdDSA", "typ": 1, "kid": "ed-1"}).to_string();
        assert_eq!(
            check(&f, &token(&f.ed, &hdr, &claims())),
            Err(VerifyError::Malformed("header"))
        );
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let f = fixture();
        let good = ed_token(&f, &claims());
        let parts: Vec<&str> = good.split('.').collect();

        // Payload swapped for another (validly encoded) one.
        let admin = with(
            without(claims(), "accounts"),
            "roles",
            json!(["global_admin"]),
        );
        let forged_payload = b64(admin.to_string().as_bytes());
        let t = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(check(&f, &t), Err(VerifyError::BadSignature));

        // Header swapped (still valid, same kid and alg).
        let hdr = b64(br#"{"alg": "EdDSA", "kid": "ed-1", "typ": "at+jwt"}"#);
        let t = format!("{}.{}.{}", hdr, parts[1], parts[2]);
        assert_eq!(check(&f, &t), Err(VerifyError::BadSignature));

        // A bit flipped in the signature.
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[10] ^= 1;
        let t = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
        assert_eq!(check(&f, &t), Err(VerifyError::BadSignature));
        // Truncated signature.
        let t = format!("{}.{}.{}", parts[0], parts[1], b64(&sig[..32]));
        assert_eq!(check(&f, &t), Err(VerifyError::BadSignature));

        // The same for ES256.
        let es = token(&f.ec, &header("ES256", "ec-1"), &claims());
        let p: Vec<&str> = es.split('.').collect();
        let t = format!("{}.{}.{}", p[0], forged_payload, p[2]);
        assert_eq!(check(&f, &t), Err(VerifyError::BadSignature));
    }

    #[test]
    fn foreign_key_with_the_same_kid() {
        let f = fixture();
        let impostor = Signer::Ed(testutil::ed25519());
        let t = token(&impostor, &header("EdDSA", "ed-1"), &claims());
        assert_eq!(check(&f, &t), Err(VerifyError::BadSignature));
        let impostor = Signer::Ec(testutil::p256());
        let t = token(&impostor, &header("ES256", "ec-1"), &claims());
        assert_eq!(check(&f, &t), Err(VerifyError::BadSignature));
    }

    #[test]
    fn unknown_or_missing_kid() {
        let f = fixture();
        let t = token(&f.ed, &header("EdDSA", "nope"), &claims());
        assert_eq!(check(&f, &t), Err(VerifyError::UnknownKey));
        let t = token(&f.ed, &header("EdDSA", ""), &claims());
        assert_eq!(check(&f, &t), Err(VerifyError::UnknownKey));
        let hdr = json!({"alg": "EdDSA", "typ": "at+jwt"}).to_string();
        assert_eq!(
            check(&f, &token(&f.ed, &hdr, &claims())),
            Err(VerifyError::UnknownKey)
        );
        let hdr = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": null}).to_string();
        assert_eq!(
            check(&f, &token(&f.ed, &hdr, &claims())),
            Err(VerifyError::UnknownKey)
        );
        // Not found in an empty set either.
        let t = ed_token(&f, &claims());
        assert_eq!(
            verify_signed(&t, &KeySet::default(), &f.expect, NOW),
            Err(VerifyError::UnknownKey)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let f = fixture();
        let payload = b64(claims().to_string().as_bytes());
        for hdr in [
            header("none", "ed-1"),
            header("None", "ed-1"),
            header("NONE", "ed-1"),
            header("", "ed-1"),
        ] {
            let h = b64(hdr.as_bytes());
            assert_eq!(
                check(&f, &format!("{h}.{payload}.")),
                Err(VerifyError::Malformed("signature")),
                "{hdr}"
            );
            let t = format!("{h}.{payload}.{}", b64(b"sig"));
            assert_eq!(
                check(&f, &t),
                Err(VerifyError::UnsupportedAlgorithm),
                "{hdr}"
            );
        }
        let hdr = json!({"typ": "at+jwt", "kid": "ed-1"}).to_string();
        let t = format!("{}.{payload}.{}", b64(hdr.as_bytes()), b64(b"sig"));
        assert_eq!(check(&f, &t), Err(VerifyError::Malformed("header")));
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        let f = fixture();
        let Signer::Ed(ed) = &f.ed else {
            unreachable!()
        };
        let Signer::Ec(ec) = &f.ec else {
            unreachable!()
        };
        for (kid, secret) in [
            ("ed-1", ed.public_key().as_ref()),
            ("ec-1", ec.public_key().as_ref()),
        ] {
            for alg in ["HS256", "HS384", "HS512"] {
                let input = format!(
                    "{}.{}",
                    b64(header(alg, kid).as_bytes()),
                    b64(claims().to_string().as_bytes())
                );
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                let sig = ring::hmac::sign(&key, input.as_bytes());
                let t = format!("{input}.{}", b64(sig.as_ref()));
                assert_eq!(check(&f, &t), Err(VerifyError::UnsupportedAlgorithm));
            }
        }
    }

    #[test]
    fn alg_must_match_the_key() {
        let f = fixture();
        // ES256-signed, claiming ES256, but naming the Ed25519 key.
        let t = token(&f.ec, &header("ES256", "ed-1"), &claims());
        assert_eq!(check(&f, &t), Err(VerifyError::UnsupportedAlgorithm));
        // EdDSA-signed by the right key but the header says ES256.
        let t = token(&f.ed, &header("ES256", "ed-1"), &claims());
        assert_eq!(check(&f, &t), Err(VerifyError::UnsupportedAlgorithm));
        // RS256 header naming the EC key.
        let t = token(&f.rsa, &header("RS256", "ec-1"), &claims());
        assert_eq!(check(&f, &t), Err(VerifyError::UnsupportedAlgorithm));
        // Case matters.
        let t = token(&f.ed, &header("eddsa", "ed-1"), &claims());
        assert_eq!(check(&f, &t), Err(VerifyError::UnsupportedAlgorithm));
    }

    #[test]
    fn forbidden_headers() {
        let f = fixture();
        for (name, value) in [
            ("jku", json!("https://evil.example/jwks.json")),
            ("x5u", json!("https://evil.example/cert.pem")),
            ("jwk", json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"})),
            ("x5c", json!(["MIIB"])),
            ("crit", json!(["exp"])),
            ("jku", Value::Null),
        ] {
            let mut hdr = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "ed-1"});
            hdr[name] = value;
            let t = token(&f.ed, &hdr.to_string(), &claims());
            let Err(VerifyError::ForbiddenHeader(got)) = check(&f, &t) else {
                panic!("{name} accepted");
            };
            assert_eq!(got, name);
        }
    }

    #[test]
    fn issuer_and_audience() {
        let f = fixture();
        for iss in [
            json!("https://evil.example"),
            json!("https://latchkey.example/"),
            json!(""),
        ] {
            let t = ed_token(&f, &with(claims(), "iss", iss));
            assert_eq!(check(&f, &t), Err(VerifyError::WrongIssuer));
        }
        let t = ed_token(&f, &with(claims(), "aud", json!("other")));
        assert_eq!(check(&f, &t), Err(VerifyError::WrongAudience));
        let t = ed_token(&f, &with(claims(), "aud", json!(["other", "another"])));
        assert_eq!(check(&f, &t), Err(VerifyError::WrongAudience));
        let t = ed_token(&f, &with(claims(), "aud", json!([])));
        assert_eq!(check(&f, &t), Err(VerifyError::WrongAudience));
        let t = ed_token(&f, &with(claims(), "aud", json!(["other", AUD])));
        assert!(check(&f, &t).is_ok());
        let t = ed_token(&f, &with(claims(), "aud", json!([AUD])));
        assert!(check(&f, &t).is_ok());
    }

    #[test]
    fn expiry_and_not_before_with_leeway() {
        let f = fixture();
        let t = ed_token(&f, &claims());
        let leeway = DEFAULT_LEEWAY_SECS;
        // exp must be > now - leeway.
        assert!(check_at(&f, &t, EXP + leeway - 1).is_ok());
        assert_eq!(check_at(&f, &t, EXP + leeway), Err(VerifyError::Expired));
        assert_eq!(check_at(&f, &t, EXP + 10_000), Err(VerifyError::Expired));
        // nbf must be <= now + leeway.
        assert!(check_at(&f, &t, NBF - leeway).is_ok());
        assert_eq!(
            check_at(&f, &t, NBF - leeway - 1),
            Err(VerifyError::NotYetValid)
        );
        let future = with(claims(), "nbf", json!(NOW + 3000));
        assert_eq!(
            check(&f, &ed_token(&f, &future)),
            Err(VerifyError::NotYetValid)
        );
        let expired = with(claims(), "exp", json!(NOW - 3000));
        assert_eq!(
            check(&f, &ed_token(&f, &expired)),
            Err(VerifyError::Expired)
        );

        // Zero leeway: exactly at exp is expired, exactly at nbf is valid.
        let strict = Expectations {
            leeway_secs: 0,
            ..f.expect.clone()
        };
        assert_eq!(
            verify_signed(&t, &f.keys, &strict, EXP),
            Err(VerifyError::Expired)
        );
        assert!(verify_signed(&t, &f.keys, &strict, EXP - 1).is_ok());
        assert!(verify_signed(&t, &f.keys, &strict, NBF).is_ok());
        assert_eq!(
            verify_signed(&t, &f.keys, &strict, NBF - 1),
            Err(VerifyError::NotYetValid)
        );
        // Negative leeway counts as zero; extreme clocks do not overflow.
        let negative = Expectations {
            leeway_secs: -100,
            ..f.expect.clone()
        };
        assert!(verify_signed(&t, &f.keys, &negative, EXP - 1).is_ok());
        let huge = Expectations {
            leeway_secs: i64::MAX,
            ..f.expect.clone()
        };
        assert!(verify_signed(&t, &f.keys, &huge, 0).is_ok());
        assert!(verify_signed(&t, &f.keys, &huge, i64::MAX).is_ok());
        assert_eq!(check_at(&f, &t, i64::MAX), Err(VerifyError::Expired));
        assert_eq!(check_at(&f, &t, i64::MIN), Err(VerifyError::NotYetValid));
    }

    #[test]
    fn role_and_account_rules() {
        let f = fixture();
        let cases = [
            (
                with(without(claims(), "accounts"), "roles", json!([])),
                "roles is empty",
            ),
            (with(claims(), "roles", json!([])), "roles is empty"),
            (
                without(claims(), "accounts"),
                "cloud_account_viewer without accounts",
            ),
            (
                with(claims(), "roles", json!(["global_viewer"])),
                "accounts without cloud_account_viewer",
            ),
            (with(claims(), "accounts", json!([])), "accounts is empty"),
            (
                with(claims(), "accounts", json!(["a", ""])),
                "empty account id",
            ),
        ];
        for (claims, why) in cases {
            assert_eq!(
                check(&f, &ed_token(&f, &claims)),
                Err(VerifyError::InvalidClaims(why))
            );
        }
        // An unknown role does not parse.
        let t = ed_token(&f, &with(claims(), "roles", json!(["superuser"])));
        assert_eq!(check(&f, &t), Err(VerifyError::Malformed("claims")));
        // A missing claim does not parse.
        let t = ed_token(&f, &without(claims(), "jti"));
        assert_eq!(check(&f, &t), Err(VerifyError::Malformed("claims")));
        let t = ed_token(&f, &with(claims(), "exp", json!("soon")));
        assert_eq!(check(&f, &t), Err(VerifyError::Malformed("claims")));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let f = fixture();
        let payload = claims().to_string();
        for hdr in [
            r#"{"alg":"EdDSA","typ":"at+jwt","kid":"ed-1","alg":"EdDSA"}"#,
            r#"{"alg":"EdDSA","typ":"at+jwt","kid":"ed-1","kid":"ec-1"}"#,
            r#"{"alg":"EdDSA","typ":"JWT","kid":"ed-1","typ":"at+jwt"}"#,
        ] {
            let t = token_raw(&f.ed, hdr, &payload);
            assert_eq!(
                check(&f, &t),
                Err(VerifyError::Malformed("header")),
                "{hdr}"
            );
        }
        let hdr = header("EdDSA", "ed-1");
        for dup in [
            r#","exp":9999999999}"#,
            r#","iss":"https://latchkey.example"}"#,
            r#","roles":["global_admin"]}"#,
            r#","aud":"latchkey"}"#,
        ] {
            let raw = format!("{}{}", &payload[..payload.len() - 1], dup);
            let t = token_raw(&f.ed, &hdr, &raw);
            assert_eq!(
                check(&f, &t),
                Err(VerifyError::Malformed("claims")),
                "{dup}"
            );
        }
    }

    #[test]
    fn structure_and_base64() {
        let f = fixture();
        let good = ed_token(&f, &claims());
        let p: Vec<&str> = good.split('.').collect();
        let malformed = |t: &str| check(&f, t).unwrap_err();

        assert_eq!(malformed(""), VerifyError::Malformed("structure"));
        assert_eq!(malformed("abc"), VerifyError::Malformed("structure"));
        assert_eq!(
            malformed(&format!("{}.{}", p[0], p[1])),
            VerifyError::Malformed("structure")
        );
        assert_eq!(
            malformed(&format!("{good}.")),
            VerifyError::Malformed("structure")
        );
        assert_eq!(
            malformed(&format!("{good}.{}", p[2])),
            VerifyError::Malformed("structure")
        );
        assert_eq!(malformed(".."), VerifyError::Malformed("header"));
        assert_eq!(
            malformed(&format!(".{}.{}", p[1], p[2])),
            VerifyError::Malformed("header")
        );
        assert_eq!(
            malformed(&format!("{}..{}", p[0], p[2])),
            VerifyError::Malformed("payload")
        );
        assert_eq!(
            malformed(&format!("{}.{}.", p[0], p[1])),
            VerifyError::Malformed("signature")
        );

        // Padding, the standard alphabet, whitespace and bad lengths.
        let padded = URL_SAFE_NO_PAD.decode(p[0]).unwrap();
        let std_padded = base64::engine::general_purpose::URL_SAFE.encode(&padded);
        assert!(std_padded.ends_with('='), "test needs a header that pads");
        assert_eq!(
            malformed(&format!("{std_padded}.{}.{}", p[1], p[2])),
            VerifyError::Malformed("header")
        );
        let plus = p[0].replace('-', "+").replace('_', "/");
        if plus != p[0] {
            assert_eq!(
                malformed(&format!("{plus}.{}.{}", p[1], p[2])),
                VerifyError::Malformed("header")
            );
        }
        assert_eq!(
            malformed(&format!(" {}.{}.{}", p[0], p[1], p[2])),
            VerifyError::Malformed("header")
        );
        assert_eq!(
            malformed(&format!("{}A.{}.{}", p[0], p[1], p[2])),
            VerifyError::Malformed("header")
        );
        assert_eq!(
            malformed(&format!("{}.{}.{}=", p[0], p[1], p[2])),
            VerifyError::Malformed("signature")
        );
        assert_eq!(
            malformed(&format!("{}.{}.{}*", p[0], p[1], p[2])),
            VerifyError::Malformed("signature")
        );
        // Non-canonical trailing bits: a 64-byte signature is 86 characters
        // and the last one carries 2 significant bits; the other 4 must be 0.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut sig_b64 = p[2].to_string();
        assert_eq!(sig_b64.len(), 86);
        let last = sig_b64.pop().unwrap();
        let idx = alphabet.find(last).unwrap();
        assert_eq!(idx % 16, 0);
        sig_b64.push(char::from(alphabet.as_bytes()[idx + 1]));
        assert_eq!(
            malformed(&format!("{}.{}.{sig_b64}", p[0], p[1])),
            VerifyError::Malformed("signature")
        );

        // The payload is only decoded after the signature verifies.
        let bad_payload = format!("{}.{}", p[0], "!!!!");
        let sig = f.ed.sign(bad_payload.as_bytes());
        assert_eq!(
            malformed(&format!("{bad_payload}.{}", b64(&sig))),
            VerifyError::Malformed("payload")
        );
        assert_eq!(
            malformed(&format!("{}.{}!.{}", p[0], p[1], p[2])),
            VerifyError::BadSignature
        );

        // Header and claims must be JSON objects.
        let arr = r#"["EdDSA","at+jwt","ed-1"]"#;
        assert_eq!(
            malformed(&token_raw(&f.ed, arr, &claims().to_string())),
            VerifyError::Malformed("header")
        );
        assert_eq!(
            malformed(&token_raw(&f.ed, &header("EdDSA", "ed-1"), "[1,2]")),
            VerifyError::Malformed("claims")
        );
        assert_eq!(
            malformed(&token_raw(&f.ed, &header("EdDSA", "ed-1"), "not json")),
            VerifyError::Malformed("claims")
        );
        let trailing = format!("{} x", claims());
        assert_eq!(
            malformed(&token_raw(&f.ed, &header("EdDSA", "ed-1"), &trailing)),
            VerifyError::Malformed("claims")
        );
        let h = b64(b"{not json");
        assert_eq!(
            malformed(&format!("{h}.{}.{}", p[1], p[2])),
            VerifyError::Malformed("header")
        );
        let h = b64(&[0xff, 0xfe, b'{']);
        assert_eq!(
            malformed(&format!("{h}.{}.{}", p[1], p[2])),
            VerifyError::Malformed("header")
        );
    }

    #[test]
    fn size_limit_comes_first() {
        let f = fixture();
        let huge = "a".repeat(1024 * 1024);
        assert_eq!(check(&f, &huge), Err(VerifyError::TooLarge));
        let big_token = format!("{}.{}", ed_token(&f, &claims()), huge);
        assert_eq!(check(&f, &big_token), Err(VerifyError::TooLarge));
        let just_over = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(check(&f, &just_over), Err(VerifyError::TooLarge));

        // The largest token within the limit is decoded and verified.
        let mut c = claims();
        c["pad"] = json!("");
        let base_len = ed_token(&f, &c).len();
        let estimate = (MAX_TOKEN_BYTES - base_len) * 3 / 4;
        let mut largest = None;
        for filler in estimate.saturating_sub(8)..estimate + 8 {
            let t = ed_token(&f, &with(c.clone(), "pad", json!("x".repeat(filler))));
            if t.len() <= MAX_TOKEN_BYTES {
                largest = Some(t);
            }
        }
        let largest = largest.unwrap();
        assert!(largest.len() >= MAX_TOKEN_BYTES - 1, "{}", largest.len());
        assert!(check(&f, &largest).is_ok());
    }

    #[test]
    fn status() {
        assert_eq!(check_status(TokenStatus::Valid), Ok(()));
        assert_eq!(
            check_status(TokenStatus::Invalid),
            Err(VerifyError::Revoked)
        );
        assert_eq!(
            check_status(TokenStatus::Suspended),
            Err(VerifyError::Suspended)
        );
        assert_eq!(
            check_status(TokenStatus::from_bits(3)),
            Err(VerifyError::Revoked)
        );
    }

    #[test]
    fn decoded_len_is_exact() {
        for n in 0..40usize {
            let data = vec![0xA5u8; n];
            let enc = b64(&data);
            assert_eq!(decoded_len(enc.len()), Some(n));
        }
        assert_eq!(decoded_len(1), None);
        assert_eq!(decoded_len(5), None);
    }

    #[test]
    fn interop_with_jsonwebtoken_encode() {
        crate::install_ring_provider();
        let ed = testutil::ed25519();
        let key = VerificationKey::from_public_key(
            "k",
            SigningAlgorithm::EdDSA,
            ed.public_key().as_ref(),
        )
        .unwrap();
        let mut hdr = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        hdr.typ = Some("at+jwt".into());
        hdr.kid = Some("k".into());
        let claims: AccessClaims = serde_json::from_value(claims()).unwrap();
        let t = jsonwebtoken::encode(
            &hdr,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(ed.pkcs8()),
        )
        .unwrap();
        let keys = KeySet::from_keys([key]);
        assert_eq!(
            verify_signed(&t, &keys, &Expectations::new(ISS, AUD), NOW),
            Ok(claims)
        );
    }
}
