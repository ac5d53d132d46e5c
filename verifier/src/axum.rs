//! axum integration: extractors and a tower layer that authenticate a
//! request's `Authorization: Bearer` access key with a [`Verifier`] and
//! apply the contract's §1 policy.
//!
//! - [`Authenticated`] — any valid key; generic over the app state `S`
//!   through `Verifier: FromRef<S>`, so the verifier can live inside your
//!   own state type.
//! - [`Authorized`] — a valid key that the §1 policy allows to make this
//!   request: `GET`/`HEAD` need [`can_read`](VerifiedKey::can_read) of the
//!   route's `{account}` path parameter, `POST`/`PUT`/`PATCH`/`DELETE` need
//!   [`can_write`](VerifiedKey::can_write). Without an `{account}`
//!   parameter, reads need a global reader and writes `global_admin`.
//! - [`VerifierLayer`] — the same authentication as middleware for a whole
//!   router, with an optional authorization predicate; it puts the
//!   [`VerifiedKey`] in the request extensions, where the extractors (and
//!   `Extension<VerifiedKey>`) find it without verifying again.
//!
//! Refusals ([`AuthRejection`]) follow RFC 6750 §3: no credentials → 401
//! with a bare `WWW-Authenticate: Bearer` challenge; a refused key → 401
//! with `error="invalid_token"` and an `error_description`; a key the policy
//! refuses → 403 with `error="insufficient_scope"`. When the token's status
//! cannot be checked (the verifier fails closed on stale data) the answer is
//! 503 with `Retry-After`: the key may be perfectly good, so clients should
//! retry rather than discard it. Bodies are RFC 9457 problem documents.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::axum::extract::{FromRef, FromRequestParts, RawPathParams, Request};
use ::axum::http::request::Parts;
use ::axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use ::axum::response::{IntoResponse, Response};

use crate::error::VerifyError;
use crate::policy::VerifiedKey;
use crate::sync::Verifier;

/// A request authenticated with a valid access key.
#[derive(Debug, Clone)]
pub struct Authenticated(pub VerifiedKey);

/// A request authenticated with a valid access key that the §1 policy
/// allows for this method and `{account}` (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Authorized(pub VerifiedKey);

/// Put in the request extensions by [`VerifierLayer`] only, so that the
/// extractors can trust it.
#[derive(Debug, Clone)]
struct LayerVerified(VerifiedKey);

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No `Authorization: Bearer` credentials (401).
    MissingCredentials,
    /// The access key was refused (401; 503 for
    /// [`VerifyError::StatusUnavailable`]).
    Invalid(VerifyError),
    /// The key is valid but may not do this (403).
    Forbidden(&'static str),
}

impl std::fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthRejection::MissingCredentials => {
                f.write_str("send an access key as Authorization: Bearer <key>")
            }
            AuthRejection::Invalid(e) => write!(f, "{e}"),
            AuthRejection::Forbidden(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for AuthRejection {}

impl AuthRejection {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthRejection::MissingCredentials => StatusCode::UNAUTHORIZED,
            AuthRejection::Invalid(VerifyError::StatusUnavailable) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AuthRejection::Invalid(_) => StatusCode::UNAUTHORIZED,
            AuthRejection::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The `WWW-Authenticate` challenge, if the status calls for one.
    pub fn challenge(&self) -> Option<String> {
        match self {
            AuthRejection::MissingCredentials => Some("Bearer".to_owned()),
            AuthRejection::Invalid(VerifyError::StatusUnavailable) => None,
            AuthRejection::Invalid(e) => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                quoted_safe(&e.to_string())
            )),
            AuthRejection::Forbidden(why) => Some(format!(
                "Bearer error=\"insufficient_scope\", error_description=\"{}\"",
                quoted_safe(why)
            )),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AuthRejection::MissingCredentials => "missing_token",
            AuthRejection::Invalid(e) => e.code(),
            AuthRejection::Forbidden(_) => "insufficient_scope",
        }
    }
}

/// RFC 6750 `error_description` allows printable ASCII except `"` and `\`.
fn quoted_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let slug = match status {
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::SERVICE_UNAVAILABLE => "status-unavailable",
            _ => "unauthorized",
        };
        let body = serde_json::json!({
            "type": format!("urn:latchkey:problem:{slug}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "code": self.code(),
        });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = self.challenge()
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// The bearer token of a request. A missing header, or another scheme, is
/// "no credentials" (RFC 6750 §3.1); `Bearer` with nothing after it is a
/// malformed token.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthRejection> {
    use crate::bearer::{BearerError, parse_bearer};
    let values = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|v| v.as_bytes());
    parse_bearer(values).map_err(|e| match e {
        // Two credentials are ambiguous: refuse rather than pick one.
        BearerError::Repeated
        | BearerError::NotText
        | BearerError::Empty
        | BearerError::NoSeparator {
            scheme_is_bearer: true,
        } => AuthRejection::Invalid(VerifyError::Malformed("structure")),
        BearerError::Missing
        | BearerError::OtherScheme
        | BearerError::NoSeparator {
            scheme_is_bearer: false,
        } => AuthRejection::MissingCredentials,
    })
}

async fn authenticate(parts: &Parts, verifier: &Verifier) -> Result<VerifiedKey, AuthRejection> {
    if let Some(LayerVerified(key)) = parts.extensions.get::<LayerVerified>() {
        return Ok(key.clone());
    }
    let token = bearer_token(&parts.headers)?;
    verifier
        .verify_or_refresh(token)
        .await
        .map_err(AuthRejection::Invalid)
}

impl<S> FromRequestParts<S> for Authenticated
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        authenticate(parts, &verifier).await.map(Authenticated)
    }
}

/// Whether the §1 policy lets `key` make a `method` request on `account`
/// (`None`: a route with no account, which needs global read or admin).
pub fn policy_allows(key: &VerifiedKey, method: &Method, account: Option<&str>) -> bool {
    match account {
        Some(account) => key.allows(method.as_str(), account),
        None => match *method {
            Method::GET | Method::HEAD => key.can_read_all(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => key.is_admin(),
            _ => false,
        },
    }
}

fn refusal_reason(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "this access key may not read this account",
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => {
            "writes need an access key with the global_admin role"
        }
        _ => "this method is not allowed for any access key",
    }
}

impl<S> FromRequestParts<S> for Authorized
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let key = authenticate(parts, &verifier).await?;
        let params = RawPathParams::from_request_parts(parts, state).await.ok();
        let account = params
            .as_ref()
            .and_then(|p| p.iter().find(|(name, _)| *name == "account"))
            .map(|(_, value)| value);
        if policy_allows(&key, &parts.method, account) {
            Ok(Authorized(key))
        } else {
            Err(AuthRejection::Forbidden(refusal_reason(&parts.method)))
        }
    }
}

type Predicate = Arc<dyn Fn(&VerifiedKey, &Parts) -> bool + Send + Sync>;

/// A tower layer that refuses requests without a valid access key (401) or
/// that the optional predicate refuses (403), and otherwise passes them on
/// with the [`VerifiedKey`] in the request extensions.
///
/// ```no_run
/// # async fn demo(verifier: latchkey_verifier::Verifier) {
/// use axum::{Extension, Router, routing::get};
/// use latchkey_verifier::{VerifiedKey, axum::VerifierLayer};
///
/// let app: Router = Router::new()
///     .route("/reports", get(|Extension(key): Extension<VerifiedKey>| async move { key.name }))
///     .layer(VerifierLayer::new(verifier).authorize(|key, _parts| key.can_read_all()));
/// # }
/// ```
#[derive(Clone)]
pub struct VerifierLayer {
    verifier: Verifier,
    authorize: Option<Predicate>,
}

impl std::fmt::Debug for VerifierLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierLayer")
            .field("verifier", &self.verifier)
            .field("authorize", &self.authorize.is_some())
            .finish()
    }
}

impl VerifierLayer {
    /// Authenticate every request with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        VerifierLayer {
            verifier,
            authorize: None,
        }
    }

    /// Also require `predicate(key, request parts)`; a refusal is a 403.
    pub fn authorize<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&VerifiedKey, &Parts) -> bool + Send + Sync + 'static,
    {
        self.authorize = Some(Arc::new(predicate));
        self
    }
}

impl<S> tower::Layer<S> for VerifierLayer {
    type Service = VerifierService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifierService {
            inner,
            verifier: self.verifier.clone(),
            authorize: self.authorize.clone(),
        }
    }
}

/// The service [`VerifierLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct VerifierService<S> {
    inner: S,
    verifier: Verifier,
    authorize: Option<Predicate>,
}

impl<S> std::fmt::Debug for VerifierService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierService")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl<S> tower::Service<Request> for VerifierService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone may not be ready; call the one that was polled.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let verifier = self.verifier.clone();
        let authorize = self.authorize.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let key = match authenticate(&parts, &verifier).await {
                Ok(key) => key,
                Err(rejection) => return Ok(rejection.into_response()),
            };
            if let Some(authorize) = &authorize
                && !authorize(&key, &parts)
            {
                return Ok(
                    AuthRejection::Forbidden("this access key may not make this request")
                        .into_response(),
                );
            }
            parts.extensions.insert(LayerVerified(key.clone()));
            parts.extensions.insert(key);
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(
            bearer_token(&HeaderMap::new()),
            Err(AuthRejection::MissingCredentials)
        );
        assert_eq!(bearer_token(&headers("Bearer a.b.c")), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers("bearer  a.b.c ")), Ok("a.b.c"));
        assert_eq!(
            bearer_token(&headers("Basic dXNlcjpwYXNz")),
            Err(AuthRejection::MissingCredentials)
        );
        assert!(matches!(
            bearer_token(&headers("Bearer")),
            Err(AuthRejection::Invalid(_))
        ));
        assert!(matches!(
            bearer_token(&headers("Bearer   ")),
            Err(AuthRejection::Invalid(_))
        ));
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(
            AuthRejection::MissingCredentials.challenge().as_deref(),
            Some("Bearer")
        );
        assert_eq!(
            AuthRejection::Invalid(VerifyError::Expired)
                .challenge()
                .as_deref(),
            Some(
                "Bearer error=\"invalid_token\", error_description=\"the access key has expired\""
            )
        );
        let forbidden = AuthRejection::Forbidden("no \"way\"");
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            forbidden.challenge().as_deref(),
            Some("Bearer error=\"insufficient_scope\", error_description=\"no 'way'\"")
        );
        let unavailable = AuthRejection::Invalid(VerifyError::StatusUnavailable);
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.challenge(), None);
        let response = unavailable.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = AuthRejection::Invalid(VerifyError::Revoked).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\"")
        );
    }

    #[test]
    fn description_is_header_safe() {
        assert_eq!(quoted_safe("a\"b\\c\u{e9}\n"), "a'b'c??");
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let mut headers = HeaderMap::new();
        headers.append(header::AUTHORIZATION, "Bearer a.b.c".parse().unwrap());
        headers.append(header::AUTHORIZATION, "Bearer d.e.f".parse().unwrap());
        assert!(matches!(
            bearer_token(&headers),
            Err(AuthRejection::Invalid(VerifyError::Malformed(_)))
        ));
    }
}
