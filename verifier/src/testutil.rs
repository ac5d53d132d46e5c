//! Test helpers: freshly generated ring keys and a fixed RSA key.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair,
};

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A freshly generated key pair with its PKCS#8 document.
pub struct TestKey<K> {
    pkcs8: Vec<u8>,
    pub pair: K,
}

impl<K: KeyPair> TestKey<K> {
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_key(&self) -> &K::PublicKey {
        self.pair.public_key()
    }
}

pub fn ed25519() -> TestKey<Ed25519KeyPair> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .unwrap()
        .as_ref()
        .to_vec();
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    TestKey { pkcs8, pair }
}

pub fn p256() -> TestKey<EcdsaKeyPair> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
    TestKey { pkcs8, pair }
}

/// A 2048-bit RSA key (PKCS#1 `RSAPrivateKey`, DER), generated with openssl
/// for these tests only (ring cannot generate RSA keys).
pub fn rsa_pkcs1_der() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(RSA_PKCS1_B64)
        .unwrap()
}

pub fn rsa() -> RsaKeyPair {
    RsaKeyPair::from_der(&rsa_pkcs1_der()).unwrap()
}

const RSA_PKCS1_B64: &str = "MIIEpAIBAAKCAQEA7YJ0MJ5o3yS1ZYfRqH50EJsicsRezIBjfGSSllPwqdnSjUteRDOYBCplS03wbSapP4rE6HayeE5wX67zqz0FlCDfsDjL1oA8xk9fK0dMm2gcSQfv3L1jiNua4TkBONhm5agD1s4jD7a0CyTesoX8V3XjX5v67LMdiuUZVgkRbVKIlmGg4NQssTegPwJefV5DURI56geB/ltPNRE9WF138mYhfMDCVXOikGI5CJnhK7cxzbXytOTH5/3NWEf/eZhX99eioAnxrjYCwZNACs/ym9BtxMVdaPNUIO/n3LUr1fuoqN3YrZ4HLH+1bo6acLkju3cJVmi2871R7fL5eFNC6QIDAQABAoIBAAHOQVhiR+1UX92s/erQRU0gBM/HDupymm8Ga7fhXP3Jlmh1F3sgwknb0afUKJ0H03cUdMFIr7wq6n9LuvYFEX8KDfFOyTvw/yVJ0rEnSl2PGdHzUb9FoFVYyBFox8nZGVUrJRZTvGAA9Vb1WY0VaDD5CDjAnJSCmxmkesAU8xE38OprAx/NtyFFXaFWaSxNeaAYEPP/LvK1qUlsoRyOpYHpNZfsdw/BHpU/CQ/GwH2oNrKGXnSK6m9oMxETjujJhsWlp6zyU8VEiS8Qq8tGWDxn3lYz6K97vgkhgQJFPshO3gu1sPasChgX7CrmaIsbkeG8l0rM/d1PnG6gwB0TgEECgYEA+tqjHJbrwul4rY0uQRF40uZKinJRVGeVa7obmoUZ0f29bQq+dzmucZNsR2hOxUkMZxiZI/TzZ9OjE+4hRy4We68PabvUkPIATzOGEy0dTNqXRxiMeMAXRdc20N4cOHqSQssUTozq/wy8hHbSWi1h9ErBrMqFnP4wwUhXuCI8yCECgYEA8mG89CJthWdpMcmSFh5dcrGV84N1d8JjwUTL//vZpOYIZcQO45gENxghlkRKdTRia8oEBu169MlmK3bumEMQBhHX2xIxJ+llH8k2etzbGoPmLS/ioevRpED31HHxbNfNaCOKxGK4i/k4EyFQYeiY1BVlENEaopo75vh9t1eSAckCgYEAhc/A+IwtARDndbR8uurmB6IemxF1/s8uboOdG+TqLBDtTdBQX2reeelI9iJW+ngH7Kq7benJOVY0hHofOEgGaD2uvBkcv6DHt3flii8jlQ55acxXikX1ZCT0MaB5b0s63/RSRcB3zktt+D8l4EKbIOQLwe9aLK+PNFsxp6BjyeECgYEAxdDs9NbwSbNHUGHxf2nS3JuBBVgh09brsT2jvMzgKUuwSNYFTMyxjAF+z/P2TMevF8etF7ZT5lpEr26GdfAtsLZ5VAr54VgDtzhx5T5A99f0UKbHMV2UIJkBavp/jlRmCPsQ8wybD2ob0MkcoHvD1zuK23m9Yj28a9ocSDkJKbkCgYA5fR3AxpRrU1fGA7pzNP5qpCDO/CQbuiIYs0V73z8B12m1trYnu8uJ+3ZjBFE/W9pZC1ag3aBo4Y1sJ6sR0qsby8iVTxUYMetJvsKTVQeQyVMPhLgqxha8Sl9JRITr+TSOg1uNJwTKJ1ymA2GqTxk+vLzfLN/oh7pw+3OJar75JA==";

/// The modulus of the RFC 7638 §3.1 example key.
pub const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
