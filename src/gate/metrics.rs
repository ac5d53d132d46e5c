//! The gate's Prometheus metrics: decisions by result and reason, and a
//! decision-latency histogram, rendered by `GET /metrics`.
//!
//! Kept per gate instance in plain atomics rather than through the
//! process-wide `metrics` recorder the issuer uses: a decision costs a
//! couple of relaxed increments (no label hashing or registry lookup on
//! the hot path), and gates embedded side by side (tests, benchmarks) do
//! not mix their counts.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use latchkey_verifier::{SyncStatus, VerifyError};

use super::policy::Refusal;

/// Every reason a decision is counted under, with its result label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Allowed,
    MissingToken,
    InvalidToken(VerifyError),
    Refused(Refusal),
    BadRequest(&'static str),
    StatusUnavailable,
    NotReady,
}

/// (result, reason) of each counter, in index order.
const LABELS: &[(&str, &str)] = &[
    ("allow", "ok"),
    ("deny", "missing_token"),
    ("deny", "malformed"),
    ("deny", "too_large"),
    ("deny", "forbidden_header"),
    ("deny", "unsupported_algorithm"),
    ("deny", "unknown_key"),
    ("deny", "bad_signature"),
    ("deny", "wrong_type"),
    ("deny", "wrong_issuer"),
    ("deny", "wrong_audience"),
    ("deny", "expired"),
    ("deny", "not_yet_valid"),
    ("deny", "invalid_claims"),
    ("deny", "revoked"),
    ("deny", "suspended"),
    ("forbidden", "out_of_scope"),
    ("forbidden", "needs_all_accounts"),
    ("forbidden", "missing_role"),
    ("forbidden", "write_needs_admin"),
    ("forbidden", "method_not_allowed"),
    ("bad_request", "missing_original_request"),
    ("bad_request", "ambiguous_uri"),
    ("bad_request", "bad_account"),
    ("unavailable", "status_unavailable"),
    ("unavailable", "not_ready"),
];

impl Reason {
    fn index(self) -> usize {
        match self {
            Reason::Allowed => 0,
            Reason::MissingToken => 1,
            Reason::InvalidToken(e) => match e {
                VerifyError::Malformed(_) => 2,
                VerifyError::TooLarge => 3,
                VerifyError::ForbiddenHeader(_) => 4,
                VerifyError::UnsupportedAlgorithm => 5,
                VerifyError::UnknownKey => 6,
                VerifyError::BadSignature => 7,
                VerifyError::WrongType => 8,
                VerifyError::WrongIssuer => 9,
                VerifyError::WrongAudience => 10,
                VerifyError::Expired => 11,
                VerifyError::NotYetValid => 12,
                VerifyError::InvalidClaims(_) => 13,
                VerifyError::Revoked => 14,
                VerifyError::Suspended => 15,
                VerifyError::StatusUnavailable => 24,
            },
            Reason::Refused(r) => match r {
                Refusal::OutOfScope => 16,
                Refusal::NeedsAllAccounts => 17,
                Refusal::MissingRole => 18,
                Refusal::WriteNeedsAdmin => 19,
                Refusal::Method => 20,
            },
            Reason::BadRequest("missing_original_request") => 21,
            Reason::BadRequest("bad_account") => 23,
            Reason::BadRequest(_) => 22,
            Reason::StatusUnavailable => 24,
            Reason::NotReady => 25,
        }
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.5, 1.0,
];

/// Bucket bounds in nanoseconds, for the hot path.
const BUCKETS_NS: [u64; 14] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
];

/// The counters of one gate.
#[derive(Debug)]
pub struct Metrics {
    decisions: Vec<AtomicU64>,
    /// Non-cumulative counts per bucket, plus one for +Inf.
    buckets: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            decisions: LABELS.iter().map(|_| AtomicU64::new(0)).collect(),
            buckets: (0..=BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one decision that took `elapsed`.
    pub fn record(&self, reason: Reason, elapsed: Duration) {
        self.decisions[reason.index()].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BUCKETS_NS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// How many decisions were counted under `result` and `reason`.
    pub fn count(&self, result: &str, reason: &str) -> u64 {
        LABELS
            .iter()
            .position(|&(res, rea)| res == result && rea == reason)
            .map_or(0, |i| self.decisions[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition (format 0.0.4), with the verifier's
    /// sync state when it is running.
    pub fn render(&self, sync: Option<&SyncStatus>) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP latchkey_gate_decisions_total Forward-auth decisions by result and reason.\n\
             # TYPE latchkey_gate_decisions_total counter\n",
        );
        for (i, (result, reason)) in LABELS.iter().enumerate() {
            let _ = writeln!(
                out,
                "latchkey_gate_decisions_total{{result=\"{result}\",reason=\"{reason}\"}} {}",
                self.decisions[i].load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP latchkey_gate_decision_duration_seconds Time from receiving a check to answering it.\n\
             # TYPE latchkey_gate_decision_duration_seconds histogram\n",
        );
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "latchkey_gate_decision_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "latchkey_gate_decision_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "latchkey_gate_decision_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "latchkey_gate_decision_duration_seconds_count {cumulative}"
        );
        out.push_str(
            "# HELP latchkey_gate_ready Whether the gate has current JWKS and status lists.\n\
             # TYPE latchkey_gate_ready gauge\n",
        );
        let ready = sync.is_some_and(|s| s.keys > 0 && !s.stale);
        let _ = writeln!(out, "latchkey_gate_ready {}", u8::from(ready));
        if let Some(sync) = sync {
            let age = sync.status_age.map_or(f64::NAN, |a| a.as_secs_f64());
            let _ = write!(
                out,
                "# HELP latchkey_gate_status_age_seconds Age of the stalest status list.\n\
                 # TYPE latchkey_gate_status_age_seconds gauge\n\
                 latchkey_gate_status_age_seconds {age}\n\
                 # HELP latchkey_gate_stream_connected Whether the push stream is connected.\n\
                 # TYPE latchkey_gate_stream_connected gauge\n\
                 latchkey_gate_stream_connected {}\n\
                 # HELP latchkey_gate_cached_tokens Tokens in the verified-token cache.\n\
                 # TYPE latchkey_gate_cached_tokens gauge\n\
                 latchkey_gate_cached_tokens {}\n\
                 # HELP latchkey_gate_pending_usage Usage reports waiting to be sent.\n\
                 # TYPE latchkey_gate_pending_usage gauge\n\
                 latchkey_gate_pending_usage {}\n",
                u8::from(sync.stream_connected),
                sync.cached_tokens,
                sync.pending_usage,
            );
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_labels() {
        let mut seen = std::collections::HashSet::new();
        for (result, reason) in LABELS {
            assert!(seen.insert(*reason), "{result} {reason}");
        }
        // Verify error codes are the verifier's own.
        for e in [
            VerifyError::Expired,
            VerifyError::Revoked,
            VerifyError::UnknownKey,
        ] {
            assert_eq!(LABELS[Reason::InvalidToken(e).index()].1, e.code());
        }
        for r in [Refusal::OutOfScope, Refusal::Method, Refusal::MissingRole] {
            assert_eq!(LABELS[Reason::Refused(r).index()].1, r.code());
        }
    }

    #[test]
    fn decisions_and_latency_are_rendered() {
        let m = Metrics::default();
        m.record(Reason::Allowed, Duration::from_micros(30));
        m.record(Reason::Allowed, Duration::from_millis(2));
        m.record(
            Reason::InvalidToken(VerifyError::Revoked),
            Duration::from_secs(3),
        );
        assert_eq!(m.count("allow", "ok"), 2);
        assert_eq!(m.count("deny", "revoked"), 1);
        let text = m.render(None);
        assert!(text.contains("latchkey_gate_decisions_total{result=\"allow\",reason=\"ok\"} 2\n"));
        assert!(
            text.contains("latchkey_gate_decisions_total{result=\"deny\",reason=\"revoked\"} 1\n")
        );
        assert!(
            text.contains("latchkey_gate_decision_duration_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("latchkey_gate_decision_duration_seconds_bucket{le=\"0.0025\"} 2\n"));
        assert!(text.contains("latchkey_gate_decision_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("latchkey_gate_decision_duration_seconds_count 3\n"));
        assert!(text.contains("latchkey_gate_ready 0\n"));
    }
}
