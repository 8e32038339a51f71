//! One request: sent through the shared keep-alive client under a concurrency permit, timed
//! from its scheduled instant, and reported to the recorder as an [`Outcome`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, mpsc};

use crate::Config;

/// Error messages formatted at all. Formatting allocates, so past this budget
/// failures are only counted (a dead server at 50k req/s would otherwise
/// format 50k identical strings per second).
const SAMPLE_BUDGET: usize = 64;

/// A keep-alive connection idle this long is closed rather than reused. Servers close
/// idle connections too (Node after 5 s, bulwark after `timeouts.header_read`, 10 s, or
/// a stack's shorter `timeouts.idle`, as the fault matrix's 4 s), and a request sent as
/// the server's close crosses it on the wire is lost: staying well below their timeouts
/// keeps the generator from counting that race as the server's failure. (hyper's
/// default, 90 s, is above most servers'; 4 s, equal to the fault matrix's idle, lost 1
/// request of 1 600 in CI.) A new connection on loopback costs far less than that race.
const POOL_IDLE: Duration = Duration::from_millis(1500);

/// Everything a request task needs, shared by all of them.
pub(crate) struct Shared {
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
    pub(crate) fn new(cfg: &Config) -> Shared {
        let mut headers = HeaderMap::with_capacity(cfg.headers.len());
        for (name, value) in &cfg.headers {
            headers.append(name.clone(), value.clone());
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(cfg.concurrency)
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Shared {
            client,
            permits: Semaphore::new(cfg.concurrency),
            method: cfg.method.clone(),
            url: cfg.url.clone(),
            headers,
            body: cfg.body.clone().unwrap_or_default(),
            timeout: cfg.timeout,
            samples_taken: AtomicUsize::new(0),
        }
    }

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

/// How a request ended. Messages are `None` once the sample budget is spent.
pub(crate) enum Kind {
    Ok,
    Status(u16),
    Connect(Option<String>),
    Timeout,
    Other(Option<String>),
}

/// One request's result, sent to the recorder.
pub(crate) struct Outcome {
    /// Scheduled time, from the start of the run.
    pub(crate) offset: Duration,
    pub(crate) latency: Duration,
    /// When the request was handed to the client, from the start of the run;
    /// `None` if it timed out waiting for a permit.
    pub(crate) issued: Option<Duration>,
    pub(crate) kind: Kind,
    pub(crate) body_bytes: u64,
}

pub(crate) async fn one_request(
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
