//! Slow start for just-ready replicas (Envoy `slow_start_config`, HAProxy `slowstart`) and
//! weighted picks given a random number.

use std::time::{Duration, Instant};

/// Ramps a replica's weight from `min_factor` to 1 over `window` after it became ready,
/// so a freshly restarted replica (cold caches, JIT, connection pools) is not handed a
/// full share at once.
///
/// `factor = max(min_factor, (elapsed / window)^(1 / aggression))`, and 1 from `window`
/// on — Envoy's formula. Defaults: 10 s window (Envoy and HAProxy have no default; bulwark
/// replicas restart in about a second, so 10 s covers warm-up without starving them),
/// `min_factor` 0.1 (Envoy `min_weight_percent` 10 %), `aggression` 1.0 (Envoy: linear).
///
/// Invariant: `factor` is in `[min_factor, 1]`, non-decreasing in `now`, and exactly 1
/// once `window` has passed (or with a zero window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// How long after becoming ready a replica takes to reach its full weight.
    pub window: Duration,
    /// The share of its weight a replica gets at the moment it becomes ready.
    pub min_factor: f64,
    /// The curve of the ramp: 1 is linear, higher values give weight sooner.
    pub aggression: f64,
}

impl Default for SlowStart {
    fn default() -> Self {
        SlowStart {
            window: Duration::from_secs(10),
            min_factor: 0.1,
            aggression: 1.0,
        }
    }
}

impl SlowStart {
    /// Weight multiplier for a replica ready since `ready_since`.
    pub fn factor(&self, ready_since: Instant, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(ready_since);
        if elapsed >= self.window {
            return 1.0;
        }
        let min = if self.min_factor.is_finite() {
            self.min_factor.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let aggression = if self.aggression.is_finite() && self.aggression > 0.0 {
            self.aggression
        } else {
            1.0
        };
        let time = elapsed.as_secs_f64() / self.window.as_secs_f64();
        time.powf(1.0 / aggression).clamp(min, 1.0)
    }
}

/// Maps a random `u64` to `[0, 1)` with 53 bits of precision.
fn unit(r: u64) -> f64 {
    (r >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Picks an index in `0..n` with probability proportional to `weight(i)`, given a uniform
/// random `r`. Weights that are zero, negative or NaN never win; `None` if all are such.
/// O(n), two passes, no allocation: for choosing among a handful of replicas with
/// per-request weights (`weight × slow-start factor`). For a fixed table use
/// [`WeightedPick`].
pub fn pick_weighted(n: usize, weight: impl Fn(usize) -> f64, r: u64) -> Option<usize> {
    let w = |i| {
        let x = weight(i);
        if x.is_finite() && x > 0.0 { x } else { 0.0 }
    };
    let total: f64 = (0..n).map(w).sum();
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    let mut target = unit(r) * total;
    let mut last = None;
    for i in 0..n {
        let x = w(i);
        if x > 0.0 {
            if target < x {
                return Some(i);
            }
            target -= x;
            last = Some(i);
        }
    }
    // Rounding left `target` a hair above the last weight.
    last
}

/// A fixed weighted choice with integer weights, e.g. a traffic split between two
/// versions (`[90, 10]`) or static replica weights.
///
/// Invariant: `cumulative` is strictly increasing over the indices with non-zero weight;
/// index `i` wins for exactly `weight[i]` of every `total` equally likely values of
/// `r × total / 2^64` (multiply-shift, bias below `total / 2^64`). Built once (allocates),
/// picks are O(log n) and allocation-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedPick {
    /// `(cumulative weight up to and including i, i)` for non-zero weights.
    cumulative: Vec<(u64, usize)>,
    total: u64,
}

impl WeightedPick {
    /// Prepares picks over `weights`, one per index; zero weights are never picked.
    pub fn new(weights: &[u32]) -> Self {
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .enumerate()
            .filter(|&(_, &w)| w > 0)
            .map(|(i, &w)| {
                total += u64::from(w);
                (total, i)
            })
            .collect();
        WeightedPick { cumulative, total }
    }

    /// The chosen index for a uniform random `r`; `None` if every weight is zero.
    pub fn pick(&self, r: u64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let target = ((u128::from(r) * u128::from(self.total)) >> 64) as u64;
        let at = self.cumulative.partition_point(|&(c, _)| c <= target);
        self.cumulative.get(at).map(|&(_, i)| i)
    }

    /// The sum of all weights.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn linear_ramp_with_floor() {
        let t0 = crate::epoch();
        let s = SlowStart::default();
        assert_eq!(s.factor(t0, t0), 0.1);
        assert_eq!(s.factor(t0, t0 + S / 2), 0.1, "5 % is below the floor");
        assert!((s.factor(t0, t0 + 5 * S) - 0.5).abs() < 1e-12);
        assert_eq!(s.factor(t0, t0 + 10 * S), 1.0);
        assert_eq!(s.factor(t0, t0 + 100 * S), 1.0);
        assert_eq!(s.factor(t0 + S, t0), 0.1, "ready in the future: floor");
        let aggressive = SlowStart {
            aggression: 2.0,
            ..Default::default()
        };
        // (0.25)^(1/2) = 0.5
        assert!((aggressive.factor(t0, t0 + S * 5 / 2) - 0.5).abs() < 1e-12);
        let off = SlowStart {
            window: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(off.factor(t0, t0), 1.0);
    }

    #[test]
    fn pick_weighted_follows_weights() {
        let weights = [0.0, 1.0, f64::NAN, 3.0, -2.0];
        assert_eq!(pick_weighted(5, |i| weights[i], 0), Some(1));
        assert_eq!(pick_weighted(5, |i| weights[i], u64::MAX), Some(3));
        // r at 1/4 of the range is exactly the boundary: index 3 begins there
        assert_eq!(pick_weighted(5, |i| weights[i], 1 << 62), Some(3));
        assert_eq!(
            pick_weighted(5, |i| weights[i], (1 << 62) - (1 << 11)),
            Some(1)
        );
        assert_eq!(pick_weighted(2, |_| 0.0, 7), None);
        assert_eq!(pick_weighted(0, |_| 1.0, 7), None);
        let mut counts = [0u32; 5];
        for k in 0..4000u64 {
            let r = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            counts[pick_weighted(5, |i| weights[i], r).unwrap()] += 1;
        }
        assert_eq!(counts[0] + counts[2] + counts[4], 0);
        assert!((950..=1050).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn weighted_table_splits_exactly() {
        let split = WeightedPick::new(&[90, 0, 10]);
        assert_eq!(split.total(), 100);
        assert_eq!(split.pick(0), Some(0));
        assert_eq!(split.pick(u64::MAX), Some(2));
        // exactly 90 of 100 evenly spaced r values go to index 0
        let n = (0..100u64)
            .filter(|&k| split.pick((u128::from(k) << 64).div_ceil(100) as u64) == Some(0))
            .count();
        assert_eq!(n, 90);
        assert_eq!(WeightedPick::new(&[0, 0]).pick(5), None);
        assert_eq!(WeightedPick::new(&[]).pick(5), None);
    }
}
