//! Refused requests that carried no valid key, counted per minute instead of
//! audited one by one.
//!
//! Anyone can send a request without a valid key, as often and with as long
//! a path as they like. Writing each one to the hash-chained audit log would
//! let an anonymous flood grow the data directory and the `/v1/audit` pages
//! without bound. So each such refusal is counted in the Prometheus counter
//! `latchkey_auth_failures_total{reason}` at once, and tallied here in a
//! one-minute window (aligned to the clock's minutes); when the window has
//! closed, it becomes **one** `auth.denied` audit entry per reason, actor
//! `anonymous`, with the count, the window's bounds and a count per route
//! template (bounded: at most [`MAX_REQUEST_KINDS`] kinds, then
//! `other_requests`). A flood therefore costs O(1) audit storage per minute.
//!
//! This module is the counting; the domain writes the
//! entries. A closed window is written by the first request that authenticates (or is
//! refused) after the minute rolls over, by the maintenance task within its
//! interval, and at shutdown even if the minute is not over
//! (`"flushed_at_shutdown": true`). Refusals of a key that did verify (a
//! real key whose role is too weak) are not counted here: they stay one
//! audit entry each, since the caller is known.
//!
//! Time comes from the service's clock, so tests move windows with a fixed
//! clock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{Actor, NewEntry};

/// Length of one counting window, in seconds.
pub const WINDOW_SECS: i64 = 60;
/// Distinct `METHOD /route` kinds counted per reason and window; further
/// kinds are added up in `other_requests`.
pub const MAX_REQUEST_KINDS: usize = 32;
/// Longest path stored in the audit log when no route template is known.
pub const MAX_STORED_PATH_BYTES: usize = 256;

/// No window is open.
const NONE_OPEN: i64 = i64::MAX;

/// The open window of anonymous refusals.
#[derive(Debug)]
pub struct DenialWindows {
    open: Mutex<Option<Window>>,
    /// Start of the open window ([`NONE_OPEN`] when there is none), so that
    /// the check made on every request needs no lock.
    open_start: AtomicI64,
}

impl Default for DenialWindows {
    fn default() -> Self {
        DenialWindows {
            open: Mutex::new(None),
            open_start: AtomicI64::new(NONE_OPEN),
        }
    }
}

#[derive(Debug)]
struct Window {
    start: i64,
    reasons: BTreeMap<&'static str, Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    count: u64,
    requests: BTreeMap<String, u64>,
    other_requests: u64,
}

/// Start of the window that holds `unix` seconds.
fn window_of(unix: i64) -> i64 {
    unix - unix.rem_euclid(WINDOW_SECS)
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .map(crate::model::rfc3339)
        .unwrap_or_default()
}

impl Window {
    fn into_entries(self, at_shutdown: bool) -> Vec<NewEntry> {
        let start = self.start;
        self.reasons
            .into_iter()
            .map(|(reason, tally)| {
                let mut details = json!({
                    "reason": reason,
                    "count": tally.count,
                    "window_start": rfc3339(start),
                    "window_end": rfc3339(start + WINDOW_SECS),
                    "requests": tally.requests,
                });
                if tally.other_requests > 0 {
                    details["other_requests"] = json!(tally.other_requests);
                }
                if at_shutdown {
                    details["flushed_at_shutdown"] = json!(true);
                }
                NewEntry {
                    actor: Actor::anonymous(),
                    action: "auth.denied",
                    target: None,
                    details,
                }
            })
            .collect()
    }
}

impl DenialWindows {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Window>> {
        // A panic while counting cannot leave the tally inconsistent in a
        // way that matters more than losing the count.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one refusal of `reason` for `request` (`METHOD /route`) at
    /// `now`. Returns the entries of the previous window if this refusal is
    /// the first after it closed.
    pub fn count(&self, now: OffsetDateTime, reason: &'static str, request: &str) -> Vec<NewEntry> {
        let unix = now.unix_timestamp();
        let mut open = self.lock();
        let mut closed = Vec::new();
        // A clock that steps back keeps counting into the open window.
        if open.as_ref().is_some_and(|w| unix >= w.start + WINDOW_SECS)
            && let Some(window) = open.take()
        {
            closed = window.into_entries(false);
        }
        let window = open.get_or_insert_with(|| Window {
            start: window_of(unix),
            reasons: BTreeMap::new(),
        });
        self.open_start.store(window.start, Ordering::SeqCst);
        let tally = window.reasons.entry(reason).or_default();
        tally.count += 1;
        if let Some(n) = tally.requests.get_mut(request) {
            *n += 1;
        } else if tally.requests.len() < MAX_REQUEST_KINDS {
            tally.requests.insert(request.to_owned(), 1);
        } else {
            tally.other_requests += 1;
        }
        closed
    }

    /// The entries of the open window if it has closed by `now`.
    pub fn take_due(&self, now: OffsetDateTime) -> Vec<NewEntry> {
        let unix = now.unix_timestamp();
        let start = self.open_start.load(Ordering::SeqCst);
        if start == NONE_OPEN || unix < start.saturating_add(WINDOW_SECS) {
            return Vec::new();
        }
        let mut open = self.lock();
        match open.as_ref() {
            Some(w) if unix >= w.start + WINDOW_SECS => {}
            _ => return Vec::new(),
        }
        self.open_start.store(NONE_OPEN, Ordering::SeqCst);
        open.take()
            .map(|w| w.into_entries(false))
            .unwrap_or_default()
    }

    /// The entries of the open window, closed or not (at shutdown).
    pub fn take_all(&self) -> Vec<NewEntry> {
        let mut open = self.lock();
        self.open_start.store(NONE_OPEN, Ordering::SeqCst);
        open.take()
            .map(|w| w.into_entries(true))
            .unwrap_or_default()
    }
}

/// `path` cut to at most `max` bytes, on a character boundary.
pub fn cut_path(path: &str, max: usize) -> &str {
    if path.len() <= max {
        return path;
    }
    let mut end = max;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_window_closes_into_one_entry_per_reason() {
        let windows = DenialWindows::default();
        let t0 = 1_780_272_000; // a whole minute
        for i in 0..300 {
            assert!(
                windows
                    .count(at(t0 + i % 60), "missing_token", "GET /v1/keys")
                    .is_empty()
            );
        }
        assert!(
            windows
                .count(at(t0 + 59), "bad_signature", "GET /v1/keys/{id}")
                .is_empty()
        );
        assert!(windows.take_due(at(t0 + 59)).is_empty());
        let entries = windows.take_due(at(t0 + 60));
        assert_eq!(entries.len(), 2);
        let missing = entries
            .iter()
            .find(|e| e.details["reason"] == "missing_token")
            .map(|e| e.details.clone())
            .unwrap_or_default();
        assert_eq!(missing["count"], 300);
        assert_eq!(missing["requests"], json!({"GET /v1/keys": 300}));
        assert_eq!(missing["window_start"], rfc3339(t0));
        assert_eq!(missing["window_end"], rfc3339(t0 + 60));
        assert!(windows.take_due(at(t0 + 3600)).is_empty(), "taken once");
        assert!(windows.take_all().is_empty());
    }

    #[test]
    fn the_next_refusal_after_the_minute_hands_back_the_closed_window() {
        let windows = DenialWindows::default();
        let t0 = 1_780_272_030;
        windows.count(at(t0), "expired", "GET /v1/audit");
        let closed = windows.count(at(t0 + 40), "expired", "GET /v1/audit");
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].details["count"], 1);
        assert_eq!(closed[0].details["window_start"], rfc3339(t0 - 30));
        let pending = windows.take_all();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].details["count"], 1);
        assert_eq!(pending[0].details["flushed_at_shutdown"], true);
    }

    #[test]
    fn request_kinds_are_bounded() {
        let windows = DenialWindows::default();
        for i in 0..(MAX_REQUEST_KINDS + 10) {
            windows.count(at(0), "malformed", &format!("GET /path-{i}"));
        }
        let entries = windows.take_all();
        let details = &entries[0].details;
        assert_eq!(details["count"], MAX_REQUEST_KINDS as u64 + 10);
        assert_eq!(
            details["requests"].as_object().map(|m| m.len()),
            Some(MAX_REQUEST_KINDS)
        );
        assert_eq!(details["other_requests"], 10);
    }

    #[test]
    fn paths_are_cut_on_a_character_boundary() {
        assert_eq!(cut_path("/v1/keys", 256), "/v1/keys");
        let long = "é".repeat(200);
        let cut = cut_path(&long, 255);
        assert_eq!(cut.len(), 254);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
