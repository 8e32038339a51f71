//! The comparison of power-of-two-choices balancing: of two replicas drawn at random,
//! which one gets the request.

use std::time::Duration;

/// How two contenders are compared. Defaults: costs within 15 % tie, a replica idle for
/// 1 s is probed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct P2c {
    /// Costs whose difference is at most this fraction of the larger count as a tie.
    ///
    /// Why a band: with a strict `<`, two replicas whose estimates differ by noise are not
    /// a coin toss but a ranking: at low concurrency (no in-flight requests to tell them
    /// apart) the one with the marginally lower estimate wins every comparison it is in,
    /// which with three replicas is two thirds of the traffic.
    pub tolerance: f64,
    /// A replica with no sample for this long and nothing in flight wins its next
    /// comparison, so one that lost for a while is measured again rather than judged on a
    /// stale estimate.
    pub stale_after: Duration,
}

impl Default for P2c {
    fn default() -> Self {
        P2c {
            tolerance: 0.15,
            stale_after: Duration::from_secs(1),
        }
    }
}

/// One side of a comparison, as the proxy sees it at the moment of the pick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contender {
    /// Load: peak-EWMA estimate × (in-flight + 1) ([`PeakEwma::cost`]); lower is better.
    ///
    /// [`PeakEwma::cost`]: crate::PeakEwma::cost
    pub cost: f64,
    /// Requests outstanding on the replica.
    pub inflight: usize,
    /// Time since the replica's last latency sample ([`PeakEwma::idle`]).
    ///
    /// [`PeakEwma::idle`]: crate::PeakEwma::idle
    pub idle: Duration,
    /// Slow-start factor in `[0, 1]` ([`SlowStart::factor`]; 1 when warm or when slow
    /// start is off): the probability that the replica takes part in a comparison at all.
    ///
    /// [`SlowStart::factor`]: crate::SlowStart::factor
    pub warmth: f64,
}

/// The winner of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first contender.
    First,
    /// The second contender.
    Second,
}

const BITS: u32 = 21;
const MASK: u64 = (1 << BITS) - 1;

/// `warmth` as a threshold on a `BITS`-bit draw; NaN counts as warm.
fn takes_part(warmth: f64, draw: u64) -> bool {
    let w = if warmth.is_nan() {
        1.0
    } else {
        warmth.clamp(0.0, 1.0)
    };
    (draw as f64) < w * (1u64 << BITS) as f64
}

impl P2c {
    /// Which of `a` and `b` gets the request, given a uniform random `r`. In order:
    ///
    /// 1. slow start: each contender takes part with probability `warmth` (Envoy's slow
    ///    start scales a weight; P2C has none, so the factor becomes a chance of being
    ///    considered, which gives a warming replica about `warmth` of a full share); if
    ///    exactly one takes part, it wins;
    /// 2. staleness: if exactly one is stale (idle for `stale_after`, nothing in flight),
    ///    it wins;
    /// 3. cost: the lower wins, unless the two are within `tolerance`; then the one with
    ///    fewer requests in flight, then a coin toss.
    ///
    /// Symmetric: swapping `a` and `b` (and flipping the coin) swaps the answer. `r`'s
    /// bits are split into independent draws (21 bits for each slow-start draw, the top
    /// bit for the coin).
    pub fn choose(&self, a: &Contender, b: &Contender, r: u64) -> Side {
        let (in_a, in_b) = (
            takes_part(a.warmth, r & MASK),
            takes_part(b.warmth, (r >> BITS) & MASK),
        );
        if in_a != in_b {
            return if in_a { Side::First } else { Side::Second };
        }
        let stale = |c: &Contender| c.inflight == 0 && c.idle >= self.stale_after;
        if stale(a) != stale(b) {
            return if stale(a) { Side::First } else { Side::Second };
        }
        // NaN costs sort as the largest (never preferred over a number).
        let cost = |c: &Contender| {
            if c.cost.is_nan() {
                f64::INFINITY
            } else {
                c.cost
            }
        };
        let (ca, cb) = (cost(a), cost(b));
        let hi = ca.max(cb);
        let tie = ca == cb || (hi.is_finite() && hi - ca.min(cb) <= self.tolerance * hi);
        if !tie {
            return if ca < cb { Side::First } else { Side::Second };
        }
        match a.inflight.cmp(&b.inflight) {
            std::cmp::Ordering::Less => Side::First,
            std::cmp::Ordering::Greater => Side::Second,
            std::cmp::Ordering::Equal if r >> 63 == 0 => Side::First,
            std::cmp::Ordering::Equal => Side::Second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cost: f64, inflight: usize) -> Contender {
        Contender {
            cost,
            inflight,
            idle: Duration::ZERO,
            warmth: 1.0,
        }
    }

    const HEADS: u64 = 0;
    const TAILS: u64 = 1 << 63;

    #[test]
    fn lower_cost_wins_outside_the_band() {
        let p = P2c::default();
        assert_eq!(p.choose(&c(1.0, 0), &c(1.2, 0), TAILS), Side::First);
        assert_eq!(p.choose(&c(1.2, 0), &c(1.0, 0), HEADS), Side::Second);
        assert_eq!(p.choose(&c(f64::NAN, 0), &c(1.0, 0), HEADS), Side::Second);
    }

    #[test]
    fn near_ties_go_to_fewer_inflight_then_the_coin() {
        let p = P2c::default();
        assert_eq!(p.choose(&c(1.0, 0), &c(1.1, 0), HEADS), Side::First);
        assert_eq!(p.choose(&c(1.0, 0), &c(1.1, 0), TAILS), Side::Second);
        assert_eq!(p.choose(&c(2.0, 1), &c(1.9, 0), HEADS), Side::Second);
        assert_eq!(p.choose(&c(0.0, 0), &c(0.0, 0), TAILS), Side::Second);
    }

    #[test]
    fn a_stale_idle_replica_wins_its_next_comparison() {
        let p = P2c::default();
        let slow = |idle_ms, inflight| Contender {
            idle: Duration::from_millis(idle_ms),
            ..c(10.0, inflight)
        };
        assert_eq!(p.choose(&slow(1000, 0), &c(1.0, 0), TAILS), Side::First);
        assert_eq!(p.choose(&c(1.0, 0), &slow(1000, 0), HEADS), Side::Second);
        assert_eq!(p.choose(&slow(999, 0), &c(1.0, 0), HEADS), Side::Second);
        // one probe at a time: a stale replica with a request out is judged on its cost
        assert_eq!(p.choose(&slow(5000, 1), &c(1.0, 0), HEADS), Side::Second);
        // both stale: back to the costs
        let idle = Contender {
            idle: Duration::from_secs(3),
            ..c(1.0, 0)
        };
        assert_eq!(p.choose(&slow(1000, 0), &idle, HEADS), Side::Second);
    }

    #[test]
    fn slow_start_is_a_chance_to_take_part() {
        let p = P2c::default();
        let cold = Contender {
            warmth: 0.25,
            ..c(0.1, 0)
        };
        // draws below a quarter of the 21-bit range let it take part (and its cost wins)
        assert_eq!(p.choose(&cold, &c(1.0, 0), 0), Side::First);
        assert_eq!(p.choose(&cold, &c(1.0, 0), MASK / 4 + 1), Side::Second);
        assert_eq!(
            p.choose(&c(1.0, 0), &cold, (MASK / 4 + 1) << BITS),
            Side::First
        );
        let wins = (0..4096u64)
            .filter(|&k| p.choose(&cold, &c(1.0, 0), crate::mix64(k)) == Side::First)
            .count();
        assert!((900..=1150).contains(&wins), "{wins} of 4096");
        // warmth 0 never takes part unless the other one does not either
        let off = Contender {
            warmth: 0.0,
            ..cold
        };
        assert_eq!(p.choose(&off, &c(1.0, 0), 0), Side::Second);
        assert_eq!(p.choose(&off, &off, TAILS), Side::Second);
    }
}
