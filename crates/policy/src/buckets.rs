//! Log-scale latency buckets: powers of 2^(1/4) microseconds from 1 µs, ~19 % wide, up to
//! ~4.6 h in [`LATENCY_BUCKETS`]. Fixed memory, O(1) to count into; shared by the chaos
//! probes (per second) and the rollout analysis (per revision).

use std::time::Duration;

/// Buckets in a latency histogram.
pub const LATENCY_BUCKETS: usize = 96;

/// The bucket that counts `d`.
pub fn latency_bucket(d: Duration) -> usize {
    let us = d.as_micros().max(1) as f64;
    ((us.log2() * 4.0) as usize).min(LATENCY_BUCKETS - 1)
}

/// The upper edge of bucket `i`.
pub fn latency_bucket_top(i: usize) -> Duration {
    Duration::from_secs_f64(2f64.powf((i + 1) as f64 / 4.0) / 1e6)
}

/// The `percentile` (0-100] of a histogram, as its bucket's upper edge (at most ~19 %
/// high); `None` when it is empty.
pub fn latency_percentile(counts: &[u64], percentile: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((percentile / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    counts
        .iter()
        .position(|&c| {
            seen += c;
            seen >= rank
        })
        .map(latency_bucket_top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentile_is_an_upper_bound_within_a_bucket() {
        let mut counts = [0u64; LATENCY_BUCKETS];
        for ms in 1..=100u64 {
            counts[latency_bucket(Duration::from_millis(ms))] += 1;
        }
        let p99 = latency_percentile(&counts, 99.0).unwrap();
        assert!(
            p99 >= Duration::from_millis(99) && p99 < Duration::from_millis(120),
            "{p99:?}"
        );
        assert_eq!(latency_percentile(&[0; LATENCY_BUCKETS], 50.0), None);
        assert_eq!(
            latency_bucket(Duration::from_secs(1_000_000)),
            LATENCY_BUCKETS - 1
        );
    }
}
