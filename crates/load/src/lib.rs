//! Open-loop HTTP load generator with latency percentiles.
//!
//! Request `i` is scheduled at `start + i / rate` regardless of whether
//! earlier requests have returned, and its latency is measured from that
//! scheduled instant. Time spent queueing for one of the `concurrency`
//! permits, or behind a generator that fell behind, therefore counts as
//! latency: a stalled server shows up as growing latency and timeouts instead
//! of silently lowering the request rate (no coordinated omission).
//!
//! Design, for tens of thousands of requests per second:
//! - a dedicated OS thread does the scheduling, because tokio timers have
//!   millisecond granularity, which would add up to a millisecond of fake
//!   latency to every request; `std::thread::sleep` with the timer slack
//!   lowered overshoots by a few tens of µs;
//! - one spawned task per request, so a slow request never delays the next;
//! - each task sends one small [`Outcome`] over an unbounded channel to a
//!   single recorder task that owns all histograms and counters, so the
//!   request path takes no lock of ours.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Default for [`Config::concurrency`].
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Default for [`Config::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Distinct error messages kept in [`Failures::samples`].
const MAX_SAMPLES: usize = 10;
/// Error messages formatted at all. Formatting allocates, so past this budget
/// failures are only counted (a dead server at 50k req/s would otherwise
/// format 50k identical strings per second).
const SAMPLE_BUDGET: usize = 64;

/// What load to generate. Plain data so a CLI can fill it from flags
/// (`Uri` and `Method` implement `FromStr`; see [`parse_header`] for headers).
/// Invariants checked by [`Config::validate`] (and [`run`]): `rate` is finite
/// and positive, `duration` and `timeout` are non-zero, `concurrency` is at
/// least 1, and `url` is `http://host[:port]/...`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Target, `http://` only (no TLS).
    pub url: Uri,
    /// Requests per second, scheduled evenly.
    pub rate: f64,
    /// How long to schedule requests for. Requests still in flight at the end
    /// get up to `timeout` more to finish.
    pub duration: Duration,
    /// Maximum requests in flight (and so connections open) at once.
    pub concurrency: usize,
    /// Per request, counted from its scheduled time: a request that has no full
    /// response (body included) within `timeout` of when it should have been
    /// sent is a timeout, even if it was still waiting for a concurrency permit.
    pub timeout: Duration,
    pub method: Method,
    pub body: Option<Bytes>,
    /// Sent on every request, in order; repeated names are all sent.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Config {
    /// `GET url` at 100 req/s for 10 s with the default concurrency and timeout.
    pub fn new(url: Uri) -> Config {
        Config {
            url,
            rate: 100.0,
            duration: Duration::from_secs(10),
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            method: Method::GET,
            body: None,
            headers: Vec::new(),
        }
    }

    /// Checks the invariants documented on [`Config`].
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(Error::Rate(self.rate));
        }
        if self.duration.is_zero() {
            return Err(Error::Duration);
        }
        if self.concurrency == 0 {
            return Err(Error::Concurrency);
        }
        if self.timeout.is_zero() {
            return Err(Error::Timeout);
        }
        // Every deadline is at most start + duration + timeout; make sure
        // computing it cannot overflow `Instant` later.
        if self
            .duration
            .checked_add(self.timeout)
            .and_then(|d| Instant::now().checked_add(d))
            .is_none()
        {
            return Err(Error::TooLong);
        }
        let url_err = |reason| Error::Url {
            url: self.url.to_string(),
            reason,
        };
        match self.url.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(url_err("https is not supported, use http://")),
            Some(_) => return Err(url_err("scheme must be http://")),
            None => return Err(url_err("missing http:// scheme")),
        }
        if self.url.host().is_none_or(str::is_empty) {
            return Err(url_err("missing host"));
        }
        Ok(())
    }
}

/// Parses a `Name: value` header, as given on a command line.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let bad = |reason: String| Error::Header {
        header: s.to_owned(),
        reason,
    };
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| bad("expected `Name: value`".into()))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| bad(e.to_string()))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| bad(e.to_string()))?;
    Ok((name, value))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rate must be a positive number of requests per second, got {0}")]
    Rate(f64),
    #[error("duration must be greater than zero")]
    Duration,
    #[error("concurrency must be at least 1")]
    Concurrency,
    #[error("timeout must be greater than zero")]
    Timeout,
    #[error("duration plus timeout is too long")]
    TooLong,
    #[error("bad URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("bad header {header:?}: {reason}")]
    Header { header: String, reason: String },
    /// A generator task died; only a bug can cause this.
    #[error("load generator failed: {0}")]
    Internal(String),
}

/// Result of a run. The JSON form (field names and nesting) is a contract with
/// the benchmark harness and tests: add fields, never rename them.
///
/// Invariants: `sent == ok + failed.total`; `failed.total` is the sum of the
/// per-kind counts; every request ends exactly once (response, error or
/// timeout), so every sent request is in `latency_ms` and `timeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub url: String,
    /// Requested rate, requests per second.
    pub rate: f64,
    pub duration_s: f64,
    pub concurrency: usize,
    pub timeout_s: f64,
    /// Requests scheduled (each one ends in `ok` or `failed`).
    pub sent: u64,
    /// Responses with status 100-399 and a fully read body.
    pub ok: u64,
    pub failed: Failures,
    /// Over all requests, ok and failed, from scheduled time to the end of the
    /// response body, the error, or the timeout (so timeouts count as about
    /// `timeout`). Microsecond resolution.
    pub latency_ms: Latency,
    /// Requests actually handed to the HTTP client (after waiting for a
    /// concurrency permit) per second, over `max(duration, time of the last
    /// hand-over)`. Below `rate` when the target or the concurrency limit could
    /// not keep up, or the generator itself stalled.
    pub achieved_rate: f64,
    /// Response body bytes received, all requests together.
    pub body_bytes: u64,
    /// One entry per second of the run (by scheduled time, `t` = 0, 1, ...),
    /// including seconds in which nothing was scheduled.
    pub timeline: Vec<Second>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failures {
    pub total: u64,
    /// Responses with status >= 400, by code (JSON keys are strings: `"503"`).
    pub status: BTreeMap<u16, u64>,
    /// Could not connect (refused, unreachable, ...).
    pub connect: u64,
    /// No full response within `timeout` of the scheduled time.
    pub timeout: u64,
    /// Anything else: reset, incomplete message, protocol error.
    pub other: u64,
    /// The first few distinct connect/other error messages.
    pub samples: Vec<String>,
}

/// Milliseconds. Invariant: `p50 <= p90 <= p99 <= p999 <= max`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Requests scheduled during second `t` of the run, and how they ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub t: u64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// 99th percentile latency of this second's requests (1% resolution);
    /// 0 when none were scheduled.
    pub p99_ms: f64,
}

/// Generate the configured load and report on it. Returns after `duration`
/// plus at most `timeout` (the time in-flight requests get to finish).
/// Dropping the future stops scheduling new requests.
pub async fn run(cfg: Config) -> Result<Report, Error> {
    cfg.validate()?;
    // Always present when awaited inside tokio; checked rather than assumed
    // so another executor gets an error instead of a panic.
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Internal(format!("load::run needs a tokio runtime: {e}")))?;
    let mut headers = HeaderMap::with_capacity(cfg.headers.len());
    for (name, value) in &cfg.headers {
        headers.append(name.clone(), value.clone());
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(cfg.concurrency)
        .build(connector);
    let shared = Arc::new(Shared {
        client,
        permits: Semaphore::new(cfg.concurrency),
        method: cfg.method.clone(),
        url: cfg.url.clone(),
        headers,
        body: cfg.body.clone().unwrap_or_default(),
        timeout: cfg.timeout,
        samples_taken: AtomicUsize::new(0),
    });

    let seconds = cfg.duration.as_secs() + u64::from(cfg.duration.subsec_nanos() > 0);
    let (tx, rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record(rx, seconds));

    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let plan = Plan {
        rate: cfg.rate,
        duration: cfg.duration,
        stop: stop.0.clone(),
        handle,
    };
    // A thread of its own rather than `spawn_blocking`, because it changes its
    // timer slack and pooled threads should not inherit that.
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("load-scheduler".into())
        .spawn(move || {
            let _ = done_tx.send(schedule(plan, shared, tx));
        })
        .map_err(|e| Error::Internal(format!("cannot start scheduler thread: {e}")))?;
    let sent = done_rx
        .await
        .map_err(|_| Error::Internal("scheduler thread panicked".into()))?;
    // The scheduler dropped its sender; the recorder ends once the last
    // request task has reported, which is at most `timeout` from now.
    let rec = recorder
        .await
        .map_err(|e| Error::Internal(format!("recorder: {e}")))?;
    Ok(rec.report(&cfg, sent))
}

/// Tells the scheduler thread to stop if `run` is dropped mid-run.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Everything a request task needs, shared by all of them.
struct Shared {
    /// Keep-alive HTTP/1.1 pool; cloning internals are `Arc`s.
    client: Client<HttpConnector, Full<Bytes>>,
    /// `concurrency` permits; a request holds one from send to end of body.
    permits: Semaphore,
    method: Method,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
    /// How many error messages have been formatted (see `SAMPLE_BUDGET`).
    samples_taken: AtomicUsize,
}

impl Shared {
    fn sample(&self, err: &(dyn std::error::Error + 'static)) -> Option<String> {
        // Check before the read-modify-write so a failure storm doesn't
        // contend on this cache line.
        if self.samples_taken.load(Ordering::Relaxed) >= SAMPLE_BUDGET
            || self.samples_taken.fetch_add(1, Ordering::Relaxed) >= SAMPLE_BUDGET
        {
            return None;
        }
        let mut msg = err.to_string();
        let mut source = err.source();
        while let Some(e) = source {
            msg.push_str(": ");
            msg.push_str(&e.to_string());
            source = e.source();
        }
        Some(msg)
    }
}

struct Plan {
    rate: f64,
    duration: Duration,
    stop: Arc<AtomicBool>,
    handle: tokio::runtime::Handle,
}

/// Runs on its own thread: spawns request `i` at `start + i / rate`, and
/// immediately (a burst) for every deadline already past. Returns the number
/// of requests scheduled.
fn schedule(plan: Plan, shared: Arc<Shared>, tx: mpsc::UnboundedSender<Outcome>) -> u64 {
    reduce_timer_slack();
    let start = Instant::now();
    let duration = plan.duration.as_secs_f64();
    let mut i: u64 = 0;
    loop {
        // Computed from `i` rather than accumulated, so rounding never drifts.
        let offset_s = i as f64 / plan.rate;
        if offset_s >= duration || plan.stop.load(Ordering::Relaxed) {
            return i;
        }
        // offset_s < duration, which validate() proved fits an Instant.
        let offset = Duration::from_secs_f64(offset_s);
        let at = start + offset;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        plan.handle
            .spawn(one_request(shared.clone(), tx.clone(), at, offset));
        i += 1;
    }
}

/// Linux delays a sleeping thread's wake-up by up to its timer slack (50 µs
/// by default) to batch wake-ups. Every sleep of the scheduler is a deadline
/// whose overshoot would count as request latency, so ask for 1 µs. Best
/// effort, through /proc because `prctl` would need unsafe code: without
/// /proc (other OS, sandbox) sleeps are merely less precise.
fn reduce_timer_slack() {
    let Ok(me) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    // `/proc/thread-self` links to `PID/task/TID`; `/proc/TID` is this thread.
    let Some(tid) = me.file_name() else {
        return;
    };
    let path = std::path::Path::new("/proc")
        .join(tid)
        .join("timerslack_ns");
    // Failure is harmless (see above) and not worth reporting.
    let _ = std::fs::write(path, "1000");
}

/// How a request ended. Messages are `None` once the sample budget is spent.
enum Kind {
    Ok,
    Status(u16),
    Connect(Option<String>),
    Timeout,
    Other(Option<String>),
}

/// One request's result, sent to the recorder.
struct Outcome {
    /// Scheduled time, from the start of the run.
    offset: Duration,
    latency: Duration,
    /// When the request was handed to the client, from the start of the run;
    /// `None` if it timed out waiting for a permit.
    issued: Option<Duration>,
    kind: Kind,
    body_bytes: u64,
}

async fn one_request(
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Outcome>,
    scheduled: Instant,
    offset: Duration,
) {
    // validate() guarantees this addition cannot overflow.
    let deadline = scheduled + shared.timeout;
    let mut issued = None;
    let mut body_bytes = 0;
    let kind = tokio::time::timeout_at(
        deadline.into(),
        exchange(&shared, deadline, &mut issued, &mut body_bytes),
    )
    .await
    .unwrap_or(Kind::Timeout);
    let latency = scheduled.elapsed();
    // The receiver only goes away if the recorder died; nothing to do then.
    let _ = tx.send(Outcome {
        offset,
        latency,
        issued: issued.map(|at: Instant| offset + at.saturating_duration_since(scheduled)),
        kind,
        body_bytes,
    });
}

/// Sends one request and reads the whole body. Progress is written through
/// the out-parameters so it survives the timeout cancelling this future.
async fn exchange(
    shared: &Shared,
    deadline: Instant,
    issued: &mut Option<Instant>,
    body_bytes: &mut u64,
) -> Kind {
    let Ok(_permit) = shared.permits.acquire().await else {
        return Kind::Other(Some("concurrency semaphore closed".into()));
    };
    let now = Instant::now();
    if now >= deadline {
        // The timer has fired but `timeout_at` polls this future first; don't
        // count a request that will never really be sent as issued.
        return Kind::Timeout;
    }
    let mut req = Request::new(Full::new(shared.body.clone()));
    *req.method_mut() = shared.method.clone();
    *req.uri_mut() = shared.url.clone();
    *req.headers_mut() = shared.headers.clone();
    *issued = Some(now);
    let resp = match shared.client.request(req).await {
        Ok(resp) => resp,
        Err(e) if e.is_connect() => return Kind::Connect(shared.sample(&e)),
        Err(e) => return Kind::Other(shared.sample(&e)),
    };
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    *body_bytes += data.len() as u64;
                }
            }
            Err(e) => return Kind::Other(shared.sample(&e)),
        }
    }
    if status < 400 {
        Kind::Ok
    } else {
        Kind::Status(status)
    }
}

/// Owned by the recorder task only, so none of it needs synchronisation.
struct Recorder {
    /// Microseconds, 3 significant digits, grows as needed.
    latency: Histogram<u64>,
    seconds: Vec<SecondAcc>,
    ok: u64,
    failed: Failures,
    issued: u64,
    last_issued: Duration,
    body_bytes: u64,
}

struct SecondAcc {
    sent: u64,
    ok: u64,
    failed: u64,
    /// Microseconds at 2 significant digits with u32 counts: a timeline
    /// histogram per second of a long run has to stay small.
    latency: Option<Histogram<u32>>,
}

async fn record(mut rx: mpsc::UnboundedReceiver<Outcome>, seconds: u64) -> Recorder {
    let mut rec = Recorder {
        latency: new_histogram(3),
        seconds: (0..seconds)
            .map(|_| SecondAcc {
                sent: 0,
                ok: 0,
                failed: 0,
                latency: None,
            })
            .collect(),
        ok: 0,
        failed: Failures::default(),
        issued: 0,
        last_issued: Duration::ZERO,
        body_bytes: 0,
    };
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        for outcome in batch.drain(..) {
            rec.add(outcome);
        }
    }
    rec
}

/// Auto-resizing histograms only fail to build for sigfig > 5.
fn new_histogram<T: hdrhistogram::Counter>(sigfig: u8) -> Histogram<T> {
    match Histogram::new(sigfig) {
        Ok(h) => h,
        Err(e) => unreachable!("histogram with {sigfig} significant digits: {e:?}"),
    }
}

/// Records with auto-resize. (`saturating_record` would not resize: it
/// clamps to the current, tiny, initial range.) Only values beyond
/// `i64::MAX / 2` µs fail, and those are clamped.
fn record_us<T: hdrhistogram::Counter>(h: &mut Histogram<T>, us: u64) {
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds to milliseconds; `as f64` is exact below 2^53 µs (285 years).
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Recorder {
    fn add(&mut self, o: Outcome) {
        let us = micros(o.latency);
        record_us(&mut self.latency, us);
        self.body_bytes += o.body_bytes;
        if let Some(at) = o.issued {
            self.issued += 1;
            self.last_issued = self.last_issued.max(at);
        }
        let ok = matches!(o.kind, Kind::Ok);
        let f = &mut self.failed;
        match o.kind {
            Kind::Ok => self.ok += 1,
            Kind::Status(code) => *f.status.entry(code).or_default() += 1,
            Kind::Timeout => f.timeout += 1,
            Kind::Connect(msg) => {
                f.connect += 1;
                keep_sample(&mut f.samples, msg);
            }
            Kind::Other(msg) => {
                f.other += 1;
                keep_sample(&mut f.samples, msg);
            }
        }
        if !ok {
            f.total += 1;
        }
        // offset < duration, so the index is in range; clamp anyway rather
        // than trust float rounding near the last second.
        let idx = usize::try_from(o.offset.as_secs()).unwrap_or(usize::MAX);
        let last = self.seconds.len().saturating_sub(1);
        if let Some(sec) = self.seconds.get_mut(idx.min(last)) {
            sec.sent += 1;
            if ok {
                sec.ok += 1;
            } else {
                sec.failed += 1;
            }
            record_us(sec.latency.get_or_insert_with(|| new_histogram(2)), us);
        }
    }

    fn report(self, cfg: &Config, sent: u64) -> Report {
        let h = &self.latency;
        let latency_ms = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: ms(h.value_at_quantile(0.5)),
                p90: ms(h.value_at_quantile(0.9)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
                mean: round3(h.mean() / 1000.0),
            }
        };
        let span = cfg.duration.max(self.last_issued).as_secs_f64();
        let timeline = self
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| Second {
                t: t as u64,
                sent: s.sent,
                ok: s.ok,
                failed: s.failed,
                p99_ms: s
                    .latency
                    .as_ref()
                    .map_or(0.0, |h| ms(h.value_at_quantile(0.99))),
            })
            .collect();
        debug_assert_eq!(sent, self.ok + self.failed.total);
        Report {
            url: cfg.url.to_string(),
            rate: cfg.rate,
            duration_s: cfg.duration.as_secs_f64(),
            concurrency: cfg.concurrency,
            timeout_s: cfg.timeout.as_secs_f64(),
            sent,
            ok: self.ok,
            failed: self.failed,
            latency_ms,
            achieved_rate: round3(self.issued as f64 / span),
            body_bytes: self.body_bytes,
            timeline,
        }
    }
}

fn keep_sample(samples: &mut Vec<String>, msg: Option<String>) {
    if let Some(msg) = msg
        && samples.len() < MAX_SAMPLES
        && !samples.contains(&msg)
    {
        samples.push(msg);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target     {} at {} req/s for {} s (concurrency {}, timeout {} s)",
            self.url, self.rate, self.duration_s, self.concurrency, self.timeout_s
        )?;
        writeln!(
            f,
            "requests   {} sent, {} ok, {} failed; achieved {:.1} req/s; {} body bytes",
            self.sent, self.ok, self.failed.total, self.achieved_rate, self.body_bytes
        )?;
        if self.failed.total > 0 {
            let status: Vec<String> = self
                .failed
                .status
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            writeln!(
                f,
                "failures   status {} ({}), connect {}, timeout {}, other {}",
                self.failed.status.values().sum::<u64>(),
                status.join(", "),
                self.failed.connect,
                self.failed.timeout,
                self.failed.other
            )?;
        }
        let l = &self.latency_ms;
        writeln!(
            f,
            "latency    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, mean {:.3} ms",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        )?;
        for sample in &self.failed.samples {
            writeln!(f, "error      {sample}")?;
        }
        Ok(())
    }
}
