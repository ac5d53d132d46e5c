//! `GET /v1/backup`: an online backup, streamed to a global admin
//! (contract §9). The store writes the snapshot to a temporary file in the
//! data directory; it is unlinked as soon as it is open for streaming, so a
//! client that goes away leaves nothing behind.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::AsyncReadExt;

use crate::http::ApiState;
use crate::http::auth::{Need, Principal};
use crate::http::error::{ApiError, Problem};

/// The response header with the hex SHA-256 of the whole body.
pub const SHA256_HEADER: &str = "x-latchkey-backup-sha256";

pub fn router() -> Router<ApiState> {
    Router::new().route("/v1/backup", get(download_backup))
}

/// Removes a file when dropped, whatever happened to the request.
struct Removed(std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.0.display(), error = %e, "could not remove a temporary backup file");
            }
            _ => {}
        }
    }
}

/// Download a consistent snapshot of the store (embedded engine), taken while the server runs.
#[utoipa::path(get, path = "/v1/backup", tag = "operations", security(("bearer" = [])),
    responses(
        (status = 200, description = "The backup: line-oriented JSON (see the operations guide); `X-Latchkey-Backup-Sha256` is the SHA-256 of the whole body", content_type = "application/octet-stream"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the global_admin role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "This store is backed up another way (the detail says how)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn download_backup(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(&state, Need::Admin).await?;
    let path = state
        .config
        .data_dir
        .join(format!(".backup-{}.partial", uuid::Uuid::now_v7()));
    let cleanup = Removed(path.clone());
    let summary = state.issuer.backup(&principal.actor, path).await?;
    let file = tokio::fs::File::open(&cleanup.0)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot open the backup just written: {e}")))?;
    // Unlinked now; the open file keeps its contents until the body ends.
    drop(cleanup);
    let body = Body::from_stream(futures_util::stream::unfold(Some(file), read_chunk));
    let name = format!(
        "attachment; filename=\"latchkey-backup-{}.jsonl\"",
        file_time(state.now())
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(summary.bytes));
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&summary.sha256) {
        headers.insert(SHA256_HEADER, value);
    }
    Ok(response)
}

/// The next chunk of the file; after an error the stream ends.
async fn read_chunk(
    file: Option<tokio::fs::File>,
) -> Option<(std::io::Result<bytes::Bytes>, Option<tokio::fs::File>)> {
    let mut file = file?;
    let mut chunk = vec![0u8; 64 * 1024];
    match file.read(&mut chunk).await {
        Ok(0) => None,
        Ok(n) => {
            chunk.truncate(n);
            Some((Ok(bytes::Bytes::from(chunk)), Some(file)))
        }
        Err(e) => Some((Err(e), None)),
    }
}

/// `20260601T000000Z`: a time that is safe in a file name.
fn file_time(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

    use crate::http::error::ApiError;
    use crate::issuer::IssuerError;

    #[tokio::test]
    async fn a_store_that_cannot_back_up_answers_409_with_its_advice() {
        let advice = "this issuer keeps its data in PostgreSQL; back it up with pg_dump";
        let response = ApiError::from(IssuerError::Unsupported(advice.into())).into_response();
        assert_eq!(response.status(), 409);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["detail"], serde_json::json!(advice));
        assert_eq!(problem["status"], serde_json::json!(409));
    }
}
