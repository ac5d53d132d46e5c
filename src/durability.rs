//! Group commit: every mutation waits until sled has fsynced it, and
//! concurrent writers share one flush instead of queueing behind each other.
//!
//! A writer applies its change to sled (in memory), then calls
//! [`FlushGroup::flush`]. A single task collects every waiter that arrived
//! while the previous flush ran and covers them all with the next one, so at
//! high concurrency the cost of an fsync is split across the whole batch.

use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The flush could not be completed; the change may not be durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the database could not be flushed to disk: {0}")]
pub struct FlushError(pub String);

type Waiter = oneshot::Sender<Result<(), FlushError>>;

/// Handle to the group-commit task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FlushGroup {
    requests: mpsc::UnboundedSender<Waiter>,
}

impl FlushGroup {
    /// Starts the flushing task for `db` on the current tokio runtime.
    pub fn start(db: sled::Db) -> FlushGroup {
        let (requests, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let db = Arc::new(db);
        tokio::spawn(async move {
            let mut batch: Vec<Waiter> = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.push(first);
                // Everyone who asked before this flush starts is covered by it:
                // their writes were applied before they asked.
                while let Ok(next) = rx.try_recv() {
                    batch.push(next);
                }
                let db = Arc::clone(&db);
                let result = tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(|e| FlushError(e.to_string()))
                    .and_then(|r| r.map(|_| ()).map_err(|e| FlushError(e.to_string())));
                metrics::histogram!("latchkey_flush_batch_size").record(batch.len() as f64);
                for waiter in batch.drain(..) {
                    let _ = waiter.send(result.clone());
                }
            }
        });
        FlushGroup { requests }
    }

    /// Returns once every write made before this call is on disk.
    pub async fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| FlushError("the flush task has stopped".into()))?;
        rx.await
            .map_err(|_| FlushError("the flush task has stopped".into()))?
    }
}
