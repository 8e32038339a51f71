//! Consistent hashing for session affinity, and a stable 64-bit hash for keys.
//!
//! Choice: a ring hash (Karger; Envoy `RING_HASH`) rather than Maglev. With a fixed set of
//! points per replica, removing a replica moves *only* the keys it owned, each to the next
//! point clockwise, and keys on the other replicas never move; adding one takes keys only
//! for itself. Maglev (table 65 537) has O(1) lookups but rebuilds its whole permutation
//! table on every change and moves a few keys between surviving replicas, and skipping an
//! unavailable replica is natural on a ring (walk on) but not in a Maglev table. Lookups
//! here are one binary search: O(log points), about 12 steps for four replicas.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Finaliser of MurmurHash3 (`fmix64`): a bijection on `u64` with full avalanche, used to
/// spread FNV's weak low bits and to derive ring points.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// FNV-1a over the bytes written, finished with [`mix64`].
///
/// Invariant: the result depends only on the bytes written, never on the process, the
/// run or a random seed, so session affinity survives restarts of bulwark and is the same
/// on every instance. (Integers written through `Hash` use native byte order: stable on
/// one architecture; use [`hash_bytes`] for values that cross machines.) Not
/// collision-resistant against an adversary: see [`KeyedBuckets`](crate::KeyedBuckets).
#[derive(Debug, Clone, Copy)]
pub struct StableHasher {
    state: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher { state: FNV_OFFSET }
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state = (self.state ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn finish(&self) -> u64 {
        mix64(self.state)
    }
}

/// `BuildHasher` for [`StableHasher`] (for `HashMap`s that must be deterministic).
pub type BuildStableHasher = BuildHasherDefault<StableHasher>;

/// Stable hash of a byte string (a header value, a cookie, an address's octets).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::default();
    h.write(bytes);
    h.finish()
}

/// Stable hash of any `Hash` value (see [`StableHasher`] for what "stable" covers).
pub fn hash_key<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = StableHasher::default();
    value.hash(&mut h);
    h.finish()
}

/// Points of one member of weight `w`: `w × per_weight`, scaled down proportionally (at
/// least one point each) only if the whole ring would exceed `max`.
fn points_for(w: u32, weights: u128, per_weight: u128, max: u128) -> u64 {
    let w = u128::from(w);
    let c = if weights * per_weight > max {
        (w * max / weights).max(1)
    } else {
        w * per_weight
    };
    u64::try_from(c).unwrap_or(u64::MAX)
}

/// A consistent-hash ring over replica keys `K` with integer weights.
///
/// Invariants:
/// - replica `k` with weight `w` owns exactly the points `mix64(hash_key(k) ^ mix64(j))`
///   for `j in 1..=w × points_per_weight` — a function of `k` and `w` alone, never of the
///   other members. That is what guarantees that removing a replica moves only its keys
///   and adding one moves keys only to it (property-tested: 4 → 3 replicas moves ≈ 1/4
///   of 10 000 keys and none between the 3 that stay);
/// - points are sorted by `(point, hash_key(k))`, so the ring, and every pick, is the same
///   whatever order the replicas were given in, in every process;
/// - each unit of weight gets 1024 points by default, so every non-empty ring has at
///   least Envoy's `minimum_ring_size` of 1024 entries. Envoy instead scales the points
///   of *all* hosts to reach its minimum, which re-shuffles keys between survivors when
///   membership changes; we do not. Rings are capped at Envoy's maximum of 8 388 608
///   points (by lowering points per weight, the one case where the first invariant bends).
///
/// Memory: 12 bytes per point (12 KiB per unit of weight). Built once per membership
/// change (O(points log points), allocates); picks are O(log points) and allocation-free,
/// and the ring is immutable, so share it as `Arc<HashRing<K>>` and swap on change.
#[derive(Debug, Clone)]
pub struct HashRing<K> {
    nodes: Vec<K>,
    points: Vec<u64>,
    owners: Vec<u32>,
}

impl<K: Copy + Eq + Hash> HashRing<K> {
    /// Points per unit of weight (1024).
    pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 1024;
    /// Envoy's `maximum_ring_size`.
    pub const MAX_POINTS: u64 = 8_388_608;

    /// Builds a ring from `(key, weight)` pairs. Weight 0 leaves a key out; a key given
    /// twice keeps its first weight.
    pub fn new(nodes: impl IntoIterator<Item = (K, u32)>) -> Self {
        Self::with_points_per_weight(nodes, Self::DEFAULT_POINTS_PER_WEIGHT)
    }

    /// As [`new`](Self::new) with a chosen density (fewer points: less memory and
    /// coarser balance; the spread of shares is about `1/√points` per replica).
    pub fn with_points_per_weight(
        nodes: impl IntoIterator<Item = (K, u32)>,
        points_per_weight: u32,
    ) -> Self {
        let mut seen: HashMap<K, (), BuildStableHasher> = HashMap::default();
        let members: Vec<(K, u32, u64)> = nodes
            .into_iter()
            .filter(|&(k, w)| w > 0 && seen.insert(k, ()).is_none())
            .map(|(k, w)| (k, w, hash_key(&k)))
            .collect();
        let weights: u128 = members.iter().map(|m| u128::from(m.1)).sum();
        let per_weight = u128::from(points_per_weight.max(1));
        let max = u128::from(Self::MAX_POINTS);
        let count = |w: u32| points_for(w, weights, per_weight, max);
        let total: u64 = members.iter().map(|m| count(m.1)).sum();
        let mut entries: Vec<(u64, u64, u32)> =
            Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for (owner, &(_, w, kh)) in members.iter().enumerate() {
            for j in 1..=count(w) {
                entries.push((mix64(kh ^ mix64(j)), kh, owner as u32));
            }
        }
        entries.sort_unstable_by_key(|&(point, kh, _)| (point, kh));
        HashRing {
            nodes: members.iter().map(|m| m.0).collect(),
            points: entries.iter().map(|e| e.0).collect(),
            owners: entries.iter().map(|e| e.2).collect(),
        }
    }

    /// The replica owning `key_hash`: the first point at or after it, wrapping around.
    /// `None` only for an empty ring. Hash the request's key with [`hash_bytes`] (or
    /// [`hash_key`]).
    pub fn pick(&self, key_hash: u64) -> Option<K> {
        let i = self.start(key_hash)?;
        Some(self.nodes[self.owners[i] as usize])
    }

    /// As [`pick`](Self::pick), but walks clockwise past replicas for which `available`
    /// is false (ejected, breaker open), so their keys spread over the others and come
    /// back when they do. `available` is called at most once per replica (for the first
    /// 1024 replicas; beyond that possibly again). `None` if no replica is available.
    pub fn pick_where(&self, key_hash: u64, available: impl Fn(K) -> bool) -> Option<K> {
        let start = self.start(key_hash)?;
        let mut rejected = [0u64; 16];
        let mut rejected_count = 0usize;
        let n = self.points.len();
        for step in 0..n {
            let owner = self.owners[(start + step) % n] as usize;
            let tracked = owner < 1024;
            if tracked && rejected[owner / 64] & (1 << (owner % 64)) != 0 {
                continue;
            }
            let k = self.nodes[owner];
            if available(k) {
                return Some(k);
            }
            if tracked {
                rejected[owner / 64] |= 1 << (owner % 64);
                rejected_count += 1;
                if rejected_count == self.nodes.len() {
                    return None;
                }
            }
        }
        None
    }

    fn start(&self, key_hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|&p| p < key_hash);
        Some(if i == self.points.len() { 0 } else { i })
    }

    /// Replicas on the ring, in the order given.
    pub fn nodes(&self) -> &[K] {
        &self.nodes
    }

    /// Number of points.
    pub fn ring_size(&self) -> usize {
        self.points.len()
    }

    /// Whether the ring has no node, so nothing can be picked.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_known_values() {
        // FNV-1a("") is the offset basis; FNV-1a("a") = 0xaf63dc4c8601ec8c (published
        // test vectors), then finalised.
        assert_eq!(hash_bytes(b""), mix64(FNV_OFFSET));
        assert_eq!(hash_bytes(b"a"), mix64(0xaf63_dc4c_8601_ec8c));
        assert_eq!(hash_bytes(b"foobar"), mix64(0x8594_4171_f739_67e8));
        assert_ne!(hash_bytes(b"user-1"), hash_bytes(b"user-2"));
        assert_eq!(mix64(0), 0);
    }

    #[test]
    fn ring_has_min_size_and_balances() {
        let ring = HashRing::new((0u32..4).map(|r| (r, 1)));
        assert_eq!(ring.ring_size(), 4096);
        let single = HashRing::new([(7u32, 1)]);
        assert_eq!(single.ring_size(), 1024);
        assert_eq!(single.pick(12345), Some(7));
        let mut counts = [0u32; 4];
        for k in 0..40_000u64 {
            counts[ring.pick(hash_key(&k)).unwrap() as usize] += 1;
        }
        for c in counts {
            assert!((8_500..=11_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn weights_scale_shares() {
        let ring = HashRing::new([(0u32, 1), (1, 3)]);
        assert_eq!(ring.ring_size(), 4096);
        let heavy = (0..20_000u64)
            .filter(|k| ring.pick(hash_key(k)) == Some(1))
            .count();
        assert!((14_000..=16_000).contains(&heavy), "{heavy}");
    }

    #[test]
    fn empty_zero_weight_and_duplicates() {
        let empty: HashRing<u32> = HashRing::new([]);
        assert!(empty.is_empty());
        assert_eq!(empty.pick(1), None);
        assert_eq!(empty.pick_where(1, |_| true), None);
        let ring = HashRing::new([(1u32, 0), (2, 1), (2, 5)]);
        assert_eq!(ring.nodes(), &[2]);
        assert_eq!(ring.ring_size(), 1024);
    }

    #[test]
    fn pick_where_walks_past_unavailable() {
        let ring = HashRing::new((0u32..5).map(|r| (r, 1)));
        for k in 0..2_000u64 {
            let h = hash_key(&k);
            let first = ring.pick(h).unwrap();
            assert_eq!(ring.pick_where(h, |_| true), Some(first));
            let other = ring.pick_where(h, |r| r != first).unwrap();
            assert_ne!(other, first);
            assert_eq!(ring.pick_where(h, |r| r == 3), Some(3));
            assert_eq!(ring.pick_where(h, |_| false), None);
        }
        // each replica is asked at most once
        let calls = std::cell::Cell::new(0);
        ring.pick_where(42, |_| {
            calls.set(calls.get() + 1);
            false
        });
        assert_eq!(calls.get(), 5);
    }

    #[test]
    fn huge_weights_are_capped() {
        // 2 × u32::MAX weight units would be 8.8e12 points: scaled to the maximum.
        let weights = 2 * u128::from(u32::MAX);
        let max = u128::from(HashRing::<u32>::MAX_POINTS);
        let c = points_for(u32::MAX, weights, 1024, max);
        assert_eq!(u128::from(c) * 2, max);
        assert_eq!(points_for(1, weights, 1024, max), 1, "at least one point");
        assert_eq!(
            points_for(3, 10, 1024, max),
            3072,
            "no scaling below the cap"
        );
    }
}
