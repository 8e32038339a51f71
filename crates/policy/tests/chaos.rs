//! Property tests of the chaos decisions: targets, the monkey's clock.

use std::time::Duration;

use jiff::civil::{DateTime, Weekday, date};
use policy::chaos::{Window, exponential, monkey_next, pick_targets};
use proptest::prelude::*;

const DAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

fn window() -> impl Strategy<Value = Window> {
    // At least two hours a day, so that counting minutes one by one stays quick.
    (proptest::bits::u8::between(0, 7), 0u16..1439, 1u16..=1440).prop_filter_map(
        "a non-empty window",
        |(mask, a, b)| {
            let days: Vec<Weekday> = (0..7)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| DAYS[i])
                .collect();
            (!days.is_empty() && a + 120 <= b).then_some(Window {
                days,
                minutes: (a, b),
            })
        },
    )
}

fn start() -> impl Strategy<Value = DateTime> {
    (0i64..(3 * 365 * 24 * 60))
        .prop_map(|m| date(2026, 1, 1).at(0, 0, 0, 0) + jiff::SignedDuration::from_mins(m))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn targets_are_distinct_ready_replicas(
        ready in proptest::collection::btree_set(0u32..50, 0..20),
        count in 0usize..25,
        seed in any::<u64>(),
    ) {
        let ready: Vec<u32> = ready.into_iter().collect();
        let mut state = seed;
        let picked = pick_targets(&ready, count, |n| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        });
        prop_assert_eq!(picked.len(), count.min(ready.len()));
        let mut sorted = picked.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), picked.len(), "no replica twice");
        prop_assert!(picked.iter().all(|r| ready.contains(r)));
    }

    /// The monkey never acts outside its window, never before it may, and the window time
    /// between `from` and the answer is exactly the gap.
    #[test]
    fn the_monkey_acts_inside_its_window_after_exactly_the_gap(
        w in window(),
        from in start(),
        gap_min in 0u64..(24 * 60),
    ) {
        let gap = Duration::from_secs(gap_min * 60);
        let next = monkey_next(from, gap, &w).expect("a non-empty window always comes");
        prop_assert!(w.contains(next), "{next} outside {w:?}");
        prop_assert!(next >= from);
        // Count window minutes from `from` to `next`, minute by minute (from and gap are
        // whole minutes).
        let mut t = from;
        let mut counted = 0u64;
        while t < next {
            if w.contains(t) { counted += 1; }
            t += jiff::SignedDuration::from_mins(1);
        }
        prop_assert_eq!(counted, gap_min);
    }

    #[test]
    fn exponential_draws_are_finite_and_ordered(u in 0.0f64..1.0, v in 0.0f64..1.0) {
        let mean = Duration::from_secs(600);
        let (a, b) = (exponential(mean, u), exponential(mean, v));
        prop_assert!((u <= v) == (a <= b) || a == b);
    }
}

#[test]
fn exponential_draws_have_the_mean_asked_for() {
    let mean = Duration::from_secs(60);
    let n = 100_000;
    let total: f64 = (0..n)
        .map(|i| exponential(mean, (f64::from(i) + 0.5) / f64::from(n)).as_secs_f64())
        .sum();
    let got = total / f64::from(n);
    assert!((got - 60.0).abs() < 1.0, "mean {got}");
}

#[test]
fn a_sparse_window_skips_whole_weeks() {
    let w = Window {
        days: vec![Weekday::Sunday],
        minutes: (1257, 1258),
    };
    let from = date(2026, 1, 1).at(0, 0, 0, 0);
    let want = date(2026, 1, 4).at(20, 57, 0, 0) + jiff::SignedDuration::from_hours(400 * 7 * 24);
    assert_eq!(
        monkey_next(from, Duration::from_secs(400 * 60), &w),
        Some(want)
    );
    // A year of window time with one minute a week is past any calendar jiff keeps.
    assert_eq!(
        monkey_next(from, Duration::from_secs(366 * 24 * 3600), &w),
        None
    );
}
