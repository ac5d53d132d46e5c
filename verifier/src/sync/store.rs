//! The verifier's copy of the issuer's status lists, read lock-free on every
//! verification and written by the sync tasks.
//!
//! Each list is an array of atomic bytes behind an [`ArcSwap`]: a change from
//! the push stream rewrites one entry's two bits with a single atomic
//! read-modify-write (so a reader never sees a half-written status), and a
//! re-fetched list replaces the whole array at once.
//!
//! Two writers exist: the stream task applies changes as they arrive, and
//! the fetch task installs whole lists. A list fetched over HTTP may be older
//! than a change the stream delivered while the request was in flight, so
//! every applied change is also written to a short log, and installing a
//! list replays the changes logged since its fetch began ([`StatusStore::mark`]).
//! Changes are absolute ("entry 7 is now revoked"), so replaying one the
//! fetched list already contains is harmless. All writes happen under one
//! mutex; readers never take it.
//!
//! Freshness: a list is known to be current as of the later of its last
//! fetch and the last moment the stream was heard from while in sync (every
//! event and keep-alive proves nothing was missed up to then).
//!
//! **It never goes back** (contract §8). Every change the issuer publishes
//! has a sequence number within a named sequence space (its *epoch*), and
//! every published list says the sequence of the last change it includes
//! (its `seq` claim). The store keeps, per list, the newest sequence it
//! holds (its *floor*: from the stream, or from an installed list) and
//! refuses to install a list whose `seq` is below the floor it had when the
//! fetch began, or that comes from another epoch than the stream's: such a
//! list is a stale copy (a shared cache, an old replica) and installing it
//! would undo a revocation. A refused list is fetched again bypassing
//! caches, and never marks anything fresh.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::claims::TokenStatus;
use crate::status_list::StatusList;

/// Changes kept for replay; a fetch during which more arrive is redone.
const LOG_CAPACITY: usize = 16 * 1024;

/// Milliseconds on a monotonic clock private to one verifier; 0 means never.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    /// Now, in milliseconds since the clock was made, plus one (so that a
    /// stored 0 can mean "never").
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }
}

/// One published status list.
pub(crate) struct ListSlot {
    pub(crate) uri: String,
    bits: ArcSwap<Vec<AtomicU8>>,
    /// When its current contents were requested from the issuer (ms).
    fetched_ms: AtomicU64,
}

impl std::fmt::Debug for ListSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListSlot")
            .field("uri", &self.uri)
            .field("entries", &(self.bits.load().len() * 4))
            .finish_non_exhaustive()
    }
}

fn to_atomic(list: &StatusList) -> Vec<AtomicU8> {
    list.as_bytes().iter().map(|&b| AtomicU8::new(b)).collect()
}

impl ListSlot {
    /// The status of entry `idx`, or `None` past the end of the list.
    pub(crate) fn get(&self, idx: u64) -> Option<TokenStatus> {
        let idx = usize::try_from(idx).ok()?;
        let bits = self.bits.load();
        let byte = bits.get(idx / 4)?.load(Ordering::Acquire);
        Some(TokenStatus::from_bits(byte >> ((idx % 4) * 2)))
    }

    fn set(&self, idx: u64, status: TokenStatus) -> bool {
        let Ok(idx) = usize::try_from(idx) else {
            return false;
        };
        let bits = self.bits.load();
        let Some(byte) = bits.get(idx / 4) else {
            return false;
        };
        let shift = (idx % 4) * 2;
        let mask = 0b11u8 << shift;
        let value = status.bits() << shift;
        // One atomic update: a reader sees the old status or the new one.
        let _ = byte.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            Some((b & !mask) | value)
        });
        true
    }

    pub(crate) fn fetched_ms(&self) -> u64 {
        self.fetched_ms.load(Ordering::Acquire)
    }
}

/// One change from the stream, kept for replay.
#[derive(Debug, Clone)]
struct LoggedChange {
    counter: u64,
    uri: Arc<str>,
    idx: u64,
    status: TokenStatus,
}

#[derive(Debug, Default)]
struct Writer {
    /// Changes applied so far (the counter of the newest one).
    counter: u64,
    log: VecDeque<LoggedChange>,
    /// The issuer's sequence space: from the stream's `ready`, or (before
    /// the stream is up) from the first list or index that names one.
    epoch: Option<String>,
    /// The highest sequence number the stream has announced in `epoch`.
    stream_seq: u64,
    /// Per list URI: the newest sequence number its held data includes.
    floors: HashMap<String, u64>,
}

impl Writer {
    fn floor(&self, uri: &str) -> u64 {
        self.floors.get(uri).copied().unwrap_or(0)
    }

    fn raise_floor(&mut self, uri: &str, seq: u64) {
        match self.floors.get_mut(uri) {
            Some(floor) => *floor = (*floor).max(seq),
            None => {
                self.floors.insert(uri.to_owned(), seq);
            }
        }
    }

    /// Refuses data from another sequence space than the one followed;
    /// adopts the first one seen.
    fn check_epoch(&mut self, epoch: Option<&str>) -> Result<(), String> {
        match (self.epoch.as_deref(), epoch) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(format!(
                "it counts in sequence space {theirs:?}, but the issuer's stream is in {ours:?} (a stale copy from before the issuer's sequence started over)"
            )),
            (None, Some(theirs)) => {
                self.epoch = Some(theirs.to_owned());
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Where a list's fetch began: replay the changes after `counter`, and
/// refuse a list older than `floor`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    counter: u64,
    at_ms: u64,
    floor: u64,
}

/// How far a fetched list has come: the `seq` and `epoch` it claims, and
/// the least `seq` the issuer's index says it must have.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListVersion {
    pub(crate) epoch: Option<String>,
    pub(crate) seq: Option<u64>,
    pub(crate) at_least: u64,
}

/// The result of installing a fetched list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Installed {
    /// Installed and brought up to date with every change since the fetch.
    Current,
    /// Installed, but more changes arrived during the fetch than the log
    /// keeps: fetch it again (it is not marked fresh).
    Incomplete,
    /// Not installed: older than what is held, or from another sequence
    /// space. Why, for the log.
    Stale(String),
}

/// All lists of one issuer, and how fresh they are.
pub(crate) struct StatusStore {
    lists: ArcSwap<HashMap<String, Arc<ListSlot>>>,
    writer: Mutex<Writer>,
    clock: Clock,
    /// The last time the stream was heard from while in sync (ms; 0 = never).
    stream_heard_ms: AtomicU64,
    stream_connected: AtomicBool,
    /// Resyncs requested (a gap, a reset or a reconnect) and completed: while
    /// `done < requested` the stream does not vouch for freshness.
    resync_requested: AtomicU64,
    resync_done: AtomicU64,
    /// The first full fetch of the lists has begun: a stream `ready` from
    /// now on found lists already fetched, so it must be reconciled with
    /// them (a resync) before the stream vouches for them.
    initial_sync_begun: AtomicBool,
}

impl std::fmt::Debug for StatusStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusStore")
            .field("lists", &self.lists.load().len())
            .field(
                "stream_connected",
                &self.stream_connected.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl StatusStore {
    pub(crate) fn new(clock: Clock) -> Self {
        StatusStore {
            lists: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(Writer::default()),
            clock,
            stream_heard_ms: AtomicU64::new(0),
            stream_connected: AtomicBool::new(false),
            resync_requested: AtomicU64::new(0),
            resync_done: AtomicU64::new(0),
            initial_sync_begun: AtomicBool::new(false),
        }
    }

    pub(crate) fn clock(&self) -> Clock {
        self.clock
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The list published at `uri`, if it has been fetched.
    pub(crate) fn lookup(&self, uri: &str) -> Option<Arc<ListSlot>> {
        self.lists.load().get(uri).cloned()
    }

    pub(crate) fn list_count(&self) -> usize {
        self.lists.load().len()
    }

    /// The point after which changes must be replayed onto the list at
    /// `uri` whose fetch starts now, and the floor it must reach.
    pub(crate) fn mark(&self, uri: &str) -> Mark {
        let writer = self.writer();
        Mark {
            counter: writer.counter,
            at_ms: self.clock.now_ms(),
            floor: writer.floor(uri),
        }
    }

    /// The stream said `ready` at sequence `seq` of sequence space `epoch`.
    /// Returns true when the sequence space changed (another epoch, or the
    /// sequence went back: the issuer's history was replaced), after which
    /// everything held counts in a space that no longer exists: the floors
    /// are forgotten, and the caller must resync.
    pub(crate) fn stream_ready(&self, epoch: Option<&str>, seq: u64) -> bool {
        let mut writer = self.writer();
        let other_epoch = matches!((writer.epoch.as_deref(), epoch), (Some(a), Some(b)) if a != b);
        let went_back = seq < writer.stream_seq;
        if other_epoch || went_back {
            writer.floors.clear();
            writer.epoch = epoch.map(str::to_owned);
            writer.stream_seq = seq;
            return true;
        }
        if writer.epoch.is_none() {
            writer.epoch = epoch.map(str::to_owned);
        }
        writer.stream_seq = writer.stream_seq.max(seq);
        false
    }

    /// Checks the issuer's list index before its lists are fetched: it must
    /// be in the stream's sequence space and not older than what the stream
    /// announced. The index is never stored by caches (`no-store`), so
    /// while no stream is connected to say otherwise, an index in another
    /// sequence space means the issuer's sequence started over: it is
    /// adopted (the floors are forgotten), so that a verifier that only
    /// polls follows the issuer.
    pub(crate) fn check_index(&self, epoch: Option<&str>, seq: Option<u64>) -> Result<(), String> {
        let mut writer = self.writer();
        if let Some(theirs) = epoch
            && writer.epoch.as_deref().is_some_and(|ours| ours != theirs)
            && !self.stream_connected()
        {
            writer.floors.clear();
            writer.epoch = Some(theirs.to_owned());
            writer.stream_seq = seq.unwrap_or(0);
        }
        writer.check_epoch(epoch)?;
        match seq {
            Some(seq) if seq < writer.stream_seq => Err(format!(
                "the index is at sequence {seq}, but the stream already announced {} (a stale copy)",
                writer.stream_seq
            )),
            _ => Ok(()),
        }
    }

    /// Marks the first full fetch of the lists as begun (see
    /// [`StatusStore::initial_sync_begun`]).
    pub(crate) fn begin_initial_sync(&self) {
        self.initial_sync_begun.store(true, Ordering::Release);
    }

    /// Whether lists were already being fetched: a stream that becomes
    /// ready now must be reconciled with them.
    pub(crate) fn initial_sync_begun(&self) -> bool {
        self.initial_sync_begun.load(Ordering::Acquire)
    }

    /// Applies change `seq` from the stream. Returns false if the list is
    /// not held (yet): the change is still logged, so a fetch that began
    /// before it will replay it, and a list older than it is refused.
    pub(crate) fn apply(&self, uri: &str, idx: u64, status: TokenStatus, seq: u64) -> bool {
        let mut writer = self.writer();
        writer.raise_floor(uri, seq);
        writer.stream_seq = writer.stream_seq.max(seq);
        writer.counter += 1;
        let counter = writer.counter;
        if writer.log.len() >= LOG_CAPACITY {
            writer.log.pop_front();
        }
        writer.log.push_back(LoggedChange {
            counter,
            uri: uri.into(),
            idx,
            status,
        });
        match self.lists.load().get(uri) {
            Some(slot) => slot.set(idx, status),
            None => false,
        }
    }

    /// Installs a list fetched after `mark` (from [`StatusStore::mark`]) and
    /// replays the changes logged since — unless it is older than what was
    /// held when the fetch began, or from another sequence space.
    pub(crate) fn install(
        &self,
        uri: &str,
        list: &StatusList,
        mark: Mark,
        version: &ListVersion,
    ) -> Installed {
        let Mark {
            counter: counter_mark,
            at_ms: fetched_ms,
            floor,
        } = mark;
        let mut writer = self.writer();
        if let Err(why) = writer.check_epoch(version.epoch.as_deref()) {
            return Installed::Stale(why);
        }
        let required = floor.max(version.at_least);
        // A list without `seq` comes from an issuer that does not publish
        // sequences; nothing can be compared.
        if let Some(seq) = version.seq {
            if seq < required {
                return Installed::Stale(format!(
                    "it includes changes up to sequence {seq}, but {required} was already applied or announced (a stale copy)"
                ));
            }
            writer.raise_floor(uri, seq);
        }
        let lists = self.lists.load();
        let slot = match lists.get(uri) {
            Some(slot) => {
                slot.bits.store(Arc::new(to_atomic(list)));
                Arc::clone(slot)
            }
            None => {
                let slot = Arc::new(ListSlot {
                    uri: uri.to_owned(),
                    bits: ArcSwap::from_pointee(to_atomic(list)),
                    fetched_ms: AtomicU64::new(0),
                });
                let mut next = HashMap::clone(&lists);
                next.insert(uri.to_owned(), Arc::clone(&slot));
                self.lists.store(Arc::new(next));
                slot
            }
        };
        let complete = match writer.log.front() {
            Some(oldest) => oldest.counter <= counter_mark.saturating_add(1),
            None => true,
        } || writer.counter == counter_mark;
        for change in writer.log.iter().filter(|c| c.counter > counter_mark) {
            if *change.uri == *uri {
                slot.set(change.idx, change.status);
            }
        }
        if complete {
            slot.fetched_ms.fetch_max(fetched_ms, Ordering::AcqRel);
            Installed::Current
        } else {
            Installed::Incomplete
        }
    }

    /// Marks the stream as (dis)connected.
    pub(crate) fn set_stream_connected(&self, connected: bool) {
        self.stream_connected.store(connected, Ordering::Release);
    }

    pub(crate) fn stream_connected(&self) -> bool {
        self.stream_connected.load(Ordering::Acquire)
    }

    /// The stream delivered something while in sync: every change up to now
    /// has been applied. Ignored while a resync is pending.
    pub(crate) fn stream_heard(&self) {
        if !self.resync_pending() {
            self.stream_heard_ms
                .fetch_max(self.clock.now_ms(), Ordering::AcqRel);
        }
    }

    /// Asks for every list to be fetched again (a gap, a reset, a
    /// reconnect). Returns the request's generation.
    pub(crate) fn request_resync(&self) -> u64 {
        self.resync_requested.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The newest resync generation requested.
    pub(crate) fn resync_generation(&self) -> u64 {
        self.resync_requested.load(Ordering::Acquire)
    }

    /// Every list was fetched after generation `generation` was requested.
    pub(crate) fn resync_completed(&self, generation: u64) {
        self.resync_done.fetch_max(generation, Ordering::AcqRel);
    }

    pub(crate) fn resync_pending(&self) -> bool {
        self.resync_done.load(Ordering::Acquire) < self.resync_requested.load(Ordering::Acquire)
    }

    /// How old the status data for `slot` is at `now_ms`.
    pub(crate) fn age_ms(&self, slot: &ListSlot, now_ms: u64) -> u64 {
        let fresh = slot
            .fetched_ms()
            .max(self.stream_heard_ms.load(Ordering::Acquire));
        if fresh == 0 {
            return u64::MAX;
        }
        now_ms.saturating_sub(fresh)
    }

    /// The age of the stalest list held (`None` before the first fetch).
    pub(crate) fn oldest_age(&self) -> Option<Duration> {
        let now = self.clock.now_ms();
        self.lists
            .load()
            .values()
            .map(|slot| self.age_ms(slot, now))
            .max()
            .map(Duration::from_millis)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const URI: &str = "https://issuer.example/v1/status/0";

    fn list(capacity: usize, set: &[(usize, TokenStatus)]) -> StatusList {
        let mut l = StatusList::new(capacity);
        for &(i, s) in set {
            l.set(i, s).unwrap();
        }
        l
    }

    #[test]
    fn install_and_read() {
        let store = StatusStore::new(Clock::new());
        assert!(store.lookup(URI).is_none());
        let m = store.mark(URI);
        let l = list(
            16,
            &[(3, TokenStatus::Invalid), (15, TokenStatus::Suspended)],
        );
        assert_eq!(
            store.install(URI, &l, m, &ListVersion::default()),
            Installed::Current
        );
        let slot = store.lookup(URI).unwrap();
        assert_eq!(slot.get(0), Some(TokenStatus::Valid));
        assert_eq!(slot.get(3), Some(TokenStatus::Invalid));
        assert_eq!(slot.get(15), Some(TokenStatus::Suspended));
        assert_eq!(slot.get(16), None);
        assert_eq!(slot.get(u64::MAX), None);
        assert!(store.age_ms(&slot, store.clock.now_ms()) < 1000);
    }

    #[test]
    fn apply_is_seen_by_readers_holding_the_slot() {
        let store = StatusStore::new(Clock::new());
        store.install(URI, &list(8, &[]), store.mark(URI), &ListVersion::default());
        let slot = store.lookup(URI).unwrap();
        assert!(store.apply(URI, 5, TokenStatus::Suspended, 1));
        assert_eq!(slot.get(5), Some(TokenStatus::Suspended));
        assert!(store.apply(URI, 5, TokenStatus::Invalid, 2));
        assert_eq!(slot.get(5), Some(TokenStatus::Invalid));
        assert_eq!(slot.get(4), Some(TokenStatus::Valid));
        assert_eq!(slot.get(6), Some(TokenStatus::Valid));
        // Out of range, or an unknown list: nothing to apply.
        assert!(!store.apply(URI, 8, TokenStatus::Invalid, 3));
        assert!(!store.apply("https://other/v1/status/1", 1, TokenStatus::Invalid, 4));
    }

    #[test]
    fn changes_during_a_fetch_are_replayed() {
        let store = StatusStore::new(Clock::new());
        store.install(URI, &list(8, &[]), store.mark(URI), &ListVersion::default());
        // A fetch starts; meanwhile the stream revokes entry 2...
        let m = store.mark(URI);
        store.apply(URI, 2, TokenStatus::Invalid, 5);
        // ...and the fetched list predates it.
        assert_eq!(
            store.install(URI, &list(8, &[]), m, &ListVersion::default()),
            Installed::Current
        );
        let slot = store.lookup(URI).unwrap();
        assert_eq!(slot.get(2), Some(TokenStatus::Invalid));
        // A change before the mark is not replayed over a newer list.
        let m = store.mark(URI);
        assert_eq!(
            store.install(URI, &list(8, &[]), m, &ListVersion::default()),
            Installed::Current
        );
        assert_eq!(slot.get(2), Some(TokenStatus::Valid));
    }

    #[test]
    fn changes_to_a_list_not_yet_held_are_replayed_when_it_arrives() {
        let store = StatusStore::new(Clock::new());
        let m = store.mark(URI);
        assert!(!store.apply(URI, 1, TokenStatus::Suspended, 6));
        store.install(URI, &list(8, &[]), m, &ListVersion::default());
        assert_eq!(
            store.lookup(URI).unwrap().get(1),
            Some(TokenStatus::Suspended)
        );
    }

    #[test]
    fn log_overflow_asks_for_another_fetch() {
        let store = StatusStore::new(Clock::new());
        let m = store.mark(URI);
        for i in 0..(LOG_CAPACITY as u64 + 10) {
            store.apply(URI, i % 8, TokenStatus::Valid, i + 1);
        }
        assert_eq!(
            store.install(URI, &list(8, &[]), m, &ListVersion::default()),
            Installed::Incomplete
        );
        let slot = store.lookup(URI).unwrap();
        assert_eq!(slot.fetched_ms(), 0, "not marked fresh");
        assert_eq!(
            store.install(URI, &list(8, &[]), store.mark(URI), &ListVersion::default()),
            Installed::Current
        );
    }

    #[test]
    fn freshness_and_resync() {
        let store = StatusStore::new(Clock::new());
        assert_eq!(store.oldest_age(), None);
        store.install(URI, &list(8, &[]), store.mark(URI), &ListVersion::default());
        assert!(store.oldest_age().unwrap() < Duration::from_secs(1));

        let generation = store.request_resync();
        assert!(store.resync_pending());
        store.stream_heard();
        assert_eq!(store.stream_heard_ms.load(Ordering::Relaxed), 0);
        store.resync_completed(generation);
        assert!(!store.resync_pending());
        store.stream_heard();
        assert!(store.stream_heard_ms.load(Ordering::Relaxed) > 0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod never_goes_back {
    use super::*;

    const URI: &str = "https://issuer.example/v1/status/0";

    fn version(epoch: &str, seq: u64) -> ListVersion {
        ListVersion {
            epoch: Some(epoch.into()),
            seq: Some(seq),
            at_least: 0,
        }
    }

    fn revoked(idx: usize) -> StatusList {
        let mut l = StatusList::new(8);
        l.set(idx, TokenStatus::Invalid).unwrap();
        l
    }

    #[test]
    fn a_list_older_than_an_applied_change_is_refused() {
        let store = StatusStore::new(Clock::new());
        assert!(!store.stream_ready(Some("e1"), 10));
        let m = store.mark(URI);
        assert_eq!(
            store.install(URI, &StatusList::new(8), m, &version("e1", 10)),
            Installed::Current
        );
        // The stream revokes entry 3 at sequence 11...
        assert!(store.apply(URI, 3, TokenStatus::Invalid, 11));
        // ...then a cache hands back the list from before it.
        let stale = store.install(
            URI,
            &StatusList::new(8),
            store.mark(URI),
            &version("e1", 10),
        );
        assert!(matches!(stale, Installed::Stale(_)), "{stale:?}");
        let slot = store.lookup(URI).unwrap();
        assert_eq!(
            slot.get(3),
            Some(TokenStatus::Invalid),
            "the revocation stands"
        );
        // The issuer's own copy includes the change: installed.
        assert_eq!(
            store.install(URI, &revoked(3), store.mark(URI), &version("e1", 11)),
            Installed::Current
        );
        // And a newer list never lets an older one back in.
        let stale = store.install(
            URI,
            &StatusList::new(8),
            store.mark(URI),
            &version("e1", 10),
        );
        assert!(matches!(stale, Installed::Stale(_)));
        assert_eq!(slot.get(3), Some(TokenStatus::Invalid));
    }

    #[test]
    fn a_list_in_flight_when_a_change_arrives_is_installed_and_replayed() {
        let store = StatusStore::new(Clock::new());
        store.stream_ready(Some("e1"), 10);
        let m = store.mark(URI);
        // The change arrives while the fetch (of a list at 10) is in flight.
        store.apply(URI, 3, TokenStatus::Invalid, 11);
        assert_eq!(
            store.install(URI, &StatusList::new(8), m, &version("e1", 10)),
            Installed::Current
        );
        assert_eq!(
            store.lookup(URI).unwrap().get(3),
            Some(TokenStatus::Invalid)
        );
    }

    #[test]
    fn the_index_sets_a_floor_for_lists_the_stream_said_nothing_about() {
        let store = StatusStore::new(Clock::new());
        store.stream_ready(Some("e1"), 20);
        assert!(
            store.check_index(Some("e1"), Some(19)).is_err(),
            "an index older than the stream"
        );
        store.check_index(Some("e1"), Some(20)).unwrap();
        let at_least = ListVersion {
            at_least: 15,
            ..version("e1", 12)
        };
        assert!(matches!(
            store.install(URI, &StatusList::new(8), store.mark(URI), &at_least),
            Installed::Stale(_)
        ));
    }

    #[test]
    fn another_sequence_space_is_refused_until_the_stream_moves_to_it() {
        let store = StatusStore::new(Clock::new());
        store.set_stream_connected(true);
        store.stream_ready(Some("e1"), 50);
        store.install(URI, &revoked(3), store.mark(URI), &version("e1", 50));
        // A copy from another epoch, however high its seq, is not installed.
        assert!(matches!(
            store.install(
                URI,
                &StatusList::new(8),
                store.mark(URI),
                &version("e0", 900)
            ),
            Installed::Stale(_)
        ));
        assert!(store.check_index(Some("e0"), Some(900)).is_err());
        // The issuer starts over (another epoch, a lower sequence).
        assert!(store.stream_ready(Some("e2"), 2));
        assert!(matches!(
            store.install(URI, &revoked(3), store.mark(URI), &version("e1", 50)),
            Installed::Stale(_)
        ));
        assert_eq!(
            store.install(URI, &revoked(3), store.mark(URI), &version("e2", 2)),
            Installed::Current
        );
        // The same epoch going back also counts as starting over.
        assert!(store.stream_ready(Some("e2"), 1));
        assert!(!store.stream_ready(Some("e2"), 1));
    }

    #[test]
    fn without_a_stream_the_index_leads_into_a_new_sequence_space() {
        let store = StatusStore::new(Clock::new());
        store.check_index(Some("e1"), Some(50)).unwrap();
        store.install(URI, &revoked(3), store.mark(URI), &version("e1", 50));
        // No stream: the (never cached) index says the issuer started over.
        store.check_index(Some("e2"), Some(4)).unwrap();
        assert_eq!(
            store.install(URI, &revoked(3), store.mark(URI), &version("e2", 4)),
            Installed::Current
        );
        // An old-epoch copy is now the stale one.
        assert!(matches!(
            store.install(
                URI,
                &StatusList::new(8),
                store.mark(URI),
                &version("e1", 50)
            ),
            Installed::Stale(_)
        ));
    }
}
