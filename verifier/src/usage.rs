//! Batched usage reports to the issuer's `POST /v1/usage` (contract §2–§4),
//! so that a key's `last_used_at` reflects use at downstream services.
//!
//! Verification only notes a token's `jti` (at most once per reporting
//! interval per token, one atomic check otherwise); a background task sends
//! the noted `jti`s in batches of at most [`MAX_BATCH`], authenticated with
//! the verifier's own access key. A failed report is kept (up to
//! [`MAX_PENDING`] `jti`s) and retried with the next batch.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use serde::Serialize;

use crate::sync::fetch::{Http, describe};

/// Most `jti`s in one report (the issuer's limit).
pub const MAX_BATCH: usize = 1000;

/// Most `jti`s waiting to be sent; beyond this, new ones are dropped (a
/// usage report is advisory).
pub const MAX_PENDING: usize = 100_000;

/// The verifier's own access key, used only to send usage reports. Its
/// `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct ReporterToken(pub(crate) String);

impl std::fmt::Debug for ReporterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReporterToken(<redacted>)")
    }
}

/// Pending usage and where to send it.
#[derive(Debug)]
pub(crate) struct UsageReporter {
    endpoint: String,
    token: ReporterToken,
    pub(crate) interval: Duration,
    pending: Mutex<Vec<String>>,
}

#[derive(Serialize)]
struct Report<'a> {
    jtis: &'a [String],
}

impl UsageReporter {
    pub(crate) fn new(endpoint: String, token: ReporterToken, interval: Duration) -> Self {
        UsageReporter {
            endpoint,
            token,
            interval,
            pending: Mutex::new(Vec::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes that the token `jti` was used.
    pub(crate) fn note(&self, jti: &str) {
        let mut pending = self.pending();
        if pending.len() < MAX_PENDING {
            pending.push(jti.to_owned());
        }
    }

    /// How many `jti`s wait to be sent.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending().len()
    }

    /// Sends everything pending, in batches. Returns the number of `jti`s
    /// the issuer accepted; on an error the unsent ones are kept.
    pub(crate) async fn flush(&self, http: &Http) -> Result<usize, String> {
        let mut batch = {
            let mut pending = self.pending();
            std::mem::take(&mut *pending)
        };
        batch.sort_unstable();
        batch.dedup();
        let mut sent = 0;
        while !batch.is_empty() {
            let n = batch.len().min(MAX_BATCH);
            let result = self.send(http, &batch[..n]).await;
            if let Err(e) = result {
                let mut pending = self.pending();
                let room = MAX_PENDING.saturating_sub(pending.len());
                pending.extend(batch.into_iter().take(room));
                return Err(e);
            }
            sent += n;
            batch.drain(..n);
        }
        Ok(sent)
    }

    async fn send(&self, http: &Http, jtis: &[String]) -> Result<(), String> {
        let response = http
            .client
            .post(&self.endpoint)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.0))
            .json(&Report { jtis })
            .timeout(http.timeout)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "the issuer answered the usage report with HTTP status {status}"
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_is_redacted() {
        let r = UsageReporter::new(
            "http://x/v1/usage".into(),
            ReporterToken("secret.token.value".into()),
            Duration::from_secs(60),
        );
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn pending_is_bounded() {
        let r = UsageReporter::new(
            "http://x/v1/usage".into(),
            ReporterToken("t".into()),
            Duration::from_secs(60),
        );
        for i in 0..MAX_PENDING + 10 {
            r.note(&i.to_string());
        }
        assert_eq!(r.pending_len(), MAX_PENDING);
    }
}
