//! The bounded cache of tokens whose signature and claims already verified.
//!
//! Keyed by the **whole token** (compared byte for byte, so no two tokens can
//! ever share an entry), hashed with std's randomly keyed SipHash so that
//! nobody can aim tokens at one bucket. What the cache saves is the signature
//! check and the JSON parse; the caller still checks expiry, the signing key
//! and the revocation status on every hit.
//!
//! The cache is split into shards, each behind its own `RwLock`, so that hits
//! on different shards never touch the same lock. Each shard keeps two
//! generations: new entries go into `current`; when `current` holds half the
//! shard's share, it becomes `previous` and the old `previous` is dropped. A
//! hit in `previous` moves the entry back into `current`, so a token in
//! steady use is never evicted, and memory stays bounded by the capacity
//! (plus the size of the tokens themselves).

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::RwLock;

/// Shards: enough that a busy server's cores rarely share one.
const SHARDS: usize = 16;

struct Shard<V> {
    current: HashMap<Box<str>, V>,
    previous: HashMap<Box<str>, V>,
}

/// A bounded map from tokens to `V` (cheap to clone, e.g. an `Arc`).
pub struct TokenCache<V> {
    shards: Box<[RwLock<Shard<V>>]>,
    /// Entries per shard generation; 0 disables the cache.
    generation_cap: usize,
}

impl<V> std::fmt::Debug for TokenCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &(self.generation_cap * 2 * SHARDS))
            .finish_non_exhaustive()
    }
}

/// Picks a shard from the token's last bytes (its signature, which the
/// issuer's key makes unpredictable). Only load spreading depends on it; the
/// map itself hashes the whole token with a keyed hash.
fn shard_index(token: &str) -> usize {
    let bytes = token.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(8)..];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in tail {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) % SHARDS
}

impl<V: Clone> TokenCache<V> {
    /// A cache of about `capacity` entries (rounded up to a multiple of the
    /// shard count); 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS);
        let generation_cap = per_shard.div_ceil(2);
        let hasher = RandomState::new();
        let shards = (0..SHARDS)
            .map(|_| {
                RwLock::new(Shard {
                    current: HashMap::with_hasher(hasher.clone()),
                    previous: HashMap::with_hasher(hasher.clone()),
                })
            })
            .collect();
        TokenCache {
            shards,
            generation_cap,
        }
    }

    /// The entry for exactly this token.
    pub fn get(&self, token: &str) -> Option<V> {
        if self.generation_cap == 0 {
            return None;
        }
        let shard = &self.shards[shard_index(token)];
        {
            let guard = shard
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(v) = guard.current.get(token) {
                return Some(v.clone());
            }
            if !guard.previous.contains_key(token) {
                return None;
            }
        }
        // In the old generation: promote it so it survives the next rollover.
        let mut guard = shard
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(v) = guard.current.get(token) {
            return Some(v.clone());
        }
        let (key, value) = guard.previous.remove_entry(token)?;
        Self::insert_locked(&mut guard, self.generation_cap, key, value.clone());
        Some(value)
    }

    /// Remembers `value` for `token`, evicting the oldest generation if the
    /// shard is full.
    pub fn insert(&self, token: &str, value: V) {
        if self.generation_cap == 0 {
            return;
        }
        let shard = &self.shards[shard_index(token)];
        let mut guard = shard
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Self::insert_locked(&mut guard, self.generation_cap, token.into(), value);
    }

    fn insert_locked(shard: &mut Shard<V>, cap: usize, key: Box<str>, value: V) {
        if shard.current.len() >= cap && !shard.current.contains_key(&key) {
            shard.previous = std::mem::replace(
                &mut shard.current,
                HashMap::with_hasher(shard.previous.hasher().clone()),
            );
        }
        shard.previous.remove(&key);
        shard.current.insert(key, value);
    }

    /// Entries held now (both generations).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let g = s.read().unwrap_or_else(|poisoned| poisoned.into_inner());
                g.current.len() + g.previous.len()
            })
            .sum()
    }

    /// The most entries the cache can hold.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.generation_cap * 2 * SHARDS
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn token(i: usize) -> String {
        format!("header.payload-{i}.signature-{i:08x}")
    }

    #[test]
    fn hit_and_miss_by_whole_token() {
        let cache = TokenCache::new(64);
        cache.insert("a.b.c", 1);
        assert_eq!(cache.get("a.b.c"), Some(1));
        // Same signature, different token: no hit.
        assert_eq!(cache.get("a.x.c"), None);
        assert_eq!(cache.get("a.b.c "), None);
        assert_eq!(cache.get("a.b."), None);
        cache.insert("a.b.c", 2);
        assert_eq!(cache.get("a.b.c"), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::new(100);
        let cap = cache.capacity();
        assert!((100..100 + 2 * SHARDS).contains(&cap), "{cap}");
        for i in 0..10_000 {
            cache.insert(&token(i), i);
            assert!(cache.len() <= cap);
        }
        // The newest entries are still there.
        assert_eq!(cache.get(&token(9_999)), Some(9_999));
        // Most old ones are gone.
        let old_hits = (0..1000)
            .filter(|&i| cache.get(&token(i)).is_some())
            .count();
        assert_eq!(old_hits, 0);
    }

    #[test]
    fn tokens_in_use_survive_rollovers() {
        let cache = TokenCache::new(64);
        let hot = token(usize::MAX);
        cache.insert(&hot, 0);
        for i in 0..5_000 {
            cache.insert(&token(i), i);
            if i % 2 == 0 {
                assert_eq!(cache.get(&hot), Some(0), "after {i} inserts");
            }
        }
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = TokenCache::new(0);
        cache.insert("a.b.c", 1);
        assert_eq!(cache.get("a.b.c"), None);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.capacity(), 0);
    }

    #[test]
    fn concurrent_use() {
        let cache = std::sync::Arc::new(TokenCache::new(256));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let k = token(t * 10_000 + i % 300);
                        if cache.get(&k).is_none() {
                            cache.insert(&k, i);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(cache.len() <= cache.capacity());
    }
}
