//! `loadgen replica-latency`: how long a revocation made on one PostgreSQL
//! replica takes to reach another replica's `/v1/status/stream` (contract
//! §9: within 50 ms, p99), beside the same revocation on the replica's own
//! stream.
//!
//! Starts two replicas A and B on one (empty) database, subscribes to both
//! streams, creates the keys on A, then revokes them on A one at a time
//! (`DELETE /v1/keys/{id}`, on one keep-alive connection) and takes, for
//! each, the time from sending the DELETE until each stream delivers the
//! `status` event for the slot the key's token names (`status.status_list`
//! `uri` and `idx`). Events are timestamped by the task reading each stream
//! as their bytes arrive, so A's event may come before A's 204.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::gate::percentile_ms;
use crate::load;
use crate::replicas::Replicas;
use crate::scenarios::check;
use crate::servers;

/// Contract §9: a status change reaches every replica's stream within this (p99).
pub const TARGET_REPLICA_P99_MS: f64 = 50.0;

/// Longest wait for one event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between revocations, so each is measured on a quiet cluster.
const GAP: Duration = Duration::from_millis(10);

/// What a stream reader saw.
enum Seen {
    Ready,
    Status {
        uri: String,
        idx: u64,
        status: u64,
        at: Instant,
    },
    /// A `reset` event or the end of the stream: the measurement is void.
    Broken(String),
}

pub async fn replica_latency(
    bin: &Path,
    database_url: &str,
    revocations: usize,
    load_connections: usize,
) -> Result<Value, String> {
    if revocations == 0 {
        return Err("--revocations: give at least 1".into());
    }
    let replicas = Replicas::start(bin, database_url, 2).await?;
    let [a, b] = [replicas.children[0].addr, replicas.children[1].addr];
    let (mut stream_a, reader_a) = subscribe(a).await?;
    let (mut stream_b, reader_b) = subscribe(b).await?;
    // Closes both subscriptions however this function returns: a server
    // waits for its open streams before it stops.
    let readers = Readers(vec![reader_a, reader_b]);
    for (name, stream) in [("A", &mut stream_a), ("B", &mut stream_b)] {
        match tokio::time::timeout(EVENT_TIMEOUT, stream.recv()).await {
            Ok(Some(Seen::Ready)) => {}
            _ => {
                return Err(format!(
                    "replica {name}'s status stream sent no ready event"
                ));
            }
        }
    }
    let auth = vec![(
        "authorization".to_owned(),
        format!("Bearer {}", replicas.token),
    )];
    let mut keys = Vec::with_capacity(revocations);
    for i in 0..revocations {
        keys.push(create_key(a, &auth, i).await?);
    }
    eprintln!("loadgen: created {revocations} keys on replica A; revoking them one at a time");
    let background = if load_connections > 0 {
        Some(Background::start(&replicas, load_connections).await)
    } else {
        None
    };
    let mut sender = load::connect(a).await?;
    let mut to_a = Vec::with_capacity(revocations);
    let mut to_b = Vec::with_capacity(revocations);
    let mut acked = Vec::with_capacity(revocations);
    for key in &keys {
        tokio::time::sleep(GAP).await;
        let request = Request::delete(format!("/v1/keys/{}", key.id))
            .header(hyper::header::HOST, a.to_string())
            .header(hyper::header::AUTHORIZATION, auth[0].1.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let sent = Instant::now();
        let (status, body) = load::send(&mut sender, request).await?;
        let ack = sent.elapsed();
        if status != StatusCode::NO_CONTENT {
            return Err(format!(
                "DELETE /v1/keys/{} on replica A answered {status}: {}",
                key.id,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        acked.push(ack);
        to_a.push(wait_for(&mut stream_a, "A", key, sent).await?);
        to_b.push(wait_for(&mut stream_b, "B", key, sent).await?);
    }
    let figures = |name: &str, mut samples: Vec<Duration>| {
        samples.sort();
        let ms = |p| round3(percentile_ms(&samples, p));
        let value = json!({"p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99), "max": ms(1.0)});
        println!(
            "{name}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} revocations)",
            ms(0.50),
            ms(0.95),
            ms(0.99),
            ms(1.0),
            samples.len()
        );
        value
    };
    let background = match background {
        Some(b) => Some(b.finish().await?),
        None => None,
    };
    let delete = figures("DELETE on A → 204", acked);
    let own = figures("DELETE on A → event on A's stream", to_a);
    let other = figures("DELETE on A → event on B's stream", to_b);
    let b_p99 = other["p99"].as_f64().unwrap_or(f64::NAN);
    println!(
        "  target: B's stream p99 <= {TARGET_REPLICA_P99_MS} ms: {}",
        if b_p99 <= TARGET_REPLICA_P99_MS {
            "met"
        } else {
            "MISSED"
        }
    );
    drop(readers);
    // Let the aborted readers' connections close before the replicas stop.
    tokio::task::yield_now().await;
    drop(replicas);
    let label = if load_connections > 0 {
        format!(
            "revoke on replica A, 2 PostgreSQL replicas, under creates on {load_connections} connections"
        )
    } else {
        "revoke on replica A, 2 PostgreSQL replicas".to_owned()
    };
    Ok(json!({
        "scenario": "replica-latency",
        "label": label,
        "load_connections": load_connections,
        "background": background.map(|b| b.json()),
        "revocations": revocations,
        "delete_ms": delete,
        "own_stream_ms": own,
        "other_stream_ms": other,
        "checks": [check("revoke on A → event on B's stream, p99 ms", b_p99, "<=", TARGET_REPLICA_P99_MS)],
    }))
}

/// Creates on both replicas (round-robin) while the revocations are measured.
struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Result<load::LoadResult, String>>,
}

impl Background {
    async fn start(replicas: &Replicas, connections: usize) -> Background {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addrs = replicas.addrs();
        let spec = load::LoadSpec {
            addrs: addrs.clone(),
            connections,
            warmup: Duration::ZERO,
            // Ended by `stop`; this only bounds a run that is never stopped.
            duration: Duration::from_secs(600),
            max_requests: None,
            expect: StatusCode::CREATED,
            make: crate::scenarios::create_maker(addrs[0], &replicas.token),
            stop: Some(std::sync::Arc::clone(&stop)),
        };
        let task = tokio::spawn(async move { load::run(&spec).await });
        // Let the load reach its steady state before the first revocation.
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("loadgen: creating keys on {connections} connections meanwhile");
        Background { stop, task }
    }

    async fn finish(self) -> Result<load::LoadResult, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = self.task.await.map_err(|e| e.to_string())??;
        println!(
            "{}",
            result.line("background POST /v1/keys on both replicas")
        );
        crate::scenarios::report_errors(&result);
        Ok(result)
    }
}

fn round3(x: f64) -> f64 {
    load::round(x, 3)
}

/// A key made for the measurement: its id and its token's status slot.
struct Slot {
    id: String,
    uri: String,
    idx: u64,
}

async fn create_key(addr: SocketAddr, auth: &[(String, String)], i: usize) -> Result<Slot, String> {
    let name = format!("replica-latency-{}-{i}", std::process::id());
    let (status, body, _) = servers::call_once(
        addr,
        hyper::Method::POST,
        "/v1/keys",
        auth,
        Some(&json!({"name": name, "roles": ["global_viewer"]})),
        EVENT_TIMEOUT,
    )
    .await?;
    if status != StatusCode::CREATED {
        return Err(format!(
            "POST /v1/keys on replica A answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let created: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let (Some(id), Some(token)) = (created["key"]["id"].as_str(), created["token"].as_str()) else {
        return Err("the create answer has no key id or token".into());
    };
    let (uri, idx) = status_slot(token)?;
    Ok(Slot {
        id: id.to_owned(),
        uri,
        idx,
    })
}

/// The `status.status_list` `uri` and `idx` of a token (its payload is not
/// verified: this process made the key a moment ago).
fn status_slot(token: &str) -> Result<(String, u64), String> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("the token is not a compact JWS")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| format!("the token's payload is not base64url: {e}"))?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let list = &claims["status"]["status_list"];
    match (list["uri"].as_str(), list["idx"].as_u64()) {
        (Some(uri), Some(idx)) => Ok((uri.to_owned(), idx)),
        _ => Err("the token has no status.status_list uri and idx".into()),
    }
}

/// Waits for the `invalid` (1) event of `key`'s slot; returns the time from
/// `sent` until it arrived. Other events are skipped.
async fn wait_for(
    stream: &mut mpsc::UnboundedReceiver<Seen>,
    name: &str,
    key: &Slot,
    sent: Instant,
) -> Result<Duration, String> {
    let deadline = sent + EVENT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.recv()).await {
            Err(_) => {
                return Err(format!(
                    "replica {name}'s stream sent no event for slot {} within {EVENT_TIMEOUT:?}",
                    key.idx
                ));
            }
            Ok(None) => return Err(format!("replica {name}'s stream reader stopped")),
            Ok(Some(Seen::Broken(why))) => return Err(format!("replica {name}'s stream: {why}")),
            Ok(Some(Seen::Ready)) => {}
            Ok(Some(Seen::Status {
                uri,
                idx,
                status,
                at,
            })) => {
                if uri == key.uri && idx == key.idx && status == 1 {
                    return Ok(at.saturating_duration_since(sent));
                }
            }
        }
    }
}

/// Stream reader tasks, aborted (their connections closed) on drop.
struct Readers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for reader in &self.0 {
            reader.abort();
        }
    }
}

/// Opens `GET /v1/status/stream` and spawns a task that parses its events
/// into the returned channel (it ends with the stream, or when aborted).
async fn subscribe(
    addr: SocketAddr,
) -> Result<(mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>), String> {
    let mut sender = load::connect(addr).await?;
    let request = Request::get("/v1/status/stream")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET /v1/status/stream on {addr}: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!(
            "GET /v1/status/stream on {addr} answered {}",
            response.status()
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut body = response.into_body();
    let reader = tokio::spawn(async move {
        // Keeps the connection's sender alive as long as the stream is read.
        let _sender = sender;
        let mut parser = SseParser::default();
        loop {
            let frame = body.frame().await;
            let at = Instant::now();
            let data = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    let _ = tx.send(Seen::Broken(e.to_string()));
                    return;
                }
                None => {
                    let _ = tx.send(Seen::Broken("the stream ended".into()));
                    return;
                }
            };
            for event in parser.push(&data) {
                if tx.send(seen(event, at)).is_err() {
                    return;
                }
            }
        }
    });
    Ok((rx, reader))
}

fn seen((kind, data): (String, String), at: Instant) -> Seen {
    match kind.as_str() {
        "ready" => Seen::Ready,
        "status" => {
            let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match (
                value["uri"].as_str(),
                value["idx"].as_u64(),
                value["status"].as_u64(),
            ) {
                (Some(uri), Some(idx), Some(status)) => Seen::Status {
                    uri: uri.to_owned(),
                    idx,
                    status,
                    at,
                },
                _ => Seen::Broken(format!("a status event without uri, idx, status: {data}")),
            }
        }
        "reset" => Seen::Broken(format!("reset: {data}")),
        other => Seen::Broken(format!("an unexpected {other:?} event: {data}")),
    }
}

/// Server-Sent Events framing: `event:` and `data:` lines, an empty line
/// ends an event, `:` lines are comments (keep-alives).
#[derive(Default)]
struct SseParser {
    buffer: String,
    kind: String,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the (event type, data) of every event they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.kind.is_empty() {
                    let kind = std::mem::take(&mut self.kind);
                    let kind = if kind.is_empty() {
                        "message".to_owned()
                    } else {
                        kind
                    };
                    events.push((kind, std::mem::take(&mut self.data).join("\n")));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.kind = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_comments_skipped() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\nevent: rea").is_empty());
        let events =
            parser.push(b"dy\ndata: {\"seq\":3}\n\nid: 4\nevent: status\ndata: {\"idx\":7}\n");
        assert_eq!(events, vec![("ready".to_owned(), "{\"seq\":3}".to_owned())]);
        let events = parser.push(b"\n");
        assert_eq!(
            events,
            vec![("status".to_owned(), "{\"idx\":7}".to_owned())]
        );
    }

    #[test]
    fn status_slot_reads_the_token_payload() {
        let claims = json!({"status": {"status_list": {"idx": 42, "uri": "http://i/v1/status/0"}}});
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let token = format!("e30.{payload}.sig");
        assert_eq!(
            status_slot(&token).unwrap(),
            ("http://i/v1/status/0".to_owned(), 42)
        );
        assert!(status_slot("no-dots").is_err());
        assert!(status_slot("a.!!!.c").is_err());
    }
}
