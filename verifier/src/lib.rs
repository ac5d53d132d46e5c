//! Offline verification of latchkey access keys.
//!
//! Downstream services use this crate to check a key's signature, claims and
//! revocation status without calling latchkey; the issuer uses the same code
//! to authenticate its own admin API, so both sides agree on what is valid.
//!
//! - [`KeySet`] holds the issuer's public keys (from its JWKS); each key fixes
//!   its own algorithm ([`SigningAlgorithm`]).
//! - [`verify_signed`] checks a token's signature and claims against a
//!   [`KeySet`] and [`Expectations`] with no I/O, returning its
//!   [`AccessClaims`]; [`check_status`] maps its status-list entry.
//! - [`VerifiedKey`] is what a request carries afterwards, with the contract's
//!   access policy (`can_read`, `can_write`, `allows`).
//! - [`RING_PROVIDER`] plugs `ring` into `jsonwebtoken` for code that signs
//!   or handles JWKs with it ([`install_ring_provider`]).

pub mod claims;
pub mod error;
pub mod jwk;
pub mod policy;
pub mod ring_provider;
pub mod status_list;
pub mod verify;

#[cfg(test)]
mod testutil;

pub use claims::{
    ACCESS_TOKEN_TYP, ALL_ACCOUNTS, AccessClaims, Audience, Role, StatusClaim, StatusListRef,
    TokenStatus,
};
pub use error::VerifyError;
pub use jwk::{KeyError, KeySet, SigningAlgorithm, VerificationKey};
pub use policy::VerifiedKey;
pub use ring_provider::{RING_PROVIDER, install_ring_provider};
pub use verify::{DEFAULT_LEEWAY_SECS, Expectations, MAX_TOKEN_BYTES, check_status, verify_signed};
