//! What other replicas changed, as it happens: one listening connection
//! per replica (`LISTEN`), and catch-up reads of the status change log.
//!
//! Status changes are numbered under the chain row's lock, so they commit
//! in sequence order and the log has no holes; a replica applies them in
//! that order through the commit hook, whoever made them. A notification
//! only says "look": the log is the truth, so a missed or coalesced
//! notification loses nothing, and after a lost connection the replica
//! reads everything it missed before it says it is ready again. A poll
//! every second covers a notification that never comes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use latchkey_verifier::TokenStatus;
use tokio_postgres::GenericClient;

use crate::store::postgres::connect::DatabaseUrl;
use crate::store::postgres::db_error;
use crate::store::{CommitHook, StatusCommit, StoreResult};

/// Notification channels: status changes, new slot blocks, signing keys.
pub const STATUS_CHANNEL: &str = "latchkey_status";
pub const SLOTS_CHANNEL: &str = "latchkey_slots";
pub const SIGNING_CHANNEL: &str = "latchkey_signing";

/// How often the log is read even without a notification.
const POLL: Duration = Duration::from_secs(1);
/// Most changes read at once.
const PAGE: i64 = 5000;

/// The replica's view of the shared status log.
pub struct Feed {
    /// The last status sequence number applied to the published lists.
    applied: tokio::sync::Mutex<u64>,
    pub hook: Arc<RwLock<Option<CommitHook>>>,
    /// Whether the listening connection is up and caught up.
    listening: AtomicBool,
    /// Bumped when another replica may have changed the signing keys.
    pub signing: tokio::sync::watch::Sender<u64>,
    /// Slots per allocated block.
    block: u64,
}

impl Feed {
    pub fn new(applied: u64, block: u64) -> Feed {
        Feed {
            applied: tokio::sync::Mutex::new(applied),
            hook: Arc::default(),
            listening: AtomicBool::new(false),
            signing: tokio::sync::watch::channel(0).0,
            block,
        }
    }

    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Reads and applies every change after the last applied one (and the
    /// slots allocated so far), in order.
    pub async fn catch_up(&self, client: &impl GenericClient) -> StoreResult<()> {
        let mut applied = self.applied.lock().await;
        loop {
            let rows = client
                .query(
                    "SELECT seq, slot, status FROM latchkey_status_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&(*applied as i64), &PAGE],
                )
                .await
                .map_err(db_error)?;
            let allocated = allocated(client, self.block).await?;
            let first_seq = *applied + 1;
            let mut changes = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.get(0);
                let slot: i64 = row.get(1);
                let status: i16 = row.get(2);
                if seq as u64 != *applied + 1 {
                    tracing::warn!(
                        expected = *applied + 1,
                        found = seq,
                        "the status log skips a sequence number"
                    );
                }
                *applied = seq as u64;
                changes.push((slot as u64, TokenStatus::from_bits(status as u8)));
            }
            let commit = StatusCommit {
                allocated,
                changes,
                first_seq,
            };
            if let Ok(hook) = self.hook.read()
                && let Some(hook) = hook.as_ref()
            {
                hook(&commit);
            }
            if (rows.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// Reports slots allocated by this replica at once (before any token
    /// carrying them is handed out).
    pub fn report_allocated(&self, allocated: u64) {
        if let Ok(hook) = self.hook.read()
            && let Some(hook) = hook.as_ref()
        {
            hook(&StatusCommit {
                allocated,
                changes: Vec::new(),
                first_seq: 0,
            });
        }
    }
}

/// Slots below this may be in use (every block handed out so far).
pub async fn allocated(client: &impl GenericClient, block: u64) -> StoreResult<u64> {
    let row = client
        .query_one(
            "SELECT last_value, is_called FROM latchkey_status_slots",
            &[],
        )
        .await
        .map_err(db_error)?;
    let last: i64 = row.get(0);
    let called: bool = row.get(1);
    Ok(if called { (last as u64 + 1) * block } else { 0 })
}

/// Listens until the process ends: reconnects with backoff, catches up
/// after every (re)connection, then on every notification and poll.
pub fn spawn_listener(url: DatabaseUrl, feed: std::sync::Weak<Feed>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            // The store is gone: stop.
            let Some(feed) = feed.upgrade() else { return };
            let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
            let client = match url.connect_listener(tx).await {
                Ok(client) => client,
                Err(e) => {
                    feed.listening.store(false, Ordering::SeqCst);
                    tracing::warn!(error = %e, database = %url, "cannot reach the database; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let listen = format!(
                "LISTEN {STATUS_CHANNEL}; LISTEN {SLOTS_CHANNEL}; LISTEN {SIGNING_CHANNEL}"
            );
            if let Err(e) = client.batch_execute(&listen).await {
                tracing::warn!(error = %e, "could not listen for changes; reconnecting");
                tokio::time::sleep(backoff).await;
                continue;
            }
            if feed.catch_up(&client).await.is_err() {
                tokio::time::sleep(backoff).await;
                continue;
            }
            // Another replica may have rotated while this one was away.
            feed.signing.send_modify(|n| *n += 1);
            if !feed.listening.swap(true, Ordering::SeqCst) {
                tracing::info!(database = %url, "following the database's changes");
            }
            backoff = Duration::from_millis(100);
            loop {
                if Arc::strong_count(&feed) == 1 {
                    return;
                }
                let notice = tokio::time::timeout(POLL, notices.recv()).await;
                let mut signing = false;
                match notice {
                    Ok(None) => break,
                    Ok(Some(channel)) => {
                        signing |= channel == SIGNING_CHANNEL;
                        while let Ok(more) = notices.try_recv() {
                            signing |= more == SIGNING_CHANNEL;
                        }
                    }
                    Err(_) => {}
                }
                if signing {
                    feed.signing.send_modify(|n| *n += 1);
                }
                if let Err(e) = feed.catch_up(&client).await {
                    tracing::warn!(error = %e, "lost the database while reading changes; reconnecting");
                    break;
                }
            }
            feed.listening.store(false, Ordering::SeqCst);
        }
    });
}
