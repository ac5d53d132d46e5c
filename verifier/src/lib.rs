//! Offline verification of latchkey access keys.
//!
//! Downstream services use this crate to check a key's signature, claims and
//! revocation status without calling latchkey; the issuer uses the same code
//! to authenticate its own admin API, so both sides agree on what is valid.
//!
//! # A downstream service
//!
//! [`Verifier`] is the whole client side of contract §8: built from the
//! issuer URL and an audience, it fetches the issuer's metadata, JWKS and
//! status lists, keeps them fresh in the background (the push stream
//! delivers revocations within milliseconds), and verifies with no I/O.
//! With the `axum` feature (on by default), [`Authenticated`] and
//! [`Authorized`] extract the verified key from a request, refusing with 401
//! (`WWW-Authenticate: Bearer error="invalid_token"`, RFC 6750) or, when the
//! §1 policy refuses, 403 (`error="insufficient_scope"`).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::extract::{FromRef, Path};
//! use axum::{Json, Router, routing::get};
//! use latchkey_verifier::{Authorized, Verifier};
//!
//! #[derive(Clone, FromRef)]
//! struct AppState {
//!     verifier: Verifier,
//! }
//!
//! /// `GET /accounts/{account}/data`: the §1 policy lets global admins and
//! /// viewers read every account, cloud-account viewers their own.
//! async fn read(Authorized(key): Authorized, Path(account): Path<String>) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({"account": account, "read_by": key.name}))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let verifier = Verifier::builder("https://latchkey.example.com", "latchkey")
//!         // Refuse every key once status data is 5 minutes old (the default).
//!         .staleness(Duration::from_secs(300))
//!         // Optional: report use so that `last_used_at` moves; any role will do.
//!         .usage_reporting(std::env::var("LATCHKEY_REPORTER_TOKEN")?)
//!         .build()
//!         .await?;
//!
//!     // Verification itself is synchronous and does no I/O:
//!     let token = std::env::var("SOME_ACCESS_KEY")?;
//!     match verifier.verify(&token) {
//!         Ok(key) => println!("{} may read acct-1: {}", key.name, key.can_read("acct-1")),
//!         Err(e) => println!("refused ({}): {e}", e.code()),
//!     }
//!
//!     let app = Router::new()
//!         .route("/accounts/{account}/data", get(read))
//!         .with_state(AppState { verifier });
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! What [`Verifier::verify`] checks: the signature with the algorithm of the
//! JWK its `kid` names (never the header's `alg`), `typ` = `at+jwt`, `iss`,
//! `aud`, `exp`/`nbf` with a leeway of [`DEFAULT_LEEWAY_SECS`] seconds
//! (configurable), and a valid status in the token's status list. A token it
//! has verified before skips the signature check (a bounded cache keyed by
//! the whole token), but expiry and status are checked on every call. Past
//! the configured staleness of status data it fails closed with
//! [`VerifyError::StatusUnavailable`] unless built with `fail_open(true)`.
//! Every [`VerifyError`] maps to a 401 (the axum integration answers 503 for
//! `StatusUnavailable`, since the key itself may be fine).
//!
//! # The building blocks
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

#[cfg(feature = "axum")]
pub mod axum;
pub mod bearer;
pub mod cache;
pub mod claims;
pub mod error;
pub mod jwk;
pub mod policy;
pub mod ring_provider;
pub mod status_list;
pub mod sync;
mod usage;
pub mod verify;

#[cfg(test)]
mod testutil;

#[cfg(feature = "axum")]
pub use crate::axum::{AuthRejection, Authenticated, Authorized, VerifierLayer};
pub use claims::{
    ACCESS_TOKEN_TYP, ALL_ACCOUNTS, AccessClaims, Audience, Role, StatusClaim, StatusListRef,
    TokenStatus,
};
pub use error::VerifyError;
pub use jwk::{KeyError, KeySet, SigningAlgorithm, VerificationKey};
pub use policy::VerifiedKey;
pub use ring_provider::{RING_PROVIDER, install_ring_provider};
pub use sync::{SyncError, SyncStatus, Verifier, VerifierBuilder};
pub use usage::{MAX_BATCH as MAX_USAGE_BATCH, MAX_PENDING as MAX_PENDING_USAGE};
pub use verify::{DEFAULT_LEEWAY_SECS, Expectations, MAX_TOKEN_BYTES, check_status, verify_signed};
