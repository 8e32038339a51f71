//! Token buckets for rate limits (Envoy local rate limit), alone or per client key
//! (HAProxy stick tables) with bounded memory.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use crate::hash::BuildStableHasher;
use crate::window::later;

/// Emission intervals are clamped to at most a year, so `Instant` arithmetic cannot
/// overflow: a rate below one token per year behaves as one per year.
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A token bucket of `burst` tokens refilled at `rate` per second, implemented as GCRA
/// (generic cell rate algorithm): the state is one instant, the "theoretical arrival time"
/// `tat` at which the bucket would be full again.
///
/// Invariants:
/// - a token is granted at `now` iff `max(tat, now) − now ≤ (burst − 1) × interval`, then
///   `tat` advances by `interval = ceil(1 s / rate)` (in whole nanoseconds, rounded up so
///   the effective rate never exceeds `rate`);
/// - hence over any span `E`, grants ≤ `burst + E × rate` (property-tested), and a full
///   bucket (`tat ≤ now`) holds no information, which is what lets
///   [`KeyedBuckets`] drop idle keys without changing any decision;
/// - on refusal, `retry_after` is exact: a `try_take` at `now + retry_after` succeeds.
///
/// 40 bytes, O(1), no allocation, starts full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    interval: Duration,
    tolerance: Duration,
    tat: Option<Instant>,
}

impl TokenBucket {
    /// `rate` tokens per second (`<= 0` or NaN: one per year), up to `burst` at once
    /// (at least 1).
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let interval = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            let ns = (1e9 / rate_per_sec).ceil().max(1.0);
            if ns >= MAX_INTERVAL.as_nanos() as f64 {
                MAX_INTERVAL
            } else {
                Duration::from_nanos(ns as u64)
            }
        } else {
            MAX_INTERVAL
        };
        TokenBucket {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            tat: None,
        }
    }

    /// Time between two tokens.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes one token, or says how long until one is available (for `Retry-After`).
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let debt = tat - now;
        if debt > self.tolerance {
            return Err(debt - self.tolerance);
        }
        self.tat = Some(later(tat, self.interval));
        Ok(())
    }

    /// Tokens that could be taken at `now` (for `RateLimit-Remaining`).
    pub fn remaining(&self, now: Instant) -> u32 {
        let debt = self
            .tat
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        if debt > self.tolerance {
            return 0;
        }
        let spare = (self.tolerance - debt).as_nanos() / self.interval.as_nanos();
        u32::try_from(spare + 1).unwrap_or(u32::MAX)
    }

    /// No token is missing: forgetting this bucket changes nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Entry<K> {
    key: K,
    bucket: TokenBucket,
    prev: u32,
    next: u32,
}

/// One token bucket per client key (any hashable key; the proxy uses a client address or
/// header value hashed with a per-service random seed, so clients cannot aim at one
/// bucket), holding at most `max_keys` keys.
///
/// Eviction: least recently used. When a new key arrives and the table is full, the key
/// that has gone longest without a request is dropped, so a flood of distinct keys cannot
/// grow memory; an abusive client that keeps sending stays most-recently-used and keeps
/// its (empty) bucket unless more than `max_keys` other keys arrive between two of its
/// requests. A dropped key starts again with a full bucket (if it was full anyway, nothing
/// changed — see [`TokenBucket`]). Put a global [`TokenBucket`] in front for floods of
/// fresh keys.
///
/// Invariants: `len() ≤ max_keys`; the entries form one doubly linked list ordered by
/// recency (indices into a `Vec` allocated once); `map[k] = i ⇔ entries[i].key = k`.
/// The map is allocated for `2 × max_keys` so that insert/remove cycles rehash in place
/// and never reallocate. Every call is O(1) and allocation-free once the table is full
/// (before that only the `Vec` push within its reserved capacity).
///
/// Hashing: `S` defaults to the deterministic [`BuildStableHasher`] (fine for addresses);
/// for attacker-chosen keys (header values) pass `std::hash::RandomState::new()` to
/// [`with_hasher`](Self::with_hasher) so collisions cannot be forced. Keys should be cheap
/// to clone (`IpAddr`, `u64`): a new key is stored twice.
#[derive(Debug, Clone)]
pub struct KeyedBuckets<K, S = BuildStableHasher> {
    template: TokenBucket,
    max_keys: usize,
    map: HashMap<K, u32, S>,
    entries: Vec<Entry<K>>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next victim.
    tail: u32,
    evictions: u64,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    /// Every key gets `TokenBucket::new(rate_per_sec, burst)`; at most `max_keys` keys
    /// (at least 1) are remembered.
    pub fn new(rate_per_sec: f64, burst: u32, max_keys: usize) -> Self {
        Self::with_hasher(rate_per_sec, burst, max_keys, BuildStableHasher::default())
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher> KeyedBuckets<K, S> {
    /// Like [`new`](KeyedBuckets::new), with a caller-chosen hasher for the key table.
    pub fn with_hasher(rate_per_sec: f64, burst: u32, max_keys: usize, hasher: S) -> Self {
        let max_keys = max_keys.clamp(1, NIL as usize - 1);
        KeyedBuckets {
            template: TokenBucket::new(rate_per_sec, burst),
            max_keys,
            map: HashMap::with_capacity_and_hasher(max_keys.saturating_mul(2), hasher),
            entries: Vec::with_capacity(max_keys),
            head: NIL,
            tail: NIL,
            evictions: 0,
        }
    }

    /// Takes one token from `key`'s bucket (creating it full, evicting the least recently
    /// used key if the table is full).
    pub fn try_take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        let i = match self.map.get(&key) {
            Some(&i) => {
                self.unlink(i);
                i
            }
            None => {
                let i = if self.entries.len() < self.max_keys {
                    self.entries.push(Entry {
                        key: key.clone(),
                        bucket: self.template,
                        prev: NIL,
                        next: NIL,
                    });
                    (self.entries.len() - 1) as u32
                } else {
                    let victim = self.tail;
                    self.unlink(victim);
                    let e = &mut self.entries[victim as usize];
                    self.map.remove(&e.key);
                    e.key = key.clone();
                    e.bucket = self.template;
                    self.evictions += 1;
                    victim
                };
                self.map.insert(key, i);
                i
            }
        };
        self.push_front(i);
        self.entries[i as usize].bucket.try_take(now)
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The most keys remembered at once (the argument given at construction, at least 1).
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys dropped to make room so far (export as a counter: a high rate means
    /// `max_keys` is too small or someone is spraying keys).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Tokens `key` could take now (a full bucket's worth if unknown).
    pub fn remaining(&self, key: &K, now: Instant) -> u32 {
        match self.map.get(key) {
            Some(&i) => self.entries[i as usize].bucket.remaining(now),
            None => self.template.remaining(now),
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let e = &self.entries[i as usize];
            (e.prev, e.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let e = &mut self.entries[i as usize];
            e.prev = NIL;
            e.next = old;
        }
        if old == NIL {
            self.tail = i;
        } else {
            self.entries[old as usize].prev = i;
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_rate() {
        let t0 = crate::epoch();
        let mut b = TokenBucket::new(10.0, 3); // a token every 100 ms
        assert_eq!(b.interval(), 100 * MS);
        assert_eq!(b.remaining(t0), 3);
        assert!(b.is_full(t0));
        for _ in 0..3 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        assert_eq!(b.remaining(t0), 0);
        assert_eq!(b.try_take(t0), Err(100 * MS));
        assert_eq!(b.try_take(t0 + 40 * MS), Err(60 * MS));
        assert_eq!(b.try_take(t0 + 100 * MS), Ok(()));
        assert_eq!(b.try_take(t0 + 100 * MS), Err(100 * MS));
        // after 300 ms idle the bucket is full again, but not fuller
        let t = t0 + 500 * MS;
        assert!(b.is_full(t));
        assert_eq!(b.remaining(t), 3);
        assert_eq!((0..5).filter(|_| b.try_take(t).is_ok()).count(), 3);
    }

    #[test]
    fn fractional_and_degenerate_rates() {
        let t0 = crate::epoch();
        let mut b = TokenBucket::new(0.5, 1);
        assert_eq!(b.try_take(t0), Ok(()));
        assert_eq!(b.try_take(t0), Err(Duration::from_secs(2)));
        let mut z = TokenBucket::new(0.0, 2);
        assert!(z.try_take(t0).is_ok() && z.try_take(t0).is_ok());
        assert_eq!(z.try_take(t0), Err(MAX_INTERVAL));
        let mut n = TokenBucket::new(f64::NAN, 0);
        assert!(n.try_take(t0).is_ok());
        assert!(n.try_take(t0).is_err());
        let mut fast = TokenBucket::new(1e12, 1);
        assert_eq!(fast.interval(), Duration::from_nanos(1));
        assert!(fast.try_take(t0).is_ok());
    }

    #[test]
    fn keys_are_limited_separately_and_lru_evicted() {
        let t0 = crate::epoch();
        let mut k: KeyedBuckets<u32> = KeyedBuckets::new(1.0, 1, 3);
        assert!(k.is_empty());
        assert!(k.try_take(1, t0).is_ok());
        assert!(k.try_take(1, t0).is_err());
        assert!(k.try_take(2, t0).is_ok());
        assert!(k.try_take(3, t0).is_ok());
        assert_eq!(k.len(), 3);
        // touch 1 so 2 becomes least recently used
        assert!(k.try_take(1, t0).is_err());
        assert!(k.try_take(4, t0).is_ok());
        assert_eq!(k.len(), 3);
        assert_eq!(k.evictions(), 1);
        assert_eq!(k.remaining(&2, t0), 1, "2 was dropped, comes back full");
        assert_eq!(k.remaining(&1, t0), 0, "1 kept its empty bucket");
        assert!(k.try_take(1, t0).is_err());
        assert!(k.try_take(3, t0).is_err());
        assert_eq!(k.max_keys(), 3);
    }

    #[test]
    fn flood_of_keys_stays_bounded() {
        let t0 = crate::epoch();
        let mut k: KeyedBuckets<u64, std::hash::RandomState> =
            KeyedBuckets::with_hasher(1.0, 1, 100, std::hash::RandomState::new());
        let cap = k.map.capacity();
        for key in 0..100_000u64 {
            let _ = k.try_take(key, t0);
            // the abuser keeps coming back and stays limited
            let r = k.try_take(u64::MAX, t0);
            assert!(key == 0 || r.is_err());
        }
        assert_eq!(k.len(), 100);
        assert_eq!(k.entries.capacity(), 100);
        // capacity() shrinks with tombstones; a resize would have doubled it
        assert!(k.map.capacity() <= cap, "no rehash into a larger table");
    }
}
