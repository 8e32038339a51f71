//! Anomaly detection: slow failures caught before users see them.
//!
//! Per replica, from the resource sampler: a robust line (Theil–Sen, `policy::trend`)
//! through the last `window` of memory, descriptors and threads, forecast to the limit
//! (the service's `anomaly.memory_limit` or the machine's memory; the process's own soft
//! limits). Per service, from the proxy's outcomes: p99 latency and error ratio against
//! their own slow baseline. Each anomaly is reported once (an event, a metric) until it
//! clears; the default pack and `[[remediations]]` act on the event.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bus::{Bus, EventKind};
use observe::resources::{Sample, SampleSink};
use policy::trend::{Drift, DriftConfig, forecast};
use spec::{AnomalyKind, AnomalySettings, ServiceAnomaly};

use crate::Measures;
use crate::measures::Reading;
use crate::metrics::{AnomalyLabels, ForecastLabels, Metrics};

/// Points kept per series at most, whatever `window` and `sample_every` say.
const MAX_POINTS: usize = 2048;
/// Requests a drift observation needs in its window.
const DRIFT_MIN_REQUESTS: u64 = 20;

/// What the sampler last said of a service's replicas, for `cpu` and `memory` measures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU cores used, summed over the replicas.
    pub cpu_cores: f64,
    /// Replicas sampled.
    pub replicas: u32,
    /// Resident memory of the largest replica, in bytes.
    pub max_rss: u64,
}

#[derive(Default)]
struct Series(VecDeque<(Instant, f64)>);

impl Series {
    fn push(&mut self, at: Instant, v: f64, window: Duration) {
        self.0.push_back((at, v));
        while self.0.len() > MAX_POINTS
            || self
                .0
                .front()
                .is_some_and(|(t, _)| at.saturating_duration_since(*t) > window)
        {
            self.0.pop_front();
        }
    }

    /// Points as (seconds since the first, value).
    fn points(&self) -> Vec<(f64, f64)> {
        let Some((t0, _)) = self.0.front() else {
            return vec![];
        };
        self.0
            .iter()
            .map(|(t, v)| (t.saturating_duration_since(*t0).as_secs_f64(), *v))
            .collect()
    }
}

#[derive(Default)]
struct Track {
    pid: u32,
    rss: Series,
    fds: Series,
    threads: Series,
    cpu: Option<(Instant, f64)>,
    cores: f64,
    reported: HashSet<AnomalyKind>,
}

struct ServiceDrift {
    last: Option<Reading>,
    latency: Drift,
    errors: Drift,
    reported: HashSet<AnomalyKind>,
}

#[derive(Default)]
struct State {
    replicas: HashMap<(String, u32), Track>,
    usage: HashMap<String, Usage>,
    drift: HashMap<String, ServiceDrift>,
}

/// The anomaly detector: a [`SampleSink`] for the resource sampler.
pub struct Detector {
    settings: RwLock<AnomalySettings>,
    services: RwLock<HashMap<String, ServiceAnomaly>>,
    machine_memory: Option<u64>,
    bus: Arc<Bus>,
    measures: Arc<Measures>,
    metrics: Metrics,
    state: Mutex<State>,
}

impl Detector {
    /// A detector for `stack`'s services, reporting on `bus`.
    pub fn new(
        stack: &spec::Stack,
        bus: Arc<Bus>,
        measures: Arc<Measures>,
        remedy: &crate::Remedy,
    ) -> Self {
        Detector {
            settings: RwLock::new(stack.anomaly.clone()),
            services: RwLock::new(services(stack)),
            machine_memory: machine_memory(),
            bus,
            measures,
            metrics: remedy.inner.shared.metrics.clone(),
            state: Mutex::new(State::default()),
        }
    }

    /// Takes the services of a reloaded stack file.
    pub fn reload(&self, stack: &spec::Stack) {
        *self.services.write().unwrap_or_else(|e| e.into_inner()) = services(stack);
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = stack.anomaly.clone();
    }

    /// What the sampler last said of `service`.
    pub fn usage(&self, service: &str) -> Option<Usage> {
        self.lock().usage.get(service).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds one replica's sample; returns the anomalies it newly shows.
    fn replica(
        &self,
        set: &AnomalySettings,
        st: &mut State,
        at: Instant,
        s: &Sample,
        cfg: ServiceAnomaly,
    ) -> Vec<EventKind> {
        let window = set.window;
        let t = st.replicas.entry((s.service.clone(), s.index)).or_default();
        if t.pid != s.pid {
            *t = Track {
                pid: s.pid,
                ..Track::default()
            };
        }
        if let Some((t0, c0)) = t.cpu {
            let dt = at.saturating_duration_since(t0).as_secs_f64();
            if dt > 0.0 {
                t.cores = ((s.cpu_seconds - c0) / dt).max(0.0);
            }
        }
        t.cpu = Some((at, s.cpu_seconds));
        t.rss.push(at, s.rss_bytes as f64, window);
        if let Some(n) = s.fds {
            t.fds.push(at, n as f64, window);
        }
        if let Some(n) = s.threads {
            t.threads.push(at, n as f64, window);
        }
        if !set.enabled || !cfg.enabled {
            return vec![];
        }
        let memory = cfg.memory_limit.or(self.machine_memory);
        let checks = [
            (AnomalyKind::MemoryLeak, &t.rss, memory),
            (AnomalyKind::FdGrowth, &t.fds, s.fd_limit),
            (AnomalyKind::ThreadGrowth, &t.threads, s.thread_limit),
        ];
        let mut out = vec![];
        let mut seen = vec![];
        for (kind, series, limit) in checks {
            let Some(limit) = limit else { continue };
            match self.trend(set, series, limit as f64) {
                Some((eta, confidence, detail)) => {
                    self.gauge(s, kind).set(eta.as_secs_f64());
                    seen.push(kind);
                    if !t.reported.contains(&kind) {
                        out.push(EventKind::AnomalyDetected {
                            service: s.service.clone(),
                            replica: Some(s.index),
                            kind: kind.as_str().into(),
                            confidence,
                            forecast_ms: Some(eta.as_millis() as u64),
                            detail,
                        });
                    }
                }
                None => {
                    self.gauge(s, kind).set(f64::INFINITY);
                }
            }
        }
        t.reported = seen.into_iter().collect();
        out
    }

    fn gauge(
        &self,
        s: &Sample,
        kind: AnomalyKind,
    ) -> impl std::ops::Deref<
        Target = prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    > + '_ {
        self.metrics.forecast.get_or_create(&ForecastLabels {
            service: s.service.clone(),
            replica: s.index.to_string(),
            kind: kind.as_str().into(),
        })
    }

    /// `Some((time to the limit, confidence, figures))` when the series is forecast to
    /// reach `limit` within the horizon, with enough samples and a consistent trend.
    fn trend(
        &self,
        set: &AnomalySettings,
        series: &Series,
        limit: f64,
    ) -> Option<(Duration, f64, String)> {
        if series.0.len() < set.min_samples as usize {
            return None;
        }
        let f = forecast(&series.points(), limit)?;
        let eta = f.eta?;
        if f.slope_per_sec <= 0.0 || f.confidence < set.min_confidence || eta > set.horizon {
            return None;
        }
        let detail = format!(
            "{} now, growing {}/s, forecast to reach the limit {} in {} (confidence {:.2})",
            amount(f.now_value),
            amount(f.slope_per_sec),
            amount(limit),
            humantime::format_duration(Duration::from_secs(eta.as_secs())),
            f.confidence
        );
        Some((eta, f.confidence, detail))
    }

    /// Drift of each exposed service's p99 and error ratio over the last round.
    fn drifts(&self, set: &AnomalySettings, st: &mut State, at: Instant) -> Vec<EventKind> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![];
        for (name, cfg) in services.iter() {
            let Some(reading) = self.measures.read(name, at) else {
                continue;
            };
            let d = st.drift.entry(name.clone()).or_insert_with(|| drift(set));
            let window = d
                .last
                .replace(reading.clone())
                .map(|prev| reading.since(&prev));
            let Some(w) = window.filter(|w| w.requests >= DRIFT_MIN_REQUESTS) else {
                continue;
            };
            if !set.enabled || !cfg.enabled {
                continue;
            }
            let p99 = w.p99.map(|d| d.as_secs_f64() * 1000.0);
            let checks = [
                (
                    AnomalyKind::LatencyDrift,
                    p99.and_then(|v| d.latency.observe(v).map(|r| (v, r))),
                ),
                (
                    AnomalyKind::ErrorDrift,
                    d.errors
                        .observe(w.error_percent)
                        .map(|r| (w.error_percent, r)),
                ),
            ];
            for (kind, report) in checks {
                let Some((value, r)) = report else {
                    d.reported.remove(&kind);
                    continue;
                };
                if d.reported.insert(kind) {
                    let unit = if kind == AnomalyKind::LatencyDrift {
                        " ms"
                    } else {
                        " %"
                    };
                    out.push(EventKind::AnomalyDetected {
                        service: name.clone(),
                        replica: None,
                        kind: kind.as_str().into(),
                        confidence: r.confidence,
                        forecast_ms: None,
                        detail: format!(
                            "{value:.1}{unit} against a baseline of {:.1}{unit}",
                            r.baseline
                        ),
                    });
                }
            }
        }
        out
    }
}

fn drift(s: &AnomalySettings) -> ServiceDrift {
    let base = DriftConfig {
        alpha: 0.05,
        ratio: None,
        increase: None,
        floor: 0.0,
        warmup: 10,
        sustain: 3,
    };
    ServiceDrift {
        last: None,
        latency: Drift::new(DriftConfig {
            ratio: Some(s.latency_ratio),
            floor: s.latency_floor.as_secs_f64() * 1000.0,
            ..base
        }),
        errors: Drift::new(DriftConfig {
            increase: Some(s.error_increase),
            ..base
        }),
        reported: HashSet::new(),
    }
}

impl SampleSink for Detector {
    fn samples(&self, at: Instant, samples: &[Sample]) {
        let services = self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let set = self
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut events = vec![];
        {
            let mut st = self.lock();
            let live: HashSet<(&str, u32)> = samples
                .iter()
                .map(|s| (s.service.as_str(), s.index))
                .collect();
            st.replicas.retain(|(service, i), _| {
                let keep = live.contains(&(service.as_str(), *i));
                if !keep {
                    // The replica is gone: so are its forecasts.
                    for kind in [
                        AnomalyKind::MemoryLeak,
                        AnomalyKind::FdGrowth,
                        AnomalyKind::ThreadGrowth,
                    ] {
                        self.metrics.forecast.remove(&ForecastLabels {
                            service: service.clone(),
                            replica: i.to_string(),
                            kind: kind.as_str().into(),
                        });
                    }
                }
                keep
            });
            for s in samples {
                let cfg = services.get(&s.service).copied().unwrap_or_default();
                events.extend(self.replica(&set, &mut st, at, s, cfg));
            }
            let mut usage: HashMap<String, Usage> = HashMap::new();
            for ((service, _), t) in &st.replicas {
                let u = usage.entry(service.clone()).or_default();
                u.cpu_cores += t.cores;
                u.replicas += 1;
                u.max_rss = u.max_rss.max(t.rss.0.back().map_or(0, |(_, v)| *v as u64));
            }
            st.usage = usage;
            events.extend(self.drifts(&set, &mut st, at));
        }
        for e in events {
            if let EventKind::AnomalyDetected {
                service,
                kind,
                detail,
                ..
            } = &e
            {
                tracing::warn!(%service, %kind, "anomaly: {detail}");
                self.metrics
                    .anomalies
                    .get_or_create(&AnomalyLabels {
                        service: service.clone(),
                        kind: kind.clone(),
                    })
                    .inc();
            }
            self.bus.publish(e);
        }
    }
}

fn services(stack: &spec::Stack) -> HashMap<String, ServiceAnomaly> {
    stack
        .services
        .iter()
        .map(|s| (s.name.clone(), s.anomaly))
        .collect()
}

/// MemTotal of /proc/meminfo, in bytes.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A byte count for people.
fn amount(bytes: f64) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if bytes.abs() >= MIB {
        format!("{:.1} MiB", bytes / MIB)
    } else {
        format!("{bytes:.0}")
    }
}
