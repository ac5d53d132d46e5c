//! Why an access key was refused.
//!
//! Every variant's `Display` text is safe to send to a client: it names the
//! rule that failed, never the token's content, key material or internal
//! detail. [`VerifyError::code`] gives a stable snake_case code for logs,
//! metrics and machine-readable error bodies.

use thiserror::Error;

/// The reason a token failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum VerifyError {
    /// The token's structure, base64 or JSON is broken; the string names the
    /// part (`"structure"`, `"header"`, `"payload"`, `"signature"`,
    /// `"claims"`).
    #[error("the access key is malformed ({0})")]
    Malformed(&'static str),
    /// The token is longer than [`MAX_TOKEN_BYTES`](crate::MAX_TOKEN_BYTES).
    #[error("the access key is too large")]
    TooLarge,
    /// The header carries a parameter latchkey never issues and a verifier must
    /// not honour (`jku`, `x5u`, `jwk`, `x5c`, `crit`).
    #[error("the access key header contains the forbidden parameter `{0}`")]
    ForbiddenHeader(&'static str),
    /// The header's `alg` is not the algorithm of the key named by `kid`
    /// (this covers `none` and every HMAC algorithm).
    #[error("the access key uses an unsupported signing algorithm")]
    UnsupportedAlgorithm,
    /// The header's `kid` is missing, empty, or names no known signing key.
    #[error("the access key was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the access key signature is invalid")]
    BadSignature,
    /// The header's `typ` is not `at+jwt`.
    #[error("the token is not an access key (wrong type)")]
    WrongType,
    /// The `iss` claim is not the expected issuer.
    #[error("the access key was issued by a different issuer")]
    WrongIssuer,
    /// The `aud` claim does not contain the expected audience.
    #[error("the access key is not intended for this audience")]
    WrongAudience,
    /// The `exp` claim is in the past (beyond the leeway).
    #[error("the access key has expired")]
    Expired,
    /// The `nbf` claim is in the future (beyond the leeway).
    #[error("the access key is not valid yet")]
    NotYetValid,
    /// The claims parse but break a rule of the contract; the string names it.
    #[error("the access key claims are invalid ({0})")]
    InvalidClaims(&'static str),
    /// The token's status list entry says it is revoked (invalid).
    #[error("the access key has been revoked")]
    Revoked,
    /// The token's status list entry says it is suspended.
    #[error("the access key is suspended")]
    Suspended,
    /// The status data needed to check the token is missing or too old, so
    /// the verifier fails closed.
    #[error("the access key status cannot be checked right now")]
    StatusUnavailable,
}

impl VerifyError {
    /// A stable snake_case code naming the failure, e.g. `"expired"`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::TooLarge => "too_large",
            VerifyError::ForbiddenHeader(_) => "forbidden_header",
            VerifyError::UnsupportedAlgorithm => "unsupported_algorithm",
            VerifyError::UnknownKey => "unknown_key",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::WrongType => "wrong_type",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::InvalidClaims(_) => "invalid_claims",
            VerifyError::Revoked => "revoked",
            VerifyError::Suspended => "suspended",
            VerifyError::StatusUnavailable => "status_unavailable",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_distinct() {
        let all = [
            VerifyError::Malformed("header"),
            VerifyError::TooLarge,
            VerifyError::ForbiddenHeader("jku"),
            VerifyError::UnsupportedAlgorithm,
            VerifyError::UnknownKey,
            VerifyError::BadSignature,
            VerifyError::WrongType,
            VerifyError::WrongIssuer,
            VerifyError::WrongAudience,
            VerifyError::Expired,
            VerifyError::NotYetValid,
            VerifyError::InvalidClaims("roles"),
            VerifyError::Revoked,
            VerifyError::Suspended,
            VerifyError::StatusUnavailable,
        ];
        let mut codes: Vec<_> = all.iter().map(VerifyError::code).collect();
        for code in &codes {
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(VerifyError::Expired.code(), "expired");
        assert_eq!(VerifyError::BadSignature.code(), "bad_signature");
    }

    #[test]
    fn messages_name_the_part() {
        assert_eq!(
            VerifyError::Malformed("header").to_string(),
            "the access key is malformed (header)"
        );
        assert_eq!(
            VerifyError::ForbiddenHeader("jku").to_string(),
            "the access key header contains the forbidden parameter `jku`"
        );
    }
}
