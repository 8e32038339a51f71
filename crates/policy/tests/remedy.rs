//! Properties of a remediation rule's guards: whatever the sequence of waits, actions and
//! alerts clearing, the rate limit, back-off, concurrency and cooldown hold; the rule is
//! held back only when one of them says so; and the global budget never grants more than
//! its burst plus its rate.

// The one clock read per case gives the base `Instant` (there is no other way to make one).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use policy::remedy::{ActionBudget, Guard, RuleGuards, RuleState};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Wait(u64),
    Start,
    Finish,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..8000).prop_map(Op::Wait),
        4 => Just(Op::Start),
        2 => Just(Op::Finish),
        1 => Just(Op::Clear),
    ]
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn guards() -> impl Strategy<Value = RuleGuards> {
    (
        1u32..5,
        0u64..20_000,
        0u64..4000,
        0u64..30_000,
        0u64..5000,
        0u32..4,
    )
        .prop_map(
            |(limit, per, backoff, backoff_max, cooldown, max_concurrent)| RuleGuards {
                limit,
                per: ms(per),
                backoff: ms(backoff),
                backoff_max: ms(backoff_max),
                cooldown: ms(cooldown),
                max_concurrent,
            },
        )
}

/// The wait the n-th start of a streak (n ≥ 2) owes the previous one, from the definition.
fn owed(g: &RuleGuards, n: u32) -> Duration {
    if g.backoff.is_zero() || n < 2 {
        return Duration::ZERO;
    }
    let factor = 2u64
        .checked_pow(n - 2)
        .unwrap_or(u64::MAX)
        .min(u64::from(u32::MAX)) as u32;
    g.backoff.saturating_mul(factor).min(g.backoff_max)
}

/// Everything that happened, kept in full (the state under test keeps only what it needs).
#[derive(Default)]
struct History {
    /// Each start with its position in its streak (1 for the first after a clear) and the
    /// last finish before it.
    starts: Vec<(Instant, u32, Option<Instant>)>,
    finishes: Vec<Instant>,
    running: u32,
    streak: u32,
}

impl History {
    /// Whether the guards' definitions allow a start at `now`.
    fn allows(&self, g: &RuleGuards, now: Instant) -> bool {
        let limit = g.limit as usize;
        let n = self.starts.len();
        self.running < g.max_concurrent
            && self.finishes.last().is_none_or(|&f| now >= f + g.cooldown)
            && (n < limit || now >= self.starts[n - limit].0 + g.per)
            && self
                .starts
                .last()
                .is_none_or(|&(t, _, _)| now >= t + owed(g, self.streak + 1))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_rule_acts_only_within_its_guards(
        g in guards(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut rule = RuleState::new();
        let mut h = History::default();
        for op in &ops {
            match op {
                Op::Wait(n) => now += ms(*n),
                Op::Start => {
                    let verdict = rule.check(&g, now);
                    prop_assert_eq!(verdict.is_ok(), h.allows(&g, now),
                        "check {:?} at +{:?}", verdict, now - t0);
                    match verdict {
                        Ok(()) => {
                            rule.started(&g, now);
                            h.streak += 1;
                            h.running += 1;
                            h.starts.push((now, h.streak, h.finishes.last().copied()));
                        }
                        Err(Guard::Cooldown { until } | Guard::RateLimit { until }
                            | Guard::Backoff { until }) => prop_assert!(until > now),
                        Err(Guard::MaxConcurrent { running, max }) => {
                            prop_assert_eq!((running, max), (h.running, g.max_concurrent));
                        }
                        Err(other) => prop_assert!(false, "a rule alone never says {:?}", other),
                    }
                }
                Op::Finish => {
                    if h.running > 0 {
                        rule.finished(now);
                        h.running -= 1;
                        h.finishes.push(now);
                    }
                }
                Op::Clear => {
                    rule.cleared();
                    h.streak = 0;
                }
            }
            // (c) never more running than allowed
            prop_assert!(rule.running() == h.running && h.running <= g.max_concurrent);
        }
        let limit = g.limit as usize;
        for (i, &(t, n, finish)) in h.starts.iter().enumerate() {
            // (a) no window of length `per` holds more than `limit` starts
            if let Some(&(later, _, _)) = h.starts.get(i + limit) {
                prop_assert!(later - t >= g.per, "{} starts within {:?}", limit + 1, later - t);
            }
            // (b) a streak's starts are spaced by the back-off of their position
            if n >= 2 {
                let prev = h.starts[i - 1].0;
                prop_assert!(t - prev >= owed(&g, n), "start {} of a streak {:?} after the previous", n, t - prev);
            }
            // (d) no start within the cooldown of a finish
            if let Some(f) = finish {
                prop_assert!(t - f >= g.cooldown, "a start {:?} after a finish", t - f);
            }
        }
    }

    #[test]
    fn the_global_budget_grants_at_most_burst_plus_rate(
        per_hour in 0.5f64..7200.0,
        burst in 0u32..10,
        ops in prop::collection::vec(prop::option::of(0u64..600), 1..300),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut budget = ActionBudget::new(per_hour, burst);
        let mut first = None;
        let mut granted = 0u32;
        for op in ops {
            match op {
                // a wait, in seconds
                Some(s) => now += Duration::from_secs(s),
                None => {
                    let remaining = budget.remaining(now);
                    let taken = budget.try_take(now);
                    prop_assert_eq!(taken.is_ok(), remaining > 0);
                    if let Err(g) = taken {
                        let waits = matches!(g, Guard::GlobalBudget { retry_in } if retry_in > Duration::ZERO);
                        prop_assert!(waits, "refused with {:?}", g);
                        continue;
                    }
                    granted += 1;
                    let since = now - *first.get_or_insert(now);
                    // (e) grants ≤ burst + rate × elapsed
                    let bound = f64::from(burst.max(1)) + per_hour / 3600.0 * since.as_secs_f64();
                    prop_assert!(f64::from(granted) <= bound + 1e-9,
                        "{} granted in {:?}, bound {}", granted, since, bound);
                }
            }
        }
    }
}
