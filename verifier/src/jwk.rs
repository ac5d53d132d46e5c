//! Signature-verification keys, read from the issuer's JWKS.
//!
//! Each key carries its algorithm: the key, not the token, decides how a
//! signature is checked, so a token can never pick `none`, an HMAC algorithm,
//! or any algorithm other than the one its `kid` is published with.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use serde::Deserialize;
use thiserror::Error;

/// The signature algorithms latchkey signs access keys with (contract §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// Ed25519 (the default).
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (imported PEM keys only).
    RS256,
}

impl SigningAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::RS256 => "RS256",
        }
    }

    /// Parses a JOSE `alg` name (exact, case-sensitive); `None` for anything
    /// latchkey does not sign with (`none`, `HS256`, ...).
    pub fn from_jose(alg: &str) -> Option<Self> {
        match alg {
            "EdDSA" => Some(SigningAlgorithm::EdDSA),
            "ES256" => Some(SigningAlgorithm::ES256),
            "RS256" => Some(SigningAlgorithm::RS256),
            _ => None,
        }
    }

    fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            SigningAlgorithm::EdDSA => KeyAlgorithm::EdDSA,
            SigningAlgorithm::ES256 => KeyAlgorithm::ES256,
            SigningAlgorithm::RS256 => KeyAlgorithm::RS256,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a JWK or JWKS could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("the JWK has no `kid` (or an empty one)")]
    MissingKid,
    #[error("unsupported JWK key type: {0} (supported: OKP/Ed25519, EC/P-256, RSA)")]
    UnsupportedKeyType(&'static str),
    #[error("the JWK `use` is {0:?}, but only \"sig\" keys verify signatures")]
    WrongUse(String),
    #[error("the JWK `alg` is {found}, which does not match its key type ({expected})")]
    AlgorithmMismatch {
        expected: SigningAlgorithm,
        found: String,
    },
    #[error("the JWK `{0}` parameter is not valid base64url without padding")]
    BadBase64(&'static str),
    #[error("the JWK `{param}` parameter has {found} bytes, expected {expected}")]
    BadLength {
        param: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("the RSA modulus has {0} bits; at least 2048 and at most 8192 are required")]
    RsaModulusSize(usize),
    #[error("the RSA public exponent is not supported (must be odd, at least 3, at most 33 bits)")]
    RsaExponent,
    #[error("the document is not a JWKS: {0}")]
    NotAJwks(String),
}

/// The key material, in the form ring verifies with.
#[derive(Clone)]
enum PublicKey {
    /// The 32-byte Ed25519 public key.
    Ed25519([u8; 32]),
    /// The uncompressed P-256 point `0x04 || x || y`.
    P256([u8; 65]),
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa(RsaPublicKeyComponents<Vec<u8>>),
}

/// One published signature-verification key: its `kid`, its algorithm and its
/// public key.
#[derive(Clone)]
pub struct VerificationKey {
    kid: String,
    alg: SigningAlgorithm,
    public: PublicKey,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn decode_param(param: &'static str, value: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| KeyError::BadBase64(param))
}

fn decode_fixed<const N: usize>(param: &'static str, value: &str) -> Result<[u8; N], KeyError> {
    let bytes = decode_param(param, value)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| KeyError::BadLength {
        param,
        expected: N,
        found: bytes.len(),
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

impl VerificationKey {
    /// Reads a public JWK. It must have a non-empty `kid`; its algorithm comes
    /// from its key type (OKP/Ed25519 → `EdDSA`, EC/P-256 → `ES256`, RSA →
    /// `RS256` with a 2048–8192-bit modulus). An `alg` parameter, if present,
    /// must agree, and `use`, if present, must be `sig`.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let (alg, public) = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => (
                    SigningAlgorithm::EdDSA,
                    PublicKey::Ed25519(decode_fixed("x", &p.x)?),
                ),
                _ => {
                    return Err(KeyError::UnsupportedKeyType(
                        "OKP with a curve other than Ed25519",
                    ));
                }
            },
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => {
                    let x: [u8; 32] = decode_fixed("x", &p.x)?;
                    let y: [u8; 32] = decode_fixed("y", &p.y)?;
                    let mut point = [0u8; 65];
                    point[0] = 0x04;
                    point[1..33].copy_from_slice(&x);
                    point[33..].copy_from_slice(&y);
                    (SigningAlgorithm::ES256, PublicKey::P256(point))
                }
                _ => {
                    return Err(KeyError::UnsupportedKeyType(
                        "EC with a curve other than P-256",
                    ));
                }
            },
            AlgorithmParameters::RSA(p) => {
                let n = decode_param("n", &p.n)?;
                let e = decode_param("e", &p.e)?;
                let key = rsa_components(&n, &e)?;
                (SigningAlgorithm::RS256, PublicKey::Rsa(key))
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(KeyError::UnsupportedKeyType("oct (symmetric keys)"));
            }
            _ => return Err(KeyError::UnsupportedKeyType("unknown kty")),
        };
        check_common(&jwk.common, alg)?;
        let kid = match jwk.common.key_id.as_deref() {
            Some(kid) if !kid.is_empty() => kid.to_owned(),
            _ => return Err(KeyError::MissingKid),
        };
        Ok(VerificationKey { kid, alg, public })
    }

    /// An Ed25519 (`EdDSA`, 32-byte key) or P-256 (`ES256`, 65-byte
    /// uncompressed point) public key given as raw bytes. For RSA use
    /// [`VerificationKey::from_rsa_components`].
    pub fn from_public_key(
        kid: impl Into<String>,
        alg: SigningAlgorithm,
        public_key: &[u8],
    ) -> Result<Self, KeyError> {
        let bad_length = |expected| KeyError::BadLength {
            param: "public key",
            expected,
            found: public_key.len(),
        };
        let public = match alg {
            SigningAlgorithm::EdDSA => {
                PublicKey::Ed25519(public_key.try_into().map_err(|_| bad_length(32))?)
            }
            SigningAlgorithm::ES256 => match public_key {
                [0x04, ..] => PublicKey::P256(public_key.try_into().map_err(|_| bad_length(65))?),
                _ => return Err(bad_length(65)),
            },
            SigningAlgorithm::RS256 => return Err(KeyError::UnsupportedKeyType("raw RSA key")),
        };
        Self::with_kid(kid.into(), alg, public)
    }

    /// An `RS256` key from its big-endian modulus and exponent.
    pub fn from_rsa_components(
        kid: impl Into<String>,
        n: &[u8],
        e: &[u8],
    ) -> Result<Self, KeyError> {
        let public = PublicKey::Rsa(rsa_components(n, e)?);
        Self::with_kid(kid.into(), SigningAlgorithm::RS256, public)
    }

    fn with_kid(kid: String, alg: SigningAlgorithm, public: PublicKey) -> Result<Self, KeyError> {
        if kid.is_empty() {
            return Err(KeyError::MissingKid);
        }
        Ok(VerificationKey { kid, alg, public })
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> SigningAlgorithm {
        self.alg
    }

    /// Whether `signature` is a valid signature of `message` by this key,
    /// with this key's algorithm.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.public {
            PublicKey::Ed25519(key) => UnparsedPublicKey::new(&ED25519, key)
                .verify(message, signature)
                .is_ok(),
            PublicKey::P256(point) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            PublicKey::Rsa(key) => key
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }

    /// The public JWK for this key (`kid`, `alg`, `use: sig`), as the issuer
    /// publishes it in its JWKS.
    pub fn to_jwk(&self) -> Jwk {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let algorithm = match &self.public {
            PublicKey::Ed25519(key) => AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: b64(key),
            }),
            PublicKey::P256(point) => {
                AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x: b64(&point[1..33]),
                    y: b64(&point[33..]),
                })
            }
            PublicKey::Rsa(key) => AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: b64(&key.n),
                e: b64(&key.e),
            }),
        };
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(self.alg.key_algorithm()),
                key_id: Some(self.kid.clone()),
                ..Default::default()
            },
            algorithm,
        }
    }
}

fn check_common(common: &CommonParameters, alg: SigningAlgorithm) -> Result<(), KeyError> {
    match &common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(PublicKeyUse::Encryption) => return Err(KeyError::WrongUse("enc".into())),
        Some(PublicKeyUse::Other(other)) => return Err(KeyError::WrongUse(other.clone())),
    }
    match common.key_algorithm {
        None => Ok(()),
        Some(found) if found == alg.key_algorithm() => Ok(()),
        Some(found) => Err(KeyError::AlgorithmMismatch {
            expected: alg,
            found: format!("{found:?}"),
        }),
    }
}

fn rsa_components(n: &[u8], e: &[u8]) -> Result<RsaPublicKeyComponents<Vec<u8>>, KeyError> {
    let n = strip_leading_zeros(n);
    let bits = match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    if !(2048..=8192).contains(&bits) {
        return Err(KeyError::RsaModulusSize(bits));
    }
    let e = strip_leading_zeros(e);
    let odd = e.last().is_some_and(|&b| b & 1 == 1);
    let at_least_3 = e.len() > 1 || e.first().is_some_and(|&b| b >= 3);
    let small = e.len() < 5 || (e.len() == 5 && e[0] == 1);
    if !(odd && at_least_3 && small) {
        return Err(KeyError::RsaExponent);
    }
    Ok(RsaPublicKeyComponents {
        n: n.to_vec(),
        e: e.to_vec(),
    })
}

/// The signature-verification keys of one issuer, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerificationKey>,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`).
    ///
    /// Individual keys that cannot be used (unsupported type or curve,
    /// `use: enc`, a mismatched `alg`, no `kid`, malformed parameters) are
    /// skipped, so one odd key cannot stop verification with the others; a
    /// document that is not a JWKS at all is an error. If two keys share a
    /// `kid`, the first one wins.
    pub fn from_jwks_json(json: &[u8]) -> Result<Self, KeyError> {
        let doc: JwksDocument =
            serde_json::from_slice(json).map_err(|e| KeyError::NotAJwks(e.to_string()))?;
        let keys = doc.keys.into_iter().filter_map(|value| {
            let jwk: Jwk = serde_json::from_value(value).ok()?;
            VerificationKey::from_jwk(&jwk).ok()
        });
        Ok(Self::from_keys(keys))
    }

    /// A set of the given keys. If two keys share a `kid`, the first one wins.
    pub fn from_keys(keys: impl IntoIterator<Item = VerificationKey>) -> Self {
        let mut map = HashMap::new();
        for key in keys {
            map.entry(key.kid.clone()).or_insert(key);
        }
        KeySet { keys: map }
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.get(kid)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s in the set, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = &str> + '_ {
        self.keys.keys().map(String::as_str)
    }

    /// The keys in the set, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &VerificationKey> + '_ {
        self.keys.values()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::{self, b64};
    use serde_json::json;

    fn ed_jwk(kid: &str, x: &[u8]) -> serde_json::Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x), "kid": kid, "alg": "EdDSA", "use": "sig"})
    }

    fn parse(value: serde_json::Value) -> Result<VerificationKey, KeyError> {
        VerificationKey::from_jwk(&serde_json::from_value(value).unwrap())
    }

    #[test]
    fn algorithm_names() {
        for alg in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
        ] {
            assert_eq!(SigningAlgorithm::from_jose(alg.as_str()), Some(alg));
        }
        for bad in ["none", "HS256", "eddsa", "es256", "ES384", ""] {
            assert_eq!(SigningAlgorithm::from_jose(bad), None);
        }
    }

    #[test]
    fn ed25519_jwk() {
        let key = testutil::ed25519();
        let vk = parse(ed_jwk("k1", key.public_key().as_ref())).unwrap();
        assert_eq!(vk.kid(), "k1");
        assert_eq!(vk.alg(), SigningAlgorithm::EdDSA);
        let sig = key.pair.sign(b"hello");
        assert!(vk.verify_signature(b"hello", sig.as_ref()));
        assert!(!vk.verify_signature(b"hellO", sig.as_ref()));
        assert!(!vk.verify_signature(b"hello", &sig.as_ref()[1..]));
        // Without alg and use: the key type decides.
        let vk = parse(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().as_ref()), "kid": "k1"})).unwrap();
        assert_eq!(vk.alg(), SigningAlgorithm::EdDSA);
    }

    #[test]
    fn p256_jwk() {
        let key = testutil::p256();
        let public = key.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..]), "kid": "e1", "alg": "ES256"});
        let vk = parse(jwk).unwrap();
        assert_eq!(vk.alg(), SigningAlgorithm::ES256);
        let sig = key
            .pair
            .sign(&ring::rand::SystemRandom::new(), b"msg")
            .unwrap();
        assert!(vk.verify_signature(b"msg", sig.as_ref()));
        assert!(!vk.verify_signature(b"msh", sig.as_ref()));
    }

    #[test]
    fn rsa_jwk() {
        let pair = testutil::rsa();
        let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        let jwk = json!({"kty": "RSA", "n": b64(&components.n), "e": b64(&components.e), "kid": "r1", "alg": "RS256", "use": "sig"});
        let vk = parse(jwk).unwrap();
        assert_eq!(vk.alg(), SigningAlgorithm::RS256);
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            b"msg",
            &mut sig,
        )
        .unwrap();
        assert!(vk.verify_signature(b"msg", &sig));
        assert!(!vk.verify_signature(b"msG", &sig));
        // A leading zero byte on n is tolerated.
        let padded = [&[0u8][..], &components.n].concat();
        let jwk = json!({"kty": "RSA", "n": b64(&padded), "e": "AQAB", "kid": "r1"});
        assert!(parse(jwk).unwrap().verify_signature(b"msg", &sig));
    }

    #[test]
    fn rsa_too_small_or_bad_exponent() {
        let jwk = json!({"kty": "RSA", "n": b64(&[0xff; 128]), "e": "AQAB", "kid": "r1"});
        assert_eq!(parse(jwk).unwrap_err(), KeyError::RsaModulusSize(1024));
        let jwk = json!({"kty": "RSA", "n": b64(&[0xff; 256]), "e": "Ag", "kid": "r1"});
        assert_eq!(parse(jwk).unwrap_err(), KeyError::RsaExponent);
        let jwk = json!({"kty": "RSA", "n": b64(&[0xff; 256]), "e": "AQ", "kid": "r1"});
        assert_eq!(parse(jwk).unwrap_err(), KeyError::RsaExponent);
        let jwk = json!({"kty": "RSA", "n": b64(&[0xff; 256]), "e": "AQAB", "kid": "r1"});
        assert!(parse(jwk).is_ok());
    }

    #[test]
    fn jwk_rejections() {
        let key = testutil::ed25519();
        let x = key.public_key().as_ref();
        let mut no_kid = ed_jwk("k", x);
        no_kid.as_object_mut().unwrap().remove("kid");
        assert_eq!(parse(no_kid).unwrap_err(), KeyError::MissingKid);
        assert_eq!(parse(ed_jwk("", x)).unwrap_err(), KeyError::MissingKid);

        let mut enc = ed_jwk("k", x);
        enc["use"] = json!("enc");
        assert_eq!(parse(enc).unwrap_err(), KeyError::WrongUse("enc".into()));

        for alg in ["ES256", "RS256", "HS256", "none", "ES999"] {
            let mut bad = ed_jwk("k", x);
            bad["alg"] = json!(alg);
            assert!(
                matches!(
                    parse(bad).unwrap_err(),
                    KeyError::AlgorithmMismatch {
                        expected: SigningAlgorithm::EdDSA,
                        ..
                    }
                ),
                "{alg}"
            );
        }

        assert_eq!(
            parse(ed_jwk("k", &x[..31])).unwrap_err(),
            KeyError::BadLength {
                param: "x",
                expected: 32,
                found: 31
            }
        );
        let mut padded = ed_jwk("k", x);
        padded["x"] = json!(format!("{}=", b64(x)));
        assert_eq!(parse(padded).unwrap_err(), KeyError::BadBase64("x"));

        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
        assert!(matches!(
            parse(oct).unwrap_err(),
            KeyError::UnsupportedKeyType(_)
        ));
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": b64(&[1; 48]), "y": b64(&[1; 48]), "kid": "p"});
        assert!(matches!(
            parse(p384).unwrap_err(),
            KeyError::UnsupportedKeyType(_)
        ));
        let other = json!({"kty": "XYZ", "kid": "p"});
        assert!(matches!(
            parse(other).unwrap_err(),
            KeyError::UnsupportedKeyType(_)
        ));
        assert!(!KeyError::MissingKid.to_string().is_empty());
    }

    #[test]
    fn raw_constructors_and_to_jwk_round_trip() {
        let ed = testutil::ed25519();
        let vk = VerificationKey::from_public_key(
            "a",
            SigningAlgorithm::EdDSA,
            ed.public_key().as_ref(),
        )
        .unwrap();
        let back = VerificationKey::from_jwk(&vk.to_jwk()).unwrap();
        assert_eq!((back.kid(), back.alg()), ("a", SigningAlgorithm::EdDSA));
        let sig = ed.pair.sign(b"m");
        assert!(back.verify_signature(b"m", sig.as_ref()));

        let ec = testutil::p256();
        let vk = VerificationKey::from_public_key(
            "b",
            SigningAlgorithm::ES256,
            ec.public_key().as_ref(),
        )
        .unwrap();
        let back = VerificationKey::from_jwk(&vk.to_jwk()).unwrap();
        assert_eq!(back.alg(), SigningAlgorithm::ES256);

        let rsa = testutil::rsa();
        let c = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public());
        let vk = VerificationKey::from_rsa_components("c", &c.n, &c.e).unwrap();
        let back = VerificationKey::from_jwk(&vk.to_jwk()).unwrap();
        assert_eq!(back.alg(), SigningAlgorithm::RS256);

        assert!(VerificationKey::from_public_key("a", SigningAlgorithm::EdDSA, &[0; 31]).is_err());
        assert!(VerificationKey::from_public_key("a", SigningAlgorithm::ES256, &[0; 65]).is_err());
        assert_eq!(
            VerificationKey::from_public_key("", SigningAlgorithm::EdDSA, &[0; 32]).unwrap_err(),
            KeyError::MissingKid
        );
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let ed = testutil::ed25519();
        let ec = testutil::p256();
        let p = ec.public_key().as_ref();
        let doc = json!({"keys": [
            ed_jwk("ed", ed.public_key().as_ref()),
            {"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..]), "kid": "ec"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "k1"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "tiny", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": "short"},
            ed_jwk("ed", &[7; 32]),
            "not even an object",
        ], "extra": true});
        let set = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty());
        let mut kids: Vec<_> = set.kids().collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ec", "ed"]);
        // The first of two keys with the same kid wins.
        let sig = ed.pair.sign(b"m");
        assert!(set.get("ed").unwrap().verify_signature(b"m", sig.as_ref()));
        assert!(set.get("hmac").is_none());
        assert_eq!(set.keys().count(), 2);

        let empty = KeySet::from_jwks_json(br#"{"keys": []}"#).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn not_a_jwks() {
        for doc in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"keys": {}}"#,
            br#"{"keys": [], "keys": []}"#,
            b"",
        ] {
            assert!(
                matches!(KeySet::from_jwks_json(doc), Err(KeyError::NotAJwks(_))),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }
}
