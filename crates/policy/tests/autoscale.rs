//! Properties of the autoscaler: always within bounds, no flapping under a steady load,
//! no scale-down within the stabilization window after a scale-up, the rate policies
//! never exceeded, and a load step answered within a bounded number of periods.

// The one clock read per case gives the base `Instant` (there is no other way to make one).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use policy::autoscale::{AutoscaleConfig, Autoscaler, ScalePolicy};
use proptest::prelude::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn policy(max_percent: f64, max_pods: u32) -> impl Strategy<Value = ScalePolicy> {
    (0.0..max_percent, 0..max_pods, 1u64..60).prop_map(|(percent, pods, period)| ScalePolicy {
        percent,
        pods,
        period: secs(period),
    })
}

fn config(min_floor: u32) -> impl Strategy<Value = AutoscaleConfig> {
    (
        min_floor..5,
        0u32..30,
        0.0f64..0.3,
        0u64..60,
        0u64..600,
        policy(300.0, 6),
        policy(100.0, 4),
    )
        .prop_map(
            |(min, span, tolerance, up, down, up_policy, down_policy)| AutoscaleConfig {
                min,
                max: min + span,
                tolerance,
                up_window: secs(up),
                down_window: secs(down),
                up: up_policy,
                down: down_policy,
            },
        )
}

/// Any metric, usable or not.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 0.0f64..1000.0,
        1 => Just(f64::NAN),
        1 => Just(-5.0),
        1 => Just(f64::INFINITY),
    ]
}

/// The count in force at `at` (seconds since the start): after every change up to and
/// including `at`.
fn count_at(initial: u32, changes: &[(u64, u32)], at: Option<u64>) -> u32 {
    let Some(at) = at else { return initial };
    changes
        .iter()
        .take_while(|&&(t, _)| t <= at)
        .last()
        .map_or(initial, |&(_, c)| c)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn desired_stays_within_bounds_cover_included(
        cfg in config(0),
        steps in prop::collection::vec(
            (0u64..40, 0u32..50, value(), prop_oneof![Just(100.0), Just(0.0)], 0u32..20, any::<bool>()),
            1..80,
        ),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut a = Autoscaler::new(cfg);
        let mut current = 3;
        for (wait, external, value, target, failed, apply) in steps {
            now += secs(wait);
            let d = a.decide(now, current, value, target, failed);
            prop_assert!(d.desired >= cfg.min && d.desired <= cfg.max, "{d:?}");
            prop_assert!(d.raw >= cfg.min && d.raw <= cfg.max, "{d:?}");
            prop_assert!(d.cover <= failed);
            // the caller applies the decision, or someone sets another count
            let next = if apply { d.desired } else { external };
            a.scaled(now, current, next);
            current = next;
        }
    }

    #[test]
    fn a_steady_load_does_not_flap(
        cfg in config(1),
        initial in 1u32..40,
        load in 0.1f64..40.0,
        waits in prop::collection::vec(10u64..30, 300),
    ) {
        // The per-replica metric is the load (in replicas' worth) spread over the replicas.
        let t0 = Instant::now();
        let mut now = t0;
        let mut a = Autoscaler::new(cfg);
        let mut current = initial.clamp(cfg.min, cfg.max);
        let mut direction = 0i64;
        let mut counts = Vec::new();
        for wait in waits {
            now += secs(wait);
            let d = a.decide(now, current, load * 100.0 / f64::from(current), 100.0, 0);
            let step = i64::from(d.desired) - i64::from(current);
            prop_assert!(step == 0 || direction == 0 || step.signum() == direction,
                "reversed: {counts:?} then {}", d.desired);
            if step != 0 {
                direction = step.signum();
            }
            a.scaled(now, current, d.desired);
            current = d.desired;
            counts.push(current);
        }
        // 3000 s at least: past any window and enough periods to settle
        let tail = &counts[counts.len() - 10..];
        prop_assert!(tail.iter().all(|&c| c == current), "still moving: {counts:?}");
    }

    #[test]
    fn no_scale_down_within_the_window_after_a_scale_up(
        cfg in config(0),
        steps in prop::collection::vec((0u64..60, value()), 1..100),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut a = Autoscaler::new(cfg);
        let mut current = cfg.min;
        let mut ups: Vec<(Instant, u32)> = Vec::new();
        for (wait, value) in steps {
            now += secs(wait);
            let d = a.decide(now, current, value, 100.0, 0);
            for &(t, count) in &ups {
                if now - t < cfg.down_window {
                    prop_assert!(d.desired >= count,
                        "{} → {} {:?} after a scale-up to {}", current, d.desired, now - t, count);
                }
            }
            if d.desired > current {
                ups.push((now, d.desired));
            }
            a.scaled(now, current, d.desired);
            current = d.desired;
        }
    }

    #[test]
    fn the_rate_policies_hold_over_every_period(
        cfg in config(0),
        initial in 0u32..35,
        steps in prop::collection::vec((0u64..20, value()), 1..150),
    ) {
        let t0 = Instant::now();
        let mut at = 0u64;
        let mut a = Autoscaler::new(cfg);
        let initial = initial.clamp(cfg.min, cfg.max);
        let mut current = initial;
        let mut changes: Vec<(u64, u32)> = Vec::new();
        for (wait, value) in steps {
            at += wait;
            let now = t0 + secs(at);
            let d = a.decide(now, current, value, 100.0, 0);
            if d.desired != current {
                let up = d.desired > current;
                let p = if up { cfg.up } else { cfg.down };
                // the count at the start of the period ending now
                let start = count_at(initial, &changes, at.checked_sub(p.period.as_secs()));
                if up {
                    let allowed = ((f64::from(start) * p.percent / 100.0).ceil() as u32).max(p.pods);
                    prop_assert!(d.desired <= start + allowed,
                        "{} → {}: from {} the period allows +{}", current, d.desired, start, allowed);
                } else {
                    let allowed = ((f64::from(start) * p.percent / 100.0).floor() as u32).max(p.pods);
                    prop_assert!(d.desired + allowed >= start,
                        "{} → {}: from {} the period allows −{}", current, d.desired, start, allowed);
                }
                changes.push((at, d.desired));
            }
            a.scaled(now, current, d.desired);
            current = d.desired;
        }
    }

    #[test]
    fn a_load_step_times_eight_reaches_its_count_within_four_periods(
        initial in 1u32..12,
        max in 1u32..200,
    ) {
        let cfg = AutoscaleConfig::new(1, max);
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg);
        let mut current = initial.min(max);
        let goal = (8 * current).min(max);
        let load = 8.0 * f64::from(current);
        for k in 0..6u32 {
            // one decision per period
            let now = t0 + cfg.up.period * k;
            // the metric is at its target before the step
            let value = if k == 0 { 100.0 } else { load * 100.0 / f64::from(current) };
            let d = a.decide(now, current, value, 100.0, 0);
            a.scaled(now, current, d.desired);
            current = d.desired;
            if k >= 4 {
                prop_assert_eq!(current, goal, "after {} periods of load", k);
            }
        }
    }
}
