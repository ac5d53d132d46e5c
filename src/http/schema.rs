//! OpenAPI schemas of domain types the API serves as they are (same
//! fields, same serde form): the domain's types carry no OpenAPI
//! annotations, so the wire documentation lives here, beside the handlers.
//! Never constructed; only read by `utoipa` through `value_type` / `body`.

#![allow(dead_code)]

use utoipa::ToSchema;

/// What a key looks like to a client at a given time (contract §2).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Suspended,
    Revoked,
    Expired,
}

/// Where a signing key is in its life (contract §5).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SigningKeyState {
    /// Published in the JWKS, not yet signing.
    Next,
    /// Signs new tokens and status lists.
    Active,
    /// No longer signs; published until its last token expires or is revoked.
    Previous,
    /// Removed from the JWKS; its tokens no longer verify.
    Retired,
}

/// A signing key's public record, as `GET /v1/signing-keys` shows it.
#[derive(ToSchema)]
pub struct SigningKeyInfo {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    pub alg: String,
    pub state: SigningKeyState,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: String,
    /// When a `next` key becomes active.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activates_at: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<String>,
}
