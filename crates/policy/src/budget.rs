//! Retry budget (tower `TpsBudget`, linkerd2-proxy's retry budget).

use std::time::{Duration, Instant};

use crate::window::Ring;

/// tower / linkerd2-proxy defaults: retries may add 20 % to the request load, plus 10
/// retries per second regardless, counted over the last 10 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long a deposit (or withdrawal) counts (10 s; tower allows 1–60 s).
    pub ttl: Duration,
    /// Retries per second allowed with no deposits at all (10), so that low-traffic
    /// services can still retry: a reserve of `min_per_sec × ttl` per window.
    pub min_per_sec: u32,
    /// Retries allowed per original request (0.2 = 20 %), resolved to 1/1000.
    pub retry_ratio: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

/// Limits retries to a share of recent requests so retries cannot amplify an overload.
///
/// Invariant (integer, exact): a [`withdraw`](Self::withdraw) succeeds only if afterwards,
/// over the live window (tower: `ttl` in 10 buckets),
/// `withdrawals × 1000 ≤ deposits × ratio‰ + min_per_sec × ttl × 1000`.
/// Consequently for every granted retry at time `t`, the retries granted in
/// `(t − ttl + ttl/10, t]` are at most `ratio × deposits in (t − ttl, t] + min_per_sec × ttl`
/// (property-tested). Unlike tower, withdrawals and deposits are kept apart rather than
/// netted, so an old deposit expiring can never retroactively make the window overdrawn.
///
/// Memory fixed (10 buckets × 2 counters); calls amortised O(1), allocation-free.
/// One per service (or route) behind a `Mutex`.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    /// `[deposits, withdrawals]`.
    ring: Ring<2>,
    credit_milli: u64,
    reserve_milli: u64,
    exhausted: u64,
}

impl RetryBudget {
    /// A budget with nothing deposited yet: until requests deposit, only the
    /// `min_per_sec` reserve can be withdrawn.
    pub fn new(config: BudgetConfig) -> Self {
        let ratio = if config.retry_ratio.is_finite() {
            config.retry_ratio.max(0.0)
        } else {
            0.0
        };
        let reserve = (f64::from(config.min_per_sec) * config.ttl.as_secs_f64()).floor();
        RetryBudget {
            ring: Ring::new(config.ttl, 10),
            credit_milli: (ratio * 1000.0).round() as u64,
            reserve_milli: (reserve * 1000.0) as u64,
            exhausted: 0,
        }
    }

    /// One original (non-retry) request was sent.
    pub fn deposit(&mut self, now: Instant) {
        self.ring.add([1, 0], now);
    }

    /// May one retry be sent? Counts it if so, and counts an exhaustion if not.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        let [deposits, withdrawals] = *self.ring.totals(now);
        if self.allows(deposits, withdrawals + 1) {
            self.ring.add([0, 1], now);
            true
        } else {
            self.exhausted += 1;
            false
        }
    }

    fn allows(&self, deposits: u64, withdrawals: u64) -> bool {
        withdrawals.saturating_mul(1000)
            <= deposits
                .saturating_mul(self.credit_milli)
                .saturating_add(self.reserve_milli)
    }

    /// Retries that could be withdrawn right now.
    pub fn available(&self, now: Instant) -> u64 {
        let [deposits, withdrawals] = self.ring.sum(now);
        let credit = deposits
            .saturating_mul(self.credit_milli)
            .saturating_add(self.reserve_milli)
            / 1000;
        credit.saturating_sub(withdrawals)
    }

    /// Retries refused so far (never reset; export as a counter).
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn reserve_alone_allows_ten_per_second_over_the_window() {
        let t0 = crate::epoch();
        let mut b = RetryBudget::new(BudgetConfig::default());
        assert_eq!(b.available(t0), 100);
        let granted = (0..150).filter(|_| b.withdraw(t0)).count();
        assert_eq!(granted, 100);
        assert_eq!(b.exhausted(), 50);
        assert!(!b.withdraw(t0 + 9999 * MS));
        // 10 s later the withdrawals expired
        assert!(b.withdraw(t0 + 10_000 * MS));
    }

    #[test]
    fn deposits_add_twenty_percent() {
        let t0 = crate::epoch();
        let mut b = RetryBudget::new(BudgetConfig {
            min_per_sec: 0,
            ..Default::default()
        });
        assert!(!b.withdraw(t0));
        for _ in 0..4 {
            b.deposit(t0);
        }
        assert!(!b.withdraw(t0), "4 × 0.2 < 1");
        b.deposit(t0);
        assert!(b.withdraw(t0), "5 × 0.2 = 1");
        assert!(!b.withdraw(t0));
        for _ in 0..50 {
            b.deposit(t0);
        }
        assert_eq!(b.available(t0), 10);
        assert_eq!((0..20).filter(|_| b.withdraw(t0)).count(), 10);
        assert_eq!(b.exhausted(), 13);
    }

    #[test]
    fn expired_deposits_stop_funding_retries() {
        let t0 = crate::epoch();
        let mut b = RetryBudget::new(BudgetConfig {
            min_per_sec: 0,
            ..Default::default()
        });
        for _ in 0..100 {
            b.deposit(t0);
        }
        assert_eq!(b.available(t0 + 9 * 1000 * MS), 20);
        assert_eq!(b.available(t0 + 10_000 * MS), 0);
        assert!(!b.withdraw(t0 + 10_000 * MS));
    }
}
