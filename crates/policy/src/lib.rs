//! Pure resilience mechanisms. Every timing decision takes `now` (and any randomness) as an
//! argument, so each one is tested without sleeping.
//!
//! Architecture invariant: this crate reads no clock, draws no random number, spawns no
//! task and does no I/O. Hot-path methods do not allocate, run in O(1) or O(log n) and
//! keep fixed memory, so the proxy can hold one instance per replica or service behind a
//! `std::sync::Mutex` with short critical sections.
//!
//! - supervisor: [`Backoff`], [`CrashLoop`], [`Threshold`], [`Watchdog`] (pushed liveness);
//! - balancing: [`PeakEwma`] (P2C load), [`P2c`] (the comparison), [`HashRing`] (affinity), [`SlowStart`],
//!   [`pick_weighted`], [`WeightedPick`];
//! - failure handling: [`OutlierDetector`], [`CircuitBreaker`], [`RetryBudget`],
//!   [`LatencyWindow`] (hedging), [`ConcurrencyLimit`] (bulkheads);
//! - rate limits: [`TokenBucket`], [`KeyedBuckets`];
//! - external authorization: [`decide_auth`] (an [`AuthReply`] and [`OnError`] to an
//!   [`AuthDecision`]: fail open or fail closed);
//! - backups: [`retain`], restic's `forget` keep policy ([`Keep`], [`Candidate`],
//!   [`Decision`], [`Reason`]), whose calendar arithmetic is jiff's;
//! - chaos experiments ([`chaos`]): targets, the monkey's clock, abort streaks;
//! - rollouts ([`rollout`]): the rolling update's next step, the analysis verdict;
//! - remediation ([`remedy`]): a rule's guards (concurrency, cooldown, rate limit,
//!   back-off) and the global action budget;
//! - slow failures ([`trend`]): a robust trend and when it reaches a limit, the drift of a
//!   signal from its baseline;
//! - autoscaling ([`autoscale`]): Kubernetes HPA-style replica counts, with a cover for
//!   failed replicas;
//! - stateful services ([`leader`]): who leads, when the leader is deposed;
//! - cluster scheduling ([`placement`]): which node runs each replica (constraints,
//!   anti-affinity, capacity, spread), stable under node loss and node joins;
//! - cross-node balancing ([`locality`]): this node's replicas first (`prefer_local`);
//! - building block: [`SlidingWindow`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
pub mod autoscale;
mod backoff;
mod breaker;
mod bucket;
mod buckets;
mod budget;
pub mod chaos;
mod ewma;
mod hash;
pub mod leader;
mod limit;
pub mod locality;
mod outlier;
mod p2c;
pub mod placement;
pub mod remedy;
mod retention;
pub mod rollout;
mod slowstart;
mod threshold;
pub mod trend;
pub mod warm;
mod watchdog;
mod window;

pub use auth::{AuthDecision, AuthReply, OnError, decide as decide_auth};
pub use backoff::{Backoff, CrashLoop, RestartDecision};
pub use breaker::{
    BreakerConfig, BreakerEvent, BreakerState, CircuitBreaker, FailureRatio, Permit, Rejected,
};
pub use bucket::{KeyedBuckets, TokenBucket};
pub use buckets::{LATENCY_BUCKETS, latency_bucket, latency_bucket_top, latency_percentile};
pub use budget::{BudgetConfig, RetryBudget};
pub use ewma::{EwmaConfig, PeakEwma};
pub use hash::{BuildStableHasher, HashRing, StableHasher, hash_bytes, hash_key, mix64};
pub use limit::{Admit, ConcurrencyLimit};
pub use outlier::{
    EjectReason, Outcome, OutlierConfig, OutlierDetector, OutlierEvent, OutlierState, ReplicaId,
};
pub use p2c::{Contender, P2c, Side};
pub use retention::{Candidate, Decision, Keep, Reason, retain};
pub use slowstart::{SlowStart, WeightedPick, pick_weighted};
pub use threshold::{Threshold, Transition};
pub use watchdog::Watchdog;
pub use window::{LatencyWindow, SlidingWindow};

/// The base `Instant` of every unit test here: the one clock read in this crate (there is no
/// other way to make an `Instant`); a test's times are this base plus offsets.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the proxy shares between tasks must be `Send + Sync` (behind a `Mutex`).
    #[test]
    fn shareable() {
        fn check<T: Send + Sync + 'static>() {}
        check::<PeakEwma>();
        check::<OutlierDetector>();
        check::<CircuitBreaker>();
        check::<RetryBudget>();
        check::<TokenBucket>();
        check::<KeyedBuckets<std::net::IpAddr>>();
        check::<KeyedBuckets<u64, std::hash::RandomState>>();
        check::<SlidingWindow>();
        check::<LatencyWindow>();
        check::<HashRing<u32>>();
        check::<HashRing<ReplicaId>>();
        check::<SlowStart>();
        check::<P2c>();
        check::<WeightedPick>();
        check::<ConcurrencyLimit>();
        check::<remedy::RuleState>();
        check::<remedy::ActionBudget>();
        check::<trend::Drift>();
        check::<autoscale::Autoscaler>();
    }
}
