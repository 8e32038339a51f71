//! Bounded in-memory time series of every service and replica, sampled once a second, for
//! the dashboard's charts (`GET /v1/series`).
//!
//! One task ([`spawn`]) reads, on a 1 s tick, what bulwark already counts (the proxy's
//! per-service and per-replica counters and histograms, the supervisor's states, the
//! resource sampler's CPU and RSS, the SLO budgets) through a [`Source`], turns the
//! difference from the previous reading into one point per service and per replica
//! ([`Sampler`]), and appends it to a ring of the last [`CAPACITY`] points ([`Series`]).
//! Sampling adds no work to the request path: the counters it reads are kept anyway (the
//! proxy's per-replica tally is two additions and an array increment under the lock each
//! try already takes), and a reading is O(services + replicas), once a second.
//!
//! Size: a point is its time (8 bytes) and one `f32` per figure (NaN when the figure is not
//! known), 40 bytes for a service and 56 for a replica, so a ring holds
//! [`SERVICE_RING_BYTES`] (24 000 bytes) per service and
//! [`REPLICA_RING_BYTES`] (33 600 bytes) per replica, allocated when the service or replica
//! first appears and dropped with it: about 32 MiB for 1000 replicas. The sampler keeps
//! the previous reading's counters besides (a latency histogram, 768 bytes, per service
//! and replica).
//!
//! Invariants: a ring never holds more than [`CAPACITY`] points; a service or replica
//! missing from a reading loses its ring at once (memory follows the stack, not its
//! history); a figure that is not known is absent (`None`), never made up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use policy::latency_percentile;

/// How often a point is taken.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Points kept per ring: ten minutes at [`INTERVAL`].
pub const CAPACITY: usize = 600;

/// The figures of a service's point, in column order.
pub const SERVICE_FIELDS: [&str; 7] = [
    "rps",
    "error_ratio",
    "p50_ms",
    "p99_ms",
    "inflight",
    "ready",
    "budget_left",
];

/// The figures of a replica's point, in column order.
pub const REPLICA_FIELDS: [&str; 12] = [
    "rps",
    "error_ratio",
    "p50_ms",
    "p99_ms",
    "inflight",
    "ewma_ms",
    "cpu",
    "rss_bytes",
    "restarts",
    "ready",
    "ejected",
    "breaker_open",
];

/// Bytes of one service's ring.
pub const SERVICE_RING_BYTES: usize = CAPACITY * std::mem::size_of::<Point<7>>();
/// Bytes of one replica's ring.
pub const REPLICA_RING_BYTES: usize = CAPACITY * std::mem::size_of::<Point<12>>();

/// Cumulative request counts, as the proxy keeps them: a window is the difference of two.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Counts {
    /// Changes when the counters start again from zero (a reload, a replica rejoining).
    pub epoch: u64,
    pub total: u64,
    /// 5xx answers, or tries that got no answer.
    pub failed: u64,
    /// Counts per `policy::latency_bucket`.
    pub latency: Vec<u64>,
}

/// What a [`Source`] knows of one replica now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplicaReading {
    pub index: u32,
    /// The proxy's tries to it (`None`: not proxied, or no try yet since it joined).
    pub requests: Option<Counts>,
    pub inflight: Option<u64>,
    /// The balancer's peak-EWMA latency estimate.
    pub ewma_ms: Option<f64>,
    /// Cores used, from the resource sampler's last two samples.
    pub cpu: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub restarts: u32,
    pub ready: bool,
    pub ejected: Option<bool>,
    /// `None` without a breaker.
    pub breaker_open: Option<bool>,
}

/// What a [`Source`] knows of one service now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceReading {
    pub name: String,
    /// The proxy's answers (`None`: not exposed).
    pub requests: Option<Counts>,
    pub inflight: Option<u64>,
    pub ready: u32,
    /// The fraction of the first SLO's error budget left (`None` without an SLO).
    pub budget_left: Option<f64>,
    pub replicas: Vec<ReplicaReading>,
}

/// Where the sampler reads the stack's state; called once per [`INTERVAL`] on a runtime
/// worker, so it must only read memory (no I/O, no long locks).
pub trait Source: Send + Sync + 'static {
    fn read(&self) -> Vec<ServiceReading>;
}

/// One point: its time (ms since the epoch) and its figures (NaN: unknown).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point<const N: usize> {
    t: u64,
    v: [f32; N],
}

/// The last [`CAPACITY`] points, oldest first.
#[derive(Debug)]
struct Ring<const N: usize>(VecDeque<Point<N>>);

impl<const N: usize> Ring<N> {
    fn new() -> Self {
        Ring(VecDeque::with_capacity(CAPACITY))
    }

    fn push(&mut self, t: u64, v: [Option<f64>; N]) {
        if self.0.len() == CAPACITY {
            self.0.pop_front();
        }
        self.0.push_back(Point {
            t,
            v: v.map(|x| x.map_or(f32::NAN, |x| x as f32)),
        });
    }

    /// The points after `since` as columns named by `fields`.
    fn columns(&self, fields: &[&'static str; N], since: u64) -> Columns {
        // Points are in time order: skip the old ones from the back.
        let start = self.0.len() - self.0.iter().rev().take_while(|p| p.t > since).count();
        let points = self.0.range(start..);
        Columns {
            t: points.clone().map(|p| p.t).collect(),
            columns: fields
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let col = points
                        .clone()
                        .map(|p| Some(p.v[i]).filter(|x| !x.is_nan()))
                        .collect();
                    (*name, col)
                })
                .collect(),
        }
    }
}

/// Some points of one ring as columns of equal length, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    /// Milliseconds since the epoch.
    pub t: Vec<u64>,
    /// Each figure's values, in [`SERVICE_FIELDS`] or [`REPLICA_FIELDS`] order.
    pub columns: Vec<(&'static str, Vec<Option<f32>>)>,
}

impl Columns {
    /// No points.
    pub fn empty(fields: &[&'static str]) -> Columns {
        Columns {
            t: vec![],
            columns: fields.iter().map(|f| (*f, vec![])).collect(),
        }
    }
}

/// One service's points and its replicas'.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceColumns {
    pub service: Columns,
    pub replicas: BTreeMap<u32, Columns>,
}

struct Rings {
    service: Ring<7>,
    replicas: BTreeMap<u32, Ring<12>>,
}

/// The rings of every service and replica of the stack.
#[derive(Default)]
pub struct Series {
    rings: Mutex<BTreeMap<String, Rings>>,
}

impl Series {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Rings>> {
        self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one round of points taken at `t` (ms since the epoch); a service or
    /// replica missing from `round` loses its ring.
    pub fn push(&self, t: u64, round: Round) {
        let mut rings = self.lock();
        let names: std::collections::HashSet<&str> =
            round.iter().map(|(n, _, _)| n.as_str()).collect();
        rings.retain(|name, _| names.contains(name.as_str()));
        for (name, point, replicas) in round {
            let entry = rings.entry(name).or_insert_with(|| Rings {
                service: Ring::new(),
                replicas: BTreeMap::new(),
            });
            entry.service.push(t, point.0);
            let live: std::collections::HashSet<u32> = replicas.iter().map(|(i, _)| *i).collect();
            entry.replicas.retain(|i, _| live.contains(i));
            for (index, point) in replicas {
                entry
                    .replicas
                    .entry(index)
                    .or_insert_with(Ring::new)
                    .push(t, point.0);
            }
        }
    }

    /// A service's points after `since` (`None`: no such service sampled).
    pub fn service(&self, name: &str, since: u64) -> Option<ServiceColumns> {
        let rings = self.lock();
        let r = rings.get(name)?;
        Some(ServiceColumns {
            service: r.service.columns(&SERVICE_FIELDS, since),
            replicas: r
                .replicas
                .iter()
                .map(|(i, ring)| (*i, ring.columns(&REPLICA_FIELDS, since)))
                .collect(),
        })
    }

    /// Every service's own points (no replicas) after `since`.
    pub fn services(&self, since: u64) -> BTreeMap<String, Columns> {
        self.lock()
            .iter()
            .map(|(name, r)| (name.clone(), r.service.columns(&SERVICE_FIELDS, since)))
            .collect()
    }

    /// Rings held, services and replicas: what memory is spent on.
    pub fn rings(&self) -> (usize, usize) {
        let rings = self.lock();
        (rings.len(), rings.values().map(|r| r.replicas.len()).sum())
    }

    /// The most points any ring holds.
    pub fn longest(&self) -> usize {
        let rings = self.lock();
        rings
            .values()
            .flat_map(|r| {
                std::iter::once(r.service.0.len()).chain(r.replicas.values().map(|x| x.0.len()))
            })
            .max()
            .unwrap_or(0)
    }
}

/// One round of points: each service's, with its replicas'.
pub type Round = Vec<(String, ServicePoint, Vec<(u32, ReplicaPoint)>)>;

/// A service's figures at one point, in [`SERVICE_FIELDS`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServicePoint(pub [Option<f64>; 7]);

/// A replica's figures at one point, in [`REPLICA_FIELDS`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaPoint(pub [Option<f64>; 12]);

/// Rate, error ratio and percentiles of what happened between two readings of a counter.
fn window(now: Option<&Counts>, before: Option<&Counts>, secs: f64) -> [Option<f64>; 4] {
    let Some(now) = now else {
        return [None; 4];
    };
    // No earlier reading of the same counters: nothing to take a difference from.
    let Some(before) = before.filter(|b| b.epoch == now.epoch && b.total <= now.total) else {
        return [None; 4];
    };
    let total = now.total - before.total;
    let failed = now.failed.saturating_sub(before.failed);
    let diff: Vec<u64> = now
        .latency
        .iter()
        .zip(before.latency.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let ms = |p| latency_percentile(&diff, p).map(|d: Duration| d.as_secs_f64() * 1e3);
    [
        Some(total as f64 / secs),
        (total > 0).then(|| failed as f64 / total as f64),
        ms(50.0),
        ms(99.0),
    ]
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Turns successive readings into points: keeps each counter's previous reading.
#[derive(Default)]
pub struct Sampler {
    last: Option<Instant>,
    services: HashMap<String, Option<Counts>>,
    replicas: HashMap<(String, u32), Option<Counts>>,
}

impl Sampler {
    /// The points of `reading`, taken at `at`: rates are over the time since the previous
    /// call. Counters of services and replicas no longer read are forgotten.
    pub fn points(&mut self, reading: Vec<ServiceReading>, at: Instant) -> Round {
        let secs = self
            .last
            .map_or(0.0, |l| at.saturating_duration_since(l).as_secs_f64());
        self.last = Some(at);
        let mut services = HashMap::with_capacity(reading.len());
        let mut replicas = HashMap::new();
        let mut round = Vec::with_capacity(reading.len());
        for s in reading {
            let before = self.services.get(&s.name).and_then(Option::as_ref);
            let w = if secs > 0.0 {
                window(s.requests.as_ref(), before, secs)
            } else {
                [None; 4]
            };
            let point = ServicePoint([
                w[0],
                w[1],
                w[2],
                w[3],
                s.inflight.map(|n| n as f64),
                Some(f64::from(s.ready)),
                s.budget_left,
            ]);
            let mut reps = Vec::with_capacity(s.replicas.len());
            for r in s.replicas {
                let key = (s.name.clone(), r.index);
                let before = self.replicas.get(&key).and_then(Option::as_ref);
                let w = if secs > 0.0 {
                    window(r.requests.as_ref(), before, secs)
                } else {
                    [None; 4]
                };
                reps.push((
                    r.index,
                    ReplicaPoint([
                        w[0],
                        w[1],
                        w[2],
                        w[3],
                        r.inflight.map(|n| n as f64),
                        r.ewma_ms,
                        r.cpu,
                        r.rss_bytes.map(|b| b as f64),
                        Some(f64::from(r.restarts)),
                        Some(flag(r.ready)),
                        r.ejected.map(flag),
                        r.breaker_open.map(flag),
                    ]),
                ));
                replicas.insert(key, r.requests);
            }
            round.push((s.name.clone(), point, reps));
            services.insert(s.name, s.requests);
        }
        self.services = services;
        self.replicas = replicas;
        round
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Samples `source` into `series` every [`INTERVAL`] until aborted. A tick that comes late
/// (a busy runtime) is taken late, never doubled up: points are at least a second apart.
pub fn spawn(series: Arc<Series>, source: Arc<dyn Source>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampler = Sampler::default();
        loop {
            tick.tick().await;
            let round = sampler.points(source.read(), Instant::now());
            series.push(now_ms(), round);
        }
    })
}

/// The resource sampler's latest CPU and RSS of every replica, for the series: a
/// [`crate::resources::SampleSink`] that keeps one figure per replica running now.
#[derive(Default)]
pub struct Resources {
    latest: Mutex<HashMap<(String, u32), Usage>>,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    pid: u32,
    at: Instant,
    cpu_seconds: f64,
    cores: Option<f64>,
    rss_bytes: u64,
}

impl Resources {
    /// Cores used between the last two samples (`None` after a single sample) and RSS, of
    /// a replica sampled in the last round.
    pub fn get(&self, service: &str, index: u32) -> Option<(Option<f64>, u64)> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .get(&(service.to_owned(), index))
            .map(|u| (u.cores, u.rss_bytes))
    }
}

impl crate::resources::SampleSink for Resources {
    fn samples(&self, at: Instant, samples: &[crate::resources::Sample]) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity(samples.len());
        for s in samples {
            let key = (s.service.clone(), s.index);
            let cores = latest
                .get(&key)
                .filter(|u| u.pid == s.pid && at > u.at)
                .map(|u| {
                    (s.cpu_seconds - u.cpu_seconds).max(0.0)
                        / at.saturating_duration_since(u.at).as_secs_f64()
                });
            next.insert(
                key,
                Usage {
                    pid: s.pid,
                    at,
                    cpu_seconds: s.cpu_seconds,
                    cores,
                    rss_bytes: s.rss_bytes,
                },
            );
        }
        *latest = next;
    }
}

#[cfg(test)]
mod tests;
