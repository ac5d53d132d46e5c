//! Token Status List publication (contract §4): the list index, each list
//! as a signed `statuslist+jwt` or plain `statuslist+json`, and the
//! Server-Sent Events stream of changes.
//!
//! A list's compressed bytes are re-encoded only after it changes (see
//! [`crate::status_board`]); the signed token is cached per list and
//! re-signed when the list changes, the active key changes, or half its
//! `ttl` has passed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{Stream, StreamExt, stream};
use latchkey_verifier::status_list::{
    STATUS_BITS, STATUS_LIST_JSON_MEDIA_TYPE, STATUS_LIST_JWT_MEDIA_TYPE, STATUS_LIST_JWT_TYP,
    StatusListClaims, StatusListPayload,
};
use serde::Serialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use utoipa::ToSchema;

use crate::http::ApiState;
use crate::http::error::ApiError;
use crate::http::well_known::serve_prepared;
use crate::keyring::PreparedDocument;
use crate::status_board::{Resume, StatusEvent};

/// Keep-alive comment interval, well under common proxy idle timeouts.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/status", get(list_index))
        .route("/v1/status/stream", get(stream_changes))
}

/// `GET /v1/status/{list}`: mounted outside the metrics middleware (it counts itself).
pub fn documents_router() -> Router<ApiState> {
    Router::new().route("/v1/status/{list}", get(status_list))
}

/// Signed and unsigned forms of one list, cached.
#[derive(Debug, Clone)]
struct CachedList {
    version: u64,
    kid: String,
    iat: i64,
    jwt: PreparedDocument,
    json: PreparedDocument,
}

/// Per-list cache of the documents served by `GET /v1/status/{list}`.
#[derive(Debug, Default)]
pub struct StatusDocuments {
    lists: Mutex<HashMap<u64, Arc<CachedList>>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusListIndex {
    /// URI of every status list, in order.
    pub lists: Vec<String>,
    /// Bits per token (always 2).
    pub bits: u8,
    /// The push stream's sequence number when this index was made.
    pub seq: u64,
    /// For each list, the sequence number of the last change it includes:
    /// a fetched list whose `seq` claim is lower is a stale copy.
    pub list_seqs: Vec<u64>,
    /// The name of the sequence space the numbers count in.
    pub epoch: String,
}

/// Every status list's URI, and how far each has come. Never cached by
/// shared caches: it is how a verifier tells a stale list from a fresh one.
#[utoipa::path(get, path = "/v1/status", tag = "public", responses((status = 200, body = StatusListIndex)))]
pub async fn list_index(State(state): State<ApiState>) -> Response {
    let board = state.issuer.board();
    let (seq, list_seqs) = board.sequences();
    let index = StatusListIndex {
        lists: (0..list_seqs.len() as u64)
            .map(|n| state.issuer.status_lists().uri(n))
            .collect(),
        bits: STATUS_BITS,
        seq,
        list_seqs,
        epoch: board.epoch().to_owned(),
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(index)).into_response()
}

fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains(STATUS_LIST_JSON_MEDIA_TYPE) && !accept.contains(STATUS_LIST_JWT_MEDIA_TYPE)
        || accept.split(',').any(|a| a.trim() == "application/json")
}

/// One Token Status List: `application/statuslist+jwt` (default) or `application/statuslist+json`.
#[utoipa::path(get, path = "/v1/status/{list}", tag = "public",
    params(("list" = u64, Path, description = "List number, from 0")),
    responses(
        (status = 200, description = "The status list token (signed) or its claims (JSON)", content_type = "application/statuslist+jwt", body = String),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn status_list(
    State(state): State<ApiState>,
    list: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    let response = match list {
        Ok(Path(list)) => serve_status_list(&state, list, &headers)
            .await
            .into_response(),
        Err(_) => ApiError::NotFound("that is not a status list number; see /v1/status".into())
            .into_response(),
    };
    crate::http::count_request("/v1/status/{list}", response.status());
    response
}

async fn serve_status_list(
    state: &ApiState,
    list: String,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let list: u64 = list.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "{list:?} is not a status list number; see /v1/status"
        ))
    })?;
    let cached = documents_for(state, list).await?;
    let ttl = state.config.status_list_ttl_secs;
    let mut response = if wants_json(headers) {
        serve_prepared(headers, &cached.json, STATUS_LIST_JSON_MEDIA_TYPE, ttl)
    } else {
        serve_prepared(headers, &cached.jwt, STATUS_LIST_JWT_MEDIA_TYPE, ttl)
    };
    // One URL, two forms chosen by `Accept`: a shared cache must key on it.
    response
        .headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("accept"));
    Ok(response)
}

async fn documents_for(state: &ApiState, list: u64) -> Result<Arc<CachedList>, ApiError> {
    let board = state.issuer.board();
    let Some(version) = board.version(list) else {
        return Err(ApiError::NotFound(format!(
            "status list {list} does not exist; see /v1/status"
        )));
    };
    let snapshot = state.issuer.signing_snapshot();
    let active = &snapshot.active;
    let now = state.now().unix_timestamp();
    let ttl = state.config.status_list_ttl_secs as i64;
    let version_now = {
        let documents = state
            .http
            .status_documents
            .lists
            .lock()
            .map_err(|_| ApiError::Internal("status cache lock poisoned".into()))?;
        documents.get(&list).cloned()
    };
    // The common case: nothing changed since the documents were signed.
    if let Some(cached) = &version_now
        && cached.version == version
        && cached.kid == active.kid()
        && now - cached.iat < ttl / 2
    {
        return Ok(Arc::clone(cached));
    }
    // Compression of a large list takes milliseconds: keep it off the async
    // workers, but hand off only when there is something to compress.
    let encoded = match board.encoded_if_ready(list) {
        Some(encoded) => encoded,
        None => {
            let board_state = state.clone();
            tokio::task::spawn_blocking(move || board_state.issuer.board().encoded(list))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .ok_or_else(|| ApiError::NotFound(format!("status list {list} does not exist")))?
        }
    };
    if let Some(cached) = version_now
        && cached.version == encoded.version
        && cached.kid == active.kid()
        && now - cached.iat < ttl / 2
    {
        return Ok(cached);
    }
    let claims = StatusListClaims {
        sub: state.issuer.status_lists().uri(list),
        iat: now,
        exp: Some(now + 2 * ttl),
        ttl: Some(ttl as u64),
        seq: Some(encoded.seq),
        epoch: Some(board.epoch().to_owned()),
        status_list: StatusListPayload {
            bits: STATUS_BITS,
            lst: encoded.lst.to_string(),
            aggregation_uri: None,
        },
    };
    let json = serde_json::to_vec(&claims).map_err(|e| ApiError::Internal(e.to_string()))?;
    let jwt = active
        .sign_with_typ(STATUS_LIST_JWT_TYP, &json)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let cached = Arc::new(CachedList {
        version: encoded.version,
        kid: active.kid().to_owned(),
        iat: now,
        jwt: PreparedDocument::bytes(Bytes::from(jwt)),
        json: PreparedDocument::bytes(Bytes::from(json)),
    });
    state
        .http
        .status_documents
        .lists
        .lock()
        .map_err(|_| ApiError::Internal("status cache lock poisoned".into()))?
        .insert(list, Arc::clone(&cached));
    Ok(cached)
}

#[derive(Serialize)]
struct EventData<'a> {
    seq: u64,
    list: u64,
    uri: &'a str,
    idx: u64,
    status: u8,
}

fn status_event(state: &ApiState, event: &StatusEvent) -> Event {
    let uri = state.issuer.status_lists().uri(event.list);
    let data = EventData {
        seq: event.seq,
        list: event.list,
        uri: &uri,
        idx: event.idx,
        status: event.status,
    };
    Event::default()
        .id(event.seq.to_string())
        .event("status")
        .data(serde_json::to_string(&data).unwrap_or_default())
}

fn reset_event(seq: u64, reason: &str) -> Event {
    Event::default()
        .event("reset")
        .data(serde_json::json!({"seq": seq, "reason": reason}).to_string())
}

/// Server-Sent Events: `ready`, then one `status` event per change (id = sequence).
#[utoipa::path(get, path = "/v1/status/stream", tag = "public",
    params(("Last-Event-ID" = Option<String>, Header, description = "Last sequence seen; missed events are replayed, or a `reset` event says to re-fetch the lists")),
    responses((status = 200, description = "text/event-stream of `ready`, `status` and `reset` events", content_type = "text/event-stream", body = String),
              (status = 503, description = "Too many subscribers", body = crate::http::error::Problem, content_type = "application/problem+json")))]
pub async fn stream_changes(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let guard = SubscriberGauge::enter(&state)?;
    let last_seen = headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
    let (receiver, current, resume) = match last_seen {
        // A Last-Event-ID we cannot read: the client must start over.
        Some(None) => {
            let (rx, current, _) = state.issuer.board().subscribe(None);
            (rx, current, Resume::Reset)
        }
        Some(Some(seen)) => state.issuer.board().subscribe(Some(seen)),
        None => state.issuer.board().subscribe(None),
    };
    let epoch = state.issuer.board().epoch().to_owned();
    let mut initial = vec![
        Event::default()
            .event("ready")
            .data(serde_json::json!({"seq": current, "epoch": epoch}).to_string()),
    ];
    let mut last_sent = current;
    match resume {
        Resume::Replay(events) => {
            initial.extend(events.iter().map(|e| status_event(&state, e)));
            if let Some(last) = events.last() {
                last_sent = last.seq;
            }
        }
        Resume::Reset => initial.push(reset_event(
            current,
            "missed changes are no longer available; re-fetch every status list",
        )),
    }
    let live_state = state.clone();
    let live = BroadcastStream::new(receiver).filter_map(move |item| {
        let event = match item {
            // Events up to `current` were sent in the replay (or are in the lists fetched after `ready`).
            Ok(event) if event.seq <= last_sent => None,
            Ok(event) => Some(status_event(&live_state, &event)),
            Err(BroadcastStreamRecvError::Lagged(_)) => Some(reset_event(
                live_state.issuer.board().seq(),
                "this subscriber fell behind; re-fetch every status list",
            )),
        };
        std::future::ready(event.map(Ok::<Event, Infallible>))
    });
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(
        stream::iter(initial.into_iter().map(Ok))
            .chain(live)
            .map(move |e| {
                let _keep = &guard;
                e
            }),
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// Decrements the subscriber gauge when a stream ends.
struct SubscriberGauge(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl SubscriberGauge {
    /// Counts a subscriber for as long as its stream lives, refusing one over the limit.
    fn enter(state: &ApiState) -> Result<SubscriberGauge, ApiError> {
        use std::sync::atomic::Ordering;
        let count = std::sync::Arc::clone(&state.http.stream_subscribers);
        let previous = count.fetch_add(1, Ordering::SeqCst);
        let gauge = SubscriberGauge(count);
        if previous >= state.config.max_stream_subscribers {
            return Err(ApiError::Unavailable(
                "too many status stream subscribers; poll /v1/status/{list} (its ttl says how often) or retry later".into(),
            ));
        }
        metrics::gauge!("latchkey_status_stream_subscribers").set(previous as f64 + 1.0);
        Ok(gauge)
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        let left = self
            .0
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            .saturating_sub(1);
        metrics::gauge!("latchkey_status_stream_subscribers").set(left as f64);
    }
}
