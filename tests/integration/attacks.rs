//! The attack suite (docs/security.md): hostile tokens sent to the admin API
//! and to the verifier core, and hostile requests sent to the admin API.
//!
//! Every token case names the exact [`VerifyError`] a downstream verifier
//! (`verify_signed` with the key set parsed from the served JWKS, then the
//! status from the served status list) must return, and the admin API must
//! answer it with 401 (`WWW-Authenticate: Bearer error="invalid_token"`,
//! problem+json), or 403 for a valid key whose role is too weak to write.
//! No case may get a 2xx or a 5xx, and at the end no attack has changed
//! anything.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey::signing::{self, SigningKey};
use latchkey_verifier::status_list::{StatusList, StatusListClaims};
use latchkey_verifier::{
    AccessClaims, Expectations, KeySet, MAX_TOKEN_BYTES, VerifiedKey, VerifyError, check_status,
    verify_signed,
};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    AUDIENCE, ISSUER, PROBLEM_JSON, Reply, TestApp, claims_of, header_of, tamper_payload,
};

/// What must happen to a hostile token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The verifier core refuses it with exactly this error; the API answers 401.
    Refused(VerifyError),
    /// Only the issuer can tell (its registry): a downstream verifier accepts
    /// it, the API answers 401. These need the issuer's private key.
    IssuerOnly,
    /// A valid key whose role may not write: the verifier accepts it and the
    /// §1 policy refuses writes; the API answers writes with 403.
    TooWeak,
}

struct Attack {
    name: &'static str,
    token: String,
    outcome: Outcome,
}

fn attack(name: &'static str, token: String, error: VerifyError) -> Attack {
    Attack {
        name,
        token,
        outcome: Outcome::Refused(error),
    }
}

/// Compact JWS of raw header and claims text, signed by `sign`.
fn compact(header: &str, claims: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.as_bytes()),
        B64.encode(claims.as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature))
}

/// Signs raw JSON text (so that duplicate keys survive) with the issuer's
/// real key or with a foreign Ed25519 key.
struct Signers {
    issuer: std::sync::Arc<SigningKey>,
    kid: String,
    foreign: Ed25519KeyPair,
    /// RFC 7638 thumbprint of the foreign key.
    foreign_kid: String,
    foreign_x: String,
}

impl Signers {
    fn new(app: &TestApp) -> Signers {
        let kid = header_of(&app.admin_token)["kid"]
            .as_str()
            .unwrap()
            .to_owned();
        let issuer = app.signing_key(&kid);
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let foreign = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let foreign_x = B64.encode(foreign.public_key().as_ref());
        let foreign_kid =
            signing::thumbprint(&json!({"crv": "Ed25519", "kty": "OKP", "x": foreign_x}));
        assert_ne!(foreign_kid, kid);
        Signers {
            issuer,
            kid,
            foreign,
            foreign_kid,
            foreign_x,
        }
    }

    fn issuer(&self, header: &str, claims: &str) -> String {
        compact(header, claims, |m| {
            self.issuer.sign_raw(m).unwrap().as_ref().to_vec()
        })
    }

    fn foreign(&self, header: &str, claims: &str) -> String {
        compact(header, claims, |m| self.foreign.sign(m).as_ref().to_vec())
    }

    /// The header latchkey puts on its access keys, with `changes` applied
    /// (`null` removes a member).
    fn header(&self, changes: &[(&str, Value)]) -> String {
        let mut header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid});
        merge(&mut header, changes);
        header.to_string()
    }

    /// The issuer's real signature over its usual header with `changes`.
    fn issuer_header(&self, changes: &[(&str, Value)], claims: &str) -> String {
        self.issuer(&self.header(changes), claims)
    }
}

/// Sets each member of `changes` on `target`; `null` removes it.
fn merge(target: &mut Value, changes: &[(&str, Value)]) {
    let object = target.as_object_mut().unwrap();
    for (k, v) in changes {
        if v.is_null() {
            object.remove(*k);
        } else {
            object.insert((*k).to_owned(), v.clone());
        }
    }
}

/// The claims text with `changes` applied.
fn with(claims: &Value, changes: &[(&str, Value)]) -> String {
    let mut c = claims.clone();
    merge(&mut c, changes);
    c.to_string()
}

/// JSON object text with `"name": value` inserted before the existing
/// members, so that `name` appears twice (the injected value first).
fn duplicate_first(object: &str, name: &str, value: Value) -> String {
    assert!(object.starts_with('{') && object.contains(&format!("\"{name}\"")));
    format!("{{\"{name}\":{value},{}", &object[1..])
}

fn segments(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

/// Changes the first character of a base64url segment to another valid one.
fn flip_first(segment: &str) -> String {
    let replacement = if segment.starts_with('A') { "B" } else { "A" };
    format!("{replacement}{}", &segment[1..])
}

/// Builds the keys the attacks start from and the attacks themselves.
/// Advances the clock by two days (to expire one real key) first.
async fn attacks(app: &TestApp) -> Vec<Attack> {
    let short_lived = app
        .create_key(
            json!({"name": "attack-short-lived", "roles": ["global_admin"], "expires_in_days": 1}),
        )
        .await;
    app.clock.advance(2 * 86_400);
    let now = app.now();

    let base = app.key("attack-base", &["global_admin"], None).await;
    let viewer = app.key("attack-viewer", &["global_viewer"], None).await;
    let account_viewer = app
        .key(
            "attack-account-viewer",
            &["cloud_account_viewer"],
            Some(&["acct-1"]),
        )
        .await;
    let all_accounts = app
        .key(
            "attack-all-accounts",
            &["cloud_account_viewer"],
            Some(&["*"]),
        )
        .await;
    let revoked = app.key("attack-revoked", &["global_admin"], None).await;
    app.delete(
        &format!("/v1/keys/{}", revoked.id()),
        Some(&app.admin_token),
    )
    .await
    .expect(204);
    let suspended = app.key("attack-suspended", &["global_admin"], None).await;
    app.post_json(
        &format!("/v1/keys/{}/suspend", suspended.id()),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .expect(200);
    let replaced = app.key("attack-replaced", &["global_admin"], None).await;
    app.post_json(
        &format!("/v1/keys/{}/renew", replaced.id()),
        Some(&app.admin_token),
        &json!({"revoke_previous": true}),
    )
    .await
    .expect(200);
    let status_list_token = {
        let reply = app
            .request(Method::GET, "/v1/status/0", None, None, Body::empty())
            .await;
        reply.expect(200);
        assert_eq!(header_of(&reply.text)["typ"], "statuslist+jwt");
        reply.text
    };

    let s = Signers::new(app);
    let kid = s.kid.clone();
    let claims = claims_of(&base.token);
    let c = claims.to_string();
    let viewer_claims = claims_of(&viewer.token);
    let b = segments(&base.token);
    let v = segments(&viewer.token);
    let header = s.header(&[]);
    let none_header = B64.encode(s.header(&[("alg", json!("none"))]));
    let jwt_header = B64.encode(s.header(&[("typ", json!("JWT"))]));
    let unknown_sub = uuid::Uuid::now_v7().to_string();
    let raised_roles = B64.encode(with(&viewer_claims, &[("roles", json!(["global_admin"]))]));
    let embedded_jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "x": s.foreign_x, "kid": s.foreign_kid
    });
    let oversized = {
        let filler = "A".repeat(MAX_TOKEN_BYTES + 1 - base.token.len());
        format!("{}.{}{filler}.{}", b[0], b[1], b[2])
    };
    assert_eq!(oversized.len(), MAX_TOKEN_BYTES + 1);
    let issuer_only = |name, token| Attack {
        name,
        token,
        outcome: Outcome::IssuerOnly,
    };
    let too_weak = |name, token| Attack {
        name,
        token,
        outcome: Outcome::TooWeak,
    };
    use VerifyError::*;

    vec![
        // Algorithm confusion: the key, never the header, picks the algorithm.
        attack(
            "alg none, empty signature",
            format!("{none_header}.{}.", b[1]),
            Malformed("signature"),
        ),
        attack(
            "alg none, a real signature kept",
            format!("{none_header}.{}.{}", b[1], b[2]),
            UnsupportedAlgorithm,
        ),
        attack(
            "alg NONE (case variant)",
            s.issuer_header(&[("alg", json!("NONE"))], &c),
            UnsupportedAlgorithm,
        ),
        attack(
            "HS256 keyed with the issuer's public key",
            app.forger().hs256_with_public_key(&claims),
            UnsupportedAlgorithm,
        ),
        attack(
            "alg ES256 on the Ed25519 key's kid",
            s.issuer_header(&[("alg", json!("ES256"))], &c),
            UnsupportedAlgorithm,
        ),
        attack(
            "alg missing",
            s.issuer_header(&[("alg", Value::Null)], &c),
            Malformed("header"),
        ),
        // Tampering: the signature covers header and payload exactly.
        attack(
            "payload tampered",
            tamper_payload(&base.token),
            BadSignature,
        ),
        attack(
            "viewer's roles raised to global_admin, signature kept",
            format!("{}.{raised_roles}.{}", v[0], v[2]),
            BadSignature,
        ),
        attack(
            "header tampered (typ), signature kept",
            format!("{jwt_header}.{}.{}", b[1], b[2]),
            BadSignature,
        ),
        // 86 characters to 84: still canonical base64url, 63 bytes.
        attack(
            "signature truncated",
            format!("{}.{}.{}", b[0], b[1], &b[2][..b[2].len() - 2]),
            BadSignature,
        ),
        attack(
            "signature changed",
            format!("{}.{}.{}", b[0], b[1], flip_first(b[2])),
            BadSignature,
        ),
        attack(
            "signature of another token",
            format!("{}.{}.{}", b[0], b[1], v[2]),
            BadSignature,
        ),
        // Key substitution: only keys in the served JWKS count.
        attack(
            "foreign key under the issuer's kid",
            s.foreign(&header, &c),
            BadSignature,
        ),
        attack(
            "foreign key under its own kid",
            s.foreign(&s.header(&[("kid", json!(s.foreign_kid))]), &c),
            UnknownKey,
        ),
        attack(
            "jwk header embedding the foreign key",
            s.foreign(
                &s.header(&[("kid", json!(s.foreign_kid)), ("jwk", embedded_jwk)]),
                &c,
            ),
            ForbiddenHeader("jwk"),
        ),
        attack(
            "jku header",
            s.issuer_header(&[("jku", json!("http://evil.test/jwks.json"))], &c),
            ForbiddenHeader("jku"),
        ),
        attack(
            "jku header set to null",
            s.issuer(&header.replacen('{', "{\"jku\":null,", 1), &c),
            ForbiddenHeader("jku"),
        ),
        attack(
            "x5u header",
            s.issuer_header(&[("x5u", json!("http://evil.test/cert.pem"))], &c),
            ForbiddenHeader("x5u"),
        ),
        attack(
            "x5c header",
            s.issuer_header(&[("x5c", json!(["MIIB"]))], &c),
            ForbiddenHeader("x5c"),
        ),
        attack(
            "crit header",
            s.issuer_header(&[("crit", json!(["exp"])), ("exp", json!(1))], &c),
            ForbiddenHeader("crit"),
        ),
        // kid.
        attack(
            "kid unknown",
            s.issuer_header(&[("kid", json!("bm90LWEtcHVibGlzaGVkLWtleQ"))], &c),
            UnknownKey,
        ),
        attack(
            "kid empty",
            s.issuer_header(&[("kid", json!(""))], &c),
            UnknownKey,
        ),
        attack(
            "kid missing",
            s.issuer_header(&[("kid", Value::Null)], &c),
            UnknownKey,
        ),
        attack(
            "kid a path to the key file",
            s.issuer_header(&[("kid", json!(format!("../keys/{kid}")))], &c),
            UnknownKey,
        ),
        attack(
            "kid a path outside",
            s.issuer_header(&[("kid", json!("../../../../../../etc/passwd"))], &c),
            UnknownKey,
        ),
        attack(
            "kid 3000 characters",
            s.issuer_header(&[("kid", json!("k".repeat(3000)))], &c),
            UnknownKey,
        ),
        attack(
            "kid with SQL and NUL",
            s.issuer_header(&[("kid", json!(format!("{kid}' OR '1'='1\u{0}")))], &c),
            UnknownKey,
        ),
        attack(
            "kid not a string",
            s.issuer_header(&[("kid", json!(1))], &c),
            Malformed("header"),
        ),
        // typ.
        attack(
            "typ JWT",
            s.issuer_header(&[("typ", json!("JWT"))], &c),
            WrongType,
        ),
        attack(
            "typ missing",
            s.issuer_header(&[("typ", Value::Null)], &c),
            WrongType,
        ),
        attack(
            "the issuer's status list token",
            status_list_token,
            Malformed("claims"),
        ),
        // Claims.
        attack(
            "iss of another issuer",
            s.issuer(
                &header,
                &with(&claims, &[("iss", json!("http://evil.test"))]),
            ),
            WrongIssuer,
        ),
        attack(
            "iss with a trailing slash",
            s.issuer(
                &header,
                &with(&claims, &[("iss", json!(format!("{ISSUER}/")))]),
            ),
            WrongIssuer,
        ),
        attack(
            "aud of another service",
            s.issuer(&header, &with(&claims, &[("aud", json!("billing"))])),
            WrongAudience,
        ),
        attack(
            "aud array without latchkey",
            s.issuer(
                &header,
                &with(&claims, &[("aud", json!(["billing", "LATCHKEY"]))]),
            ),
            WrongAudience,
        ),
        attack(
            "expired an hour ago",
            s.issuer(&header, &with(&claims, &[("exp", json!(now - 3600))])),
            Expired,
        ),
        attack(
            "expired just beyond the 30 s leeway",
            s.issuer(&header, &with(&claims, &[("exp", json!(now - 31))])),
            Expired,
        ),
        attack(
            "expired by the clock (a real 1-day key)",
            short_lived.token.clone(),
            Expired,
        ),
        attack(
            "not valid for another hour",
            s.issuer(
                &header,
                &with(
                    &claims,
                    &[("nbf", json!(now + 3600)), ("iat", json!(now + 3600))],
                ),
            ),
            NotYetValid,
        ),
        attack(
            "unknown role",
            s.issuer(&header, &with(&claims, &[("roles", json!(["superuser"]))])),
            Malformed("claims"),
        ),
        attack(
            "accounts without cloud_account_viewer",
            s.issuer(
                &header,
                &with(
                    &claims,
                    &[
                        ("roles", json!(["global_viewer"])),
                        ("accounts", json!(["*"])),
                    ],
                ),
            ),
            InvalidClaims("accounts without cloud_account_viewer"),
        ),
        // Duplicate JSON keys: first-wins and last-wins parsers would disagree.
        attack(
            "duplicate roles claim, global_admin first",
            s.issuer(
                &header,
                &duplicate_first(&viewer_claims.to_string(), "roles", json!(["global_admin"])),
            ),
            Malformed("claims"),
        ),
        attack(
            "duplicate iss claim",
            s.issuer(
                &header,
                &duplicate_first(&c, "iss", json!("http://evil.test")),
            ),
            Malformed("claims"),
        ),
        attack(
            "duplicate alg header, none first",
            s.issuer(&duplicate_first(&header, "alg", json!("none")), &c),
            Malformed("header"),
        ),
        attack(
            "duplicate kid header",
            s.issuer(&duplicate_first(&header, "kid", json!("other")), &c),
            Malformed("header"),
        ),
        // Status: revocation and suspension reach every verifier.
        attack("revoked key", revoked.token.clone(), Revoked),
        attack("suspended key", suspended.token.clone(), Suspended),
        attack(
            "token replaced by renew(revoke_previous)",
            replaced.token.clone(),
            Revoked,
        ),
        // Structure and size.
        attack(
            "malformed base64",
            "!!!.@@@.###".to_owned(),
            Malformed("header"),
        ),
        attack(
            "padded base64 header",
            format!("{}==.{}.{}", b[0], b[1], b[2]),
            Malformed("header"),
        ),
        attack(
            "header a JSON array",
            s.issuer(r#"["EdDSA","at+jwt"]"#, &c),
            Malformed("header"),
        ),
        attack(
            "claims a JSON array",
            s.issuer(&header, "[1,2,3]"),
            Malformed("claims"),
        ),
        attack(
            "two segments",
            format!("{}.{}", b[0], b[1]),
            Malformed("structure"),
        ),
        attack(
            "extra fourth segment",
            format!("{}.AAAA", base.token),
            Malformed("structure"),
        ),
        attack(
            "five segments (JWE shape)",
            format!("{}.{}.{}.{}.{}", b[0], b[1], b[2], b[1], b[2]),
            Malformed("structure"),
        ),
        attack("one byte over 8 KiB", oversized, TooLarge),
        attack(
            "1 MB token",
            format!("{}.{}.{}", b[0], "A".repeat(1024 * 1024), b[2]),
            TooLarge,
        ),
        // Only the issuer's registry can refuse these (they need its private key).
        issuer_only(
            "well signed, sub not in the registry",
            s.issuer(
                &header,
                &with(
                    &claims,
                    &[
                        ("sub", json!(unknown_sub)),
                        ("client_id", json!(unknown_sub)),
                    ],
                ),
            ),
        ),
        issuer_only(
            "well signed, another key's sub with this jti",
            s.issuer(
                &header,
                &with(
                    &claims,
                    &[
                        ("sub", json!(app.admin_id)),
                        ("client_id", json!(app.admin_id)),
                    ],
                ),
            ),
        ),
        // Valid keys whose roles may not write.
        too_weak("global_viewer writes", viewer.token.clone()),
        too_weak("cloud_account_viewer writes", account_viewer.token.clone()),
        too_weak(
            "cloud_account_viewer of all accounts writes",
            all_accounts.token.clone(),
        ),
    ]
}

/// The verifier core, as a downstream service runs it: signature and claims
/// against the served JWKS, then the token's entry in the served status list.
struct DownstreamVerifier {
    keys: KeySet,
    expect: Expectations,
    now: i64,
    lists: HashMap<String, StatusList>,
}

impl DownstreamVerifier {
    async fn fetch(app: &TestApp) -> DownstreamVerifier {
        let jwks = app.get("/.well-known/jwks.json", None).await;
        jwks.expect(200);
        let keys = KeySet::from_jwks_json(jwks.text.as_bytes()).unwrap();
        assert!(!keys.is_empty());
        DownstreamVerifier {
            keys,
            expect: Expectations::new(ISSUER, AUDIENCE),
            now: app.now(),
            lists: HashMap::new(),
        }
    }

    /// Fetches the status list a token points to (once).
    async fn load_list(&mut self, app: &TestApp, uri: &str) {
        if self.lists.contains_key(uri) {
            return;
        }
        let Some(path) = uri.strip_prefix(ISSUER) else {
            return;
        };
        let request = Request::get(path)
            .header(header::ACCEPT, "application/statuslist+json")
            .body(Body::empty())
            .unwrap();
        let reply = app.send(request).await;
        reply.expect(200);
        let claims: StatusListClaims = serde_json::from_value(reply.body).unwrap();
        self.lists
            .insert(uri.to_owned(), claims.status_list.decode().unwrap());
    }

    fn signed(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        verify_signed(token, &self.keys, &self.expect, self.now)
    }

    fn verify(&self, token: &str) -> Result<VerifiedKey, VerifyError> {
        let claims = self.signed(token)?;
        let reference = &claims.status.status_list;
        let status = self
            .lists
            .get(&reference.uri)
            .and_then(|list| list.get(usize::try_from(reference.idx).ok()?))
            .ok_or(VerifyError::StatusUnavailable)?;
        check_status(status)?;
        Ok(VerifiedKey::from(claims))
    }
}

/// What is wrong with a reply to a refused request, if anything.
fn check_refusal(case: &str, what: &str, reply: &Reply, status: u16, token: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let got = reply.status.as_u16();
    if got != status {
        wrong.push(format!(
            "{case}: {what}: status {got}, expected {status}: {}",
            reply.text.chars().take(200).collect::<String>()
        ));
        return wrong;
    }
    if reply.header("content-type") != Some(PROBLEM_JSON) || reply.body["status"] != json!(status) {
        wrong.push(format!("{case}: {what}: not a problem document"));
    }
    let challenge = reply.header("www-authenticate").unwrap_or("");
    if status == 401
        && !(challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""))
    {
        wrong.push(format!("{case}: {what}: WWW-Authenticate {challenge:?}"));
    }
    if token.len() > 16 && reply.text.contains(token) {
        wrong.push(format!(
            "{case}: {what}: the token is echoed in the response"
        ));
    }
    wrong
}

/// Sends one hostile token to the admin API; returns what went wrong.
async fn run_api(app: &TestApp, n: usize, case: &Attack, victim: &str) -> Vec<String> {
    // The prize: a new global_admin key, or revoking someone else's key.
    let escalate = json!({"name": format!("pwned-{n}"), "roles": ["global_admin"]});
    let create = app
        .post_json("/v1/keys", Some(&case.token), &escalate)
        .await;
    let revoke = app
        .delete(&format!("/v1/keys/{victim}"), Some(&case.token))
        .await;
    let mut wrong = Vec::new();
    let expected = match case.outcome {
        Outcome::Refused(_) | Outcome::IssuerOnly => 401,
        Outcome::TooWeak => 403,
    };
    wrong.extend(check_refusal(
        case.name,
        "POST /v1/keys",
        &create,
        expected,
        &case.token,
    ));
    wrong.extend(check_refusal(
        case.name,
        "DELETE /v1/keys/{victim}",
        &revoke,
        expected,
        &case.token,
    ));
    if expected == 401 {
        let read = app.get("/v1/keys", Some(&case.token)).await;
        wrong.extend(check_refusal(
            case.name,
            "GET /v1/keys",
            &read,
            401,
            &case.token,
        ));
    }
    wrong
}

fn check_verifier(verifier: &DownstreamVerifier, case: &Attack) -> Option<String> {
    let result = verifier.verify(&case.token);
    let ok = match (case.outcome, &result) {
        (Outcome::Refused(expected), Err(got)) => *got == expected,
        (Outcome::IssuerOnly, Ok(_)) => true,
        (Outcome::TooWeak, Ok(key)) => {
            !key.is_admin()
                && ["POST", "PUT", "PATCH", "DELETE"]
                    .iter()
                    .all(|m| !key.allows(m, "acct-1"))
        }
        _ => false,
    };
    (!ok).then(|| {
        format!(
            "{}: verifier core returned {:?}, expected {:?}",
            case.name,
            result.map(|k| k.roles),
            case.outcome
        )
    })
}

#[tokio::test]
async fn hostile_tokens_are_refused_by_the_api_and_the_verifier() {
    let app = TestApp::new().await;
    let cases = attacks(&app).await;
    let victim = app.key("attack-victim", &["global_viewer"], None).await;

    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    assert!(cases.len() >= 30, "{} cases", cases.len());
    // The table exercises every way the verifier core can refuse a token
    // (StatusUnavailable needs stale status data, not a hostile token).
    let covered: BTreeSet<&str> = cases
        .iter()
        .filter_map(|c| match c.outcome {
            Outcome::Refused(e) => Some(e.code()),
            _ => None,
        })
        .collect();
    let every = [
        "malformed",
        "too_large",
        "forbidden_header",
        "unsupported_algorithm",
        "unknown_key",
        "bad_signature",
        "wrong_type",
        "wrong_issuer",
        "wrong_audience",
        "expired",
        "not_yet_valid",
        "invalid_claims",
        "revoked",
        "suspended",
    ];
    assert_eq!(covered, every.into_iter().collect::<BTreeSet<_>>());

    let mut verifier = DownstreamVerifier::fetch(&app).await;
    for case in &cases {
        if let Ok(claims) = verifier.signed(&case.token) {
            verifier
                .load_list(&app, &claims.status.status_list.uri)
                .await;
        }
    }
    let mut wrong = Vec::new();
    for case in &cases {
        wrong.extend(check_verifier(&verifier, case));
    }
    for (n, case) in cases.iter().enumerate() {
        wrong.extend(run_api(&app, n, case, &victim.id()).await);
    }

    // Nothing any attack tried took effect.
    let pwned = app.get("/v1/keys?q=pwned", Some(&app.admin_token)).await;
    pwned.expect(200);
    assert_eq!(pwned.body["items"], json!([]), "an attack created a key");
    assert_eq!(app.describe(&victim.id()).await["status"], "active");
    // And the legitimate tokens the attacks started from still work.
    let valid = verifier
        .verify(&victim.token)
        .expect("the victim's own token verifies");
    assert_eq!(valid.id, victim.id());

    assert!(
        wrong.is_empty(),
        "{} problems in {} attack cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// One hostile request and the 4xx it must get.
struct Hostile {
    name: &'static str,
    builder: axum::http::request::Builder,
    body: Body,
    status: u16,
}

impl Hostile {
    fn new(name: &'static str, method: Method, path: &str) -> Hostile {
        Hostile {
            name,
            builder: Request::builder().method(method).uri(path),
            body: Body::empty(),
            status: 0,
        }
    }

    fn header(mut self, name: &str, value: HeaderValue) -> Hostile {
        self.builder = self.builder.header(name, value);
        self
    }

    /// `Authorization` exactly as given.
    fn authorization(self, value: &str) -> Hostile {
        self.header("authorization", HeaderValue::from_str(value).unwrap())
    }

    fn json(self, body: impl Into<Body>) -> Hostile {
        self.header("content-type", HeaderValue::from_static("application/json"))
            .body(body)
    }

    fn body(mut self, body: impl Into<Body>) -> Hostile {
        self.body = body.into();
        self
    }

    fn expect(mut self, status: u16) -> Hostile {
        self.status = status;
        self
    }
}

#[tokio::test]
async fn hostile_requests_get_the_right_4xx() {
    let app = TestApp::new().await;
    let target = app.key("hostile-target", &["global_viewer"], None).await;
    let id = target.id();
    let key = format!("/v1/keys/{id}");
    let admin = format!("Bearer {}", app.admin_token);
    let description = "x".repeat(70 * 1024);
    let big = json!({"name": "too-big", "roles": ["global_viewer"], "description": description})
        .to_string();
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_in_object = format!("{{\"description\":{deep}}}");
    let new_key = r#"{"name":"t","roles":["global_viewer"]}"#;
    let duplicate_roles = r#"{"name":"dup","roles":["global_viewer"],"roles":["global_admin"]}"#;
    // Just under the 64 KiB that `http::Uri` allows (the wire test goes beyond).
    let long = |c: &str| c.repeat(60 * 1024);
    let get = |name, path: &str| Hostile::new(name, Method::GET, path);
    let post = |name, path: &str| Hostile::new(name, Method::POST, path);
    let patch = |name, path: &str| Hostile::new(name, Method::PATCH, path);

    let cases = vec![
        // Bodies.
        post("body over 64 KiB on create", "/v1/keys")
            .authorization(&admin)
            .json(big.clone())
            .expect(413),
        patch("body over 64 KiB on update", &key)
            .authorization(&admin)
            .json(big.clone())
            .expect(413),
        post("body over 64 KiB on renew", &format!("{key}/renew"))
            .authorization(&admin)
            .json(big)
            .expect(413),
        post("text/plain body", "/v1/keys")
            .authorization(&admin)
            .header("content-type", HeaderValue::from_static("text/plain"))
            .body(new_key)
            .expect(415),
        post("no content type", "/v1/keys")
            .authorization(&admin)
            .body(new_key)
            .expect(415),
        patch("form body on update", &key)
            .authorization(&admin)
            .header(
                "content-type",
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body("description=x")
            .expect(415),
        post("XML labelled as JSON", "/v1/keys")
            .authorization(&admin)
            .json("<key><name>x</name></key>")
            .expect(400),
        patch("JSON nested 20000 deep", &key)
            .authorization(&admin)
            .json(deep.clone())
            .expect(400),
        patch("JSON nested 20000 deep in a field", &key)
            .authorization(&admin)
            .json(deep_in_object)
            .expect(400),
        post("JSON nested 20000 deep on create", "/v1/keys")
            .authorization(&admin)
            .json(deep.clone())
            .expect(422),
        // Renew, like PATCH, parses the JSON before its shape: past the
        // parser's nesting limit the body is malformed.
        post("JSON nested 20000 deep on renew", &format!("{key}/renew"))
            .authorization(&admin)
            .json(deep)
            .expect(400),
        post("duplicate roles in the body", "/v1/keys")
            .authorization(&admin)
            .json(duplicate_roles)
            .expect(422),
        post("big body without a key", "/v1/keys")
            .json("x".repeat(70 * 1024))
            .expect(401),
        // Credentials.
        get("non-UTF-8 Authorization", "/v1/keys")
            .header(
                "authorization",
                HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd.\x80.\x81").unwrap(),
            )
            .expect(401),
        get("Authorization: Basic", "/v1/keys")
            .authorization("Basic YWRtaW46YWRtaW4=")
            .expect(401),
        get("Authorization: Basic with the admin token", "/v1/keys")
            .authorization(&format!("Basic {}", app.admin_token))
            .expect(401),
        get("Bearer with nothing after it", "/v1/keys")
            .authorization("Bearer")
            .expect(401),
        get("two credentials in one header", "/v1/keys")
            .authorization(&format!("{admin}, Bearer x.y.z"))
            .expect(401),
        get("admin token followed by junk", "/v1/keys")
            .authorization(&format!("{admin} junk"))
            .expect(401),
        get("two Authorization headers, junk first", "/v1/keys")
            .authorization("Bearer x.y.z")
            .authorization(&admin)
            .expect(401),
        // Paths.
        get("path traversal in the id (..%2F..)", "/v1/keys/..%2F..")
            .authorization(&admin)
            .expect(404),
        Hostile::new(
            "path traversal on revoke",
            Method::DELETE,
            "/v1/keys/..%2F..%2Faudit",
        )
        .authorization(&admin)
        .expect(404),
        post("dot-dot id", "/v1/keys/%2e%2e/suspend")
            .authorization(&admin)
            .expect(404),
        get("NUL in the id", "/v1/keys/%00")
            .authorization(&admin)
            .expect(404),
        get("unnormalised path", &format!("{key}/../../audit"))
            .authorization(&admin)
            .expect(404),
        // Query strings.
        get("60 KB limit", &format!("/v1/keys?limit={}", long("9")))
            .authorization(&admin)
            .expect(422),
        get(
            "60 KB status filter",
            &format!("/v1/keys?status={}", long("a")),
        )
        .authorization(&admin)
        .expect(422),
        get(
            "60 KB audit cursor",
            &format!("/v1/audit?after={}", long("1")),
        )
        .authorization(&admin)
        .expect(422),
        get("repeated query parameter", "/v1/keys?limit=1&limit=2&%zz")
            .authorization(&admin)
            .expect(400),
        Hostile::new("TRACE", Method::TRACE, "/v1/keys")
            .authorization(&admin)
            .expect(405),
    ];
    assert!(cases.len() >= 20);
    let mut wrong = Vec::new();
    let count = cases.len();
    for case in cases {
        let reply = app.send(case.builder.body(case.body).unwrap()).await;
        let got = reply.status.as_u16();
        if got != case.status {
            wrong.push(format!(
                "{}: status {got}, expected {}: {}",
                case.name,
                case.status,
                reply.text.chars().take(200).collect::<String>()
            ));
            continue;
        }
        wrong.extend(check_refusal(
            case.name,
            "",
            &reply,
            case.status,
            &app.admin_token,
        ));
    }
    // A search for 60 KB of text is a search that matches nothing.
    let search = app
        .get(&format!("/v1/keys?q={}", long("q")), Some(&app.admin_token))
        .await;
    search.expect(200);
    assert_eq!(search.body["items"], json!([]));
    // Nothing above changed the target.
    let described = app.describe(&id).await;
    assert_eq!(described["status"], "active");
    assert_eq!(described["description"], "");
    assert!(
        wrong.is_empty(),
        "{} of {count} hostile requests were answered wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// RFC 6750 §3.1: a request that presents more than one credential is
/// refused, whichever of them comes first, so that the server and any proxy
/// in front of it cannot act on different keys.
#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let app = TestApp::new().await;
    let admin = format!("Bearer {}", app.admin_token);
    let viewer = app.key("second-header", &["global_viewer"], None).await;
    for (label, first, second) in [
        (
            "admin first, junk second",
            admin.clone(),
            "Bearer x.y.z".to_owned(),
        ),
        (
            "admin first, viewer second",
            admin.clone(),
            format!("Bearer {}", viewer.token),
        ),
        (
            "viewer first, admin second",
            format!("Bearer {}", viewer.token),
            admin.clone(),
        ),
    ] {
        let request = Request::post("/v1/keys")
            .header(header::AUTHORIZATION, first)
            .header(header::AUTHORIZATION, second)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"name": format!("two-headers-{}", label.len()), "roles": ["global_admin"]})
                    .to_string(),
            ))
            .unwrap();
        let reply = app.send(request).await;
        assert!(
            [400, 401].contains(&reply.status.as_u16()),
            "{label}: status {}: {}",
            reply.status,
            reply.text
        );
        assert_eq!(reply.header("content-type"), Some(PROBLEM_JSON), "{label}");
    }
}

/// Sends raw bytes to a loopback server and returns the response's status
/// code (bounded by a timeout).
async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        while !response.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed without answering");
            response.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&response).into_owned();
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the server answered in time")
}

/// What the HTTP server itself refuses before any handler runs, over a real
/// loopback connection.
#[tokio::test]
async fn oversized_requests_on_the_wire() {
    let app = TestApp::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let huge_uri = format!(
        "GET /v1/keys?q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert_eq!(raw_status(addr, huge_uri.as_bytes()).await, 414);

    let mut many_headers = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many_headers.push_str(&format!("X-Pad-{i}: {i}\r\n"));
    }
    many_headers.push_str("Connection: close\r\n\r\n");
    assert_eq!(raw_status(addr, many_headers.as_bytes()).await, 431);

    let mut non_utf8 = b"GET /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".to_vec();
    non_utf8.extend_from_slice(b"\xff\xfe.\x80.\x81\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(addr, &non_utf8).await, 401);

    server.abort();
}
