//! The published token statuses: one in-memory [`StatusList`] per list,
//! their encoded forms cached until the next change, and the stream of
//! changes for push subscribers.
//!
//! sled stays the source of truth. The board is rebuilt from it at start-up
//! and then updated by the registry under its writer lock, right after each
//! transaction commits, so lists and events follow commit order. Each change
//! gets the next sequence number (persisted with the transaction), is kept in
//! a bounded replay buffer for subscribers that reconnect with
//! `Last-Event-ID`, and is broadcast to live subscribers.
//!
//! Each list also remembers the sequence number of the last change it
//! includes, which the published list carries (its `seq` claim), together
//! with the board's *epoch*: the random name of this sequence space, fixed
//! when the data directory is created. A verifier uses the two to refuse a
//! list older than changes it has already applied (a stale copy from a
//! cache), and to notice when the sequence space itself changed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use latchkey_verifier::TokenStatus;
use latchkey_verifier::status_list::StatusList;
use serde::Serialize;
use tokio::sync::broadcast;

/// How many recent changes are kept for replay.
pub const REPLAY_CAPACITY: usize = 16_384;

/// One status change as pushed to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusEvent {
    pub seq: u64,
    pub list: u64,
    pub idx: u64,
    pub status: u8,
}

/// A list's encoded `lst`, the version it was encoded from, and the
/// sequence number of the last change it includes.
#[derive(Debug, Clone)]
pub struct EncodedList {
    pub version: u64,
    pub seq: u64,
    pub lst: Arc<str>,
}

#[derive(Debug)]
struct ListState {
    list: StatusList,
    /// Bumped on every change of this list.
    version: u64,
    /// The sequence number of the last change addressed to this list (at
    /// start-up: the board's sequence, which every change so far is within).
    last_seq: u64,
    encoded: Option<EncodedList>,
}

#[derive(Debug)]
struct BoardInner {
    lists: Vec<ListState>,
    seq: u64,
    replay: VecDeque<StatusEvent>,
}

/// What a subscriber gets when it (re)connects.
#[derive(Debug)]
pub enum Resume {
    /// The missed events, in order; continue with the live receiver.
    Replay(Vec<StatusEvent>),
    /// Too far behind (or ahead, after a restart): re-fetch every list.
    Reset,
}

#[derive(Debug)]
pub struct StatusBoard {
    capacity: u64,
    epoch: String,
    inner: Mutex<BoardInner>,
    live: broadcast::Sender<StatusEvent>,
}

impl StatusBoard {
    /// A board for `allocated` slots (at least one list) at sequence `seq`
    /// of the sequence space `epoch`.
    pub fn new(capacity: u64, allocated: u64, seq: u64, epoch: String) -> StatusBoard {
        let (live, _) = broadcast::channel(4096);
        let board = StatusBoard {
            capacity,
            epoch,
            inner: Mutex::new(BoardInner {
                lists: Vec::new(),
                seq,
                replay: VecDeque::new(),
            }),
            live,
        };
        board.ensure_slots(allocated);
        board
    }

    fn lock(&self) -> MutexGuard<'_, BoardInner> {
        // A panic while holding this lock cannot leave the lists half-written
        // (every update is a single `set`), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Entries per list.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Makes sure lists exist for slots `0..allocated` (and list 0 always).
    pub fn ensure_slots(&self, allocated: u64) {
        let needed = allocated.div_ceil(self.capacity).max(1) as usize;
        let mut inner = self.lock();
        let seq = inner.seq;
        while inner.lists.len() < needed {
            inner.lists.push(ListState {
                list: StatusList::new(self.capacity as usize),
                version: 0,
                last_seq: seq,
                encoded: None,
            });
        }
    }

    /// The name of this board's sequence space.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The board's sequence and, for each list, the sequence of the last
    /// change it includes, read together.
    pub fn sequences(&self) -> (u64, Vec<u64>) {
        let inner = self.lock();
        (inner.seq, inner.lists.iter().map(|l| l.last_seq).collect())
    }

    /// Sets a slot without publishing an event (start-up rebuild).
    pub fn load(&self, slot: u64, status: TokenStatus) {
        self.ensure_slots(slot + 1);
        let (list, idx) = (slot / self.capacity, slot % self.capacity);
        let mut inner = self.lock();
        if let Some(state) = inner.lists.get_mut(list as usize) {
            let _ = state.list.set(idx as usize, status);
        }
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// Applies committed changes: each gets the next sequence number. Returns the new sequence.
    pub fn apply(&self, changes: &[(u64, TokenStatus)]) -> u64 {
        if let Some(max) = changes.iter().map(|(slot, _)| *slot).max() {
            self.ensure_slots(max + 1);
        }
        let mut inner = self.lock();
        for &(slot, status) in changes {
            let (list, idx) = (slot / self.capacity, slot % self.capacity);
            inner.seq += 1;
            let seq = inner.seq;
            if let Some(state) = inner.lists.get_mut(list as usize) {
                // The list includes this change even when it sets the
                // status it already had: a new version (re-signed with the
                // new `seq`), but the compressed bits can be kept.
                state.last_seq = seq;
                state.version += 1;
                let version = state.version;
                if state.list.set(idx as usize, status).unwrap_or(false) {
                    state.encoded = None;
                } else if let Some(encoded) = &mut state.encoded {
                    encoded.version = version;
                    encoded.seq = seq;
                }
            }
            let event = StatusEvent {
                seq,
                list,
                idx,
                status: status.bits(),
            };
            if inner.replay.len() == REPLAY_CAPACITY {
                inner.replay.pop_front();
            }
            inner.replay.push_back(event);
            // No receivers is fine: nobody is subscribed.
            let _ = self.live.send(event);
        }
        inner.seq
    }

    /// Number of lists.
    pub fn list_count(&self) -> u64 {
        self.lock().lists.len() as u64
    }

    /// The status of a slot as published.
    pub fn get(&self, slot: u64) -> Option<TokenStatus> {
        let inner = self.lock();
        inner
            .lists
            .get((slot / self.capacity) as usize)?
            .list
            .get((slot % self.capacity) as usize)
    }

    /// The encoded `lst` of `list` if it is already encoded: never compresses,
    /// so it may run on an async worker.
    /// The version of `list` (bumped on every change), or `None` if there is no such list.
    pub fn version(&self, list: u64) -> Option<u64> {
        self.lock()
            .lists
            .get(list as usize)
            .map(|state| state.version)
    }

    pub fn encoded_if_ready(&self, list: u64) -> Option<EncodedList> {
        self.lock().lists.get(list as usize)?.encoded.clone()
    }

    /// The encoded `lst` of `list`, compressing only if it changed since the last call.
    pub fn encoded(&self, list: u64) -> Option<EncodedList> {
        let (version, seq, snapshot) = {
            let inner = self.lock();
            let state = inner.lists.get(list as usize)?;
            if let Some(encoded) = &state.encoded {
                return Some(encoded.clone());
            }
            (state.version, state.last_seq, state.list.clone())
        };
        // Compress outside the lock: a 1M-entry list takes tens of milliseconds.
        let encoded = EncodedList {
            version,
            seq,
            lst: Arc::from(snapshot.encode_lst()),
        };
        let mut inner = self.lock();
        if let Some(state) = inner.lists.get_mut(list as usize)
            && state.version == version
        {
            state.encoded = Some(encoded.clone());
        }
        Some(encoded)
    }

    /// Subscribes to live events and works out what a client that last saw
    /// `last_seen` missed. Subscribing first means nothing falls in between.
    pub fn subscribe(
        &self,
        last_seen: Option<u64>,
    ) -> (broadcast::Receiver<StatusEvent>, u64, Resume) {
        let inner = self.lock();
        let receiver = self.live.subscribe();
        let current = inner.seq;
        let resume = match last_seen {
            None => Resume::Replay(Vec::new()),
            Some(seen) if seen == current => Resume::Replay(Vec::new()),
            Some(seen) if seen > current => Resume::Reset,
            Some(seen) => {
                let oldest = inner.replay.front().map(|e| e.seq).unwrap_or(current + 1);
                if seen + 1 < oldest {
                    Resume::Reset
                } else {
                    Resume::Replay(
                        inner
                            .replay
                            .iter()
                            .filter(|e| e.seq > seen)
                            .copied()
                            .collect(),
                    )
                }
            }
        };
        (receiver, current, resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_get_consecutive_sequence_numbers_and_new_lists() {
        let board = StatusBoard::new(16, 1, 0, "test".into());
        assert_eq!(board.list_count(), 1);
        board.apply(&[(3, TokenStatus::Invalid), (17, TokenStatus::Suspended)]);
        assert_eq!(board.list_count(), 2);
        assert_eq!(board.seq(), 2);
        assert_eq!(board.get(3), Some(TokenStatus::Invalid));
        assert_eq!(board.get(17), Some(TokenStatus::Suspended));
    }

    #[test]
    fn resume_replays_or_resets() {
        let board = StatusBoard::new(16, 1, 10, "test".into());
        board.apply(&[(1, TokenStatus::Invalid), (2, TokenStatus::Invalid)]);
        let (_rx, current, resume) = board.subscribe(Some(11));
        assert_eq!(current, 12);
        match resume {
            Resume::Replay(events) => {
                assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![12])
            }
            Resume::Reset => panic!("expected a replay"),
        }
        // A client from before a restart (or from the future) must re-fetch.
        assert!(matches!(board.subscribe(Some(99)).2, Resume::Reset));
        // Events before the oldest kept one are gone.
        assert!(matches!(board.subscribe(Some(5)).2, Resume::Reset));
    }

    #[test]
    fn encoding_is_cached_until_a_change() {
        let board = StatusBoard::new(16, 1, 0, "test".into());
        let first = board.encoded(0).unwrap();
        let again = board.encoded(0).unwrap();
        assert!(Arc::ptr_eq(&first.lst, &again.lst));
        board.apply(&[(0, TokenStatus::Invalid)]);
        let changed = board.encoded(0).unwrap();
        assert_ne!(first.version, changed.version);
        let decoded = latchkey_verifier::status_list::StatusList::decode(2, &changed.lst).unwrap();
        assert_eq!(decoded.get(0), Some(TokenStatus::Invalid));
    }
}
