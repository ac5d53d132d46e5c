//! The admin API's caller: the bearer key read from the request and
//! authenticated by the domain ([`crate::issuer::Issuer::authenticate`],
//! the same rule introspection uses), and role checks.
//!
//! Every refusal is counted in `latchkey_auth_failures_total{reason}`. A 403
//! (a key that verified, refused for its role) is one audit entry naming the
//! key; a 401 (no valid key) is tallied per reason and minute and audited
//! as one entry per window ([`crate::denials`]), so that anonymous requests
//! cannot grow the log. Audit entries name the route template
//! (`/v1/keys/{id}`), never the raw path.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Method, header};
use latchkey_verifier::AccessClaims;
use latchkey_verifier::cache::TokenCache;
use latchkey_verifier::policy::VerifiedKey;

use crate::audit::Actor;
use crate::http::ApiState;
use crate::http::error::ApiError;
use crate::issuer::STORE_UNAVAILABLE;
use crate::issuer::VerifiedTokenCache;
use crate::keyring::KeySnapshot;

/// A bearer token that verified against one key set, cached by the whole token.
#[derive(Debug)]
pub struct VerifiedBearer {
    /// The key set it verified against: a hit counts only while it is current,
    /// so rotation and retirement take effect at once.
    keys: Arc<KeySnapshot>,
    claims: AccessClaims,
}

/// The bounded cache of verified bearer tokens.
#[derive(Debug)]
pub struct BearerCache(TokenCache<Arc<VerifiedBearer>>);

impl BearerCache {
    pub fn new(capacity: usize) -> BearerCache {
        BearerCache(TokenCache::new(capacity))
    }
}

impl VerifiedTokenCache for BearerCache {
    fn get(&self, token: &str, keys: &Arc<KeySnapshot>) -> Option<AccessClaims> {
        self.0
            .get(token)
            .filter(|hit| Arc::ptr_eq(&hit.keys, keys))
            .map(|hit| hit.claims.clone())
    }

    fn insert(&self, token: &str, keys: Arc<KeySnapshot>, claims: AccessClaims) {
        self.0
            .insert(token, Arc::new(VerifiedBearer { keys, claims }));
    }
}

/// The caller of an admin route, authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key: VerifiedKey,
    pub actor: Actor,
    method: Method,
    /// The route template (or the path cut to 256 bytes), for the audit log.
    route: String,
}

/// What a route needs (contract §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `global_admin`.
    Admin,
    /// `global_admin` or `global_viewer`.
    Reader,
    /// Any valid key.
    AnyKey,
}

impl Principal {
    /// Refuses with 403 (and an audit entry) unless the key's roles allow `need`.
    pub async fn require(&self, state: &ApiState, need: Need) -> Result<(), ApiError> {
        let allowed = match need {
            Need::Admin => self.key.is_admin(),
            Need::Reader => self.key.can_read_all(),
            Need::AnyKey => true,
        };
        if allowed {
            return Ok(());
        }
        let detail = match need {
            Need::Admin => "this action needs the global_admin role",
            _ => "this needs the global_admin or global_viewer role",
        };
        state
            .issuer
            .record_forbidden(&self.actor, self.method.as_str(), &self.route, detail)
            .await;
        Err(ApiError::Forbidden(detail.into()))
    }
}

/// What the audit log records of a request's path: the route template it
/// matched, or (should none be known) the path cut to
/// [`MAX_STORED_PATH_BYTES`](crate::denials::MAX_STORED_PATH_BYTES).
fn stored_route(parts: &Parts) -> String {
    match parts.extensions.get::<MatchedPath>() {
        Some(matched) => matched.as_str().to_owned(),
        None => crate::denials::cut_path(parts.uri.path(), crate::denials::MAX_STORED_PATH_BYTES)
            .to_owned(),
    }
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let issuer = &state.issuer;
        // A minute of refusals that has ended is written now (cheap otherwise).
        issuer.flush_due_denials().await;
        let route = stored_route(parts);
        let values = parts
            .headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes());
        let verified = match issuer.bearer_token(values) {
            Ok(token) => {
                issuer
                    .authenticate(token, Some(&state.http.bearers as &dyn VerifiedTokenCache))
                    .await
            }
            Err(refusal) => Err(refusal),
        };
        match verified {
            Ok(claims) => {
                let (key, actor) = issuer.caller(claims).await;
                Ok(Principal {
                    key,
                    actor,
                    method: parts.method.clone(),
                    route,
                })
            }
            // The key may be fine: the registry could not be read.
            Err(refusal) if refusal.code == STORE_UNAVAILABLE => {
                Err(ApiError::Unavailable(refusal.message))
            }
            Err(refusal) => {
                let request = format!("{} {route}", parts.method.as_str());
                issuer.record_anonymous(refusal.code, &request).await;
                Err(ApiError::Unauthorized(refusal.message))
            }
        }
    }
}
