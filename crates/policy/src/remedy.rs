//! The guards of an automated remediation rule: what keeps a rule that restarts, scales or
//! drains from acting too often, too soon after its last action, or too many times at once.
//!
//! A rule's caller asks [`RuleState::check`] first, then the shared [`ActionBudget`] (so a
//! rule held by its own guards does not spend the global budget), then records the action
//! with [`RuleState::started`] and, when it ends, [`RuleState::finished`]. When the alert
//! that triggered the rule resolves, [`RuleState::cleared`] resets its back-off.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::bucket::TokenBucket;
use crate::window::later;

/// The limits of one rule, as configured. The caller validates them: `limit` is at least 1
/// (0 is taken as 1 here rather than panicking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleGuards {
    /// Starts allowed in any window of length `per`.
    pub limit: u32,
    /// The rate limit's window.
    pub per: Duration,
    /// The least time between the first and second start of a streak (starts with no
    /// [`RuleState::cleared`] between them), doubling for each further start; `ZERO`
    /// disables back-off.
    pub backoff: Duration,
    /// The back-off's cap (a cap below `backoff` shortens every wait to it).
    pub backoff_max: Duration,
    /// Quiet time after an action finishes before the next may start.
    pub cooldown: Duration,
    /// Actions of this rule running at once (0: none may start).
    pub max_concurrent: u32,
}

/// Why an action was held back, with when it may act again where that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// As many actions of the rule run as it allows; it may act when one finishes.
    MaxConcurrent {
        /// Actions running.
        running: u32,
        /// The rule's `max_concurrent`.
        max: u32,
    },
    /// The last action finished less than `cooldown` ago.
    Cooldown {
        /// When the cooldown ends.
        until: Instant,
    },
    /// `limit` actions already started in the last `per`.
    RateLimit {
        /// When the oldest of them leaves the window.
        until: Instant,
    },
    /// The exponential back-off between consecutive actions while the trigger persists.
    Backoff {
        /// When the back-off ends.
        until: Instant,
    },
    /// The global action budget is spent.
    GlobalBudget {
        /// When the next token is available.
        retry_in: Duration,
    },
}

impl Guard {
    /// A stable name for logs, events and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Guard::MaxConcurrent { .. } => "max-concurrent",
            Guard::Cooldown { .. } => "cooldown",
            Guard::RateLimit { .. } => "rate-limit",
            Guard::Backoff { .. } => "backoff",
            Guard::GlobalBudget { .. } => "global-budget",
        }
    }
}

/// What one rule remembers of its actions.
///
/// Invariants: `starts` holds the last `limit` starts at most, oldest first (the rate limit
/// needs no more: the oldest of them is the one that must leave the window); `consecutive`
/// counts starts since the last [`cleared`](Self::cleared). Every instant computed from a
/// duration saturates far in the future instead of overflowing, so absurd durations
/// (`Duration::MAX`) hold the rule back rather than panic.
///
/// If `limit` is raised between calls, the starts forgotten under the old limit do not
/// count: the rule may act up to the new limit at once.
#[derive(Debug, Clone, Default)]
pub struct RuleState {
    starts: VecDeque<Instant>,
    last_start: Option<Instant>,
    consecutive: u32,
    running: u32,
    last_finish: Option<Instant>,
}

impl RuleState {
    /// A rule that never acted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the rule may start an action at `now`, or the first guard that holds it,
    /// checked in this order: max-concurrent, cooldown, rate-limit, backoff.
    pub fn check(&self, g: &RuleGuards, now: Instant) -> Result<(), Guard> {
        if self.running >= g.max_concurrent {
            return Err(Guard::MaxConcurrent {
                running: self.running,
                max: g.max_concurrent,
            });
        }
        if let Some(finish) = self.last_finish {
            let until = later(finish, g.cooldown);
            if now < until {
                return Err(Guard::Cooldown { until });
            }
        }
        let limit = limit(g);
        if self.starts.len() >= limit {
            // The window is half-open: a start exactly `per` after the oldest is allowed.
            let until = later(self.starts[self.starts.len() - limit], g.per);
            if now < until {
                return Err(Guard::RateLimit { until });
            }
        }
        if let (Some(last), Some(wait)) = (self.last_start, self.backoff(g)) {
            let until = later(last, wait);
            if now < until {
                return Err(Guard::Backoff { until });
            }
        }
        Ok(())
    }

    /// An action began at `now`: it counts toward the rate limit, runs, and extends the
    /// streak the back-off grows with. Recorded even if [`check`](Self::check) refused.
    pub fn started(&mut self, g: &RuleGuards, now: Instant) {
        let limit = limit(g);
        while self.starts.len() >= limit {
            self.starts.pop_front();
        }
        self.starts.push_back(now);
        self.last_start = Some(now);
        self.running = self.running.saturating_add(1);
        self.consecutive = self.consecutive.saturating_add(1);
    }

    /// An action ended at `now` (successfully or not): the cooldown starts.
    pub fn finished(&mut self, now: Instant) {
        self.running = self.running.saturating_sub(1);
        self.last_finish = Some(self.last_finish.map_or(now, |f| f.max(now)));
    }

    /// The trigger cleared (the alert resolved): the back-off starts over. The rate limit
    /// and cooldown still count what already happened.
    pub fn cleared(&mut self) {
        self.consecutive = 0;
    }

    /// Actions running.
    pub fn running(&self) -> u32 {
        self.running
    }

    /// The least time between the last start and the next one: `backoff × 2^(n−2)` for
    /// the n-th start of a streak (n ≥ 2), capped; `None` for the first start of a streak
    /// or when back-off is disabled.
    fn backoff(&self, g: &RuleGuards) -> Option<Duration> {
        if g.backoff.is_zero() || self.consecutive == 0 {
            return None;
        }
        let wait = 1u32
            .checked_shl(self.consecutive - 1)
            .and_then(|factor| g.backoff.checked_mul(factor))
            .unwrap_or(Duration::MAX);
        Some(wait.min(g.backoff_max))
    }
}

fn limit(g: &RuleGuards) -> usize {
    g.limit.max(1) as usize
}

/// The global action budget shared by every rule: a [`TokenBucket`] of `burst` actions
/// refilled at `per_hour`, so a storm of alerts cannot make the runtime act without end.
///
/// Over any span `E` from the first take, grants ≤ `burst + E × per_hour / 3600 s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionBudget {
    bucket: TokenBucket,
}

impl ActionBudget {
    /// `per_hour` actions an hour (`<= 0` or NaN: one a year), up to `burst` at once (at
    /// least 1). Starts full.
    pub fn new(per_hour: f64, burst: u32) -> Self {
        ActionBudget {
            bucket: TokenBucket::new(per_hour / 3600.0, burst),
        }
    }

    /// Spends one action, or says when the next one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Guard> {
        self.bucket
            .try_take(now)
            .map_err(|retry_in| Guard::GlobalBudget { retry_in })
    }

    /// Actions that could be taken at `now`.
    pub fn remaining(&self, now: Instant) -> u32 {
        self.bucket.remaining(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn guards() -> RuleGuards {
        RuleGuards {
            limit: 3,
            per: 60 * S,
            backoff: 10 * S,
            backoff_max: 40 * S,
            cooldown: 5 * S,
            max_concurrent: 1,
        }
    }

    #[test]
    fn guards_in_order() {
        let t0 = crate::epoch();
        let g = guards();
        let mut r = RuleState::new();
        assert_eq!(r.check(&g, t0), Ok(()));
        r.started(&g, t0);
        assert_eq!(
            r.check(&g, t0),
            Err(Guard::MaxConcurrent { running: 1, max: 1 })
        );
        r.finished(t0 + S);
        assert_eq!(r.running(), 0);
        // cooldown (5 s from the finish) before the back-off (10 s from the start)
        assert_eq!(
            r.check(&g, t0 + 2 * S),
            Err(Guard::Cooldown { until: t0 + 6 * S })
        );
        assert_eq!(
            r.check(&g, t0 + 6 * S),
            Err(Guard::Backoff { until: t0 + 10 * S })
        );
        assert_eq!(r.check(&g, t0 + 10 * S), Ok(()));
        r.started(&g, t0 + 10 * S);
        r.finished(t0 + 10 * S);
        // third start: 20 s after the second
        assert_eq!(
            r.check(&g, t0 + 29 * S),
            Err(Guard::Backoff { until: t0 + 30 * S })
        );
        r.started(&g, t0 + 30 * S);
        r.finished(t0 + 30 * S);
        // three starts in 60 s: the rate limit, until the first leaves the window
        assert_eq!(
            r.check(&g, t0 + 40 * S),
            Err(Guard::RateLimit { until: t0 + 60 * S })
        );
        // fourth start: 10 × 2² = 40 s after the third
        assert_eq!(
            r.check(&g, t0 + 60 * S),
            Err(Guard::Backoff { until: t0 + 70 * S })
        );
        assert_eq!(r.check(&g, t0 + 70 * S), Ok(()));
        r.started(&g, t0 + 70 * S);
        r.finished(t0 + 70 * S);
        // fifth: 10 × 2³ = 80 s, capped at 40 s
        assert_eq!(
            r.check(&g, t0 + 100 * S),
            Err(Guard::Backoff {
                until: t0 + 110 * S
            })
        );
        // the trigger cleared: no back-off, only the cooldown and the rate limit remain
        r.cleared();
        assert_eq!(r.check(&g, t0 + 100 * S), Ok(()));
        assert_eq!(r.starts.len(), 3, "bounded by limit");
    }

    #[test]
    fn names() {
        let t = crate::epoch();
        let all = [
            Guard::MaxConcurrent { running: 0, max: 0 },
            Guard::Cooldown { until: t },
            Guard::RateLimit { until: t },
            Guard::Backoff { until: t },
            Guard::GlobalBudget {
                retry_in: Duration::ZERO,
            },
        ];
        let names: Vec<_> = all.iter().map(Guard::name).collect();
        assert_eq!(
            names,
            [
                "max-concurrent",
                "cooldown",
                "rate-limit",
                "backoff",
                "global-budget"
            ]
        );
    }

    #[test]
    fn absurd_durations_and_degenerate_limits_do_not_panic() {
        let t0 = crate::epoch();
        let g = RuleGuards {
            limit: 0,
            per: Duration::MAX,
            backoff: Duration::MAX,
            backoff_max: Duration::MAX,
            cooldown: Duration::MAX,
            max_concurrent: u32::MAX,
        };
        let mut r = RuleState::new();
        assert_eq!(r.check(&g, t0), Ok(()));
        for _ in 0..100 {
            r.started(&g, t0);
        }
        assert!(matches!(r.check(&g, t0 + S), Err(Guard::RateLimit { until }) if until > t0));
        r.finished(t0);
        r.finished(t0);
        assert_eq!(r.running(), 98);
        assert!(matches!(r.check(&g, t0 + S), Err(Guard::Cooldown { .. })));
        let none = RuleGuards {
            max_concurrent: 0,
            ..guards()
        };
        assert!(matches!(
            RuleState::new().check(&none, t0),
            Err(Guard::MaxConcurrent { running: 0, max: 0 })
        ));
        let mut idle = RuleState::new();
        idle.finished(t0);
        assert_eq!(idle.running(), 0, "saturates");
    }

    #[test]
    fn budget_wraps_a_token_bucket() {
        let t0 = crate::epoch();
        let mut b = ActionBudget::new(6.0, 2); // one every 10 minutes
        assert_eq!(b.remaining(t0), 2);
        assert_eq!(b.try_take(t0), Ok(()));
        assert_eq!(b.try_take(t0), Ok(()));
        assert_eq!(
            b.try_take(t0),
            Err(Guard::GlobalBudget { retry_in: 600 * S })
        );
        assert_eq!(b.try_take(t0 + 600 * S), Ok(()));
        assert_eq!(b.remaining(t0 + 600 * S), 0);
    }
}
