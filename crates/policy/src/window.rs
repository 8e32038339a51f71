//! Sliding-window counters over a ring of fixed time buckets, and a latency percentile
//! tracker built on the same ring.
//!
//! Used by the retry budget (tower/linkerd: 10 s TTL in 10 buckets), the outlier detector
//! (success rate over Envoy's 10 s `interval`), the circuit breaker's failure ratio and
//! hedging (tower `hedge`: send a second request once the first is slower than the p-th
//! percentile of recent latencies).

use std::time::{Duration, Instant};

/// Nanoseconds in `d`, saturated to `u64` (584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `now + d`, or the latest representable instant on the way there if that overflows.
/// Only reachable with absurd configured durations; it keeps every path panic-free.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}

/// A ring of `n` buckets of `K` counters each, covering `n × width` of time.
///
/// Invariants:
/// - bucket `epoch % n` holds the counts of epoch `epoch` for the `n` epochs
///   `head - n + 1 ..= head`; older epochs have been cleared;
/// - `total[k]` is the sum of counter `k` over all buckets (kept incrementally, so reading
///   the window after a write is O(1); advancing clears at most `n` buckets, amortised O(1));
/// - `head` never decreases: a `now` older than the newest one seen (two threads that read
///   the clock in one order and took the lock in the other) counts into the newest bucket.
///
/// The window therefore covers between `(n - 1) × width` and `n × width` of time.
/// Memory is fixed at construction: `n × K` counters.
#[derive(Debug, Clone)]
pub(crate) struct Ring<const K: usize> {
    /// Set by the first write; epochs are counted from it.
    origin: Option<Instant>,
    width_ns: u64,
    head: u64,
    slots: Box<[[u64; K]]>,
    total: [u64; K],
}

impl<const K: usize> Ring<K> {
    /// `buckets` is clamped to `1..=65536`; the bucket width to at least 1 ns.
    pub(crate) fn new(window: Duration, buckets: usize) -> Self {
        let n = buckets.clamp(1, 1 << 16);
        let width_ns = u64::try_from(window.as_nanos() / n as u128)
            .unwrap_or(u64::MAX)
            .max(1);
        Ring {
            origin: None,
            width_ns,
            head: 0,
            slots: vec![[0; K]; n].into_boxed_slice(),
            total: [0; K],
        }
    }

    pub(crate) fn window(&self) -> Duration {
        Duration::from_nanos(self.width_ns.saturating_mul(self.slots.len() as u64))
    }

    fn epoch(&self, now: Instant) -> u64 {
        match self.origin {
            None => 0,
            Some(o) => (nanos(now.saturating_duration_since(o)) / self.width_ns).max(self.head),
        }
    }

    /// Moves `head` to `now`'s epoch, clearing the buckets that fell out of the window.
    /// Returns the slot of the current epoch.
    fn advance(&mut self, now: Instant) -> usize {
        if self.origin.is_none() {
            self.origin = Some(now);
        }
        let e = self.epoch(now);
        let n = self.slots.len() as u64;
        if e - self.head >= n {
            self.slots.iter_mut().for_each(|s| *s = [0; K]);
            self.total = [0; K];
        } else {
            for ep in self.head + 1..=e {
                let slot = &mut self.slots[(ep % n) as usize];
                for (t, v) in self.total.iter_mut().zip(slot.iter()) {
                    *t = t.saturating_sub(*v);
                }
                *slot = [0; K];
            }
        }
        self.head = e;
        (e % n) as usize
    }

    /// Adds `v` at `now` and returns the window's totals including it.
    pub(crate) fn add(&mut self, v: [u64; K], now: Instant) -> [u64; K] {
        let s = self.advance(now);
        for ((slot, total), v) in self.slots[s].iter_mut().zip(&mut self.total).zip(v) {
            *slot = slot.saturating_add(v);
            *total = total.saturating_add(v);
        }
        self.total
    }

    /// The totals as of `now`, after retiring expired buckets.
    pub(crate) fn totals(&mut self, now: Instant) -> &[u64; K] {
        if self.origin.is_some() {
            self.advance(now);
        }
        &self.total
    }

    /// The totals as of `now` without mutating: subtracts the buckets that expired since
    /// the last write (at most `n`).
    pub(crate) fn sum(&self, now: Instant) -> [u64; K] {
        if self.origin.is_none() {
            return [0; K];
        }
        let n = self.slots.len() as u64;
        let gap = self.epoch(now) - self.head;
        if gap >= n {
            return [0; K];
        }
        let mut t = self.total;
        for j in 0..gap {
            let slot = &self.slots[((self.head + 1 + j) % n) as usize];
            for (t, v) in t.iter_mut().zip(slot.iter()) {
                *t = t.saturating_sub(*v);
            }
        }
        t
    }

    /// Forgets all counts (the epoch clock keeps running).
    pub(crate) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = [0; K]);
        self.total = [0; K];
    }
}

/// A counter of events over the last `window`, kept in `buckets` fixed time buckets.
///
/// Invariant: `sum(now)` counts exactly the events added in the epochs
/// `epoch(now) - buckets + 1 ..= epoch(now)`, where epochs are `window / buckets` long and
/// start at the first `add`. So the covered span is between `window - window/buckets` and
/// `window`; more buckets = finer edges. Memory is fixed: one `u64` per bucket.
/// `add` is amortised O(1), `sum` is O(buckets) at worst (O(1) right after an `add`).
/// A `now` older than one already seen counts as the newest (time never runs backwards).
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    ring: Ring<1>,
}

impl SlidingWindow {
    /// tower's retry budget uses `SlidingWindow::new(10 s, 10)`.
    pub fn new(window: Duration, buckets: usize) -> Self {
        SlidingWindow {
            ring: Ring::new(window, buckets),
        }
    }

    /// Counts `n` more at `now`.
    pub fn add(&mut self, n: u64, now: Instant) {
        self.ring.add([n], now);
    }

    /// The total counted over the window as of `now`.
    pub fn sum(&self, now: Instant) -> u64 {
        self.ring.sum(now)[0]
    }

    /// The full span covered (`buckets × bucket width`).
    pub fn window(&self) -> Duration {
        self.ring.window()
    }

    /// Forgets everything counted so far.
    pub fn clear(&mut self) {
        self.ring.clear();
    }
}

/// Sub-buckets per power of two: 16, so a bucket spans at most 1/16 = 6.25 % of its values.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Largest exponent tracked: values up to 2^27 µs ≈ 134 s; longer latencies count as 134 s.
const MAX_MSB: u32 = 26;
/// Number of histogram buckets: 16 exact ones for 0..16 µs, then 16 per power of two.
pub(crate) const LATENCY_BUCKETS: usize = (SUB + (MAX_MSB - SUB_BITS + 1) as u64 * SUB) as usize;
const MAX_MICROS: u64 = (1 << (MAX_MSB + 1)) - 1;

fn bucket_of(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let mantissa = (v >> (msb - SUB_BITS)) - SUB;
    (SUB + u64::from(msb - SUB_BITS) * SUB + mantissa) as usize
}

/// The largest value (µs) that falls into bucket `b`.
fn bucket_upper(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let octave = (b - SUB) / SUB;
    let mantissa = (b - SUB) % SUB;
    let shift = octave as u32;
    ((SUB + mantissa + 1) << shift) - 1
}

/// Latency percentiles over a sliding window, for hedging (tower `hedge`: a second
/// request is sent once the first has been outstanding longer than the p-th percentile).
///
/// Invariants:
/// - values are kept in fixed log-linear buckets (HdrHistogram style, 16 per power of two,
///   microsecond resolution, 0 µs ..= 134 s; longer values count as 134 s), so a reported
///   percentile is the *upper edge* of its bucket: never below the true sample and at most
///   6.25 % above it (exact below 16 µs). Reporting high means hedging slightly later,
///   never earlier than intended;
/// - the window is a ring of `slices` time slices (see [`SlidingWindow`] for the exact span);
/// - memory is fixed: `slices + 1` rows of [`LATENCY_BUCKETS`](Self::BUCKETS) `u64`s
///   (≈ 3 KiB each), allocated once. `record` is amortised O(1); `percentile` scans the
///   buckets once, O(384), without allocating.
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    /// Counter `LATENCY_BUCKETS` is the sample count.
    ring: Ring<{ LATENCY_BUCKETS + 1 }>,
}

impl LatencyWindow {
    /// Number of histogram buckets (384).
    pub const BUCKETS: usize = LATENCY_BUCKETS;

    /// E.g. `LatencyWindow::new(Duration::from_secs(10), 5)`: the last 8–10 s in 2 s slices.
    pub fn new(window: Duration, slices: usize) -> Self {
        LatencyWindow {
            ring: Ring::new(window, slices),
        }
    }

    /// Records one request's latency, observed at `now`.
    pub fn record(&mut self, latency: Duration, now: Instant) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let s = self.ring.advance(now);
        let b = bucket_of(micros);
        // One advance for both counters: the bucket and the sample count.
        for k in [b, LATENCY_BUCKETS] {
            self.ring.slots[s][k] = self.ring.slots[s][k].saturating_add(1);
            self.ring.total[k] = self.ring.total[k].saturating_add(1);
        }
    }

    /// Samples in the window as of `now` (tower `hedge`'s `min_data_points` guard).
    pub fn count(&mut self, now: Instant) -> u64 {
        self.ring.totals(now)[LATENCY_BUCKETS]
    }

    /// The `p`-th percentile (`p` in `0.0..=100.0`, e.g. `99.0`) of the latencies recorded
    /// in the window, rounded up to its bucket's upper edge; `None` with no samples or a NaN
    /// `p`. Nearest-rank definition: the smallest value with at least `ceil(p% × count)`
    /// samples at or below it (at least one). Takes `&mut self` to retire expired slices.
    pub fn percentile(&mut self, p: f64, now: Instant) -> Option<Duration> {
        if p.is_nan() {
            return None;
        }
        let totals = self.ring.totals(now);
        let count = totals[LATENCY_BUCKETS];
        if count == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0 * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0u64;
        for (b, &c) in totals[..LATENCY_BUCKETS].iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(bucket_upper(b)));
            }
        }
        Some(Duration::from_micros(MAX_MICROS))
    }

    /// Forgets every recorded latency.
    pub fn clear(&mut self) {
        self.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn window_counts_last_buckets_only() {
        let t0 = crate::epoch();
        let mut w = SlidingWindow::new(Duration::from_secs(10), 10);
        assert_eq!(w.sum(t0), 0, "empty before first add");
        w.add(3, t0); // epoch 0
        w.add(2, t0 + S * 5 + S / 2); // epoch 5
        assert_eq!(w.sum(t0 + S * 9), 5);
        // epoch 10 retires epoch 0
        assert_eq!(w.sum(t0 + S * 10), 2);
        assert_eq!(w.sum(t0 + S * 15), 0, "epoch 15 retires epoch 5");
        // a write after a long gap clears everything
        w.add(7, t0 + S * 100);
        assert_eq!(w.sum(t0 + S * 100), 7);
        assert_eq!(w.window(), Duration::from_secs(10));
    }

    #[test]
    fn stale_now_counts_into_newest_bucket() {
        let t0 = crate::epoch();
        let mut w = SlidingWindow::new(Duration::from_secs(10), 10);
        w.add(1, t0);
        w.add(1, t0 + S * 20);
        w.add(1, t0 + S * 3); // older than the newest epoch (20): counted at epoch 20
        assert_eq!(w.sum(t0 + S * 20), 2, "epoch 0 retired, two at epoch 20");
        assert_eq!(w.sum(t0 + S * 29), 2);
        assert_eq!(w.sum(t0 + S * 30), 0);
    }

    #[test]
    fn mutating_and_pure_sums_agree() {
        let t0 = crate::epoch();
        let mut r: Ring<2> = Ring::new(Duration::from_secs(4), 4);
        for i in 0..40u64 {
            let now = t0 + Duration::from_millis(i * 370);
            r.add([i, 1], now);
            let t = now + Duration::from_millis(i * 97 % 5000);
            let pure = r.sum(t);
            let mut c = r.clone();
            assert_eq!(*c.totals(t), pure, "step {i}");
        }
    }

    #[test]
    fn bucket_edges_are_contiguous_and_bounded() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(15), 15);
        assert_eq!(bucket_of(16), 16);
        assert_eq!(bucket_of(MAX_MICROS), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_upper(LATENCY_BUCKETS - 1), MAX_MICROS);
        for b in 0..LATENCY_BUCKETS - 1 {
            let up = bucket_upper(b);
            assert_eq!(bucket_of(up), b);
            assert_eq!(bucket_of(up + 1), b + 1);
        }
        for v in [17u64, 100, 1_000, 50_000, 1_234_567, 99_999_999] {
            let up = bucket_upper(bucket_of(v));
            assert!(up >= v && (up - v) as f64 <= v as f64 / 16.0, "{v} -> {up}");
        }
    }

    #[test]
    fn percentiles_hand_computed() {
        let t0 = crate::epoch();
        let mut l = LatencyWindow::new(Duration::from_secs(10), 5);
        assert_eq!(l.percentile(50.0, t0), None);
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms), t0);
        }
        assert_eq!(l.count(t0), 100);
        // p50 = 50 ms = 50_000 µs: msb 15, width 2^11 = 2048 µs, bucket [49_152, 51_199]
        assert_eq!(l.percentile(50.0, t0), Some(Duration::from_micros(51_199)));
        // p99 = 99 ms = 99_000 µs: msb 16, width 4096, bucket [98_304, 102_399]
        assert_eq!(l.percentile(99.0, t0), Some(Duration::from_micros(102_399)));
        // p0 is the smallest sample's bucket: 1000 µs: msb 9, width 32, [992, 1023]
        assert_eq!(l.percentile(0.0, t0), Some(Duration::from_micros(1023)));
        assert_eq!(l.percentile(f64::NAN, t0), None);
        // after the window, all gone
        assert_eq!(l.percentile(50.0, t0 + Duration::from_secs(10)), None);
        assert_eq!(l.count(t0 + Duration::from_secs(10)), 0);
    }

    #[test]
    fn percentile_follows_recent_slices() {
        let t0 = crate::epoch();
        let mut l = LatencyWindow::new(Duration::from_secs(10), 5);
        for _ in 0..100 {
            l.record(Duration::from_micros(10), t0);
        }
        for _ in 0..10 {
            l.record(Duration::from_micros(12), t0 + S * 6);
        }
        assert_eq!(
            l.percentile(50.0, t0 + S * 7),
            Some(Duration::from_micros(10))
        );
        // slice of t0 (epoch 0) retires at epoch 5 = 10 s
        assert_eq!(
            l.percentile(50.0, t0 + S * 10),
            Some(Duration::from_micros(12))
        );
        assert_eq!(l.count(t0 + S * 10), 10);
    }

    #[test]
    fn later_saturates_instead_of_panicking() {
        let t0 = crate::epoch();
        assert!(later(t0, Duration::MAX) > t0);
        assert_eq!(later(t0, S), t0 + S);
    }
}
