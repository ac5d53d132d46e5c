//! A [`ring`]-backed [`CryptoProvider`] for `jsonwebtoken`.
//!
//! `jsonwebtoken` 11 ships providers for `aws-lc-rs` and RustCrypto only; this
//! crate and the issuer use `ring`, so this module supplies the glue. The
//! verifier's own hot path ([`verify_signed`](crate::verify_signed)) calls
//! `ring` directly and does not need the provider; it is there for code that
//! uses `jsonwebtoken::encode`/`decode` or JWK helpers such as
//! [`Jwk::thumbprint`](jsonwebtoken::jwk::Jwk::thumbprint).
//!
//! Supported algorithms: `EdDSA` (Ed25519), `ES256`, `RS256` and `HS256`.
//! Every other algorithm yields an error, never a panic.
//!
//! Key formats:
//! - `EdDSA`: `EncodingKey::from_ed_der` with a PKCS#8 document (v1 or v2);
//!   `DecodingKey` with the raw 32-byte public key
//!   (`DecodingKey::from_ed_components`).
//! - `ES256`: `EncodingKey::from_ec_der` with a PKCS#8 document;
//!   `DecodingKey::from_ec_components` (the uncompressed point).
//! - `RS256`: `EncodingKey::from_rsa_der` with a PKCS#1 `RSAPrivateKey`
//!   (PKCS#8 is accepted too); `DecodingKey::from_rsa_components` or a PKCS#1
//!   `RSAPublicKey` DER.
//! - `HS256`: `from_secret`.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, new_error};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
    RsaPublicKeyComponents, UnparsedPublicKey,
};
use ring::{digest, hmac};

type JwtResult<T> = Result<T, Error>;

/// The `ring`-backed provider. Install it with [`install_ring_provider`].
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key,
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

/// Makes [`RING_PROVIDER`] the process-wide `jsonwebtoken` provider.
///
/// Idempotent: calling it again (or after another provider was installed) is
/// harmless; the first installed provider stays.
pub fn install_ring_provider() {
    // An error only means a provider is already installed.
    let _ = RING_PROVIDER.install_default();
}

fn key_format_error() -> Error {
    new_error(ErrorKind::InvalidKeyFormat)
}

/// The length of a version 1 PKCS#8 Ed25519 document (no public key inside).
const ED25519_PKCS8_V1_LEN: usize = 48;

fn ed25519_key_pair(pkcs8: &[u8]) -> JwtResult<Ed25519KeyPair> {
    let pair = if pkcs8.len() == ED25519_PKCS8_V1_LEN {
        // v1 carries only the seed, so there is no public key to check.
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
    } else {
        Ed25519KeyPair::from_pkcs8(pkcs8)
    };
    pair.map_err(|_| new_error(ErrorKind::InvalidEddsaKey))
}

fn p256_key_pair(pkcs8: &[u8]) -> JwtResult<EcdsaKeyPair> {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    .map_err(|_| new_error(ErrorKind::InvalidEcdsaKey))
}

fn rsa_key_pair(der: &[u8]) -> JwtResult<RsaKeyPair> {
    RsaKeyPair::from_der(der)
        .or_else(|_| RsaKeyPair::from_pkcs8(der))
        .map_err(|e| new_error(ErrorKind::InvalidRsaKey(e.to_string())))
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> JwtResult<Box<dyn JwtSigner>> {
    let family = key.family();
    match (algorithm, family) {
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => {
            Ok(Box::new(EdDsaSigner(ed25519_key_pair(key.as_bytes())?)))
        }
        (Algorithm::ES256, AlgorithmFamily::Ec) => Ok(Box::new(Es256Signer {
            pair: p256_key_pair(key.as_bytes())?,
            rng: SystemRandom::new(),
        })),
        (Algorithm::RS256, AlgorithmFamily::Rsa) => Ok(Box::new(Rs256Signer {
            pair: rsa_key_pair(key.as_bytes())?,
            rng: SystemRandom::new(),
        })),
        (Algorithm::HS256, AlgorithmFamily::Hmac) => Ok(Box::new(Hs256(hmac::Key::new(
            hmac::HMAC_SHA256,
            key.as_bytes(),
        )))),
        (Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256 | Algorithm::HS256, _) => {
            Err(key_format_error())
        }
        _ => Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> JwtResult<Box<dyn JwtVerifier>> {
    let family = key.family();
    match (algorithm, family) {
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => Ok(Box::new(RingVerifier {
            algorithm: Algorithm::EdDSA,
            key: key.clone(),
        })),
        (Algorithm::ES256, AlgorithmFamily::Ec) => Ok(Box::new(RingVerifier {
            algorithm: Algorithm::ES256,
            key: key.clone(),
        })),
        (Algorithm::RS256, AlgorithmFamily::Rsa) => Ok(Box::new(RingVerifier {
            algorithm: Algorithm::RS256,
            key: key.clone(),
        })),
        (Algorithm::HS256, AlgorithmFamily::Hmac) => Ok(Box::new(Hs256(hmac::Key::new(
            hmac::HMAC_SHA256,
            key.try_get_as_bytes()?,
        )))),
        (Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256 | Algorithm::HS256, _) => {
            Err(key_format_error())
        }
        _ => Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    }
}

struct EdDsaSigner(Ed25519KeyPair);

impl Signer<Vec<u8>> for EdDsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

impl JwtSigner for EdDsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct Es256Signer {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let sig = self
            .pair
            .sign(&self.rng, msg)
            .map_err(|_| signature::Error::new())?;
        Ok(sig.as_ref().to_vec())
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

struct Rs256Signer {
    pair: RsaKeyPair,
    rng: SystemRandom,
}

impl Signer<Vec<u8>> for Rs256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, msg, &mut sig)
            .map_err(|_| signature::Error::new())?;
        Ok(sig)
    }
}

impl JwtSigner for Rs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// HMAC-SHA-256, both directions (the key is the shared secret).
struct Hs256(hmac::Key);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        hmac::verify(&self.0, msg, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

/// Verifies `EdDSA`, `ES256` or `RS256` with a `DecodingKey` of the matching family.
struct RingVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let result = match (self.algorithm, self.key.kind()) {
            (Algorithm::EdDSA, DecodingKeyKind::SecretOrDer(public)) => {
                UnparsedPublicKey::new(&ED25519, public).verify(msg, signature)
            }
            (Algorithm::ES256, DecodingKeyKind::SecretOrDer(public)) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public).verify(msg, signature)
            }
            (Algorithm::RS256, DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).verify(msg, signature)
            }
            (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                RsaPublicKeyComponents { n, e }.verify(&RSA_PKCS1_2048_8192_SHA256, msg, signature)
            }
            _ => return Err(signature::Error::new()),
        };
        result.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_pub_components_from_private_key(der: &[u8]) -> JwtResult<(Vec<u8>, Vec<u8>)> {
    let pair = rsa_key_pair(der)?;
    let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((components.n, components.e))
}

/// Parses a PKCS#1 `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`), DER.
fn rsa_pub_components_from_public_key(der: &[u8]) -> JwtResult<(Vec<u8>, Vec<u8>)> {
    let invalid = || new_error(ErrorKind::InvalidRsaKey("not a PKCS#1 RSAPublicKey".into()));
    let (body, rest) = der_element(der, 0x30).ok_or_else(invalid)?;
    if !rest.is_empty() {
        return Err(invalid());
    }
    let (n, body) = der_element(body, 0x02).ok_or_else(invalid)?;
    let (e, body) = der_element(body, 0x02).ok_or_else(invalid)?;
    if !body.is_empty() {
        return Err(invalid());
    }
    let strip = |int: &[u8]| -> Vec<u8> {
        let start = int.iter().position(|&b| b != 0).unwrap_or(int.len());
        int[start..].to_vec()
    };
    Ok((strip(n), strip(e)))
}

/// Reads one DER element with the given tag; returns (contents, remainder).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, input) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (len_bytes, rest) = input.split_at(count);
        input = rest;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    Some(input.split_at(len))
}

fn ec_pub_components_from_private_key(
    pkcs8: &[u8],
    alg: Algorithm,
) -> JwtResult<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    if alg != Algorithm::ES256 {
        return Err(new_error(ErrorKind::UnsupportedAlgorithm));
    }
    let pair = p256_key_pair(pkcs8)?;
    match pair.public_key().as_ref() {
        [0x04, point @ ..] if point.len() == 64 => {
            let (x, y) = point.split_at(32);
            Ok((EllipticCurve::P256, x.to_vec(), y.to_vec()))
        }
        _ => Err(new_error(ErrorKind::InvalidEcdsaKey)),
    }
}

fn ed_pub_components_from_private_key(pkcs8: &[u8], curve: &EllipticCurve) -> JwtResult<Vec<u8>> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(new_error(ErrorKind::UnsupportedAlgorithm));
    }
    Ok(ed25519_key_pair(pkcs8)?.public_key().as_ref().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> JwtResult<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil;
    use jsonwebtoken::jwk::{
        AlgorithmParameters, CommonParameters, Jwk, RSAKeyParameters, RSAKeyType,
    };
    use jsonwebtoken::{Header, Validation, decode, encode};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Claims {
        sub: String,
        exp: i64,
        aud: String,
    }

    fn claims() -> Claims {
        Claims {
            sub: "k1".into(),
            exp: 4_000_000_000,
            aud: "latchkey".into(),
        }
    }

    fn round_trip(alg: Algorithm, enc: &EncodingKey, dec: &DecodingKey) {
        install_ring_provider();
        let token = encode(&Header::new(alg), &claims(), enc).unwrap();
        let mut validation = Validation::new(alg);
        validation.set_audience(&["latchkey"]);
        let data = decode::<Claims>(&token, dec, &validation).unwrap();
        assert_eq!(data.claims, claims());
        assert_eq!(data.header.alg, alg);

        // A tampered payload must not verify.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = encode(
            &Header::new(alg),
            &Claims {
                sub: "k2".into(),
                ..claims()
            },
            enc,
        )
        .unwrap();
        parts[1] = other.split('.').nth(1).unwrap();
        assert!(decode::<Claims>(parts.join("."), dec, &validation).is_err());
    }

    #[test]
    fn eddsa_round_trip() {
        let key = testutil::ed25519();
        let public = key.public_key().as_ref();
        round_trip(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(key.pkcs8()),
            &DecodingKey::from_ed_components(&testutil::b64(public)).unwrap(),
        );
    }

    #[test]
    fn es256_round_trip() {
        let key = testutil::p256();
        let public = key.public_key().as_ref();
        round_trip(
            Algorithm::ES256,
            &EncodingKey::from_ec_der(key.pkcs8()),
            &DecodingKey::from_ec_components(
                &testutil::b64(&public[1..33]),
                &testutil::b64(&public[33..]),
            )
            .unwrap(),
        );
    }

    #[test]
    fn rs256_round_trip() {
        install_ring_provider();
        let der = testutil::rsa_pkcs1_der();
        let (n, e) = rsa_pub_components_from_private_key(&der).unwrap();
        round_trip(
            Algorithm::RS256,
            &EncodingKey::from_rsa_der(&der),
            &DecodingKey::from_rsa_raw_components(&n, &e),
        );
    }

    #[test]
    fn hs256_round_trip() {
        round_trip(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"a shared secret of some length"),
            &DecodingKey::from_secret(b"a shared secret of some length"),
        );
    }

    #[test]
    fn unsupported_algorithms_error_without_panicking() {
        let key = testutil::ed25519();
        let enc = EncodingKey::from_ed_der(key.pkcs8());
        let dec = DecodingKey::from_secret(b"x");
        for alg in [
            Algorithm::ES384,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::HS384,
            Algorithm::HS512,
        ] {
            assert!(new_signer(&alg, &enc).is_err(), "{alg:?}");
            assert!(new_verifier(&alg, &dec).is_err(), "{alg:?}");
        }
        // A key of the wrong family is an error too.
        assert!(new_signer(&Algorithm::ES256, &enc).is_err());
        assert!(new_verifier(&Algorithm::EdDSA, &dec).is_err());
    }

    #[test]
    fn key_utils_extract_public_components() {
        let ed = testutil::ed25519();
        assert_eq!(
            ed_pub_components_from_private_key(ed.pkcs8(), &EllipticCurve::Ed25519).unwrap(),
            ed.public_key().as_ref()
        );
        let ec = testutil::p256();
        let (curve, x, y) =
            ec_pub_components_from_private_key(ec.pkcs8(), Algorithm::ES256).unwrap();
        assert_eq!(curve, EllipticCurve::P256);
        assert_eq!([&[4u8][..], &x, &y].concat(), ec.public_key().as_ref());
        assert!(ec_pub_components_from_private_key(ec.pkcs8(), Algorithm::ES384).is_err());
        assert!(ec_pub_components_from_private_key(b"junk", Algorithm::ES256).is_err());

        let der = testutil::rsa_pkcs1_der();
        let (n, e) = rsa_pub_components_from_private_key(&der).unwrap();
        assert_eq!(n.len(), 256);
        assert_eq!(e, [1, 0, 1]);
        let public_der = RsaKeyPair::from_der(&der)
            .unwrap()
            .public()
            .as_ref()
            .to_vec();
        assert_eq!(
            rsa_pub_components_from_public_key(&public_der).unwrap(),
            (n, e)
        );
        assert!(rsa_pub_components_from_public_key(b"\x30\x03\x02\x01").is_err());
        assert!(rsa_pub_components_from_private_key(b"junk").is_err());
    }

    #[test]
    fn jwk_from_encoding_key_uses_the_provider() {
        install_ring_provider();
        let ec = testutil::p256();
        let jwk = Jwk::from_encoding_key(&EncodingKey::from_ec_der(ec.pkcs8()), Algorithm::ES256)
            .unwrap();
        assert!(matches!(
            jwk.algorithm,
            AlgorithmParameters::EllipticCurve(_)
        ));
        jwk.thumbprint(ThumbprintHash::SHA256).unwrap();
    }

    /// RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
    #[test]
    fn rfc7638_thumbprint() {
        install_ring_provider();
        let jwk = Jwk {
            common: CommonParameters {
                key_id: Some("2011-04-29".into()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: testutil::RFC7638_N.into(),
                e: "AQAB".into(),
            }),
        };
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn install_is_idempotent() {
        install_ring_provider();
        install_ring_provider();
    }
}
