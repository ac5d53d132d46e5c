//! Signing keys: generation, the PKCS#8 files in the keys directory, their
//! public JWKs, and minting.
//!
//! Private keys exist in two places only: a 0600 file in the keys directory
//! and the parsed ring key pair in memory. They never reach sled, logs or
//! `Debug` output. A [`SigningKey`] precomputes its base64url JOSE header so
//! that minting is one JSON serialisation, one base64 pass and one signature.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_verifier::jwk::{SigningAlgorithm, VerificationKey};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde::Serialize;
use serde_json::json;

/// What can go wrong loading or creating a signing key. Messages name the
/// file but never include key material.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read signing key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write signing key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key file {path} is not a valid {alg} PKCS#8 key")]
    Invalid { path: PathBuf, alg: &'static str },
    #[error(
        "signing key file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Import(String),
    #[error("key generation failed")]
    Generate,
    #[error("signing failed")]
    Sign,
}

enum KeyPairKind {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// A private signing key, parsed once and kept in memory.
pub struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    pair: KeyPairKind,
    /// `base64url({"alg":…,"typ":"at+jwt","kid":…})`, prepared once.
    access_header_b64: String,
    jwk: serde_json::Value,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg.as_str())
            .field("private", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// Generates a new key pair and returns its PKCS#8 document with the parsed key.
    pub fn generate(alg: SigningAlgorithm) -> Result<(SigningKey, Vec<u8>), SigningKeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            SigningAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| SigningKeyError::Generate)?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| SigningKeyError::Generate)?
                    .as_ref()
                    .to_vec()
            }
            SigningAlgorithm::RS256 => {
                return Err(SigningKeyError::Import(
                    "RS256 keys cannot be generated; import a PKCS#8 PEM with `latchkey signing-keys import`".into(),
                ));
            }
        };
        let key = SigningKey::from_pkcs8(alg, &pkcs8).ok_or(SigningKeyError::Generate)?;
        Ok((key, pkcs8))
    }

    /// Parses a PKCS#8 (DER) private key for `alg`.
    pub fn from_pkcs8(alg: SigningAlgorithm, der: &[u8]) -> Option<SigningKey> {
        let rng = SystemRandom::new();
        let pair = match alg {
            SigningAlgorithm::EdDSA => {
                KeyPairKind::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).ok()?)
            }
            SigningAlgorithm::ES256 => KeyPairKind::Es256(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                    .ok()?,
            ),
            SigningAlgorithm::RS256 => KeyPairKind::Rs256(RsaKeyPair::from_pkcs8(der).ok()?),
        };
        let jwk = public_jwk_members(&pair);
        let kid = thumbprint(&jwk);
        let mut jwk = jwk;
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), json!(kid));
            obj.insert("alg".into(), json!(alg.as_str()));
            obj.insert("use".into(), json!("sig"));
        }
        let header = serde_json::to_vec(&json!({
            "alg": alg.as_str(),
            "typ": latchkey_verifier::ACCESS_TOKEN_TYP,
            "kid": kid,
        }))
        .ok()?;
        Some(SigningKey {
            access_header_b64: B64.encode(header),
            kid,
            alg,
            pair,
            jwk,
            rng,
        })
    }

    /// The RFC 7638 thumbprint of the public key, used as `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlgorithm {
        self.alg
    }

    /// The public key as a JWK (`kty`, key members, `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// The public key in the form the verifier crate checks signatures with.
    pub fn verification_key(&self) -> Option<VerificationKey> {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.jwk.clone()).ok()?;
        VerificationKey::from_jwk(&jwk).ok()
    }

    /// Signs `claims` as an access key (`typ: at+jwt`) and returns the compact JWS.
    pub fn mint<T: Serialize>(&self, claims: &T) -> Result<String, SigningKeyError> {
        let payload = serde_json::to_vec(claims).map_err(|_| SigningKeyError::Sign)?;
        self.sign_compact(&self.access_header_b64, &payload)
    }

    /// Signs `payload` under a header with another `typ` (the status list token).
    pub fn sign_with_typ(&self, typ: &str, payload: &[u8]) -> Result<String, SigningKeyError> {
        let header =
            serde_json::to_vec(&json!({"alg": self.alg.as_str(), "typ": typ, "kid": self.kid}))
                .map_err(|_| SigningKeyError::Sign)?;
        self.sign_compact(&B64.encode(header), payload)
    }

    fn sign_compact(&self, header_b64: &str, payload: &[u8]) -> Result<String, SigningKeyError> {
        // header + '.' + payload + '.' + signature (at most 512 bytes for RSA-4096).
        let mut out = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 700);
        out.push_str(header_b64);
        out.push('.');
        B64.encode_string(payload, &mut out);
        let signature = self.sign_raw(out.as_bytes())?;
        out.push('.');
        B64.encode_string(signature.as_ref(), &mut out);
        Ok(out)
    }

    /// Signs raw bytes with this key's algorithm.
    pub fn sign_raw(&self, message: &[u8]) -> Result<Signature, SigningKeyError> {
        match &self.pair {
            KeyPairKind::Ed25519(pair) => Ok(Signature::Ring(pair.sign(message))),
            KeyPairKind::Es256(pair) => pair
                .sign(&self.rng, message)
                .map(Signature::Ring)
                .map_err(|_| SigningKeyError::Sign),
            KeyPairKind::Rs256(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| SigningKeyError::Sign)?;
                Ok(Signature::Owned(sig))
            }
        }
    }
}

/// A signature produced by [`SigningKey::sign_raw`].
pub enum Signature {
    Ring(signature::Signature),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Signature {
    fn as_ref(&self) -> &[u8] {
        match self {
            Signature::Ring(sig) => sig.as_ref(),
            Signature::Owned(sig) => sig,
        }
    }
}

/// The required public members of the key's JWK (RFC 7638 §3.2), in order.
fn public_jwk_members(pair: &KeyPairKind) -> serde_json::Value {
    match pair {
        KeyPairKind::Ed25519(pair) => json!({
            "crv": "Ed25519",
            "kty": "OKP",
            "x": B64.encode(pair.public_key().as_ref()),
        }),
        KeyPairKind::Es256(pair) => {
            // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = pair.public_key().as_ref();
            let (x, y) = point
                .get(1..)
                .unwrap_or_default()
                .split_at(32.min(point.len().saturating_sub(1)));
            json!({"crv": "P-256", "kty": "EC", "x": B64.encode(x), "y": B64.encode(y)})
        }
        KeyPairKind::Rs256(pair) => {
            let components = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
            json!({
                "e": B64.encode(strip_leading_zeros(&components.e)),
                "kty": "RSA",
                "n": B64.encode(strip_leading_zeros(&components.n)),
            })
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// RFC 7638 thumbprint: SHA-256 over the required members, lexicographically
/// ordered, no whitespace; base64url without padding.
pub fn thumbprint(required_members: &serde_json::Value) -> String {
    // serde_json's Map is a BTreeMap (no `preserve_order` feature), so
    // serialisation already orders members lexicographically.
    let canonical = serde_json::to_vec(required_members).unwrap_or_default();
    B64.encode(ring::digest::digest(&ring::digest::SHA256, &canonical))
}

/// The file that holds the private key `kid`: `<kid>.pem` (PEM PKCS#8, what
/// this version writes), or `<kid>.p8` (ring's PKCS#8 DER, written by
/// versions before PEM) when only that exists.
pub fn key_file_path(keys_dir: &Path, kid: &str) -> PathBuf {
    let pem = keys_dir.join(format!("{kid}.pem"));
    let legacy = keys_dir.join(format!("{kid}.p8"));
    if !pem.exists() && legacy.exists() {
        legacy
    } else {
        pem
    }
}

/// The DER prefix of ring's Ed25519 PKCS#8 v2 document (RFC 5958
/// `OneAsymmetricKey` version 1, with the public key as `[1]`), up to the
/// seed; 83 bytes in all.
const ED25519_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The same key as PKCS#8 v1 (RFC 8410 §7), the form every tool reads.
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A PKCS#8 document in the form OpenSSL 3, Python's `cryptography`, Go and
/// Java read: ring's Ed25519 v2 documents become v1 (the seed alone; the
/// public key is derived again when read). Others are already v1.
pub fn portable_pkcs8(der: &[u8]) -> Vec<u8> {
    if der.len() == 83 && der[..16] == ED25519_V2_PREFIX {
        let mut v1 = ED25519_V1_PREFIX.to_vec();
        v1.extend_from_slice(&der[16..48]);
        return v1;
    }
    der.to_vec()
}

/// PEM armour (RFC 7468) of a PKCS#8 document.
pub fn pkcs8_to_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Writes a PKCS#8 document to `path` as PEM, mode 0600, refusing to
/// overwrite, and fsyncs it.
pub fn write_key_file(path: &Path, pkcs8: &[u8]) -> Result<(), SigningKeyError> {
    let write_err = |source| SigningKeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_err)?;
    let pem = pkcs8_to_pem(&portable_pkcs8(pkcs8));
    file.write_all(pem.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

/// Reads and parses a key file, refusing files that others can read.
pub fn read_key_file(path: &Path, alg: SigningAlgorithm) -> Result<SigningKey, SigningKeyError> {
    let read_err = |source| SigningKeyError::Read {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(read_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SigningKeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let bytes = fs::read(path).map_err(read_err)?;
    let invalid = || SigningKeyError::Invalid {
        path: path.to_owned(),
        alg: alg.as_str(),
    };
    // PEM (this version), or DER (files written before it).
    let der = if bytes.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
        pkcs8_from_pem(text).map_err(|_| invalid())?
    } else {
        bytes
    };
    SigningKey::from_pkcs8(alg, &der).ok_or(SigningKeyError::Invalid {
        path: path.to_owned(),
        alg: alg.as_str(),
    })
}

/// Parses a PEM-armoured PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
pub fn pkcs8_from_pem(pem: &str) -> Result<Vec<u8>, SigningKeyError> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let start = pem.find(BEGIN).ok_or_else(|| {
        SigningKeyError::Import(
            "expected a PKCS#8 PEM (-----BEGIN PRIVATE KEY-----); convert with: openssl pkcs8 -topk8 -nocrypt -in key.pem".into(),
        )
    })?;
    let body_start = start + BEGIN.len();
    let end = pem[body_start..]
        .find(END)
        .ok_or_else(|| SigningKeyError::Import("the PEM has no END PRIVATE KEY line".into()))?;
    let body: String = pem[body_start..body_start + end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| SigningKeyError::Import("the PEM body is not valid base64".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let members = json!({
            "e": "AQAB",
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        });
        assert_eq!(
            thumbprint(&members),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generated_keys_round_trip_and_debug_is_redacted() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let (key, pkcs8) = SigningKey::generate(alg).unwrap();
            let again = SigningKey::from_pkcs8(alg, &pkcs8).unwrap();
            assert_eq!(key.kid(), again.kid());
            assert_eq!(key.kid().len(), 43);
            let debug = format!("{key:?}");
            assert!(debug.contains("<redacted>"));
            assert!(!debug.contains(&B64.encode(&pkcs8)));
        }
    }

    #[test]
    fn key_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let (key, pkcs8) = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap();
        let path = key_file_path(dir.path(), key.kid());
        write_key_file(&path, &pkcs8).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            read_key_file(&path, SigningAlgorithm::EdDSA).unwrap().kid(),
            key.kid()
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_key_file(&path, SigningAlgorithm::EdDSA),
            Err(SigningKeyError::Permissions { .. })
        ));
    }

    #[test]
    fn key_files_are_pem_pkcs8_v1_and_legacy_der_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let (key, pkcs8) = SigningKey::generate(alg).unwrap();
            let path = key_file_path(dir.path(), key.kid());
            assert_eq!(path.extension().unwrap(), "pem");
            write_key_file(&path, &pkcs8).unwrap();
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
            assert!(text.lines().all(|l| l.len() <= 64));
            let der = pkcs8_from_pem(&text).unwrap();
            if alg == SigningAlgorithm::EdDSA {
                assert_eq!(der.len(), 48, "Ed25519 as PKCS#8 v1 (RFC 8410)");
                assert_eq!(der[..16], ED25519_V1_PREFIX);
            }
            assert_eq!(read_key_file(&path, alg).unwrap().kid(), key.kid());

            // A file in the earlier DER form, as ring wrote it.
            let (old, old_pkcs8) = SigningKey::generate(alg).unwrap();
            let legacy = dir.path().join(format!("{}.p8", old.kid()));
            fs::write(&legacy, &old_pkcs8[..]).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&legacy, fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(key_file_path(dir.path(), old.kid()), legacy);
            assert_eq!(read_key_file(&legacy, alg).unwrap().kid(), old.kid());
        }
    }

    /// OpenSSL reads the files as they are (Debian's `openssl`, which
    /// `.ci/run` installs when missing).
    #[test]
    fn openssl_reads_the_key_files() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let (key, pkcs8) = SigningKey::generate(alg).unwrap();
            let path = key_file_path(dir.path(), key.kid());
            write_key_file(&path, &pkcs8).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["pkey", "-in"])
                .arg(&path)
                .args(["-pubout"])
                .output()
                .expect("openssl not found: install Debian's openssl package");
            assert!(
                out.status.success(),
                "openssl pkey refused a {alg:?} key file: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let public_pem = String::from_utf8(out.stdout).unwrap();
            assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
            // The public key OpenSSL derives is the one the JWKS publishes.
            let spki = pkcs8_from_pem(&public_pem.replace("PUBLIC KEY", "PRIVATE KEY")).unwrap();
            let public = key.verification_key().unwrap().to_jwk();
            let jwk = serde_json::to_value(&public).unwrap();
            let raw = match alg {
                SigningAlgorithm::EdDSA => B64.decode(jwk["x"].as_str().unwrap()).unwrap(),
                _ => {
                    let mut p = vec![4u8];
                    p.extend(B64.decode(jwk["x"].as_str().unwrap()).unwrap());
                    p.extend(B64.decode(jwk["y"].as_str().unwrap()).unwrap());
                    p
                }
            };
            assert!(
                spki.ends_with(&raw),
                "{alg:?}: OpenSSL's public key differs"
            );
        }
    }
}
