//! The load engine: N keep-alive HTTP/1.1 connections, each driven by one
//! task that sends a request, waits for the whole response, and sends the
//! next (closed loop). Latency is recorded per request in an HDR histogram
//! (microseconds); requests started during the warm-up are not recorded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Builds request number `n` (unique across all connections of a run).
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// One load run's settings.
#[derive(Clone)]
pub struct LoadSpec {
    /// Connection `i` goes to `addrs[i % addrs.len()]`: round-robin over
    /// replicas, as a balancer would spread them.
    pub addrs: Vec<SocketAddr>,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop after this many requests in total (warm-up included), if set.
    pub max_requests: Option<u64>,
    pub expect: StatusCode,
    pub make: MakeRequest,
    /// Ends the load early when set (a background load beside a measurement).
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a run measured.
pub struct LoadResult {
    /// Requests with the expected status, started after the warm-up.
    pub ok: u64,
    /// Requests with another status or a transport error, after the warm-up.
    pub errors: u64,
    /// Status code → count (after the warm-up); 0 = transport error.
    pub statuses: BTreeMap<u16, u64>,
    /// Time from the end of the warm-up to the last recorded response.
    pub window: Duration,
    /// Latency of the expected-status responses, microseconds.
    pub hist: Histogram<u64>,
    /// Body size of the last expected-status response.
    pub body_bytes: usize,
    /// The first unexpected response (status and up to 300 bytes of body).
    pub first_error: Option<String>,
    /// Every response, warm-up included (for CPU per request).
    pub completed: u64,
    /// Server CPU seconds over the whole run (warm-up included), if measured.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds of every measured process of the stack, if measured.
    pub stack_cpu_s: Option<f64>,
}

impl LoadResult {
    /// Server CPU time per request in microseconds, if measured.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        self.server_cpu_s
            .filter(|_| self.completed > 0)
            .map(|s| s * 1e6 / self.completed as f64)
    }

    pub fn rate(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at `q` (0..=1) in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }

    /// A one-line human summary.
    pub fn line(&self, label: &str) -> String {
        let mut line = format!(
            "{label}: {:.0}/s ({} ok in {:.2}s), p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.rate(),
            self.ok,
            self.window.as_secs_f64(),
            self.ms(0.50),
            self.ms(0.90),
            self.ms(0.99),
            self.max_ms(),
        );
        if let Some(cpu) = self.cpu_us_per_request() {
            line.push_str(&format!(", server CPU {cpu:.1} µs/req"));
        }
        if self.errors > 0 {
            line.push_str(&format!(", {} errors {:?}", self.errors, self.statuses));
        }
        line
    }

    /// The figures as JSON, for the results file.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "rate": round(self.rate(), 1),
            "ok": self.ok,
            "errors": self.errors,
            "window_s": round(self.window.as_secs_f64(), 3),
            "p50_ms": round(self.ms(0.50), 3),
            "p90_ms": round(self.ms(0.90), 3),
            "p99_ms": round(self.ms(0.99), 3),
            "max_ms": round(self.max_ms(), 3),
            "body_bytes": self.body_bytes,
            "server_cpu_us_per_req": self.cpu_us_per_request().map(|c| round(c, 2)),
        })
    }

    fn merge(&mut self, other: WorkerResult) -> Result<(), String> {
        self.ok += other.ok;
        self.errors += other.errors;
        self.completed += other.completed;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.hist.add(&other.hist).map_err(|e| e.to_string())?;
        if other.body_bytes > 0 {
            self.body_bytes = other.body_bytes;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub fn new_histogram() -> Result<Histogram<u64>, String> {
    // 1 µs to 60 s, 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())
}

struct WorkerResult {
    completed: u64,
    ok: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    hist: Histogram<u64>,
    last_done: Option<Instant>,
    body_bytes: usize,
    first_error: Option<String>,
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes the connection.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole response body.
pub async fn send(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

async fn worker(
    spec: LoadSpec,
    addr: SocketAddr,
    seq: Arc<AtomicU64>,
    measure_from: Instant,
    end: Instant,
) -> Result<WorkerResult, String> {
    let mut result = WorkerResult {
        completed: 0,
        ok: 0,
        errors: 0,
        statuses: BTreeMap::new(),
        hist: new_histogram()?,
        last_done: None,
        body_bytes: 0,
        first_error: None,
    };
    let mut sender = connect(addr).await?;
    let mut reconnects = 0u32;
    loop {
        let started = Instant::now();
        if started >= end
            || spec
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            break;
        }
        let n = seq.fetch_add(1, Ordering::Relaxed);
        if spec.max_requests.is_some_and(|max| n >= max) {
            break;
        }
        let outcome = send(&mut sender, (spec.make)(n)).await;
        let done = Instant::now();
        let measured = started >= measure_from;
        result.completed += 1;
        match outcome {
            Ok((status, body)) if status == spec.expect => {
                if measured {
                    let micros = u64::try_from(done.duration_since(started).as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    result.hist.saturating_record(micros);
                    result.ok += 1;
                    *result.statuses.entry(status.as_u16()).or_default() += 1;
                    result.last_done = Some(done);
                }
                result.body_bytes = body.len();
            }
            Ok((status, body)) => {
                if measured {
                    result.errors += 1;
                    *result.statuses.entry(status.as_u16()).or_default() += 1;
                    result.last_done = Some(done);
                }
                if result.first_error.is_none() {
                    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                    result.first_error = Some(format!("{status}: {text}"));
                }
            }
            Err(e) => {
                if measured {
                    result.errors += 1;
                    *result.statuses.entry(0).or_default() += 1;
                }
                if result.first_error.is_none() {
                    result.first_error = Some(format!("transport: {e}"));
                }
                reconnects += 1;
                if reconnects > 100 {
                    return Err(format!("giving up after 100 reconnects: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                sender = connect(addr).await?;
            }
        }
    }
    Ok(result)
}

/// Runs the load and merges the workers' results; with a meter, also the
/// server's CPU time over the run.
pub async fn run_metered(
    spec: &LoadSpec,
    meter: Option<&crate::cpu::CpuMeter>,
) -> Result<LoadResult, String> {
    let before = meter.and_then(|m| m.seconds());
    let mut result = run(spec).await?;
    let after = meter.and_then(|m| m.seconds());
    if let (Some(b), Some(a)) = (before, after) {
        result.server_cpu_s = Some(a - b);
    }
    Ok(result)
}

/// Runs the load and merges the workers' results.
pub async fn run(spec: &LoadSpec) -> Result<LoadResult, String> {
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    if spec.addrs.is_empty() {
        return Err("no server address to load".into());
    }
    let mut tasks = Vec::with_capacity(spec.connections);
    for i in 0..spec.connections {
        tasks.push(tokio::spawn(worker(
            spec.clone(),
            spec.addrs[i % spec.addrs.len()],
            Arc::clone(&seq),
            measure_from,
            end,
        )));
    }
    let mut total = LoadResult {
        ok: 0,
        errors: 0,
        statuses: BTreeMap::new(),
        window: Duration::ZERO,
        hist: new_histogram()?,
        body_bytes: 0,
        first_error: None,
        completed: 0,
        server_cpu_s: None,
        stack_cpu_s: None,
    };
    let mut last_done = measure_from;
    for task in tasks {
        let worker = task.await.map_err(|e| e.to_string())??;
        if let Some(done) = worker.last_done {
            last_done = last_done.max(done);
        }
        total.merge(worker)?;
    }
    total.window = last_done.saturating_duration_since(measure_from);
    Ok(total)
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: use the unit ms, s or m")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{text:?}: use 0 to 60 minutes"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
