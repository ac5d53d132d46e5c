//! HTTP fetches of the issuer's documents (RFC 8414 metadata, JWKS, the
//! status list index and signed status lists), each size-limited, with
//! `ETag` revalidation and `Cache-Control: max-age` read from the response.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{ACCEPT, CACHE_CONTROL, ETAG, HeaderMap, IF_NONE_MATCH, PRAGMA};
use serde::Deserialize;

use crate::jwk::{KeySet, SigningAlgorithm};
use crate::status_list::{
    STATUS_BITS, STATUS_LIST_JWT_MEDIA_TYPE, STATUS_LIST_JWT_TYP, StatusList, StatusListClaims,
};

/// Largest metadata, JWKS or index document accepted.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Largest signed status list accepted (the decoder also caps the inflated
/// size).
pub(crate) const MAX_STATUS_LIST_BYTES: usize = 32 * 1024 * 1024;

/// A response body, or confirmation that the cached one is still current.
#[derive(Debug)]
pub(crate) enum Fetched {
    NotModified {
        max_age: Option<Duration>,
    },
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        max_age: Option<Duration>,
    },
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The server answered with this (non-success) status.
    Status(u16),
    /// Connecting, sending or reading failed, or the body broke a limit.
    Other(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Status(code) => write!(f, "HTTP status {code}"),
            FetchError::Other(text) => f.write_str(text),
        }
    }
}

impl From<String> for FetchError {
    fn from(text: String) -> Self {
        FetchError::Other(text)
    }
}

/// The HTTP client and its per-request timeout.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    pub(crate) timeout: Duration,
}

/// Reads `max-age` from `Cache-Control`; `no-cache`/`no-store` mean zero.
pub(crate) fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=")
                && let Ok(secs) = secs.trim_matches('"').parse::<u64>()
            {
                found = Some(Duration::from_secs(secs));
            }
        }
    }
    found
}

impl Http {
    /// `GET url`, revalidating with `etag` when given, reading at most
    /// `limit` bytes. `fresh` asks every cache on the way to revalidate
    /// with the origin (`Cache-Control: no-cache`): for resyncs, and for a
    /// second attempt after a stale copy.
    pub(crate) async fn get(
        &self,
        url: &str,
        accept: &str,
        etag: Option<&str>,
        limit: usize,
        fresh: bool,
    ) -> Result<Fetched, FetchError> {
        let mut request = self
            .client
            .get(url)
            .header(ACCEPT, accept)
            .timeout(self.timeout);
        if fresh {
            request = request
                .header(CACHE_CONTROL, "no-cache")
                .header(PRAGMA, "no-cache");
        }
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let mut response = request.send().await.map_err(describe)?;
        let status = response.status();
        let max_age = max_age(response.headers());
        if status == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified { max_age });
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(format!("the response is larger than {limit} bytes").into());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if bytes.len() + chunk.len() > limit {
                return Err(format!("the response is larger than {limit} bytes").into());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body {
            bytes,
            etag,
            max_age,
        })
    }

    /// `GET url` as JSON.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        fresh: bool,
    ) -> Result<(T, Option<Duration>), FetchError> {
        match self
            .get(url, "application/json", None, MAX_DOCUMENT_BYTES, fresh)
            .await?
        {
            Fetched::Body { bytes, max_age, .. } => serde_json::from_slice(&bytes)
                .map(|doc| (doc, max_age))
                .map_err(|e| FetchError::Other(format!("not the expected JSON: {e}"))),
            Fetched::NotModified { .. } => Err(FetchError::Other("unexpected 304".into())),
        }
    }
}

/// A transport error, with its causes (reqwest's own text is terse).
pub(crate) fn describe(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The RFC 8414 metadata members the verifier uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) issuer: String,
    pub(crate) jwks_uri: String,
    #[serde(default)]
    pub(crate) introspection_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) usage_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) status_list_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) status_list_stream_endpoint: Option<String>,
}

/// `GET {status_list_endpoint}`: every list the issuer publishes.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StatusIndex {
    pub(crate) lists: Vec<String>,
    #[serde(default)]
    pub(crate) bits: Option<u8>,
    /// The stream's sequence when the index was made (latchkey).
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    /// Per list, the sequence of the last change it includes (latchkey).
    #[serde(default)]
    pub(crate) list_seqs: Vec<u64>,
    /// The sequence space (latchkey).
    #[serde(default)]
    pub(crate) epoch: Option<String>,
}

/// Where RFC 8414 §3 puts the metadata of `issuer`: the well-known suffix
/// goes between the host and the issuer's path. For an issuer with a path,
/// the second URL is the form many deployments serve instead (the suffix
/// appended), tried on a 404.
pub(crate) fn metadata_urls(issuer: &str) -> Result<Vec<String>, &'static str> {
    const SUFFIX: &str = "/.well-known/oauth-authorization-server";
    let (scheme, rest) = issuer
        .split_once("://")
        .ok_or("it is not an absolute URL")?;
    if scheme != "https" && scheme != "http" {
        return Err("the scheme must be https (or http)");
    }
    if issuer.contains(['?', '#']) {
        return Err("an issuer URL has no query or fragment");
    }
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err("it has no host");
    }
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Ok(vec![format!("{scheme}://{authority}{SUFFIX}")]);
    }
    Ok(vec![
        format!("{scheme}://{authority}{SUFFIX}{path}"),
        format!("{scheme}://{authority}{path}{SUFFIX}"),
    ])
}

/// Why a signed status list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusJwtError {
    /// Signed by a `kid` not in the key set: refresh the JWKS and retry.
    UnknownKey,
    Invalid(String),
}

/// The JOSE header of a status list token.
#[derive(Deserialize)]
struct StatusListHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// **Unverified**: reads the status list token's header, only to find the
/// key that must have signed it. The key (not the header) fixes the
/// algorithm; the header's `alg` must merely agree.
fn decode_status_list_header_unverified(b64: &str) -> Result<StatusListHeader, StatusJwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| StatusJwtError::Invalid("the header is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| StatusJwtError::Invalid("the header is not a JOSE header".into()))
}

fn is_status_list_typ(typ: &str) -> bool {
    let typ = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    typ.eq_ignore_ascii_case(STATUS_LIST_JWT_TYP)
}

/// Verifies a `statuslist+jwt` fetched from `uri` and returns its claims and
/// decoded list: signature by a key of `keys` with that key's algorithm,
/// `typ`, `sub` equal to `uri`, `exp` not passed, 2 bits per entry.
pub(crate) fn verify_status_list_jwt(
    jwt: &str,
    keys: &KeySet,
    uri: &str,
    now_unix: i64,
) -> Result<(StatusListClaims, StatusList), StatusJwtError> {
    let invalid = |why: &str| StatusJwtError::Invalid(why.to_owned());
    let jwt = jwt.trim();
    let mut parts = jwt.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS"));
    };
    let header = decode_status_list_header_unverified(header_b64)?;
    if header.crit.is_some() {
        return Err(invalid("the header has `crit`"));
    }
    let kid = header.kid.as_deref().filter(|k| !k.is_empty());
    let key = kid
        .and_then(|kid| keys.get(kid))
        .ok_or(StatusJwtError::UnknownKey)?;
    if SigningAlgorithm::from_jose(&header.alg) != Some(key.alg()) {
        return Err(invalid("`alg` is not the algorithm of the signing key"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| invalid("the signature is not base64url"))?;
    let signing_input = &jwt.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify_signature(signing_input, &signature) {
        return Err(invalid("the signature does not verify"));
    }
    // Signature verified: the header and payload are the issuer's.
    if !header.typ.as_deref().is_some_and(is_status_list_typ) {
        return Err(invalid("`typ` is not statuslist+jwt"));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| invalid("the payload is not base64url"))?;
    let claims: StatusListClaims = serde_json::from_slice(&payload)
        .map_err(|e| StatusJwtError::Invalid(format!("the claims do not parse: {e}")))?;
    if claims.sub != uri {
        return Err(StatusJwtError::Invalid(format!(
            "`sub` is {:?}, not the URL it was fetched from",
            claims.sub
        )));
    }
    if claims.exp.is_some_and(|exp| exp <= now_unix) {
        return Err(invalid("the status list has expired (`exp`)"));
    }
    if claims.status_list.bits != STATUS_BITS {
        return Err(StatusJwtError::Invalid(format!(
            "{} bits per entry; latchkey lists have {STATUS_BITS}",
            claims.status_list.bits
        )));
    }
    let list = claims
        .status_list
        .decode()
        .map_err(|e| StatusJwtError::Invalid(format!("the list does not decode: {e}")))?;
    Ok((claims, list))
}

/// The media type to ask status lists in.
pub(crate) const STATUS_LIST_ACCEPT: &str = STATUS_LIST_JWT_MEDIA_TYPE;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::claims::TokenStatus;
    use crate::jwk::VerificationKey;
    use crate::status_list::StatusListPayload;
    use crate::testutil;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    const URI: &str = "https://issuer.example/v1/status/0";
    const NOW: i64 = 1_750_000_000;

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    struct Signer(testutil::TestKey<ring::signature::Ed25519KeyPair>);

    impl Signer {
        fn keys(&self) -> KeySet {
            KeySet::from_keys([VerificationKey::from_public_key(
                "k1",
                SigningAlgorithm::EdDSA,
                ring::signature::KeyPair::public_key(&self.0.pair).as_ref(),
            )
            .unwrap()])
        }

        fn sign(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = self.0.pair.sign(input.as_bytes());
            format!("{input}.{}", b64(sig.as_ref()))
        }
    }

    fn claims(list: &StatusList) -> serde_json::Value {
        let payload = StatusListPayload::from_list(list);
        json!({"sub": URI, "iat": NOW - 10, "exp": NOW + 600, "ttl": 300,
               "status_list": {"bits": payload.bits, "lst": payload.lst}})
    }

    fn header() -> serde_json::Value {
        json!({"alg": "EdDSA", "typ": "statuslist+jwt", "kid": "k1"})
    }

    #[test]
    fn good_list_verifies() {
        let s = Signer(testutil::ed25519());
        let mut list = StatusList::new(40);
        list.set(7, TokenStatus::Invalid).unwrap();
        let jwt = s.sign(header(), claims(&list));
        let (c, back) = verify_status_list_jwt(&jwt, &s.keys(), URI, NOW).unwrap();
        assert_eq!(c.ttl, Some(300));
        assert_eq!(back.get(7), Some(TokenStatus::Invalid));
        // application/ prefix on typ is accepted.
        let mut h = header();
        h["typ"] = json!("application/statuslist+jwt");
        assert!(verify_status_list_jwt(&s.sign(h, claims(&list)), &s.keys(), URI, NOW).is_ok());
    }

    #[test]
    fn bad_lists_are_refused() {
        let s = Signer(testutil::ed25519());
        let other = Signer(testutil::ed25519());
        let list = StatusList::new(8);
        let check = |jwt: &str| verify_status_list_jwt(jwt, &s.keys(), URI, NOW);

        // Unknown kid asks for a JWKS refresh.
        let mut h = header();
        h["kid"] = json!("k2");
        assert_eq!(
            check(&s.sign(h, claims(&list))).unwrap_err(),
            StatusJwtError::UnknownKey
        );
        let mut h = header();
        h.as_object_mut().unwrap().remove("kid");
        assert_eq!(
            check(&s.sign(h, claims(&list))).unwrap_err(),
            StatusJwtError::UnknownKey
        );
        // Signed by another key under our kid.
        assert!(matches!(
            check(&other.sign(header(), claims(&list))),
            Err(StatusJwtError::Invalid(_))
        ));
        // alg must match the key.
        for alg in ["ES256", "HS256", "none"] {
            let mut h = header();
            h["alg"] = json!(alg);
            assert!(matches!(
                check(&s.sign(h, claims(&list))),
                Err(StatusJwtError::Invalid(_))
            ));
        }
        // typ.
        let mut h = header();
        h["typ"] = json!("at+jwt");
        assert!(check(&s.sign(h, claims(&list))).is_err());
        // sub must be the fetched URL.
        let mut c = claims(&list);
        c["sub"] = json!("https://issuer.example/v1/status/1");
        assert!(check(&s.sign(header(), c)).is_err());
        // Expired.
        let mut c = claims(&list);
        c["exp"] = json!(NOW - 1);
        assert!(check(&s.sign(header(), c)).is_err());
        // crit.
        let mut h = header();
        h["crit"] = json!(["exp"]);
        assert!(check(&s.sign(h, claims(&list))).is_err());
        // Structure.
        assert!(check("a.b").is_err());
        assert!(check("a.b.c.d").is_err());
    }

    #[test]
    fn cache_control() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(300)));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("Max-Age=5 , public"),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(5)));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(max_age(&h), Some(Duration::ZERO));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=abc"));
        assert_eq!(max_age(&h), None);
    }

    #[test]
    fn metadata_locations() {
        assert_eq!(
            metadata_urls("https://id.example").unwrap(),
            vec!["https://id.example/.well-known/oauth-authorization-server"]
        );
        assert_eq!(
            metadata_urls("http://127.0.0.1:8080/").unwrap(),
            vec!["http://127.0.0.1:8080/.well-known/oauth-authorization-server"]
        );
        assert_eq!(
            metadata_urls("https://id.example/latchkey").unwrap(),
            vec![
                "https://id.example/.well-known/oauth-authorization-server/latchkey",
                "https://id.example/latchkey/.well-known/oauth-authorization-server"
            ]
        );
        for bad in [
            "id.example",
            "ftp://id.example",
            "https://",
            "https://a/?x",
            "https://a/#f",
        ] {
            assert!(metadata_urls(bad).is_err(), "{bad}");
        }
    }
}
