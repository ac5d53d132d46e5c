//! The one error type of the HTTP API and its RFC 9457 problem+json form.
//!
//! Client mistakes map to 4xx with a `detail` that says what to fix (and
//! `errors` per field for validation). Internal failures are logged with an
//! id and answered with that id only: no internal text reaches a client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::issuer::IssuerError;
use crate::validation::FieldError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem, e.g. `urn:latchkey:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Present on validation failures: one entry per field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::http::schema::FieldError>>)]
    pub errors: Option<Vec<FieldError>>,
}

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// A query parameter the server did not hand out (400, naming it).
    BadParameter(FieldError),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed,
    Conflict {
        detail: String,
        errors: Option<Vec<FieldError>>,
    },
    PayloadTooLarge,
    UnsupportedMediaType(String),
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// The service is at a limit (503); the detail says what to do instead.
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn validation(errors: Vec<FieldError>) -> ApiError {
        let detail = match errors.as_slice() {
            [one] => format!("{} {}", one.field, one.message),
            _ => format!("{} fields are invalid; see errors", errors.len()),
        };
        ApiError::Validation { detail, errors }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) | ApiError::BadParameter(_) => {
                (StatusCode::BAD_REQUEST, "bad-request")
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
            }
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug) = self.parts();
        let (detail, errors) = match self {
            ApiError::BadRequest(d)
            | ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::Unavailable(d) => (d, None),
            ApiError::MethodNotAllowed => (
                "this method is not allowed on this path; see /openapi.json".into(),
                None,
            ),
            ApiError::PayloadTooLarge => ("the request body is larger than 64 KiB".into(), None),
            ApiError::Conflict { detail, errors } => (detail, errors),
            ApiError::BadParameter(error) => (
                format!("{} {}", error.field, error.message),
                Some(vec![error]),
            ),
            ApiError::Validation { detail, errors } => (detail, Some(errors)),
            ApiError::Internal(message) => {
                let id = uuid::Uuid::now_v7();
                tracing::error!(error_id = %id, error = %message, "internal error");
                (
                    format!("internal error; quote id {id} to the operator"),
                    None,
                )
            }
        };
        let problem = Problem {
            kind: format!("urn:latchkey:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 here is a condition that passes (a limit, a
            // database coming back): say when to try again.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

impl From<IssuerError> for ApiError {
    fn from(e: IssuerError) -> Self {
        match e {
            IssuerError::NotFound => ApiError::NotFound("no key with that id".into()),
            IssuerError::NameTaken(_) => ApiError::Conflict {
                detail: e.to_string(),
                errors: Some(vec![FieldError::new(
                    "name",
                    "is already taken by another key (names are compared ignoring letter case and compatibility forms such as full-width letters, revoked keys included)",
                )]),
            },
            IssuerError::AlreadyRevoked
            | IssuerError::InvalidState(_)
            | IssuerError::Conflict(_)
            | IssuerError::Unsupported(_) => ApiError::Conflict {
                detail: e.to_string(),
                errors: None,
            },
            IssuerError::Validation(errors) => ApiError::validation(errors),
            IssuerError::UnknownParameter(error) => ApiError::BadParameter(error),
            IssuerError::SigningKeyNotFound(_) => ApiError::NotFound(e.to_string()),
            IssuerError::Unavailable(m) => {
                tracing::warn!(error = %m, "a request failed because the database is unavailable");
                ApiError::Unavailable(
                    "the database is unavailable, so nothing was changed; retry after a few seconds"
                        .into(),
                )
            }
            IssuerError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::BadRequest(format!("the body is not valid JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => ApiError::Validation {
                detail: format!(
                    "the body does not have the expected shape: {}",
                    e.body_text()
                ),
                errors: vec![FieldError::new("body", e.body_text())],
            },
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "send the body as JSON with Content-Type: application/json".into(),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            other => {
                ApiError::BadRequest(format!("could not read the body: {}", other.body_text()))
            }
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}

/// `Json<T>` whose rejections are problem documents.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query<T>` whose rejections are problem documents.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
