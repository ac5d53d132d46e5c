//! The check endpoint: `/check` (nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`) and `/check/<original path>`
//! (Envoy `ext_authz` in HTTP-service mode).
//!
//! One check: find the original method and URI, read the bearer key (the
//! verifier crate's own parsing), verify it (no I/O: the verifier's cache
//! does the crypto once per token), normalise the URI, read the account,
//! apply the policy. Answers:
//! - 200 with an empty body and the identity headers when allowed;
//! - 401 with `WWW-Authenticate: Bearer` (no key), or with
//!   `error="invalid_token"` (a refused key);
//! - 403 with `error="insufficient_scope"` when the policy refuses;
//! - 400 for an ambiguous original URI, account, or missing original
//!   request headers;
//! - 503 with `Retry-After` when status data is too old (or not loaded
//!   yet): an outage, not a bad key.
//!
//! 401, 403 and 503 are the verifier crate's own [`AuthRejection`]
//! answers, so a service behind the gate and one using the crate answer
//! alike.

use std::borrow::Cow;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use latchkey_verifier::axum::bearer_token;
use latchkey_verifier::{ALL_ACCOUNTS, AuthRejection, Role, VerifiedKey, VerifyError};

use super::Gate;
use super::metrics::Reason;
use super::uri;

pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The identity headers of an allowed request.
pub const KEY_ID: HeaderName = HeaderName::from_static("x-latchkey-key-id");
pub const KEY_NAME: HeaderName = HeaderName::from_static("x-latchkey-key-name");
pub const ROLES: HeaderName = HeaderName::from_static("x-latchkey-roles");
pub const ACCOUNTS: HeaderName = HeaderName::from_static("x-latchkey-accounts");

/// The path of forward-auth checks; below it, Envoy's.
pub const CHECK_PATH: &str = "/check";

/// The original request a check is about.
#[derive(Debug, PartialEq, Eq)]
struct Original<'a> {
    method: &'a str,
    uri: &'a str,
}

/// `GET /check` and `/check/...`: decide, count, answer.
pub async fn check(State(gate): State<std::sync::Arc<Gate>>, request: Request) -> Response {
    let started = Instant::now();
    let (reason, response) =
        decide(&gate, request.uri(), request.headers(), request.method()).await;
    gate.metrics.record(reason, started.elapsed());
    response
}

async fn decide(
    gate: &Gate,
    uri: &Uri,
    headers: &HeaderMap,
    method: &axum::http::Method,
) -> (Reason, Response) {
    let original = match original_request(uri, headers, method.as_str()) {
        Ok(original) => original,
        Err(why) => return bad_request("missing_original_request", why),
    };
    let token = match bearer_token(headers) {
        Ok(token) => token,
        Err(rejection) => {
            let reason = match &rejection {
                AuthRejection::Invalid(e) => Reason::InvalidToken(*e),
                _ => Reason::MissingToken,
            };
            return (reason, rejection.into_response());
        }
    };
    let Some(verifier) = gate.verifier() else {
        return (
            Reason::NotReady,
            AuthRejection::Invalid(VerifyError::StatusUnavailable).into_response(),
        );
    };
    let key = match verifier.verify_or_refresh(token).await {
        Ok(key) => key,
        Err(VerifyError::StatusUnavailable) => {
            return (
                Reason::StatusUnavailable,
                AuthRejection::Invalid(VerifyError::StatusUnavailable).into_response(),
            );
        }
        Err(e) => {
            return (
                Reason::InvalidToken(e),
                AuthRejection::Invalid(e).into_response(),
            );
        }
    };
    let path = match uri::normalise(original.uri) {
        Ok(path) => path,
        Err(e) => return bad_request("ambiguous_uri", e.message()),
    };
    let account = match gate.account.account(&path, headers) {
        Ok(account) => account,
        Err(e) => return bad_request("bad_account", e.message()),
    };
    match gate.policy.decide(&key, original.method, &path, account) {
        Ok(()) => (Reason::Allowed, allowed(&key)),
        Err(refusal) => (
            Reason::Refused(refusal),
            AuthRejection::Forbidden(refusal.message()).into_response(),
        ),
    }
}

/// The original method and URI: from the request itself below `/check/`
/// (Envoy), else from the nginx or Traefik/Caddy headers.
fn original_request<'a>(
    uri: &'a Uri,
    headers: &'a HeaderMap,
    method: &'a str,
) -> Result<Original<'a>, &'static str> {
    let path = uri.path();
    if path != CHECK_PATH {
        let full = uri.path_and_query().map_or(path, |pq| pq.as_str());
        return match full.strip_prefix(CHECK_PATH) {
            Some(rest) if rest.starts_with('/') => Ok(Original { method, uri: rest }),
            _ => Err("checks go to /check or, for Envoy, /check/<original path>"),
        };
    }
    let method = one_of(headers, &X_ORIGINAL_METHOD, &X_FORWARDED_METHOD).map_err(|e| match e {
        OneOf::Neither => {
            "send the original method in X-Original-Method (nginx) or X-Forwarded-Method (Traefik, Caddy)"
        }
        OneOf::Repeated => "the original method header was sent more than once",
        OneOf::Disagree => "X-Original-Method and X-Forwarded-Method disagree",
        OneOf::NotText => "the original method is not a valid HTTP method",
    })?;
    let uri = one_of(headers, &X_ORIGINAL_URI, &X_FORWARDED_URI).map_err(|e| match e {
        OneOf::Neither => {
            "send the original URI in X-Original-URI (nginx) or X-Forwarded-Uri (Traefik, Caddy)"
        }
        OneOf::Repeated => "the original URI header was sent more than once",
        OneOf::Disagree => "X-Original-URI and X-Forwarded-Uri disagree",
        OneOf::NotText => "the original URI contains bytes that are not printable ASCII",
    })?;
    Ok(Original { method, uri })
}

enum OneOf {
    Neither,
    Repeated,
    Disagree,
    NotText,
}

/// The value of header `a` or `b`; both may be sent only with one value.
fn one_of<'a>(headers: &'a HeaderMap, a: &HeaderName, b: &HeaderName) -> Result<&'a str, OneOf> {
    let single = |name: &HeaderName| -> Result<Option<&'a str>, OneOf> {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(OneOf::Repeated);
        }
        let text = value.to_str().map_err(|_| OneOf::NotText)?.trim();
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(text))
    };
    match (single(a)?, single(b)?) {
        (Some(x), Some(y)) if x != y => Err(OneOf::Disagree),
        (Some(x), _) | (None, Some(x)) => Ok(x),
        (None, None) => Err(OneOf::Neither),
    }
}

/// 400, as an RFC 9457 problem document.
fn bad_request(reason: &'static str, detail: &'static str) -> (Reason, Response) {
    let body = serde_json::json!({
        "type": "urn:latchkey:problem:bad-request",
        "title": "Bad Request",
        "status": 400,
        "detail": detail,
        "code": reason,
    });
    let mut response = (StatusCode::BAD_REQUEST, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    (Reason::BadRequest(reason), response)
}

/// 200 with an empty body and the identity headers.
fn allowed(key: &VerifiedKey) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(KEY_ID, header_text(&key.id));
    headers.insert(KEY_NAME, header_text(&key.name));
    headers.insert(ROLES, roles_value(&key.roles));
    headers.insert(ACCOUNTS, accounts_value(key));
    response
}

/// `text` as a header value: printable ASCII other than space and `%` as
/// it is, every other byte of its UTF-8 percent-encoded (`%XX`), so any
/// name is carried exactly and decodes with one percent-decoding.
pub fn header_text(text: &str) -> HeaderValue {
    let plain = |b: u8| b.is_ascii_graphic() && b != b'%';
    let value: Cow<'_, str> = if text.bytes().all(plain) {
        Cow::Borrowed(text)
    } else {
        let mut out = String::with_capacity(text.len() * 3);
        for b in text.bytes() {
            if plain(b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
            }
        }
        Cow::Owned(out)
    };
    // Only printable ASCII is left, which is always a valid value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The roles, comma-separated in a fixed order.
fn roles_value(roles: &[Role]) -> HeaderValue {
    let has = |role| roles.contains(&role);
    let value = match (
        has(Role::GlobalAdmin),
        has(Role::GlobalViewer),
        has(Role::CloudAccountViewer),
    ) {
        (true, false, false) => "global_admin",
        (false, true, false) => "global_viewer",
        (false, false, true) => "cloud_account_viewer",
        (true, true, false) => "global_admin,global_viewer",
        (true, false, true) => "global_admin,cloud_account_viewer",
        (false, true, true) => "global_viewer,cloud_account_viewer",
        (true, true, true) => "global_admin,global_viewer,cloud_account_viewer",
        (false, false, false) => "",
    };
    HeaderValue::from_static(value)
}

/// The key's accounts, comma-separated; `*` when it covers all accounts.
fn accounts_value(key: &VerifiedKey) -> HeaderValue {
    if key.can_read_all() {
        return HeaderValue::from_static(ALL_ACCOUNTS);
    }
    match key.accounts.as_deref() {
        Some([one]) => header_text(one),
        Some(list) if list.iter().any(|a| a == ALL_ACCOUNTS) => {
            HeaderValue::from_static(ALL_ACCOUNTS)
        }
        Some(list) => header_text(&list.join(",")),
        None => HeaderValue::from_static(""),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::gate::policy::tests::key;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_original_request_comes_from_headers_or_the_envoy_path() {
        let check: Uri = "/check".parse().unwrap();
        let nginx = headers(&[(&X_ORIGINAL_METHOD, "POST"), (&X_ORIGINAL_URI, "/a?b")]);
        assert_eq!(
            original_request(&check, &nginx, "GET"),
            Ok(Original {
                method: "POST",
                uri: "/a?b"
            })
        );
        let traefik = headers(&[(&X_FORWARDED_METHOD, "PUT"), (&X_FORWARDED_URI, "/c")]);
        assert_eq!(
            original_request(&check, &traefik, "GET"),
            Ok(Original {
                method: "PUT",
                uri: "/c"
            })
        );
        let both_agree = headers(&[
            (&X_ORIGINAL_METHOD, "GET"),
            (&X_FORWARDED_METHOD, "GET"),
            (&X_ORIGINAL_URI, "/c"),
            (&X_FORWARDED_URI, "/c"),
        ]);
        assert!(original_request(&check, &both_agree, "GET").is_ok());
        let disagree = headers(&[
            (&X_ORIGINAL_METHOD, "GET"),
            (&X_ORIGINAL_URI, "/public"),
            (&X_FORWARDED_URI, "/accounts/b/x"),
        ]);
        assert_eq!(
            original_request(&check, &disagree, "GET"),
            Err("X-Original-URI and X-Forwarded-Uri disagree")
        );
        let repeated = headers(&[
            (&X_ORIGINAL_METHOD, "GET"),
            (&X_ORIGINAL_URI, "/a"),
            (&X_ORIGINAL_URI, "/b"),
        ]);
        assert!(original_request(&check, &repeated, "GET").is_err());
        assert!(original_request(&check, &HeaderMap::new(), "GET").is_err());

        let envoy: Uri = "/check/accounts/a1/data?x=1".parse().unwrap();
        assert_eq!(
            original_request(&envoy, &nginx, "DELETE"),
            Ok(Original {
                method: "DELETE",
                uri: "/accounts/a1/data?x=1"
            })
        );
        let root: Uri = "/check/".parse().unwrap();
        assert_eq!(
            original_request(&root, &HeaderMap::new(), "GET")
                .unwrap()
                .uri,
            "/"
        );
        let other: Uri = "/checkx".parse().unwrap();
        assert!(original_request(&other, &nginx, "GET").is_err());
    }

    #[test]
    fn identity_headers_are_safe_and_exact() {
        assert_eq!(header_text("ci-deploy_1"), "ci-deploy_1");
        assert_eq!(header_text("CI deploy 100%"), "CI%20deploy%20100%25");
        assert_eq!(header_text("caf\u{e9}\u{1F511}"), "caf%C3%A9%F0%9F%94%91");
        assert_eq!(header_text("a\u{7f}"), "a%7F");
        let admin = allowed(&key(&[Role::GlobalAdmin], None));
        assert_eq!(admin.headers()[&ROLES], "global_admin");
        assert_eq!(admin.headers()[&ACCOUNTS], "*");
        assert_eq!(admin.headers()[&KEY_NAME], "test%20key");
        let cav = allowed(&key(&[Role::CloudAccountViewer], Some(&["a1", "a:2"])));
        assert_eq!(cav.headers()[&ROLES], "cloud_account_viewer");
        assert_eq!(cav.headers()[&ACCOUNTS], "a1,a:2");
        let all = allowed(&key(
            &[Role::CloudAccountViewer, Role::GlobalViewer],
            Some(&["*"]),
        ));
        assert_eq!(all.headers()[&ROLES], "global_viewer,cloud_account_viewer");
        assert_eq!(all.headers()[&ACCOUNTS], "*");
    }
}
