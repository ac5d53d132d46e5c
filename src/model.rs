//! The issuer's records as the domain and the store share them: access
//! keys, their tokens' status slots, and signing keys' states. Plain data
//! and the rules that read only the data (a key's status at a time, the
//! status bit a token should carry); no storage, no HTTP.

use latchkey_verifier::{Role, TokenStatus};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::Actor;

/// The lasting state of a key; `expired` is derived from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    Suspended,
    Revoked,
}

/// What a key looks like to a client at a given time (contract §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Suspended,
    Revoked,
    Expired,
}

impl KeyStatus {
    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "active" => Some(KeyStatus::Active),
            "suspended" => Some(KeyStatus::Suspended),
            "revoked" => Some(KeyStatus::Revoked),
            "expired" => Some(KeyStatus::Expired),
            _ => None,
        }
    }
}

/// One token minted for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSlot {
    pub jti: String,
    /// Global status slot: list = slot / capacity, idx = slot % capacity.
    pub slot: u64,
    pub issued_at: i64,
    pub expires_at: i64,
    pub signing_kid: String,
    /// Revoked on its own (renew with `revoke_previous`), whatever the key's state.
    #[serde(default)]
    pub revoked: bool,
}

/// A key as stored. Never contains a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub roles: Vec<Role>,
    pub accounts: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: Actor,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    pub state: KeyState,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub signing_kid: String,
    pub tokens: Vec<TokenSlot>,
}

impl KeyRecord {
    pub fn status(&self, now: OffsetDateTime) -> KeyStatus {
        match self.state {
            KeyState::Revoked => KeyStatus::Revoked,
            _ if self.expires_at <= now => KeyStatus::Expired,
            KeyState::Suspended => KeyStatus::Suspended,
            KeyState::Active => KeyStatus::Active,
        }
    }

    /// The status bit a token of this key should carry.
    pub fn token_status(&self, token: &TokenSlot) -> TokenStatus {
        if token.revoked || self.state == KeyState::Revoked {
            TokenStatus::Invalid
        } else if self.state == KeyState::Suspended {
            TokenStatus::Suspended
        } else {
            TokenStatus::Valid
        }
    }

    /// Whether a live token (not expired, not revoked) was signed by `kid`.
    pub fn has_live_token_of(&self, kid: &str, now_unix: i64) -> bool {
        self.state != KeyState::Revoked
            && self
                .tokens
                .iter()
                .any(|t| t.signing_kid == kid && !t.revoked && t.expires_at > now_unix)
    }
}

/// Where a signing key is in its life (contract §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// A signing key's public record (never key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyInfo {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    pub alg: String,
    pub state: SigningKeyState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When a `next` key becomes active.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub activates_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
}

/// RFC 3339 form of a time, as every document of the issuer writes it.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
