//! Authentication and role checks for the admin API.
//!
//! A bearer key is verified exactly as a downstream verifier would (the
//! verifier crate's core: signature with the algorithm taken from the key,
//! `typ`, `iss`, `aud`, `exp`/`nbf`, then the token's status bit), and the
//! issuer also requires its key (`sub`) to be in the registry.
//!
//! Every refusal is counted in `latchkey_auth_failures_total{reason}`. A 403
//! (a key that verified, refused for its role) is one audit entry naming the
//! key; a 401 (no valid key) is tallied per reason and minute and audited
//! as one entry per window ([`crate::denials`]), so that anonymous requests
//! cannot grow the log. Audit entries name the route template
//! (`/v1/keys/{id}`), never the raw path.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Method, header};
use latchkey_verifier::policy::VerifiedKey;
use latchkey_verifier::verify::{check_status, verify_signed};
use latchkey_verifier::{AccessClaims, error::VerifyError};
use serde_json::json;

use crate::app::AppState;
use crate::audit::{Actor, NewEntry};
use crate::http::error::ApiError;
use crate::registry::KeyState;

/// A bearer token that verified against one key set, cached by the whole token.
#[derive(Debug)]
pub struct VerifiedBearer {
    /// The key set it verified against: a hit counts only while it is current,
    /// so rotation and retirement take effect at once.
    keys: std::sync::Arc<crate::keyring::KeySnapshot>,
    claims: AccessClaims,
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
    pub fn require(&self, state: &AppState, need: Need) -> Result<(), ApiError> {
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
        metrics::counter!("latchkey_auth_failures_total", "reason" => "forbidden").increment(1);
        let entry = NewEntry {
            actor: self.actor.clone(),
            action: "auth.denied",
            target: None,
            details: json!({
                "method": self.method.as_str(),
                "path": self.route,
                "reason": "forbidden",
                "detail": detail,
            }),
        };
        if let Err(e) = state.registry.record_event(entry, state.now()) {
            tracing::warn!(error = %e, "could not audit a denied request");
        }
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

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // A minute of refusals that has ended is written now (cheap otherwise).
        crate::denials::flush_due(state);
        let route = stored_route(parts);
        match authenticate(parts, state) {
            Ok(key) => {
                if let Err(e) = state.registry.touch_last_used(&key.id, state.now()) {
                    tracing::warn!(error = %e, "could not record last use");
                }
                let actor = Actor::Key {
                    id: key.id.clone(),
                    name: key.name.clone(),
                };
                Ok(Principal {
                    key,
                    actor,
                    method: parts.method.clone(),
                    route,
                })
            }
            Err((code, detail)) => {
                let request = format!("{} {route}", parts.method.as_str());
                crate::denials::record_anonymous(state, code, &request);
                Err(ApiError::Unauthorized(detail))
            }
        }
    }
}

/// Verifies the bearer key; on failure, a stable reason code and a message
/// for the client (never containing the token).
fn authenticate(parts: &Parts, state: &AppState) -> Result<VerifiedKey, (&'static str, String)> {
    let token = bearer_token(parts)?;
    let snapshot = state.keyring.snapshot();
    let now = state.now();
    let leeway = state.expectations.leeway_secs;
    let now_unix = now.unix_timestamp();
    let cached = state
        .token_cache
        .get(token)
        .filter(|hit| std::sync::Arc::ptr_eq(&hit.keys, &snapshot));
    let claims: AccessClaims = match cached {
        // Same token, same key set: the signature and claims checked out
        // before; only the clock can have changed.
        Some(hit) => {
            if hit.claims.exp <= now_unix - leeway {
                return Err(refusal(VerifyError::Expired));
            }
            if hit.claims.nbf > now_unix + leeway {
                return Err(refusal(VerifyError::NotYetValid));
            }
            hit.claims.clone()
        }
        None => {
            let claims =
                verify_signed(token, &snapshot.verification, &state.expectations, now_unix)
                    .map_err(refusal)?;
            state.token_cache.insert(
                token,
                std::sync::Arc::new(VerifiedBearer {
                    keys: std::sync::Arc::clone(&snapshot),
                    claims: claims.clone(),
                }),
            );
            claims
        }
    };
    let slot = status_slot(state, &claims).ok_or((
        "unknown_status_list",
        "the key's status list is not one of this issuer's".to_owned(),
    ))?;
    let status = state.registry.token_status(slot).map_err(|_| {
        (
            "status_unavailable",
            "the key's status could not be read; try again".to_owned(),
        )
    })?;
    check_status(status).map_err(refusal)?;
    let record = state
        .registry
        .get(&claims.sub)
        .map_err(|_| ("unknown_key", "this key is not in the registry".to_owned()))?;
    if record.state == KeyState::Revoked {
        return Err(refusal(VerifyError::Revoked));
    }
    if !record
        .tokens
        .iter()
        .any(|t| t.jti == claims.jti && t.slot == slot)
    {
        return Err((
            "unknown_token",
            "this token was not issued for this key".to_owned(),
        ));
    }
    Ok(VerifiedKey::from(claims))
}

fn refusal(e: VerifyError) -> (&'static str, String) {
    (e.code(), format!("the access key was refused: {e}"))
}

fn bearer_token(parts: &Parts) -> Result<&str, (&'static str, String)> {
    if parts.headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return Err((
            "malformed_header",
            "send exactly one Authorization header".to_owned(),
        ));
    }
    let value = parts.headers.get(header::AUTHORIZATION).ok_or((
        "missing_token",
        "send your access key as Authorization: Bearer <key>".to_owned(),
    ))?;
    let value = value.to_str().map_err(|_| {
        (
            "malformed_header",
            "the Authorization header is not valid text".to_owned(),
        )
    })?;
    let (scheme, token) = value.split_once(' ').ok_or((
        "malformed_header",
        "use the form Authorization: Bearer <key>".to_owned(),
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err((
            "malformed_header",
            "use the Bearer scheme: Authorization: Bearer <key>".to_owned(),
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(("missing_token", "the Bearer credential is empty".to_owned()));
    }
    Ok(token)
}

/// The global status slot a token points to, if its list URI is one of ours.
pub fn status_slot(state: &AppState, claims: &AccessClaims) -> Option<u64> {
    let reference = &claims.status.status_list;
    let prefix = state.settings.status_list_uri(0);
    let prefix = prefix.strip_suffix('0')?;
    let list: u64 = reference.uri.strip_prefix(prefix)?.parse().ok()?;
    let capacity = state.registry.list_capacity();
    if reference.idx >= capacity {
        return None;
    }
    list.checked_mul(capacity)?.checked_add(reference.idx)
}
