//! The anomaly detector on the sampler's rounds and the proxy's outcomes: descriptor and
//! thread growth forecast to their limits, latency and error drift against the service's
//! own baseline, each reported once; steady series report nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Bus, EventKind, OutcomeSink, RequestOutcome};
use observe::resources::{Sample, SampleSink};
use prometheus_client::registry::Registry;
use remedy::{ActionRecord, BoxFuture, Detector, Host, Measures, Remedy, Replica, Size};

/// The detector never acts: a host with nothing in it, for the engine that owns the
/// metrics.
struct NoHost;

impl Host for NoHost {
    fn replicas(&self, _: &str) -> Option<Vec<Replica>> {
        None
    }
    fn size(&self, _: &str) -> Option<Size> {
        None
    }
    fn restart(&self, _: &str, _: Option<u32>) -> Result<(), String> {
        Err("no host".into())
    }
    fn replace(&self, _: &str, _: u32, _: Duration) -> BoxFuture<'_, Result<u32, String>> {
        Box::pin(async { Err("no host".into()) })
    }
    fn scale(&self, _: &str, _: u32) -> Result<u32, String> {
        Err("no host".into())
    }
    fn hold_out(&self, _: &str, _: u32, _: bool) -> Result<(), String> {
        Err("no host".into())
    }
    fn load(&self, _: &str, _: u32) -> Option<Arc<bus::Load>> {
        None
    }
    fn rollback(&self, _: &str) -> Result<(), String> {
        Err("no host".into())
    }
    fn set_switch(
        &self,
        _: &str,
        _: spec::SwitchValue,
        _: &str,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("no host".into()) })
    }
    fn silence(
        &self,
        _: &str,
        _: Option<&str>,
        _: Duration,
        _: String,
    ) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async { Err("no host".into()) })
    }
    fn incident(&self, _: &str) -> Option<u64> {
        None
    }
    fn approval(&self, _: &ActionRecord, _: bool) {}
}

fn setup(extra: &str) -> (Arc<Bus>, Arc<Measures>, Detector) {
    let toml =
        format!("[services.web]\nrun = [\"x\"]\nexpose = {{ listen = \"127.0.0.1:1\" }}\n{extra}");
    let stack = spec::parse(&toml, std::path::Path::new("t.toml")).expect("valid");
    let bus = Arc::new(Bus::new(1000));
    let measures = Arc::new(Measures::default());
    measures.track(["web"]);
    let remedy = Remedy::new(
        &stack,
        bus.clone(),
        Arc::new(NoHost),
        &mut Registry::default(),
    );
    let detector = Detector::new(&stack, bus.clone(), measures.clone(), &remedy);
    (bus, measures, detector)
}

fn sample(index: u32, rss: u64, fds: u64, threads: u64) -> Sample {
    Sample {
        service: "web".into(),
        index,
        pid: 4000 + index,
        cpu_seconds: 0.0,
        rss_bytes: rss,
        fds: Some(fds),
        fd_limit: Some(1024),
        threads: Some(threads),
        thread_limit: Some(4096),
    }
}

fn anomalies(bus: &Bus) -> Vec<(String, Option<u32>, Option<u64>, String)> {
    bus.history()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AnomalyDetected {
                kind,
                replica,
                forecast_ms,
                detail,
                ..
            } => Some((kind.clone(), *replica, *forecast_ms, detail.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn descriptors_growing_toward_their_limit_are_forecast_once_and_steady_ones_are_not() {
    let (bus, _, detector) = setup("[anomaly]\nmin_samples = 5\nhorizon = \"10m\"");
    let t0 = Instant::now();
    for i in 0..20u64 {
        let at = t0 + Duration::from_secs(i);
        // Replica 0 opens 10 descriptors a second (1024 reached in ~100 s); replica 1 is
        // steady; threads and memory stay flat on both.
        detector.samples(
            at,
            &[
                sample(0, 50 << 20, 20 + 10 * i, 8),
                sample(1, 50 << 20, 20 + (i % 2), 8),
            ],
        );
    }
    let got = anomalies(&bus);
    assert_eq!(got.len(), 1, "{got:?}");
    let (kind, replica, forecast, detail) = &got[0];
    assert_eq!((kind.as_str(), *replica), ("fd-growth", Some(0)));
    let forecast = Duration::from_millis(forecast.unwrap());
    assert!(
        forecast > Duration::from_secs(70) && forecast < Duration::from_secs(110),
        "{forecast:?}"
    );
    assert!(detail.contains("forecast to reach the limit"), "{detail}");
    // The replica's process is replaced: a new series, nothing reported for it yet.
    let mut fresh = sample(0, 50 << 20, 20, 8);
    fresh.pid = 9999;
    detector.samples(t0 + Duration::from_secs(21), &[fresh]);
    assert_eq!(anomalies(&bus).len(), 1);
}

fn outcome(ms: u64, status: u16) -> RequestOutcome<'static> {
    RequestOutcome {
        service: "web",
        status,
        duration: Duration::from_millis(ms),
        local: None,
        revision: None,
    }
}

#[test]
fn latency_and_errors_drifting_from_the_service_baseline_are_reported_once_each() {
    let (bus, measures, detector) = setup("");
    let t0 = Instant::now();
    let round = |i: u64, ms: u64, failed: u64| {
        for n in 0..50 {
            measures.record(&outcome(ms, if n < failed { 503 } else { 200 }));
        }
        detector.samples(t0 + Duration::from_secs(i), &[]);
    };
    // A baseline: 20 ms, no errors.
    for i in 0..20 {
        round(i, 20, 0);
    }
    assert!(anomalies(&bus).is_empty(), "{:?}", anomalies(&bus));
    // Ten times slower, then a tenth failing, for long enough.
    for i in 20..30 {
        round(i, 200, 0);
    }
    for i in 30..40 {
        round(i, 200, 5);
    }
    let kinds: Vec<String> = anomalies(&bus).into_iter().map(|a| a.0).collect();
    assert_eq!(kinds, ["latency-drift", "error-drift"], "{kinds:?}");
    let latency = &anomalies(&bus)[0].3;
    assert!(latency.contains("against a baseline of"), "{latency}");
}
