//! One request's way through the proxy: entry policies (fault injection, rate limit,
//! bulkhead, routes) on the service it arrived at, then balancing, retries and hedging on
//! the service it is routed to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bus::{Bus, Endpoint, Endpoints, EventKind, LocalReason, OutcomeSink, RequestOutcome};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};

use spec::{Balance, FaultAction, HashOn, RateKey, RouteMatch};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::body::{Inbound, ResponseBody, Timed, Tracked, UpstreamBody};
use crate::conn::{Conn, after};
use crate::headers::{check_request, cookie, forwarding_headers, is_upgrade, strip_hop_by_hop};
use crate::metrics::ServiceMetrics;
use crate::pool::{Lease, Pool, PoolError};
use crate::service::{Lane, Notice, ServicePolicy, TryResult};
use crate::tunnel::{ClientUpgrade, tunnel};

/// Shared by every service proxy of a `bulwark up`.
pub struct Hooks {
    pub bus: Option<Arc<Bus>>,
    /// The global fault kill switch: `false` turns every injected fault off.
    pub faults_on: watch::Receiver<bool>,
    /// Where to ask for a replica restart when `outlier.restart_ejected` is set.
    pub restart: Option<mpsc::UnboundedSender<(String, u32)>>,
    /// Every service's proxy by service name: where `[[expose.routes]]` forward to.
    pub services: RwLock<HashMap<String, Arc<ServiceProxy>>>,
    /// Faults injected at run time (chaos experiments), under the same kill switch.
    pub injected: Arc<crate::Injected>,
    /// The run-time switches (`[switches]`).
    pub switches: Arc<crate::Switchboard>,
    /// The proxy's worker threads: listeners accept on each, and each replica's pool
    /// keeps connections per worker.
    pub workers: crate::Workers,
}

/// What the proxy knows of one service now, for the dashboard's series.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStats {
    /// Requests the proxy is working on for it.
    pub inflight: u64,
    pub replicas: Vec<crate::service::ReplicaStats>,
}

impl Hooks {
    /// `service`'s requests in flight and its replicas as the balancer sees them (`None`:
    /// it has no proxy). Reads counters under the service's state lock, O(replicas): for
    /// a sampler, not for a request.
    pub fn stats(&self, service: &str) -> Option<ServiceStats> {
        let proxy = self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)?
            .clone();
        let mut replicas = proxy.policy().lock().stats(std::time::Instant::now());
        let snapshot = proxy.endpoints.borrow().clone();
        let inflight: HashMap<u32, u64> = snapshot
            .ready
            .iter()
            .map(|e| (e.replica, e.load.inflight() as u64))
            .collect();
        for r in &mut replicas {
            r.inflight = inflight.get(&r.replica).copied();
        }
        Some(ServiceStats {
            inflight: proxy.metrics.inflight.get().max(0) as u64,
            replicas,
        })
    }

    /// An injected fault for a try sent to `ep` of `service`, while faults are on.
    fn injected_on(&self, service: &str, ep: &Endpoint) -> Option<(FaultAction, crate::Live)> {
        if self.injected.is_empty() || !*self.faults_on.borrow() {
            return None;
        }
        self.injected.on_replica(service, ep.replica)
    }
}

/// Asking hyper to drop the client connection without an answer (an injected reset).
#[derive(Debug)]
pub struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by an injected fault")
    }
}

impl std::error::Error for InjectedReset {}

/// One service's forwarding state: its policies (swapped whole by a reload, with the
/// replicas' connection pools) and its view of the ready replicas.
pub struct ServiceProxy {
    pub service: String,
    pub endpoints: watch::Receiver<Arc<Endpoints>>,
    /// Swapped whole by a reload; each request reads the snapshot current when it began.
    pub(crate) policy: ArcSwap<ServicePolicy>,
    pub(crate) metrics: ServiceMetrics,
    /// For per-replica metrics of replicas that join later.
    pub(crate) registry: (crate::metrics::ProxyMetrics, String),
    pub outcomes: Option<Arc<dyn OutcomeSink>>,
    pub hooks: Arc<Hooks>,
    /// A blue-green preview listener's proxy: only a rollout's new revision answers.
    pub preview: bool,
}

/// Which revision answered, carried in the response's extensions to the outcome.
#[derive(Debug, Clone, Copy)]
struct Served(u32);

/// The methods that only read (RFC 9110's safe methods): under `route = "writes"` they
/// go to every ready replica, the others to the leader.
fn safe_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The header that carries the leader's fencing token. A client's own is removed, so a
/// replica can trust it came from bulwark; only a request to the current leader gets one.
pub(crate) const FENCING_TOKEN: &str = "bulwark-fencing-token";

fn fencing_token(headers: &mut HeaderMap, l: &bus::LeaderRouting, replica: u32) {
    headers.remove(FENCING_TOKEN);
    if let Some(c) = l.current.filter(|c| c.replica == replica) {
        headers.insert(FENCING_TOKEN, HeaderValue::from(c.token));
    }
}

/// Whether a request may be sent twice without changing its meaning (RFC 9110 §9.2.2).
pub(crate) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl ServiceProxy {
    pub(crate) fn policy(&self) -> Arc<ServicePolicy> {
        self.policy.load_full()
    }

    /// Entry point for a request that arrived on this service's listener.
    pub(crate) async fn handle(
        &self,
        req: Request<Inbound>,
        conn: &Arc<Conn>,
    ) -> Result<Response<ResponseBody>, InjectedReset> {
        let began = Instant::now();
        let inflight = InflightGuard::new(&self.metrics.inflight);
        let (res, local) = self.entry(req, conn, began).await?;
        drop(inflight);
        let status = res.status().as_u16();
        let duration = began.elapsed();
        self.metrics.answered(status);
        self.metrics.duration.observe(duration.as_secs_f64());
        if let Some(sink) = &self.outcomes {
            sink.record(&RequestOutcome {
                service: &self.service,
                status,
                duration,
                local,
                revision: res.extensions().get::<Served>().map(|s| s.0),
            });
        }
        Ok(res)
    }

    /// A request from its head to its answer.
    ///
    /// The paths most requests do not take (an external auth check, a fallback, a switched
    /// off route, hedging, waiting for a leader) are boxed where they are awaited: the
    /// request's future holds its largest path inline, and it is copied whole (memcpy)
    /// each time it moves into its box and its caller. Inline, they made it about 13 KB and
    /// half the proxy's instructions per request were that copy (callgrind).
    async fn entry(
        &self,
        mut req: Request<Inbound>,
        conn: &Arc<Conn>,
        began: Instant,
    ) -> Result<(Response<ResponseBody>, Option<LocalReason>), InjectedReset> {
        let (version, uri) = (req.version(), req.uri().clone());
        if let Err(why) = check_request(version, &uri, req.headers_mut()) {
            let res = closing(
                answer(StatusCode::BAD_REQUEST, &format!("{why}\n")),
                version,
            );
            return Ok((res, Some(LocalReason::BadRequest)));
        }
        let peer = conn.peer;
        let policy = self.policy();
        let cfg = &policy.expose;
        if let Some(answered) = self.inject(cfg, req.headers()).await {
            return answered.map(|res| (res, Some(LocalReason::Injected)));
        }
        if let (Some(rl), Some(spec_rl)) = (&policy.rate, &cfg.rate_limit) {
            // Keyed with the limiter's own random seed: a client cannot choose values
            // that share another client's bucket.
            let key = match &spec_rl.key {
                RateKey::Service => 0,
                RateKey::ClientAddress => policy.rate_key(&peer.ip()),
                RateKey::Header(h) => req
                    .headers()
                    .get(h.as_str())
                    .map_or(0, |v| policy.rate_key(v.as_bytes())),
            };
            let verdict = rl
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_take(key, std::time::Instant::now());
            if let Err(wait) = verdict {
                self.metrics.rate_limited.inc();
                let mut res = answer(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded\n");
                res.headers_mut()
                    .insert(header::RETRY_AFTER, retry_after(wait));
                return Ok((res, Some(LocalReason::RateLimited)));
            }
        }
        let deadline = after(began, cfg.timeouts.request);
        // The external check comes after the local rate limit (a flood is refused before
        // it reaches the auth service) and before the body is read or a permit taken (a
        // request refused holds nothing).
        if let Some(auth) = &policy.auth {
            match Box::pin(auth.check(&req, peer, deadline, &self.metrics)).await {
                crate::auth::Verdict::Forward(set) => auth.apply(req.headers_mut(), set),
                crate::auth::Verdict::Answer(res, why) => return Ok((res, Some(why))),
            }
        }
        // The replayable body is read before a bulkhead permit is taken, within the
        // request deadline: a client that stalls its body holds no shared capacity, and
        // gets 408.
        let req = match read_body(req, cfg.retries.max_body, deadline).await {
            Ok(req) => req,
            Err((status, msg, version)) => {
                return Ok((
                    closing(answer(status, &msg), version),
                    Some(LocalReason::BadRequest),
                ));
            }
        };
        // Bulkhead: a bounded number in flight, a bounded queue, then fast 503s.
        let Some(_permit) = self.admit(&policy).await else {
            self.metrics.shed.inc();
            let mut res = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "over capacity; retry later\n",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok((res, Some(LocalReason::Shed)));
        };
        let mut req = req;
        // Replicas see bulwark's switch states only, never a client's.
        req.headers_mut().remove(crate::SWITCHES_HEADER);
        let switches = self
            .hooks
            .switches
            .decide(req.headers(), peer, &cfg.request_id_header);
        if let Some(header) = switches.as_ref().and_then(crate::switches::Decided::header) {
            req.headers_mut().insert(crate::SWITCHES_HEADER, header);
        }
        let routed = self.route_for(&policy, req.headers());
        if let (Some(on), Some((Some(switch), _))) = (&switches, &routed)
            && !on.is_on(switch)
        {
            return Ok(Box::pin(self.switched_off(&policy, req, conn)).await);
        }
        let target = routed.map(|(_, t)| t);
        let target = target.as_deref().unwrap_or(self);
        Ok(match &policy.fallback {
            None => target.forward(req, conn, deadline).await,
            // Boxed: the fallback's own forward would double the request's future.
            Some(f) => {
                Box::pin(self.forward_or_fallback(&policy, f, target, req, conn, deadline)).await
            }
        })
    }

    /// Takes in the current endpoints now rather than at the next request, so a joining
    /// replica's pool is warm before traffic reaches it (see [`crate::server`]).
    pub(crate) fn sync_now(&self) {
        let policy = self.policy();
        let snapshot = self.endpoints.borrow().clone();
        let now = std::time::Instant::now();
        let notices = policy
            .lock()
            .sync(&policy, &snapshot, now, &self.hooks.workers);
        self.publish(&policy, notices);
    }

    /// A bulkhead permit: at once if one is free, else after waiting in the bounded queue
    /// up to `limits.queue_timeout`; `None` when the queue is full or the wait ran out.
    async fn admit(&self, policy: &ServicePolicy) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(p) = policy.permits.clone().try_acquire_owned() {
            return Some(p);
        }
        let limits = &policy.expose.limits;
        let waiting = policy.waiting.fetch_add(1, Ordering::AcqRel);
        let got = if waiting < limits.queue {
            let permit = policy.permits.clone().acquire_owned();
            tokio::time::timeout(limits.queue_timeout, permit)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        policy.waiting.fetch_sub(1, Ordering::AcqRel);
        got
    }

    /// The stack file's faults, then one injected on this listener: a delay, or the
    /// answer (an abort) or reset that replaces forwarding.
    async fn inject(
        &self,
        cfg: &spec::Expose,
        headers: &HeaderMap,
    ) -> Option<Result<Response<ResponseBody>, InjectedReset>> {
        if (cfg.faults.is_empty() && self.hooks.injected.is_empty())
            || !*self.hooks.faults_on.borrow()
        {
            return None;
        }
        let declared = cfg.faults.iter().filter(|f| {
            let triggered = f
                .header
                .as_ref()
                .is_none_or(|h| headers.contains_key(h.as_str()));
            triggered && f.percent > 0.0 && rand::random::<f64>() * 100.0 < f.percent
        });
        let actions = declared.map(|f| (f.action, None)).chain(
            self.hooks
                .injected
                .on_entry(&self.service)
                .map(|(a, live)| (a, Some(live))),
        );
        for (action, live) in actions {
            self.metrics.injected.inc();
            match action {
                FaultAction::Delay(d) => match live {
                    // An injected delay ends with its injection.
                    Some(mut live) => tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = crate::injected::ended(&mut live) => {}
                    },
                    None => tokio::time::sleep(d).await,
                },
                FaultAction::Abort(code) => {
                    let status =
                        StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    return Some(Ok(answer(status, "fault injected by bulwark\n")));
                }
                FaultAction::Reset => return Some(Err(InjectedReset)),
            }
        }
        None
    }

    /// `[[expose.routes]]`: header matches first, then weighted splits. The route's
    /// switch comes along.
    fn route_for<'p>(
        &self,
        policy: &'p ServicePolicy,
        headers: &HeaderMap,
    ) -> Option<(Option<&'p str>, Arc<ServiceProxy>)> {
        let routes = &policy.expose.routes;
        if routes.is_empty() {
            return None;
        }
        let draw = rand::random::<f64>() * 100.0;
        let mut acc = 0.0;
        let to = routes
            .iter()
            .find(|r| match &r.matcher {
                RouteMatch::Header { name, value } => headers
                    .get(name.as_str())
                    .is_some_and(|v| v.as_bytes() == value.as_bytes()),
                RouteMatch::Weight(_) => false,
            })
            .or_else(|| {
                routes.iter().find(|r| match r.matcher {
                    RouteMatch::Weight(w) => {
                        acc += w;
                        draw < acc
                    }
                    RouteMatch::Header { .. } => false,
                })
            })?;
        let proxy = self
            .hooks
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to.to)
            .cloned()?;
        Some((to.switch.as_deref(), proxy))
    }

    /// Balancing, retries and hedging over this service's ready replicas, all by
    /// `deadline` (set once on entry, from the entry service's `timeouts.request`).
    // Long on purpose: one request's life (pick, try, retry, hedge) sharing many locals.
    #[allow(clippy::too_many_lines)]
    pub(crate) async fn forward(
        &self,
        mut req: Request<UpstreamBody>,
        conn: &Arc<Conn>,
        deadline: Instant,
    ) -> (Response<ResponseBody>, Option<LocalReason>) {
        let peer = conn.peer;
        let policy = self.policy();
        let cfg = &policy.expose;
        let upgrade = is_upgrade(req.headers()).then(|| ClientUpgrade::take(&mut req));
        let (mut parts, body) = req.into_parts();
        let upgrade_headers = upgrade.as_ref().map(|_| {
            (
                parts.headers.get(header::CONNECTION).cloned(),
                parts.headers.get(header::UPGRADE).cloned(),
            )
        });
        strip_hop_by_hop(&mut parts.headers);
        if let Some((conn, up)) = upgrade_headers {
            if let Some(c) = conn {
                parts.headers.insert(header::CONNECTION, c);
            }
            if let Some(u) = up {
                parts.headers.insert(header::UPGRADE, u);
            }
        }
        forwarding_headers(&mut parts.headers, peer, &policy.request_id);
        let key = match &cfg.balance {
            Balance::Hash(on) => Some(match on {
                HashOn::Header(h) => parts
                    .headers
                    .get(h.as_str())
                    .map_or(0, |v| policy::hash_bytes(v.as_bytes())),
                HashOn::Cookie(c) => {
                    cookie(&parts.headers, c).map_or(0, |v| policy::hash_bytes(v.as_bytes()))
                }
                HashOn::ClientAddress => policy::hash_key(&peer.ip()),
            }),
            _ => None,
        };
        // A request is retried only if its body can be sent again: small bodies were
        // buffered on entry, larger ones stream through once.
        // A streamed body's client may stall: a try timing out then is not the replica's.
        let stalled = match &body {
            Either::Right(t) => Some(t.waiting_on_client()),
            Either::Left(_) => None,
        };
        let mut body = Some(body);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let resendable = cfg.retries.all_methods || idempotent(&parts.method);
        let attempts = if upgrade.is_some() {
            1
        } else {
            cfg.retries.attempts.clamp(1, 10) as usize
        };
        let mut tried = Tried::default();
        let mut last: Option<(StatusCode, String, Option<LocalReason>)> = None;
        let mut lane = None;
        for attempt in 0..attempts {
            let snapshot = self.endpoints.borrow().clone();
            if attempt == 0 {
                lane = self.lane(&snapshot, &parts.headers);
            }
            // `[leader]`: this request may only go to the current leader; during a
            // failover it waits (within its deadline) for the next one.
            let to_leader = snapshot
                .leader
                .as_ref()
                .is_some_and(|l| l.to_leader(safe_method(&parts.method)));
            let snapshot = match to_leader {
                true => Box::pin(self.leader_ready(snapshot, tried.as_slice(), deadline)).await,
                false => snapshot,
            };
            // One short lock per try: endpoint changes, the budget deposit (first try
            // only), the pick and its replica's connection pool.
            let picked = {
                let mut st = policy.lock();
                let now = std::time::Instant::now();
                if attempt == 0 {
                    st.budget.deposit(now);
                }
                let notices = st.sync(&policy, &snapshot, now, &self.hooks.workers);
                let tried = tried.as_slice();
                let (ready, lane) = match to_leader {
                    true => (snapshot.leader_only(), None),
                    false => (&snapshot.ready[..], lane),
                };
                let ep = match st.pick(&policy, ready, tried, key, lane, now) {
                    // A side of the split with nobody to answer (a rollback under way):
                    // the other side answers, except on the preview listener.
                    None if lane.is_some() && !self.preview => {
                        st.pick(&policy, ready, tried, key, None, now)
                    }
                    ep => ep,
                }
                .map(|(e, pool)| (e.clone(), pool));
                drop(st);
                self.publish(&policy, notices);
                ep
            };
            let Some((ep, pool)) = picked else {
                if attempt == 0 {
                    let what = if to_leader { "leader" } else { "replica" };
                    let mut res = answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("no ready {what} for service {}\n", self.service),
                    );
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return (res, Some(LocalReason::NoReplica));
                }
                break;
            };
            tried.push(ep.addr);
            let this_body = match &body {
                Some(Either::Left(full)) => Either::Left(full.clone()),
                _ => match body.take() {
                    Some(b) => b,
                    None => break,
                },
            };
            let mut up = Request::from_parts(parts.clone(), this_body);
            if let Some(l) = &snapshot.leader {
                fencing_token(up.headers_mut(), l, ep.replica);
            }
            // The pool writes the version and URI the replica's protocol needs.
            *up.uri_mut() = Uri::from(path.clone());
            let remaining = deadline.saturating_duration_since(Instant::now());
            let per_try = if cfg.retries.per_try_timeout.is_zero() {
                remaining
            } else {
                cfg.retries.per_try_timeout.min(remaining)
            };
            // A hedge could go to a standby: none for leader traffic.
            let hedge = cfg.hedge.filter(|_| {
                resendable && attempt == 0 && body.is_some() && upgrade.is_none() && !to_leader
            });
            let (ep, result, rtt, guard) = match hedge {
                // Boxed, as every path most requests do not take: an inline future is
                // copied whole each time the request's future moves (see `entry`).
                Some(h) => {
                    Box::pin(self.hedged(
                        &policy,
                        &snapshot,
                        (ep, pool),
                        up,
                        per_try,
                        h,
                        key,
                        &mut tried,
                    ))
                    .await
                }
                None => {
                    let fault = self.hooks.injected_on(&self.service, &ep);
                    let (r, rtt, g) = send(&pool, &ep, up, per_try, fault).await;
                    (ep, r, rtt, g)
                }
            };
            // The request deadline (not a shorter per-try timeout) passed while the body
            // waited on the client.
            let client_stalled = matches!(result, Err(SendError::Timeout))
                && Instant::now() >= deadline
                && stalled.as_ref().is_some_and(|w| w.load(Ordering::Relaxed));
            let result = if client_stalled {
                Err(client_body_stalled())
            } else {
                result
            };
            let (outcome, response) = match result {
                // The client's fault: not the replica's, and not worth another try.
                Err(SendError::ClientBody(status, msg)) => {
                    let res = closing(answer(status, &format!("{msg}\n")), parts.version);
                    return (res, Some(LocalReason::BadRequest));
                }
                Ok(answered) => (
                    TryResult::Status(answered.0.status().as_u16()),
                    Some(answered),
                ),
                Err(SendError::ConnectFailed(e)) => {
                    last = Some((
                        StatusCode::BAD_GATEWAY,
                        e,
                        Some(LocalReason::UpstreamFailed),
                    ));
                    (TryResult::ConnectFailed, None)
                }
                Err(SendError::Reset(e)) => {
                    last = Some((
                        StatusCode::BAD_GATEWAY,
                        e,
                        Some(LocalReason::UpstreamFailed),
                    ));
                    (TryResult::Reset, None)
                }
                Err(SendError::Injected(status)) => {
                    last = Some((
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                        format!(
                            "replica {}/{} answered {status} (a fault injected by bulwark)",
                            self.service, ep.replica
                        ),
                        Some(LocalReason::Injected),
                    ));
                    (TryResult::Status(status), None)
                }
                Err(SendError::Timeout) => {
                    last = Some((
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "replica {}/{} did not answer in time",
                            self.service, ep.replica
                        ),
                        Some(LocalReason::Timeout),
                    ));
                    (TryResult::Timeout, None)
                }
            };
            self.record(&policy, &ep, outcome, rtt);
            use spec::RetryCondition::{
                ConnectFailure, GatewayError, PerTryTimeout, Reset, Status, Status5xx,
            };
            let retries = &cfg.retries;
            let on = |c| retries.retries_on(c);
            let retriable = match outcome {
                TryResult::ConnectFailed => on(ConnectFailure) || on(GatewayError),
                TryResult::Reset => on(Reset) && resendable,
                TryResult::Timeout => on(PerTryTimeout) && resendable && Instant::now() < deadline,
                TryResult::Status(s) => {
                    resendable
                        && ((on(Status5xx) && s >= 500)
                            || (on(GatewayError) && (502..=504).contains(&s))
                            || (on(Status) && retries.statuses.contains(&s)))
                }
            };
            let can_resend = body.is_some() && attempt + 1 < attempts && Instant::now() < deadline;
            if let Some((mut res, lease)) = response {
                if !(retriable && can_resend) {
                    if let Some(client_side) = upgrade
                        && res.status() == StatusCode::SWITCHING_PROTOCOLS
                    {
                        let upstream_side = hyper::upgrade::on(&mut res);
                        tokio::spawn(tunnel(client_side, upstream_side, guard, conn.clone()));
                        let (rp, _) = res.into_parts();
                        return (
                            Response::from_parts(rp, Either::Right(Full::new(Bytes::new()))),
                            None,
                        );
                    }
                    let grpc_failed = grpc_failure(res.headers());
                    let (mut rp, rb) = res.into_parts();
                    strip_hop_by_hop(&mut rp.headers);
                    if let Some(id) = parts.headers.get(&policy.request_id) {
                        rp.headers.insert(policy.request_id.clone(), id.clone());
                    }
                    if grpc_failed {
                        self.metrics.grpc_failures.inc();
                    }
                    // Only while revisions run side by side does the outcome need to say
                    // which answered (and only then does the response carry it).
                    if snapshot.mixed {
                        rp.extensions.insert(Served(ep.revision));
                    }
                    return (
                        Response::from_parts(rp, Either::Left(Tracked::new(rb, guard, lease))),
                        None,
                    );
                }
                let wait = res
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(parse_retry_after);
                last = Some((
                    res.status(),
                    format!(
                        "replica {}/{} answered {}",
                        self.service,
                        ep.replica,
                        res.status()
                    ),
                    None,
                ));
                drop(res);
                if !self.retry_wait(&policy, attempt, wait, deadline).await {
                    break;
                }
                continue;
            }
            if !(retriable && can_resend && self.retry_wait(&policy, attempt, None, deadline).await)
            {
                break;
            }
        }
        let (status, msg, local) = last.unwrap_or((
            StatusCode::BAD_GATEWAY,
            "no replica could be tried".into(),
            Some(LocalReason::UpstreamFailed),
        ));
        (answer(status, &format!("{msg}\n")), local)
    }

    /// Takes a retry from the budget and waits the backoff (or the replica's
    /// `Retry-After`), within the deadline. `false`: do not retry.
    async fn retry_wait(
        &self,
        policy: &ServicePolicy,
        attempt: usize,
        retry_after: Option<Duration>,
        deadline: Instant,
    ) -> bool {
        if !policy.lock().budget.withdraw(std::time::Instant::now()) {
            self.metrics.budget_exhausted.inc();
            return false;
        }
        self.metrics.retries.inc();
        let base = policy.expose.retries.backoff;
        let backoff = policy::Backoff {
            initial: base,
            max: base.saturating_mul(10),
            multiplier: 2.0,
            jitter: 0.5,
        };
        let wait =
            retry_after.unwrap_or_else(|| backoff.delay(attempt as u32, rand::random::<f64>()));
        // A replica's `Retry-After` can be anything up to `u64::MAX` seconds.
        let Some(until) = Instant::now().checked_add(wait) else {
            return false;
        };
        if until >= deadline {
            return false;
        }
        tokio::time::sleep_until(until).await;
        true
    }

    /// Sends the first try; if it is slower than the hedging percentile, sends a second
    /// to another replica (added to `tried`). The first good answer wins and the other
    /// try is cancelled; a failure (no response, or a 5xx) that comes first is recorded
    /// against its replica and the other try's answer stands, as Envoy's hedging does: a
    /// replica that fails fast must not beat a slow one that would have answered.
    #[allow(clippy::too_many_arguments)]
    async fn hedged(
        &self,
        policy: &ServicePolicy,
        snapshot: &Endpoints,
        (first, first_pool): (Endpoint, Arc<Pool>),
        req: Request<UpstreamBody>,
        per_try: Duration,
        h: spec::Hedge,
        key: Option<u64>,
        tried: &mut Tried,
    ) -> (
        Endpoint,
        Result<Answered, SendError>,
        Duration,
        bus::LoadGuard,
    ) {
        let after = policy
            .lock()
            .hedge_after(h.percentile, h.min_delay, std::time::Instant::now());
        let second_req = clone_request(&req);
        let first_ep = first.clone();
        let fault = self.hooks.injected_on(&self.service, &first_ep);
        let one = send(&first_pool, &first_ep, req, per_try, fault);
        tokio::pin!(one);
        let (Some(after), Some(second_req)) = (after, second_req) else {
            let (r, rtt, g) = one.await;
            return (first, r, rtt, g);
        };
        tokio::select! {
            (r, rtt, g) = &mut one => return (first, r, rtt, g),
            () = tokio::time::sleep(after) => {}
        }
        let second = {
            let mut st = policy.lock();
            // The hedge stays on the first try's revision: a preview, a sticky client
            // and the analysis all expect one version per request.
            let lane = Some(Lane::Only(first.revision)).filter(|_| snapshot.split.is_some());
            st.pick(
                policy,
                &snapshot.ready,
                tried.as_slice(),
                key,
                lane,
                std::time::Instant::now(),
            )
            .map(|(e, pool)| (e.clone(), pool))
        };
        let Some((second, second_pool)) = second else {
            let (r, rtt, g) = one.await;
            return (first, r, rtt, g);
        };
        self.metrics.hedges.inc();
        tried.push(second.addr);
        let second_ep = second.clone();
        let fault = self.hooks.injected_on(&self.service, &second_ep);
        // Both tries end by the first one's limit: waiting on the hedge after the first
        // failed must not outlast it (nor the request deadline it is within).
        let two = send(
            &second_pool,
            &second_ep,
            second_req,
            per_try.saturating_sub(after),
            fault,
        );
        tokio::pin!(two);
        let (first_done, (r, rtt, g)) = tokio::select! {
            done = &mut one => (true, done),
            done = &mut two => (false, done),
        };
        let failed = match &r {
            Ok((res, _)) => res.status().is_server_error(),
            Err(_) => true,
        };
        let (done_ep, other_ep) = if first_done {
            (first, second)
        } else {
            (second, first)
        };
        if !failed {
            return (done_ep, r, rtt, g);
        }
        if let Some(outcome) = try_result(&r) {
            self.record(policy, &done_ep, outcome, rtt);
        }
        drop((r, g));
        let (r, rtt, g) = if first_done { two.await } else { one.await };
        (other_ep, r, rtt, g)
    }

    /// Feeds one try's outcome to the replica's passive health, breaker and latency
    /// estimate, and publishes what that changed.
    fn record(&self, policy: &ServicePolicy, ep: &Endpoint, outcome: TryResult, rtt: Duration) {
        let notice = policy.lock().record(
            ep.addr,
            (outcome, rtt),
            &self.registry,
            std::time::Instant::now(),
        );
        self.publish(policy, notice.into_iter().collect());
    }

    /// `snapshot`, or the first later one whose leader this request has not tried yet;
    /// the last one seen when `deadline` passes first.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits on the endpoints channel.
    async fn leader_ready(
        &self,
        mut snapshot: Arc<Endpoints>,
        tried: &[SocketAddr],
        deadline: Instant,
    ) -> Arc<Endpoints> {
        let untried = |s: &Endpoints| {
            s.leader_only()
                .first()
                .is_some_and(|e| !tried.contains(&e.addr))
        };
        if untried(&snapshot) {
            return snapshot;
        }
        // Only a request that has to wait pays for a receiver of its own.
        let mut rx = self.endpoints.clone();
        loop {
            if untried(&snapshot) {
                return snapshot;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => snapshot = rx.borrow_and_update().clone(),
                _ => return snapshot,
            }
        }
    }

    /// The revisions a request may go to: during a split, the side its sticky value (or
    /// a draw by weight) puts it on; on a preview listener, the new revision only.
    fn lane(&self, snapshot: &Endpoints, headers: &HeaderMap) -> Option<Lane> {
        let Some(split) = &snapshot.split else {
            // Nothing to preview outside a blue-green rollout: no replica may answer.
            return self.preview.then_some(Lane::Only(0));
        };
        if self.preview {
            return Some(Lane::Only(split.canary));
        }
        let key = match &split.sticky {
            Some(spec::Sticky::Header(h)) => headers.get(h.as_str()).map(|v| v.as_bytes()),
            Some(spec::Sticky::Cookie(c)) => cookie(headers, c).map(str::as_bytes),
            None => None,
        }
        .map(policy::hash_bytes);
        Some(if split.to_canary(key, rand::random()) {
            Lane::Only(split.canary)
        } else {
            Lane::Not(split.canary)
        })
    }

    fn publish(&self, policy: &ServicePolicy, notices: Vec<Notice>) {
        for n in notices {
            let kind = match n {
                Notice::Ejected {
                    replica,
                    reason,
                    for_ms,
                } => {
                    self.metrics.ejections.inc();
                    tracing::warn!(service = %self.service, replica, %reason, "replica ejected");
                    if policy.expose.outlier.restart_ejected
                        && let Some(tx) = &self.hooks.restart
                    {
                        let _ = tx.send((self.service.clone(), replica));
                    }
                    EventKind::ReplicaEjected {
                        service: self.service.clone(),
                        index: replica,
                        reason,
                        for_ms,
                    }
                }
                Notice::Readmitted { replica } => EventKind::ReplicaReadmitted {
                    service: self.service.clone(),
                    index: replica,
                },
            };
            if let Some(bus) = &self.hooks.bus {
                bus.publish(kind);
            }
        }
    }
}

/// The replicas one request was sent to: its tries and a hedge.
struct Tried {
    addrs: [SocketAddr; MAX_TRIES],
    len: usize,
}

/// Tries per request: `retries.attempts` is at most 10, and one hedge.
const MAX_TRIES: usize = 11;

impl Default for Tried {
    fn default() -> Tried {
        Tried {
            addrs: [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_TRIES],
            len: 0,
        }
    }
}

impl Tried {
    fn push(&mut self, addr: SocketAddr) {
        if let Some(slot) = self.addrs.get_mut(self.len) {
            *slot = addr;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[SocketAddr] {
        &self.addrs[..self.len]
    }
}

/// What a try tells of its replica; `None` for a client body that failed (the
/// client's fault).
fn try_result(r: &Result<Answered, SendError>) -> Option<TryResult> {
    Some(match r {
        Ok((res, _)) => TryResult::Status(res.status().as_u16()),
        Err(SendError::Injected(status)) => TryResult::Status(*status),
        Err(SendError::ConnectFailed(_)) => TryResult::ConnectFailed,
        Err(SendError::Reset(_)) => TryResult::Reset,
        Err(SendError::Timeout) => TryResult::Timeout,
        Err(SendError::ClientBody(..)) => return None,
    })
}

/// Why a try got no response; each maps to the [`TryResult`] of the same name.
enum SendError {
    /// No connection to the replica (refused, unreachable, connect timeout).
    ConnectFailed(String),
    /// Connected, but the connection was reset or closed, or spoke broken HTTP, before a
    /// response head arrived (`retry_on = ["reset"]`).
    Reset(String),
    /// No response head within the per-try timeout.
    Timeout,
    /// A chaos experiment answered for the replica with this status.
    Injected(u16),
    /// The client's body failed while it streamed to the replica (malformed, or past
    /// the request deadline): the client's fault, answered 400 or 408, never counted
    /// against the replica nor retried.
    ClientBody(StatusCode, String),
}

/// A replica's response head, with the connection to give back once its body has ended.
type Answered = (Response<Incoming>, Option<Lease>);

/// One try. The returned guard keeps the replica's load counted while the response
/// body streams.
async fn send(
    pool: &Arc<Pool>,
    ep: &Endpoint,
    req: Request<UpstreamBody>,
    limit: Duration,
    injected: Option<(FaultAction, crate::Live)>,
) -> (Result<Answered, SendError>, Duration, bus::LoadGuard) {
    let guard = ep.load.acquire();
    let began = Instant::now();
    let (delay, live) = match injected {
        None => (Duration::ZERO, None),
        Some((FaultAction::Delay(d), live)) => (d, Some(live)),
        Some((FaultAction::Abort(status), _)) => {
            return (Err(SendError::Injected(status)), began.elapsed(), guard);
        }
        Some((FaultAction::Reset, _)) => {
            let e = format!(
                "replica {}: connection reset by an injected fault",
                ep.replica
            );
            return (Err(SendError::Reset(e)), began.elapsed(), guard);
        }
    };
    let delayed = async {
        if let Some(mut live) = live {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = crate::injected::ended(&mut live) => {}
            }
        }
        pool.send(req).await
    };
    let r = match tokio::time::timeout(limit, delayed).await {
        Ok(Ok(answered)) => Ok(answered),
        // The client reads these in the 502's body: they name the replica by its index
        // (as `bulwark status` does), never by its address inside the host.
        Ok(Err(PoolError::Connect(e))) => Err(SendError::ConnectFailed(format!(
            "replica {}: cannot connect: {e}",
            ep.replica
        ))),
        Ok(Err(PoolError::Send(e))) if e.is_user() => Err(client_body(&e)),
        Ok(Err(PoolError::Send(e))) => {
            Err(SendError::Reset(format!("replica {}: {e}", ep.replica)))
        }
        Err(_) => Err(SendError::Timeout),
    };
    (r, began.elapsed(), guard)
}

/// What a failed request body is answered with: 408 past the request deadline, else 400.
fn client_body(e: &hyper::Error) -> SendError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<crate::body::BodyDeadline>() {
            return client_body_stalled();
        }
        cause = c.source();
    }
    let why = cause_text(e);
    SendError::ClientBody(
        StatusCode::BAD_REQUEST,
        format!("cannot read request body: {why}"),
    )
}

fn client_body_stalled() -> SendError {
    let why = crate::body::BodyDeadline.to_string();
    SendError::ClientBody(StatusCode::REQUEST_TIMEOUT, why)
}

/// The innermost cause's words (hyper's outer "error from user's Body stream" says little).
fn cause_text(e: &hyper::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(c) = last.source() {
        last = c;
    }
    last.to_string()
}

pub(crate) fn clone_request(req: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    let Either::Left(full) = req.body() else {
        return None;
    };
    let mut r = Request::new(Either::Left(full.clone()));
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    Some(r)
}

/// Reads a body of at most `max_body` bytes (by its declared length) whole, so that it
/// can be sent again, by `deadline`; a larger one is left to stream, bounded by the same
/// deadline. `Err`: the answer to send (and the request's version).
async fn read_body(
    req: Request<Inbound>,
    max_body: usize,
    deadline: Instant,
) -> Result<Request<UpstreamBody>, (StatusCode, String, http::Version)> {
    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        Either::Left(Full::new(Bytes::new()))
    } else if body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= max_body as u64)
    {
        match tokio::time::timeout_at(deadline, Limited::new(body, max_body).collect()).await {
            Ok(Ok(c)) => Either::Left(Full::new(c.to_bytes())),
            Ok(Err(e)) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}\n"),
                    parts.version,
                ));
            }
            Err(_) => {
                return Err((
                    StatusCode::REQUEST_TIMEOUT,
                    "request body not received in time\n".into(),
                    parts.version,
                ));
            }
        }
    } else {
        Either::Right(Timed::new(body, deadline))
    };
    Ok(Request::from_parts(parts, body))
}

/// A gRPC answer whose status (trailers-only responses carry it in headers) is an error.
fn grpc_failure(h: &HeaderMap) -> bool {
    let grpc = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    grpc && h
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s != "0")
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured).
fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    v.to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn retry_after(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

struct InflightGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InflightGuard<'a> {
    fn new(g: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        InflightGuard(g)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `res` with `Connection: close` for an HTTP/1 client: after a malformed request or
/// body, the connection's framing cannot be trusted.
fn closing(mut res: Response<ResponseBody>, version: http::Version) -> Response<ResponseBody> {
    if version < http::Version::HTTP_2 {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

pub(crate) fn answer(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::copy_from_slice(
        text.as_bytes(),
    ))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
