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

/// One problem with one field of a request (`errors[]` of a problem).
#[derive(ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Who did something: an access key's `{id, name}`, or `bootstrap`,
/// `system` or `anonymous`.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum Actor {
    /// An access key: its id and name.
    Key { id: String, name: String },
    /// The service itself: `bootstrap` (first start, `init`, `recover-admin`),
    /// `system` (automatic work) or `anonymous` (a request without a valid key).
    Named(String),
}

/// One audit log entry, as `GET /v1/audit` serves it.
#[derive(ToSchema)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// RFC 3339 UTC time of the change.
    pub time: String,
    pub actor: Actor,
    /// e.g. `key.create`, `key.revoke`, `auth.denied`.
    pub action: String,
    /// Usually the id of the key or signing key concerned.
    pub target: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Hex SHA-256 of the previous entry (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over this entry's other fields.
    pub hash: String,
}

/// The roles a key can hold (the request keeps strings so an unknown role
/// gets a field-level message).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    GlobalAdmin,
    GlobalViewer,
    CloudAccountViewer,
}

/// `POST /v1/keys` body.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// 1–100 printable characters (no Unicode Cc, Cf, Zl or Zp), trimmed;
    /// unique compared NFKC case-folded; cannot change later.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// 0–1000 characters; editable.
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Non-empty, each role once.
    #[schema(value_type = Vec<RoleName>, min_items = 1, max_items = 3, example = json!(["cloud_account_viewer"]))]
    pub roles: Vec<String>,
    /// Required with (and only with) `cloud_account_viewer`: 1–1000 account ids
    /// of `[A-Za-z0-9._:-]` (1–128 characters each), or `["*"]` for all.
    #[schema(min_items = 1, max_items = 1000)]
    pub accounts: Option<Vec<String>>,
    /// 1 to the configured maximum (default 730); six calendar months when omitted.
    #[schema(minimum = 1)]
    pub expires_in_days: Option<u32>,
}
