use std::time::{Duration, Instant};

use policy::{LATENCY_BUCKETS, latency_bucket};

use super::*;

/// Counters after `total` requests of which `failed` failed, all taking `ms`.
fn counts(epoch: u64, total: u64, failed: u64, ms: u64) -> Counts {
    let mut latency = vec![0; LATENCY_BUCKETS];
    latency[latency_bucket(Duration::from_millis(ms))] = total;
    Counts {
        epoch,
        total,
        failed,
        latency,
    }
}

fn service(name: &str, requests: Option<Counts>, replicas: Vec<ReplicaReading>) -> ServiceReading {
    ServiceReading {
        name: name.to_owned(),
        requests,
        inflight: Some(3),
        ready: replicas.iter().filter(|r| r.ready).count() as u32,
        budget_left: None,
        replicas,
    }
}

fn replica(index: u32, requests: Option<Counts>) -> ReplicaReading {
    ReplicaReading {
        index,
        requests,
        ready: true,
        restarts: 2,
        rss_bytes: Some(4 << 20),
        ..ReplicaReading::default()
    }
}

fn column<'a>(c: &'a Columns, name: &str) -> &'a [Option<f32>] {
    &c.columns.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn a_ring_never_holds_more_than_its_capacity_and_since_returns_the_newer_points() {
    let series = Series::default();
    let mut sampler = Sampler::default();
    let t0 = Instant::now();
    for i in 0..1000u64 {
        let reading = vec![service(
            "web",
            Some(counts(1, i * 10, 0, 5)),
            vec![replica(0, Some(counts(1, i * 10, 0, 5)))],
        )];
        let round = sampler.points(reading, t0 + Duration::from_secs(i));
        series.push(1_000_000 + i * 1000, round);
        assert!(series.longest() <= CAPACITY);
    }
    assert_eq!(series.longest(), CAPACITY);
    let all = series.service("web", 0).unwrap();
    assert_eq!(all.service.t.len(), CAPACITY);
    assert_eq!(
        all.service.t[0],
        1_000_000 + 400 * 1000,
        "the oldest are dropped"
    );
    for (name, col) in &all.service.columns {
        assert_eq!(col.len(), CAPACITY, "{name}");
    }
    assert_eq!(all.replicas[&0].t.len(), CAPACITY);
    let rps = column(&all.service, "rps");
    assert!(
        rps.iter().all(|r| (r.unwrap() - 10.0).abs() < 1e-3),
        "{rps:?}"
    );
    let recent = series.service("web", 1_000_000 + 995 * 1000).unwrap();
    assert_eq!(recent.service.t.len(), 4, "strictly after `since`");
    assert_eq!(recent.replicas[&0].t, recent.service.t);
    assert!(
        series
            .service("web", u64::MAX)
            .unwrap()
            .service
            .t
            .is_empty()
    );
    assert!(series.service("db", 0).is_none());
}

#[test]
fn a_point_is_the_rate_errors_and_percentiles_of_its_second_and_unknown_is_none() {
    let mut sampler = Sampler::default();
    let t0 = Instant::now();
    let first = sampler.points(
        vec![service(
            "web",
            Some(counts(1, 0, 0, 1)),
            vec![replica(0, None)],
        )],
        t0,
    );
    let (_, p, reps) = &first[0];
    assert_eq!(p.0[0], None, "no rate without an earlier reading");
    assert_eq!(p.0[4], Some(3.0), "in flight");
    assert_eq!(p.0[5], Some(1.0), "ready");
    assert_eq!(p.0[6], None, "no SLO, no budget");
    assert_eq!(reps[0].1.0[7], Some(f64::from(4u32 << 20)), "rss");
    assert_eq!(reps[0].1.0[6], None, "cpu unknown");
    assert_eq!(reps[0].1.0[11], None, "no breaker");

    let mut later = counts(1, 200, 20, 10);
    later.latency[latency_bucket(Duration::from_millis(300))] += 4;
    later.total += 4;
    let second = sampler.points(
        vec![service("web", Some(later.clone()), vec![replica(0, None)])],
        t0 + Duration::from_secs(2),
    );
    let p = second[0].1.0;
    assert!((p[0].unwrap() - 102.0).abs() < 1e-9, "{p:?}");
    assert!((p[1].unwrap() - 20.0 / 204.0).abs() < 1e-9);
    let p50 = p[2].unwrap();
    assert!((10.0..13.0).contains(&p50), "{p50}");
    let p99 = p[3].unwrap();
    assert!((300.0..360.0).contains(&p99), "{p99}");

    // Nothing happened: a rate of 0, and no ratio or latency of no request.
    let idle = sampler.points(
        vec![service("web", Some(later), vec![])],
        t0 + Duration::from_secs(3),
    );
    assert_eq!(idle[0].1.0[..4], [Some(0.0), None, None, None]);

    // Counters that started again (a reload): no made-up difference.
    let restarted = sampler.points(
        vec![service("web", Some(counts(2, 5, 0, 1)), vec![])],
        t0 + Duration::from_secs(4),
    );
    assert_eq!(restarted[0].1.0[..4], [None; 4]);
}

#[test]
fn rings_of_removed_replicas_and_services_are_dropped() {
    let series = Series::default();
    let mut sampler = Sampler::default();
    let t0 = Instant::now();
    let reading = |n: u32| {
        vec![
            service("web", None, (0..n).map(|i| replica(i, None)).collect()),
            service("db", None, vec![replica(0, None)]),
        ]
    };
    for i in 0..5 {
        let round = sampler.points(reading(100), t0 + Duration::from_secs(i));
        series.push(i * 1000, round);
    }
    assert_eq!(series.rings(), (2, 101));
    let round = sampler.points(reading(2), t0 + Duration::from_secs(6));
    series.push(6000, round);
    assert_eq!(series.rings(), (2, 3), "scaled down: 98 rings dropped");
    assert_eq!(sampler.replicas.len(), 3, "and their counters");
    let round = sampler.points(
        vec![service("web", None, vec![replica(1, None)])],
        t0 + Duration::from_secs(7),
    );
    series.push(7000, round);
    assert_eq!(series.rings(), (1, 1), "db removed from the stack");
    let web = series.service("web", 0).unwrap();
    assert_eq!(web.replicas.keys().copied().collect::<Vec<_>>(), [1]);
    assert!(series.service("db", 0).is_none());
    assert_eq!(series.services(0).len(), 1);
}

#[test]
fn cores_are_the_cpu_time_between_two_samples_of_the_same_process() {
    use crate::resources::{Sample, SampleSink};
    let sample = |pid, cpu_seconds| Sample {
        service: "web".into(),
        index: 0,
        pid,
        cpu_seconds,
        rss_bytes: 1000,
        fds: None,
        fd_limit: None,
        threads: None,
        thread_limit: None,
    };
    let r = Resources::default();
    let t0 = Instant::now();
    r.samples(t0, &[sample(7, 10.0)]);
    assert_eq!(r.get("web", 0), Some((None, 1000)));
    r.samples(t0 + Duration::from_secs(4), &[sample(7, 11.0)]);
    let (cores, _) = r.get("web", 0).unwrap();
    assert!((cores.unwrap() - 0.25).abs() < 1e-9);
    r.samples(t0 + Duration::from_secs(5), &[sample(8, 0.1)]);
    assert_eq!(
        r.get("web", 0),
        Some((None, 1000)),
        "a new process starts over"
    );
    r.samples(t0 + Duration::from_secs(6), &[]);
    assert_eq!(r.get("web", 0), None, "gone with its process");
}

#[test]
fn the_stated_sizes_hold() {
    // What the module's documentation and ARCHITECTURE.md say.
    assert_eq!(SERVICE_RING_BYTES, 24_000);
    assert_eq!(REPLICA_RING_BYTES, 33_600);
    assert_eq!(
        Ring::<12>::new().0.capacity(),
        CAPACITY,
        "allocated once, exactly"
    );
}
