//! Property tests of the invariants the proxy relies on, through the public API only.
//! Time is synthetic: one `Instant::now()` per case plus generated offsets.

// The one clock read per case gives the base `Instant` (there is no other way to make one).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use policy::*;
use proptest::prelude::*;

// ---------------------------------------------------------------- outlier detection

#[derive(Debug, Clone)]
enum Op {
    Record { who: usize, outcome: u8, rand: f64 },
    Admit { who: usize },
    Add,
    Remove { who: usize },
    Ready { who: usize, ready: bool },
    Wait { ms: u64 },
}

fn op(membership: bool) -> impl Strategy<Value = Op> {
    let record = (any::<usize>(), 0u8..6, 0.0..1.0f64)
        .prop_map(|(who, outcome, rand)| Op::Record { who, outcome, rand });
    let admit = any::<usize>().prop_map(|who| Op::Admit { who });
    let wait = (0u64..3000).prop_map(|ms| Op::Wait { ms });
    if membership {
        prop_oneof![
            10 => record,
            4 => admit,
            3 => wait,
            1 => Just(Op::Add),
            1 => any::<usize>().prop_map(|who| Op::Remove { who }),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(who, ready)| Op::Ready { who, ready }),
        ]
        .boxed()
    } else {
        prop_oneof![10 => record, 4 => admit, 3 => wait].boxed()
    }
}

fn outcome(k: u8) -> Outcome {
    match k {
        0 | 1 => Outcome::Success,
        2 => Outcome::Status5xx(500),
        3 => Outcome::Status5xx(503),
        4 => Outcome::GatewayError,
        _ => Outcome::LocalTimeout,
    }
}

fn config() -> impl Strategy<Value = OutlierConfig> {
    (0u32..=100, 0u32..=100, 1u32..6, 0u32..=100, 1u32..30).prop_map(
        |(max_pct, panic_pct, consecutive, rate_pct, min_req)| OutlierConfig {
            max_ejection_percent: max_pct,
            panic_threshold_percent: panic_pct,
            consecutive_5xx: consecutive,
            consecutive_gateway_errors: consecutive,
            success_rate_percent: rate_pct,
            success_rate_min_requests: min_req,
            ..OutlierConfig::default()
        },
    )
}

/// Recomputes every counter from per-replica state and checks the bounds.
fn check_detector(d: &OutlierDetector, c: &OutlierConfig) -> Result<(), TestCaseError> {
    let ids: Vec<ReplicaId> = d.ids().collect();
    let members = ids.len() as u32;
    let mut ejected = 0;
    let mut healthy = 0;
    let mut ejected_ready = 0;
    for &id in &ids {
        let ready = d.is_ready(id).unwrap();
        match d.state(id).unwrap() {
            OutlierState::Active => healthy += u32::from(ready),
            _ => {
                ejected += 1;
                ejected_ready += u32::from(ready);
            }
        }
    }
    prop_assert_eq!(d.members(), members);
    prop_assert_eq!(d.ejected(), ejected);
    prop_assert_eq!(d.healthy(), healthy);
    prop_assert!(
        u64::from(ejected) * 100 <= u64::from(c.max_ejection_percent) * u64::from(members),
        "ejected {} of {} over {} %",
        ejected,
        members,
        c.max_ejection_percent
    );
    prop_assert!(
        ejected_ready == 0 || healthy >= 1,
        "an ejection stands between the proxy and every replica"
    );
    prop_assert_eq!(
        d.panic(),
        u64::from(healthy) * 100 < u64::from(c.panic_threshold_percent) * u64::from(members)
    );
    Ok(())
}

fn run_detector(c: OutlierConfig, n: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let mut now = t0;
    let mut d = OutlierDetector::new(c);
    let mut ids: Vec<ReplicaId> = (0..n).map(|_| d.add(now)).collect();
    let mut gone: Vec<ReplicaId> = vec![];
    for op in ops {
        now += Duration::from_millis(1);
        let healthy_before = d.healthy();
        let ev = match op {
            Op::Record {
                who,
                outcome: o,
                rand,
            } => {
                // sometimes feed a stale id: it must be a no-op
                if who % 7 == 0 && !gone.is_empty() {
                    let id = gone[who % gone.len()];
                    prop_assert_eq!(d.record(id, outcome(o), now, rand), None);
                    None
                } else if ids.is_empty() {
                    None
                } else {
                    d.record(ids[who % ids.len()], outcome(o), now, rand)
                }
            }
            Op::Admit { who } => {
                if !ids.is_empty() {
                    let id = ids[who % ids.len()];
                    let could = d.admissible(id, now);
                    prop_assert_eq!(d.try_admit(id, now), could);
                    if could && d.state(id) == Some(OutlierState::Probing) {
                        prop_assert!(!d.try_admit(id, now), "exactly one probe");
                    }
                }
                None
            }
            Op::Wait { ms } => {
                now += Duration::from_millis(ms);
                None
            }
            Op::Add => {
                ids.push(d.add(now));
                None
            }
            Op::Remove { who } => {
                if ids.is_empty() {
                    None
                } else {
                    let id = ids.swap_remove(who % ids.len());
                    gone.push(id);
                    d.remove(id, now)
                }
            }
            Op::Ready { who, ready } => {
                if ids.is_empty() {
                    None
                } else {
                    d.set_ready(ids[who % ids.len()], ready, now)
                }
            }
        };
        if let Some(OutlierEvent::Ejected { until, reason, .. }) = ev {
            prop_assert!(until > now);
            if reason != EjectReason::FailedProbe {
                prop_assert!(healthy_before >= 2, "ejected the last healthy replica");
                prop_assert_eq!(d.healthy(), healthy_before - 1);
            }
        }
        check_detector(&d, &c)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Outcomes alone (fixed membership, all ready) never leave zero healthy replicas.
    #[test]
    fn outlier_never_ejects_last_healthy(
        c in config(),
        n in 1usize..8,
        ops in prop::collection::vec(op(false), 1..400),
    ) {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(c);
        let ids: Vec<ReplicaId> = (0..n).map(|_| d.add(t0)).collect();
        let mut now = t0;
        for op in ops {
            now += Duration::from_millis(1);
            match op {
                Op::Record { who, outcome: o, rand } => {
                    d.record(ids[who % n], outcome(o), now, rand);
                }
                Op::Admit { who } => {
                    d.try_admit(ids[who % n], now);
                }
                Op::Wait { ms } => now += Duration::from_millis(ms),
                _ => unreachable!(),
            }
            prop_assert!(d.healthy() >= 1);
            check_detector(&d, &c)?;
        }
    }

    /// With replicas joining, leaving and changing readiness, the counters stay exact and
    /// both bounds hold after every call.
    #[test]
    fn outlier_bounds_hold_under_membership_changes(
        c in config(),
        n in 0usize..8,
        ops in prop::collection::vec(op(true), 1..400),
    ) {
        run_detector(c, n, ops)?;
    }

    /// Default settings, the ones the proxy ships with.
    #[test]
    fn outlier_defaults(n in 1usize..10, ops in prop::collection::vec(op(true), 1..400)) {
        run_detector(OutlierConfig::default(), n, ops)?;
    }
}

// ---------------------------------------------------------------- circuit breaker

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Closed,
    Open,
    HalfOpen,
}

fn kind(s: BreakerState) -> Kind {
    match s {
        BreakerState::Closed => Kind::Closed,
        BreakerState::Open { .. } => Kind::Open,
        BreakerState::HalfOpen => Kind::HalfOpen,
    }
}

#[derive(Debug, Clone)]
enum BOp {
    Allow,
    Record(bool),
    CancelLast,
    Wait(u64),
}

fn bop() -> impl Strategy<Value = BOp> {
    prop_oneof![
        4 => Just(BOp::Allow),
        4 => any::<bool>().prop_map(BOp::Record),
        1 => Just(BOp::CancelLast),
        2 => (0u64..20_000).prop_map(BOp::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn breaker_makes_only_legal_transitions(
        consecutive in 0u32..6,
        ratio in any::<bool>(),
        ops in prop::collection::vec(bop(), 1..300),
    ) {
        let config = BreakerConfig {
            consecutive_failures: consecutive,
            failure_ratio: ratio.then(|| FailureRatio { min_requests: 4, ..Default::default() }),
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut now = t0;
        let mut b = CircuitBreaker::new(config);
        let mut last_permit: Option<Permit> = None;
        let mut probes_out = 0u32; // probe permits since the last probe deadline reset
        let mut last_probe_at: Option<Instant> = None;
        for op in ops {
            now += Duration::from_millis(1);
            let before = b.state();
            match op {
                BOp::Allow => {
                    let r = b.allow(now);
                    let after = b.state();
                    match (kind(before), kind(after)) {
                        (Kind::Closed, Kind::Closed) => prop_assert_eq!(r, Ok(Permit { probe: false })),
                        (Kind::Open, Kind::Open) => {
                            let BreakerState::Open { until } = before else { unreachable!() };
                            prop_assert!(now < until);
                            prop_assert_eq!(r, Err(Rejected { retry_after: until - now }));
                        }
                        (Kind::Open, Kind::HalfOpen) => {
                            let BreakerState::Open { until } = before else { unreachable!() };
                            prop_assert!(now >= until);
                            prop_assert_eq!(r, Ok(Permit { probe: true }));
                            probes_out = 1;
                            last_probe_at = Some(now);
                        }
                        (Kind::HalfOpen, Kind::HalfOpen) => {
                            if let Ok(p) = r {
                                prop_assert!(p.probe);
                                // another probe only after a cancel or the probe timeout
                                let timed_out = last_probe_at
                                    .is_none_or(|t| now >= t + config.probe_timeout);
                                prop_assert!(probes_out == 0 || timed_out);
                                probes_out = 1;
                                last_probe_at = Some(now);
                            }
                        }
                        (x, y) => prop_assert!(false, "allow moved {:?} -> {:?}", x, y),
                    }
                    if let Ok(p) = r {
                        last_permit = Some(p);
                    }
                }
                BOp::Record(ok) => {
                    let ev = b.record(ok, now);
                    let after = b.state();
                    match (kind(before), kind(after)) {
                        (Kind::Closed, Kind::Closed) | (Kind::Open, Kind::Open) => prop_assert_eq!(ev, None),
                        (Kind::Closed, Kind::Open) => {
                            prop_assert!(!ok);
                            let first_open = matches!(ev, Some(BreakerEvent::Opened { times: 1, .. }));
                            prop_assert!(first_open, "{:?}", ev);
                        }
                        (Kind::HalfOpen, Kind::Closed) => {
                            prop_assert!(ok);
                            prop_assert_eq!(ev, Some(BreakerEvent::Closed));
                        }
                        (Kind::HalfOpen, Kind::Open) => {
                            prop_assert!(!ok);
                            let BreakerState::Open { until } = after else { unreachable!() };
                            prop_assert!(until >= now + config.base_cooldown);
                            prop_assert!(until <= now + config.max_cooldown);
                        }
                        (x, y) => prop_assert!(false, "record moved {:?} -> {:?}", x, y),
                    }
                    if kind(after) != Kind::HalfOpen {
                        probes_out = 0;
                        last_probe_at = None;
                    }
                }
                BOp::CancelLast => {
                    if let Some(p) = last_permit.take() {
                        b.cancel(p);
                        if p.probe && kind(before) == Kind::HalfOpen {
                            probes_out = 0;
                        }
                    }
                    prop_assert_eq!(b.state(), before);
                }
                BOp::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    prop_assert_eq!(b.state(), before, "time alone changes nothing");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- retry budget

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// For every granted retry at `t`: retries granted in `(t − ttl + ttl/10, t]` ≤
    /// `ratio × deposits in (t − ttl, t] + min_per_sec × ttl` (exact integer form).
    #[test]
    fn budget_never_overspends(
        ttl_s in prop::sample::select(vec![1u64, 2, 10]),
        min_per_sec in 0u32..15,
        ratio_pm in prop::sample::select(vec![0u64, 100, 200, 500, 1000]),
        steps in prop::collection::vec((0u64..400, 0u32..5, 0u32..4), 1..300),
    ) {
        let ttl = Duration::from_secs(ttl_s);
        let width = ttl / 10;
        let mut b = RetryBudget::new(BudgetConfig {
            ttl,
            min_per_sec,
            retry_ratio: ratio_pm as f64 / 1000.0,
        });
        let reserve = u64::from(min_per_sec) * ttl_s;
        let t0 = Instant::now();
        let mut now = t0;
        let mut deposits: Vec<Instant> = vec![];
        let mut retries: Vec<Instant> = vec![];
        let mut refused = 0u64;
        for (dt, dep, wd) in steps {
            now += Duration::from_millis(dt);
            for _ in 0..dep {
                b.deposit(now);
                deposits.push(now);
            }
            for _ in 0..wd {
                if b.withdraw(now) {
                    retries.push(now);
                    let w = retries.iter().filter(|&&s| s + ttl > now + width).count() as u64;
                    let d = deposits.iter().filter(|&&s| s + ttl > now).count() as u64;
                    prop_assert!(
                        w * 1000 <= d * ratio_pm + reserve * 1000,
                        "{} retries against {} deposits + {} reserve", w, d, reserve
                    );
                } else {
                    refused += 1;
                }
            }
        }
        prop_assert_eq!(b.exhausted(), refused);
    }
}

// ---------------------------------------------------------------- token buckets

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn token_bucket_never_exceeds_burst_plus_rate(
        rate in 0.5f64..2000.0,
        burst in 1u32..40,
        gaps_us in prop::collection::vec(0u64..20_000, 1..300),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut b = TokenBucket::new(rate, burst);
        let mut granted: Vec<Instant> = vec![];
        for gap in gaps_us {
            now += Duration::from_micros(gap);
            match b.try_take(now) {
                Ok(()) => granted.push(now),
                Err(wait) => {
                    prop_assert!(wait > Duration::ZERO);
                    let mut probe = b;
                    prop_assert!(probe.try_take(now + wait).is_ok(), "retry_after is enough");
                    let mut early = b;
                    prop_assert!(early.try_take(now + wait - Duration::from_nanos(1)).is_err(), "and exact");
                }
            }
        }
        for i in 0..granted.len() {
            for j in i..granted.len() {
                let span = (granted[j] - granted[i]).as_secs_f64();
                let count = (j - i + 1) as f64;
                prop_assert!(count <= f64::from(burst) + span * rate + 1e-6,
                    "{} grants in {} s (rate {}, burst {})", count, span, rate, burst);
            }
        }
    }

    /// Bounded memory, and exactly the decisions of a naive LRU list of buckets.
    #[test]
    fn keyed_buckets_bounded_and_lru_exact(
        max_keys in 1usize..20,
        keys in prop::collection::vec((0u8..30, 0u64..50), 1..400),
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut k: KeyedBuckets<u8> = KeyedBuckets::new(20.0, 3, max_keys);
        // most recently used last
        let mut model: Vec<(u8, TokenBucket)> = vec![];
        let mut model_evictions = 0u64;
        for (key, dt) in keys {
            now += Duration::from_millis(dt);
            let got = k.try_take(key, now);
            let mut entry = match model.iter().position(|e| e.0 == key) {
                Some(i) => model.remove(i),
                None => {
                    if model.len() == max_keys {
                        model.remove(0);
                        model_evictions += 1;
                    }
                    (key, TokenBucket::new(20.0, 3))
                }
            };
            let want = entry.1.try_take(now);
            model.push(entry);
            prop_assert_eq!(got, want);
            prop_assert!(k.len() <= max_keys);
            prop_assert_eq!(k.len(), model.len());
            prop_assert_eq!(k.evictions(), model_evictions);
            for (key, bucket) in &model {
                prop_assert_eq!(k.remaining(key, now), bucket.remaining(now));
            }
        }
    }
}

// ---------------------------------------------------------------- consistent hashing

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Removing one of N replicas moves only its keys (≈ 1/N of them) and no key moves
    /// between the replicas that stay; adding one moves keys only to it.
    #[test]
    fn ring_moves_only_the_removed_replicas_keys(
        ids in prop::collection::hash_set(any::<u32>(), 2..8),
        victim in any::<prop::sample::Index>(),
        salt in any::<u64>(),
    ) {
        let ids: Vec<u32> = ids.into_iter().collect();
        let n = ids.len();
        let gone = ids[victim.index(n)];
        let full = HashRing::new(ids.iter().map(|&r| (r, 1)));
        let less = HashRing::new(ids.iter().filter(|&&r| r != gone).map(|&r| (r, 1)));
        let keys = 10_000u64;
        let mut moved = 0;
        for k in 0..keys {
            let h = hash_key(&(k ^ salt));
            let before = full.pick(h).unwrap();
            let after = less.pick(h).unwrap();
            prop_assert_ne!(after, gone);
            if before != gone {
                prop_assert_eq!(before, after, "a key moved between survivors");
            } else {
                moved += 1;
            }
            // adding back: keys only move to the added replica
            prop_assert!(before == after || before == gone);
            // skipping the replica in place of removing it gives the same answer
            prop_assert_eq!(full.pick_where(h, |r| r != gone), Some(after));
        }
        let share = moved as f64 / keys as f64;
        prop_assert!(share <= 1.0 / n as f64 + 0.05, "moved {} with {} replicas", share, n);
    }

    #[test]
    fn ring_is_deterministic(
        ids in prop::collection::hash_set(any::<u64>(), 1..8),
        weights in prop::collection::vec(1u32..4, 8),
        keys in prop::collection::vec(any::<u64>(), 1..200),
    ) {
        let members: Vec<(u64, u32)> = ids.iter().zip(&weights).map(|(&r, &w)| (r, w)).collect();
        let mut reversed = members.clone();
        reversed.reverse();
        let a = HashRing::new(members.iter().copied());
        let b = HashRing::new(reversed.iter().copied());
        let c = HashRing::new(members.iter().copied());
        prop_assert_eq!(a.ring_size(), b.ring_size());
        let total_weight: u32 = members.iter().map(|m| m.1).sum();
        prop_assert_eq!(a.ring_size(), total_weight as usize * 1024);
        for k in keys {
            let h = hash_key(&k);
            prop_assert_eq!(a.pick(h), b.pick(h));
            prop_assert_eq!(a.pick(h), c.pick(h));
        }
    }

    /// The 4 → 3 case from the brief, with plain replica numbers.
    #[test]
    fn four_to_three(victim in 0u32..4) {
        let full = HashRing::new((0u32..4).map(|r| (r, 1)));
        let less = HashRing::new((0u32..4).filter(|&r| r != victim).map(|r| (r, 1)));
        let mut moved = 0;
        for k in 0..10_000u64 {
            let h = hash_bytes(format!("session-{k}").as_bytes());
            let (a, b) = (full.pick(h).unwrap(), less.pick(h).unwrap());
            prop_assert!(a == victim || a == b, "key {} moved between survivors", k);
            moved += usize::from(a != b);
        }
        prop_assert!(moved <= 10_000 / 3 + 500, "{moved}");
        prop_assert!(moved >= 10_000 / 4 - 1000, "{moved}");
    }
}

// ---------------------------------------------------------------- windows, EWMA, picks

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The ring agrees with a naive list of events bucketed the same way.
    #[test]
    fn sliding_window_matches_model(
        buckets in 1usize..12,
        events in prop::collection::vec((0u64..700, 0u64..5), 1..200),
        probe_ms in 0u64..3000,
    ) {
        let window = Duration::from_secs(1);
        let width = (window.as_nanos() / buckets as u128) as u64;
        let mut w = SlidingWindow::new(window, buckets);
        let t0 = Instant::now();
        let mut now = t0;
        let origin = t0 + Duration::from_millis(events[0].0);
        let mut log: Vec<(u64, u64)> = vec![];
        for (dt, n) in events {
            now += Duration::from_millis(dt);
            w.add(n, now);
            let epoch = ((now - origin).as_nanos() as u64) / width;
            log.push((epoch, n));
            let at = now + Duration::from_millis(probe_ms);
            let e = ((at - origin).as_nanos() as u64) / width;
            let want: u64 = log.iter().filter(|(ep, _)| ep + buckets as u64 > e).map(|(_, n)| n).sum();
            prop_assert_eq!(w.sum(at), want);
        }
    }

    /// Percentiles are never below the exact nearest-rank value and at most 1/16 above.
    #[test]
    fn latency_percentile_brackets_exact(
        samples in prop::collection::vec(0u64..200_000_000, 1..300),
        p in 0.0f64..=100.0,
    ) {
        let t0 = Instant::now();
        let mut l = LatencyWindow::new(Duration::from_secs(10), 5);
        for &s in &samples {
            l.record(Duration::from_micros(s), t0);
        }
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        let exact = sorted[rank - 1].min((1 << 27) - 1);
        let got = l.percentile(p, t0).unwrap().as_micros() as u64;
        prop_assert!(got >= exact, "{} < {}", got, exact);
        prop_assert!(got as f64 <= exact as f64 * (1.0 + 1.0 / 16.0) + 1.0, "{} >> {}", got, exact);
    }

    /// The estimate never increases without a sample and never leaves
    /// `[0, max(samples, default)]`.
    #[test]
    fn peak_ewma_bounded_and_decaying(
        events in prop::collection::vec((0u64..5_000, 0u64..2_000), 1..200),
    ) {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(EwmaConfig::default(), t0);
        let mut now = t0;
        let mut peak = 0.030f64;
        for (dt, rtt_ms) in events {
            let before = e.estimate(now);
            now += Duration::from_millis(dt);
            prop_assert!(e.estimate(now) <= before + 1e-12);
            let rtt = Duration::from_millis(rtt_ms);
            let decayed = e.estimate(now);
            e.observe(rtt, now);
            peak = peak.max(rtt.as_secs_f64());
            let est = e.estimate(now);
            prop_assert!(est >= 0.0 && est <= peak + 1e-12);
            prop_assert!(est >= decayed.min(rtt.as_secs_f64()) - 1e-12);
            if rtt.as_secs_f64() > decayed {
                prop_assert!((est - rtt.as_secs_f64()).abs() < 1e-12, "peak taken at once");
            }
            prop_assert!(e.cost(3, now) >= est * 4.0 - 1e-12);
        }
    }

    #[test]
    fn weighted_picks_respect_zero_weights(
        weights in prop::collection::vec(0u32..5, 0..10),
        r in any::<u64>(),
    ) {
        let table = WeightedPick::new(&weights);
        let dynamic = pick_weighted(weights.len(), |i| f64::from(weights[i]), r);
        match table.pick(r) {
            Some(i) => prop_assert!(weights[i] > 0),
            None => prop_assert!(weights.iter().all(|&w| w == 0)),
        }
        match dynamic {
            Some(i) => prop_assert!(weights[i] > 0),
            None => prop_assert!(weights.iter().all(|&w| w == 0)),
        }
    }

    #[test]
    fn slow_start_is_monotone_and_bounded(a in 0u64..20_000, b in 0u64..20_000) {
        let t0 = Instant::now();
        let s = SlowStart::default();
        let (lo, hi) = (a.min(b), a.max(b));
        let f_lo = s.factor(t0, t0 + Duration::from_millis(lo));
        let f_hi = s.factor(t0, t0 + Duration::from_millis(hi));
        prop_assert!((0.1..=1.0).contains(&f_lo));
        prop_assert!(f_lo <= f_hi);
    }
}

#[test]
fn limit_never_admits_over_max() {
    let l = ConcurrencyLimit {
        max_inflight: 3,
        max_queue: 2,
        ..Default::default()
    };
    for inflight in 0..6 {
        for queued in 0..5 {
            match l.admit(inflight, queued) {
                Admit::Now => assert!(inflight < 3 && queued == 0),
                Admit::Queue => assert!(queued < 2),
                Admit::Reject => assert!(queued >= 2),
            }
        }
    }
}

// ---------------------------------------------------------------- P2C balancing

/// Sequential P2C over peak EWMAs: one request every millisecond, answered before the next
/// (so nothing is ever in flight, the case where a strict comparison degenerates into a
/// ranking). Randomness comes from `mix64` of a seed and a counter.
struct Sim {
    ewmas: Vec<PeakEwma>,
    now: Instant,
    seed: u64,
    k: u64,
}

impl Sim {
    fn new(n: usize, seed: u64) -> Sim {
        let now = Instant::now();
        let config = EwmaConfig {
            default_rtt: Duration::from_millis(1),
            ..EwmaConfig::default()
        };
        Sim {
            ewmas: vec![PeakEwma::joining(config, now); n],
            now,
            seed,
            k: 0,
        }
    }

    fn draw(&mut self) -> u64 {
        self.k += 1;
        mix64(self.seed ^ mix64(self.k))
    }

    /// One request; `rtt(endpoint, draw)` is its response time. Returns the endpoint.
    fn step(&mut self, rtt: impl Fn(usize, u64) -> Duration) -> usize {
        let n = self.ewmas.len() as u64;
        let r = self.draw();
        let a = (r % n) as usize;
        let b = (a + 1 + ((r >> 32) % (n - 1)) as usize) % n as usize;
        let c = |i: usize| Contender {
            cost: self.ewmas[i].cost(0, self.now),
            inflight: 0,
            idle: self.ewmas[i].idle(self.now),
            warmth: 1.0,
        };
        let (ca, cb) = (c(a), c(b));
        let win = match P2c::default().choose(&ca, &cb, self.draw()) {
            Side::First => a,
            Side::Second => b,
        };
        let d = self.draw();
        self.now += Duration::from_millis(1);
        self.ewmas[win].observe(rtt(win, d), self.now);
        win
    }
}

/// 1 ms ± 20 %, uniform.
fn jittered(draw: u64) -> Duration {
    Duration::from_micros(800 + draw % 401)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Two replicas with the same latency distribution split the traffic about evenly.
    #[test]
    fn p2c_splits_equal_replicas_evenly(seed in any::<u64>()) {
        let mut sim = Sim::new(2, seed);
        let mut first = 0u32;
        for _ in 0..20_000 {
            first += u32::from(sim.step(|_, d| jittered(d)) == 0);
        }
        prop_assert!((9_000..=11_000).contains(&first), "{} of 20000", first);
    }

    /// A newcomer whose first response is 20× its peers' latency still gets about its
    /// share: the first sample sets no peak.
    #[test]
    fn a_newcomer_with_a_slow_first_sample_is_not_starved(seed in any::<u64>()) {
        let mut sim = Sim::new(2, seed);
        for _ in 0..10_000 {
            sim.step(|_, d| jittered(d));
        }
        // joins at its peers' mean estimate, as the proxy seeds it
        let mean = (sim.ewmas[0].estimate(sim.now) + sim.ewmas[1].estimate(sim.now)) / 2.0;
        let config = EwmaConfig {
            default_rtt: Duration::from_secs_f64(mean),
            ..EwmaConfig::default()
        };
        sim.ewmas.push(PeakEwma::joining(config, sim.now));
        let mut served = 0u32;
        let mut newcomer = 0u32;
        for _ in 0..2_000 {
            let first = served == 0;
            let rtt = move |i: usize, d| if i == 2 && first { Duration::from_millis(20) } else { jittered(d) };
            if sim.step(rtt) == 2 {
                newcomer += 1;
                served += 1;
            }
        }
        prop_assert!(newcomer >= 500, "{} of 2000 in its first 2 s", newcomer);
    }

    /// A replica that answers in 50 ms next to one answering in 1 ms is avoided, but
    /// re-probed: it never goes longer than the staleness interval (1 s) plus one request
    /// without a sample.
    #[test]
    fn a_starved_replica_is_probed_after_the_staleness_interval(seed in any::<u64>()) {
        let mut sim = Sim::new(2, seed);
        let slow = |i: usize, d| if i == 1 { Duration::from_millis(50) } else { jittered(d) };
        let mut last = sim.now;
        let mut probes = 0u32;
        for _ in 0..10_000 {
            if sim.step(slow) == 1 {
                prop_assert!(sim.now - last <= Duration::from_millis(1_002), "{:?}", sim.now - last);
                last = sim.now;
                probes += 1;
            }
        }
        // one probe per second, and the few picks before its first (blended) sample
        prop_assert!(probes <= 20, "{} requests to the slow replica", probes);
        prop_assert!(sim.now - last <= Duration::from_millis(1_002));
    }
}
