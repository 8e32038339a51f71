//! Properties of the trend and drift detectors: exact on a line, robust to a quarter of
//! huge outliers, quiet on noise without a trend, and a drift reported exactly when it is
//! sustained, without the baseline learning it. Noise comes from a seed given as an
//! argument, so every case is reproducible.

use std::time::Duration;

use policy::trend::{Drift, DriftConfig, forecast, theil_sen};
use proptest::prelude::*;

/// SplitMix64: uniform numbers in `[0, 1)` from a seed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / 2f64.powi(64)
    }
}

#[test]
fn an_exact_line_past_the_subsample() {
    // 1000 points are cut down to 64; a line stays a line
    let points: Vec<_> = (0..1000)
        .map(|i| (i as f64, 1000.0 + 0.5 * i as f64))
        .collect();
    let f = forecast(&points, 2000.0).unwrap();
    assert_eq!(
        (f.slope_per_sec, f.now_value, f.confidence),
        (0.5, 1499.5, 1.0)
    );
    assert_eq!(f.eta, Some(Duration::from_secs(1001)));
}

#[test]
fn a_flat_series_never_arrives() {
    let points: Vec<_> = (0..30).map(|i| (i as f64, 42.0)).collect();
    let f = forecast(&points, 50.0).unwrap();
    assert_eq!(
        (f.slope_per_sec, f.now_value, f.eta, f.confidence),
        (0.0, 42.0, None, 0.0)
    );
    assert_eq!(forecast(&points, 42.0).unwrap().eta, Some(Duration::ZERO));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_line_gives_its_slope_and_eta(
        slope in 0.01f64..100.0,
        intercept in -1e3f64..1e3,
        step in 0.5f64..60.0,
        n in 3usize..200,
        headroom in 1.0f64..1e4,
    ) {
        let points: Vec<_> = (0..n).map(|i| {
            let x = i as f64 * step;
            (x, intercept + slope * x)
        }).collect();
        let last = (n - 1) as f64 * step;
        let limit = intercept + slope * last + headroom;
        let f = forecast(&points, limit).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        prop_assert!(close(f.slope_per_sec, slope), "{f:?}");
        prop_assert!(close(f.now_value, intercept + slope * last), "{f:?}");
        prop_assert!(close(f.eta.unwrap().as_secs_f64(), headroom / slope), "{f:?}");
        prop_assert_eq!(f.confidence, 1.0);
    }

    #[test]
    fn a_quarter_of_huge_outliers_barely_moves_the_slope(
        seed: u64,
        slope in 1.0f64..10.0,
        n in 12usize..=64,
    ) {
        let mut noise = Noise(seed);
        let mut points: Vec<_> = (0..n)
            .map(|i| (i as f64, 100.0 + slope * i as f64 + 0.2 * (noise.next() - 0.5)))
            .collect();
        // n / 4 distinct points, drawn by the seed, become huge
        let mut bad = 0;
        while bad < n / 4 {
            let i = (noise.next() * n as f64) as usize;
            if points[i].1 < 1e8 {
                points[i].1 = 1e9 * (1.0 + noise.next());
                bad += 1;
            }
        }
        let fit = theil_sen(&points).unwrap();
        prop_assert!((fit.slope - slope).abs() <= 0.05 * slope, "{} against {}", fit.slope, slope);
    }

    #[test]
    fn noise_without_a_trend_is_not_a_forecast(seed: u64, n in 40usize..=64, level in 0.0f64..1e3) {
        let mut noise = Noise(seed);
        let points: Vec<_> = (0..n).map(|i| (i as f64 * 10.0, level + noise.next())).collect();
        let f = forecast(&points, level + 100.0).unwrap();
        prop_assert!(f.eta.is_none() || f.confidence < 0.5, "{f:?}");
    }

    #[test]
    fn a_falling_series_never_reaches_a_limit_above_it(
        seed: u64,
        slope in -10.0f64..-0.5,
        n in 3usize..100,
        headroom in 0.0f64..1e3,
    ) {
        let mut noise = Noise(seed);
        let points: Vec<_> = (0..n)
            .map(|i| (i as f64, slope * i as f64 + 0.4 * (noise.next() - 0.5)))
            .collect();
        let f = forecast(&points, 1.0 + headroom).unwrap();
        prop_assert!(f.slope_per_sec < 0.0 && f.eta.is_none(), "{f:?}");
    }

    #[test]
    fn stationary_noise_never_drifts(
        seed: u64,
        level in 1e-3f64..1e3,
        alpha in 0.01f64..1.0,
        warmup in 0u32..30,
        sustain in 0u32..5,
    ) {
        // ±10 % around the level against a 1.5× threshold: even a baseline at the lowest
        // value leaves the highest one under it
        let mut d = Drift::new(DriftConfig {
            alpha, ratio: Some(1.5), increase: None, floor: 0.0, warmup, sustain,
        });
        let mut noise = Noise(seed);
        for _ in 0..500 {
            let v = level * (0.9 + 0.2 * noise.next());
            prop_assert_eq!(d.observe(v), None);
        }
        // an error ratio: up to 2 %, drifting above 5 points more
        let mut e = Drift::new(DriftConfig {
            alpha, ratio: None, increase: Some(0.05), floor: 0.01, warmup, sustain,
        });
        for _ in 0..500 {
            prop_assert_eq!(e.observe(0.02 * noise.next()), None);
        }
    }

    #[test]
    fn a_step_times_three_is_reported_after_sustain_and_not_learnt(
        seed: u64,
        level in 1e-3f64..1e3,
        alpha in 0.01f64..1.0,
        warmup in 1u32..30,
        sustain in 1u32..8,
        after in 0usize..50,
    ) {
        let mut d = Drift::new(DriftConfig {
            alpha, ratio: Some(2.0), increase: None, floor: 0.0, warmup, sustain,
        });
        let mut noise = Noise(seed);
        let mut wobble = || 0.95 + 0.1 * noise.next();
        for _ in 0..warmup {
            prop_assert_eq!(d.observe(level * wobble()), None);
        }
        let baseline = d.baseline().unwrap();
        for k in 1..=(sustain as usize + after) {
            let v = 3.0 * level * wobble();
            let report = d.observe(v);
            prop_assert_eq!(report.is_some(), k >= sustain as usize, "observation {} of the step", k);
            if let Some(r) = report {
                prop_assert_eq!((r.baseline, r.value), (baseline, v));
                prop_assert!(r.confidence > 0.5 && r.confidence <= 1.0);
            }
            prop_assert_eq!(d.baseline(), Some(baseline), "learnt the drifted level");
        }
    }
}
