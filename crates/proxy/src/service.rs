//! The policies of one exposed service, built from its `Expose` config. A reload builds a
//! new `ServicePolicy` and swaps it in; requests in flight finish on the one they started with.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bus::{Endpoint, Endpoints};
use policy::{
    BreakerConfig, BudgetConfig, CircuitBreaker, EwmaConfig, HashRing, KeyedBuckets, LatencyWindow,
    OutlierConfig, OutlierDetector, OutlierEvent, P2c, PeakEwma, ReplicaId, RetryBudget, Side,
    SlowStart,
};
use rustc_hash::FxHashMap;
use spec::{Balance, Expose};
use tokio::sync::Semaphore;

/// Everything derived from one version of a service's `Expose` config.
pub(crate) struct ServicePolicy {
    pub expose: Expose,
    /// `expose.request_id_header`, parsed once (`bulwark check` refuses an invalid name;
    /// `x-request-id` stands in should one get here).
    pub request_id: http::HeaderName,
    /// Bulkhead: in-flight requests.
    pub permits: std::sync::Arc<Semaphore>,
    /// Requests waiting for a permit.
    pub waiting: AtomicU32,
    pub cursor: AtomicUsize,
    pub rate: Option<Mutex<KeyedBuckets<u64>>>,
    /// Hashes rate-limit keys (header values, client addresses) with a seed drawn for
    /// this limiter, so a client cannot pick values that collide with another client's
    /// key (the stable hash is for the consistent-hash ring only).
    rate_hasher: RandomState,
    pub state: Mutex<State>,
    /// `[expose.fallback]`, if any: what answers when no replica can.
    pub fallback: Option<crate::fallback::Fallback>,
    /// How the replicas are reached (`[expose.upstream_tls]`).
    pub upstream: crate::upstream_tls::Upstream,
    /// `[expose.auth]`, if any: the external authorization check.
    pub auth: Option<crate::auth::AuthCheck>,
}

/// Per-replica and per-service mutable policy state. One short lock per pick and per
/// result; never held across an await.
pub(crate) struct State {
    version: u64,
    /// Looked up several times per pick: hashed with Fx, not SipHash (the keys are the
    /// replicas' addresses, which no client chooses).
    replicas: FxHashMap<SocketAddr, Rep>,
    outlier: OutlierDetector,
    pub budget: RetryBudget,
    pub latency: LatencyWindow,
    ring: Option<HashRing<u32>>,
    breaker_on: bool,
}

struct Rep {
    /// The replica's connections, handed over with the pick.
    pool: std::sync::Arc<crate::pool::Pool>,
    /// Made at its first try, not when it joins: a replica that never served (scaled
    /// away before any request reached it) leaves no series behind.
    metrics: Option<crate::metrics::ReplicaMetrics>,
    id: ReplicaId,
    replica: u32,
    ewma: PeakEwma,
    breaker: CircuitBreaker,
    ready_since: Instant,
    /// Its tries since it joined this state, for the dashboard's series.
    tally: Tally,
}

/// A replica's tries since it joined a service's state: counted under the lock each try
/// already takes to record its result (two additions and an array increment), read once a
/// second by the series sampler.
struct Tally {
    /// Tells this tally from an earlier one of the same replica (it left and came back, or
    /// a reload started the state afresh): the counts start again from zero.
    epoch: u64,
    tries: u64,
    failed: u64,
    latency: Box<[u64; policy::LATENCY_BUCKETS]>,
}

impl Tally {
    fn new() -> Tally {
        static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Tally {
            epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            tries: 0,
            failed: 0,
            latency: Box::new([0; policy::LATENCY_BUCKETS]),
        }
    }
}

/// One replica as the proxy sees it, for the dashboard's series ([`crate::Hooks::stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStats {
    pub replica: u32,
    /// Changes when the counts below start again from zero.
    pub epoch: u64,
    /// Tries sent to it since it joined.
    pub tries: u64,
    /// Of which answered 5xx or not at all (connect failure, reset, timeout).
    pub failed: u64,
    /// Answered tries by `policy::latency_bucket` of their time to the response head.
    pub latency: Vec<u64>,
    /// The balancer's peak-EWMA latency estimate, in milliseconds.
    pub ewma_ms: f64,
    /// Ejected by outlier detection.
    pub ejected: bool,
    /// Its breaker is open (`None`: the service has no breaker).
    pub breaker_open: Option<bool>,
    /// Requests in flight to it (`None`: it is not among the ready endpoints).
    pub inflight: Option<u64>,
}

/// What a try ended with, as far as passive health cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TryResult {
    /// A response head with this status.
    Status(u16),
    /// No connection to the replica.
    ConnectFailed,
    /// The connection was reset or closed (or spoke broken HTTP) before a response head.
    Reset,
    /// No response head within the per-try timeout.
    Timeout,
}

/// Which revisions a request may go to during a rollout that splits traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Only this revision (the new one).
    Only(u32),
    /// Any revision but this one (the stable side).
    Not(u32),
}

impl Lane {
    fn admits(self, revision: u32) -> bool {
        match self {
            Lane::Only(r) => revision == r,
            Lane::Not(r) => revision != r,
        }
    }
}

/// Transitions the caller publishes as events.
pub(crate) enum Notice {
    Ejected {
        replica: u32,
        reason: String,
        for_ms: u64,
    },
    Readmitted {
        replica: u32,
    },
}

impl ServicePolicy {
    pub fn new(expose: Expose, now: Instant) -> ServicePolicy {
        let o = &expose.outlier;
        let outlier = OutlierDetector::new(OutlierConfig {
            consecutive_5xx: if o.enabled { o.consecutive_5xx } else { 0 },
            consecutive_gateway_errors: if o.enabled {
                o.consecutive_gateway_errors
            } else {
                0
            },
            success_rate_percent: if o.enabled {
                o.success_rate.round() as u32
            } else {
                0
            },
            success_rate_min_requests: o.success_rate_min_requests,
            success_rate_window: o.success_rate_window,
            base_ejection: o.base_ejection,
            max_ejection: o.max_ejection,
            max_ejection_percent: if o.enabled {
                o.max_ejection_percent.round() as u32
            } else {
                0
            },
            panic_threshold_percent: o.panic_threshold.round() as u32,
            ..OutlierConfig::default()
        });
        let r = &expose.retries;
        let budget = RetryBudget::new(BudgetConfig {
            ttl: Duration::from_secs(10),
            min_per_sec: r.budget_min_per_second,
            retry_ratio: r.budget_percent / 100.0,
        });
        let rate = expose
            .rate_limit
            .as_ref()
            .map(|rl| Mutex::new(KeyedBuckets::new(rl.rate, rl.burst, rl.max_keys as usize)));
        let _ = now;
        ServicePolicy {
            request_id: http::HeaderName::from_bytes(expose.request_id_header.as_bytes())
                .unwrap_or(http::HeaderName::from_static("x-request-id")),
            permits: std::sync::Arc::new(Semaphore::new(expose.limits.max_inflight as usize)),
            waiting: AtomicU32::new(0),
            cursor: AtomicUsize::new(0),
            rate,
            rate_hasher: RandomState::new(),
            state: Mutex::new(State {
                version: u64::MAX,
                replicas: FxHashMap::default(),
                outlier,
                budget,
                latency: LatencyWindow::new(Duration::from_secs(10), 10),
                ring: None,
                breaker_on: expose.breaker.consecutive_failures > 0,
            }),
            fallback: expose.fallback.as_ref().map(crate::fallback::Fallback::new),
            upstream: crate::upstream_tls::Upstream::new(&expose),
            auth: expose
                .auth
                .as_ref()
                .map(|a| crate::auth::AuthCheck::new(a, expose.limits.max_inflight)),
            expose,
        }
    }

    /// The rate-limit bucket key of `value`.
    pub fn rate_key<T: Hash + ?Sized>(&self, value: &T) -> u64 {
        self.rate_hasher.hash_one(value)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn breaker(&self) -> BreakerConfig {
        let b = &self.expose.breaker;
        BreakerConfig {
            consecutive_failures: b.consecutive_failures.max(1),
            base_cooldown: b.cooldown,
            max_cooldown: b.max_cooldown,
            ..BreakerConfig::default()
        }
    }
}

impl State {
    /// Follows endpoint changes: O(replicas) per new snapshot, nothing otherwise.
    /// A replica that joins gets a connection pool with a connection opened on each of
    /// `workers`.
    pub fn sync(
        &mut self,
        policy: &ServicePolicy,
        snap: &Endpoints,
        now: Instant,
        workers: &crate::Workers,
    ) -> Vec<Notice> {
        if snap.version == self.version {
            return vec![];
        }
        self.version = snap.version;
        let mut notices = vec![];
        let live: std::collections::HashSet<SocketAddr> =
            snap.ready.iter().map(|e| e.addr).collect();
        let gone: Vec<SocketAddr> = self
            .replicas
            .keys()
            .filter(|a| !live.contains(a))
            .copied()
            .collect();
        for addr in gone {
            let Some(rep) = self.replicas.remove(&addr) else {
                continue;
            };
            if let Some(ev) = self.outlier.remove(rep.id, now) {
                notices.extend(self.notice(ev));
            }
        }
        // A newcomer starts at its peers' mean latency estimate: a fixed default (linkerd's
        // 30 ms) would starve it under P2C next to peers answering in a fraction of that.
        // `joining`: its first response (which pays for the connect) sets no peak above
        // that seed.
        let peers: Vec<f64> = self
            .replicas
            .values()
            .map(|r| r.ewma.estimate(now))
            .collect();
        let seed = if peers.is_empty() {
            EwmaConfig::default().default_rtt
        } else {
            Duration::from_secs_f64(peers.iter().sum::<f64>() / peers.len() as f64)
        };
        for e in &snap.ready {
            if !self.replicas.contains_key(&e.addr) {
                let id = self.outlier.add(now);
                let pool = crate::pool::Pool::new(
                    e.addr,
                    policy.expose.timeouts.connect,
                    (policy.expose.upstream_http2, policy.upstream.clone()),
                    workers.len(),
                );
                // Its first request should not pay for the connect (HTTP/2 only, see
                // `warm`). A TCP-mode service speaks no HTTP at all.
                if policy.expose.protocol == spec::Protocol::Http {
                    pool.warm(workers);
                }
                self.replicas.insert(
                    e.addr,
                    Rep {
                        pool,
                        metrics: None,
                        id,
                        replica: e.replica,
                        ewma: PeakEwma::joining(
                            EwmaConfig {
                                default_rtt: seed,
                                ..EwmaConfig::default()
                            },
                            now,
                        ),
                        breaker: CircuitBreaker::new(policy.breaker()),
                        ready_since: e.ready_since,
                        tally: Tally::new(),
                    },
                );
            }
        }
        self.ring = match &policy.expose.balance {
            Balance::Hash(_) => Some(HashRing::new(snap.ready.iter().map(|e| (e.replica, 1)))),
            _ => None,
        };
        notices
    }

    fn notice(&self, ev: OutlierEvent) -> Option<Notice> {
        let replica_of = |id: ReplicaId| {
            self.replicas
                .values()
                .find(|r| r.id == id)
                .map(|r| r.replica)
        };
        match ev {
            OutlierEvent::Ejected {
                replica,
                until,
                reason,
                ..
            } => Some(Notice::Ejected {
                replica: replica_of(replica)?,
                reason: format!("{reason:?}"),
                for_ms: until.saturating_duration_since(Instant::now()).as_millis() as u64,
            }),
            OutlierEvent::Readmitted { replica } => Some(Notice::Readmitted {
                replica: replica_of(replica)?,
            }),
        }
    }

    /// Picks a replica for the next try, not in `tried`, in `lane` if given, with its
    /// connection pool. Ejected replicas and open breakers are skipped, unless too few
    /// replicas are healthy (panic mode).
    #[allow(clippy::too_many_arguments)]
    pub fn pick<'a>(
        &mut self,
        policy: &ServicePolicy,
        ready: &'a [Endpoint],
        tried: &[SocketAddr],
        key: Option<u64>,
        lane: Option<Lane>,
        now: Instant,
    ) -> Option<(&'a Endpoint, std::sync::Arc<crate::pool::Pool>)> {
        let panic = self.outlier.panic();
        // Candidates are counted and indexed by walking `ready` again rather than
        // collected: replica counts are small and the request path allocates nothing.
        let is_cand = |e: &Endpoint| {
            if tried.contains(&e.addr) || lane.is_some_and(|l| !l.admits(e.revision)) {
                return false;
            }
            let Some(rep) = self.replicas.get(&e.addr) else {
                return false;
            };
            let healthy = panic || self.outlier.admissible(rep.id, now);
            let closed = !self.breaker_on
                || !matches!(rep.breaker.state(), policy::BreakerState::Open { until } if until > now);
            healthy && closed
        };
        // Cluster mode: this node's replicas while one of them can take the try.
        let local_only = policy::locality::local_only(
            policy.expose.prefer_local,
            || ready.iter().any(Endpoint::is_remote),
            || ready.iter().any(|e| !e.is_remote() && is_cand(e)),
        );
        let is_cand = |e: &Endpoint| (!local_only || !e.is_remote()) && is_cand(e);
        let n = ready.iter().filter(|e| is_cand(e)).count();
        if n == 0 {
            return None;
        }
        let nth = |i: usize| ready.iter().filter(|e| is_cand(e)).nth(i);
        let slow = policy.expose.slow_start;
        let factor = |e: &Endpoint| -> f64 {
            if slow.is_zero() {
                return 1.0;
            }
            let since = self.replicas.get(&e.addr).map_or(now, |r| r.ready_since);
            SlowStart {
                window: slow,
                ..SlowStart::default()
            }
            .factor(since, now)
        };
        let chosen = match &policy.expose.balance {
            Balance::P2c => {
                if n == 1 {
                    nth(0)?
                } else {
                    let a = rand::random_range(0..n);
                    let mut b = rand::random_range(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let contender = |e: &Endpoint| {
                        let rep = self.replicas.get(&e.addr);
                        let inflight = e.load.inflight();
                        policy::Contender {
                            cost: rep.map_or(0.0, |r| r.ewma.cost(inflight, now)),
                            inflight,
                            idle: rep.map_or(Duration::ZERO, |r| r.ewma.idle(now)),
                            warmth: factor(e),
                        }
                    };
                    let (ea, eb) = (nth(a)?, nth(b)?);
                    match P2c::default().choose(&contender(ea), &contender(eb), rand::random()) {
                        Side::First => ea,
                        Side::Second => eb,
                    }
                }
            }
            Balance::RoundRobin => nth(policy.cursor.fetch_add(1, Ordering::Relaxed) % n)?,
            Balance::LeastRequest => {
                let start = rand::random_range(0..n);
                (0..n)
                    .filter_map(|i| nth((start + i) % n))
                    .min_by_key(|e| e.load.inflight())?
            }
            Balance::Weighted(weights) => {
                let w = |i: usize| {
                    nth(i).map_or(0.0, |e| {
                        f64::from(*weights.get(e.replica as usize).unwrap_or(&1)) * factor(e)
                    })
                };
                nth(policy::pick_weighted(n, w, rand::random())?)?
            }
            Balance::Hash(_) => match (key, &self.ring) {
                (Some(k), Some(ring)) => {
                    let idx =
                        ring.pick_where(k, |r| ready.iter().any(|e| e.replica == r && is_cand(e)))?;
                    ready.iter().find(|e| e.replica == idx)?
                }
                _ => nth(rand::random_range(0..n))?,
            },
        };
        let rep = self.replicas.get_mut(&chosen.addr)?;
        // A replica on probation lets exactly one request through.
        if !panic && !self.outlier.try_admit(rep.id, now) {
            return None;
        }
        if self.breaker_on && rep.breaker.allow(now).is_err() {
            return None;
        }
        Some((chosen, rep.pool.clone()))
    }

    /// Feeds one try's result to passive health, the breaker and the latency estimators.
    pub fn record(
        &mut self,
        addr: SocketAddr,
        (result, rtt): (TryResult, Duration),
        registry: &(crate::metrics::ProxyMetrics, String),
        now: Instant,
    ) -> Option<Notice> {
        let rep = self.replicas.get_mut(&addr)?;
        let outcome = match result {
            TryResult::Status(s) => policy::Outcome::from_status(s),
            TryResult::ConnectFailed | TryResult::Reset => policy::Outcome::GatewayError,
            TryResult::Timeout => policy::Outcome::LocalTimeout,
        };
        let transport_ok = matches!(result, TryResult::Status(_));
        rep.tally.tries += 1;
        match result {
            TryResult::Status(s) => {
                rep.tally.failed += u64::from(s >= 500);
                rep.tally.latency[policy::latency_bucket(rtt)] += 1;
            }
            _ => rep.tally.failed += 1,
        }
        let m = rep
            .metrics
            .get_or_insert_with(|| registry.0.for_replica(&registry.1, rep.replica));
        m.tried(match result {
            TryResult::Status(s) => Some(s),
            _ => None,
        });
        if self.breaker_on {
            let _ = rep.breaker.record(transport_ok, now);
            let open = matches!(rep.breaker.state(), policy::BreakerState::Open { .. });
            m.breaker_open.set(i64::from(open));
        }
        if let TryResult::Status(_) = result {
            rep.ewma.observe(rtt, now);
            self.latency.record(rtt, now);
        }
        let id = rep.id;
        let ev = self.outlier.record(id, outcome, now, rand::random::<f64>());
        let ejected = matches!(
            self.outlier.state(id),
            Some(policy::OutlierState::Ejected { .. })
        );
        if let Some(m) = self.replicas.get(&addr).and_then(|r| r.metrics.as_ref()) {
            m.ejected.set(i64::from(ejected));
        }
        self.notice(ev?)
    }

    /// Every replica in this state, as the series sampler reads it: O(replicas) under the
    /// lock, once a second.
    pub fn stats(&self, now: Instant) -> Vec<ReplicaStats> {
        self.replicas
            .values()
            .map(|rep| ReplicaStats {
                replica: rep.replica,
                epoch: rep.tally.epoch,
                tries: rep.tally.tries,
                failed: rep.tally.failed,
                latency: rep.tally.latency.to_vec(),
                ewma_ms: rep.ewma.estimate(now) * 1e3,
                ejected: matches!(
                    self.outlier.state(rep.id),
                    Some(policy::OutlierState::Ejected { .. })
                ),
                breaker_open: self.breaker_on.then(|| {
                    matches!(rep.breaker.state(), policy::BreakerState::Open { until } if until > now)
                }),
                inflight: None,
            })
            .collect()
    }

    /// The hedging delay: the configured percentile of recent latencies.
    pub fn hedge_after(
        &mut self,
        percentile: f64,
        floor: Duration,
        now: Instant,
    ) -> Option<Duration> {
        self.latency
            .percentile(percentile, now)
            .map(|d| d.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited() -> ServicePolicy {
        let mut e = Expose::new(([127, 0, 0, 1], 0).into());
        e.rate_limit = Some(spec::RateLimit {
            rate: 1.0,
            burst: 1,
            key: spec::RateKey::Header("x-user".into()),
            max_keys: 16,
        });
        ServicePolicy::new(e, Instant::now())
    }

    #[test]
    fn rate_limit_keys_are_seeded_per_limiter() {
        let (a, b) = (limited(), limited());
        let v: &[u8] = b"alice";
        assert_eq!(a.rate_key(v), a.rate_key(v), "stable within one limiter");
        assert_ne!(
            a.rate_key(v),
            b.rate_key(v),
            "each limiter draws its own seed"
        );
        // Not the unkeyed stable hash a client could compute (and collide) offline.
        assert_ne!(a.rate_key(v), policy::hash_bytes(v));
        assert_ne!(b.rate_key(v), policy::hash_bytes(v));
    }
}
