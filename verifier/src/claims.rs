//! The claims of a latchkey access key (contract §1) and the roles it carries.
//!
//! These types are shared by the issuer, which serialises them when it mints,
//! and by every verifier, which deserialises them after the signature checks
//! out. Unknown roles and duplicate JSON keys are rejected by serde, so a
//! token that parses here has exactly the shape the contract describes.

use serde::{Deserialize, Serialize};

/// The media type that goes in the JOSE `typ` header of every access key (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The account wildcard: a cloud-account viewer with `["*"]` may read every account.
pub const ALL_ACCOUNTS: &str = "*";

/// A role granted to a key. Roles never change after the key is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including key management.
    GlobalAdmin,
    /// Read-only access to everything.
    GlobalViewer,
    /// Read-only access to the accounts listed in the `accounts` claim.
    CloudAccountViewer,
}

impl Role {
    /// The wire name of the role, as it appears in the `roles` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::GlobalAdmin => "global_admin",
            Role::GlobalViewer => "global_viewer",
            Role::CloudAccountViewer => "cloud_account_viewer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `aud` claim: a single string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// Whether `expected` is one of the audiences.
    pub fn contains(&self, expected: &str) -> bool {
        match self {
            Audience::One(aud) => aud == expected,
            Audience::Many(auds) => auds.iter().any(|aud| aud == expected),
        }
    }
}

/// Where a token's status lives: entry `idx` of the Token Status List at `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusListRef {
    pub idx: u64,
    pub uri: String,
}

/// The `status` claim of the Token Status List draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClaim {
    pub status_list: StatusListRef,
}

/// The claims of an access key, exactly as contract §1 lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The key's id (UUIDv7); stable across renewals.
    pub sub: String,
    /// Same as `sub` (RFC 9068 requires the claim).
    pub client_id: String,
    pub aud: Audience,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// This token's id (UUIDv7); new on every mint.
    pub jti: String,
    /// The key's unique name.
    pub name: String,
    pub roles: Vec<Role>,
    /// Present only when `roles` has `cloud_account_viewer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    pub status: StatusClaim,
}

/// The status of one token in a Token Status List (2 bits per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum TokenStatus {
    Valid = 0,
    Invalid = 1,
    Suspended = 2,
}

impl TokenStatus {
    /// The 2-bit value written into the list.
    pub fn bits(self) -> u8 {
        self as u8
    }

    /// Reads a 2-bit value; `3` (application specific in the draft) is treated
    /// as invalid, since latchkey never writes it and failing closed is safer.
    pub fn from_bits(bits: u8) -> TokenStatus {
        match bits & 0b11 {
            0 => TokenStatus::Valid,
            2 => TokenStatus::Suspended,
            _ => TokenStatus::Invalid,
        }
    }
}
