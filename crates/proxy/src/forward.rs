use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bus::{Endpoints, LocalReason, OutcomeSink, RequestOutcome};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use spec::Balance;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::balance::pick;
use crate::body::{ResponseBody, Tracked, UpstreamBody};
use crate::metrics::ServiceMetrics;
use crate::{MAX_ATTEMPTS, REPLAY_LIMIT};

/// Everything one exposed service needs to forward a request. Shared by all connections.
pub(crate) struct Route {
    pub service: String,
    pub balance: Balance,
    pub endpoints: watch::Receiver<Arc<Endpoints>>,
    pub cursor: AtomicUsize,
    pub client: Client<HttpConnector, UpstreamBody>,
    pub metrics: ServiceMetrics,
    pub outcomes: Option<Arc<dyn OutcomeSink>>,
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// Whether a request may be sent twice without changing its meaning (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Route {
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let began = Instant::now();
        // A guard, because the future is dropped when the client goes away mid-request.
        let inflight = InflightGuard::new(&self.metrics.inflight);
        let (res, local) = self.forward(req).await;
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
            });
        }
        res
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
    ) -> (Response<ResponseBody>, Option<LocalReason>) {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // A request is retried on another replica only if its body can be sent again:
        // small bodies are buffered, larger ones stream through once.
        let mut body = if body.is_end_stream() {
            Some(Either::Left(Full::new(Bytes::new())))
        } else if body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= REPLAY_LIMIT as u64)
        {
            match Limited::new(body, REPLAY_LIMIT).collect().await {
                Ok(collected) => Some(Either::Left(Full::new(collected.to_bytes()))),
                Err(e) => {
                    let res = answer(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read request body: {e}\n"),
                    );
                    return (res, Some(LocalReason::BadRequest));
                }
            }
        } else {
            Some(Either::Right(body))
        };
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let safe_to_resend = idempotent(&parts.method);
        let mut tried = [u32::MAX; MAX_ATTEMPTS];
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            let snapshot = self.endpoints.borrow().clone();
            let Some(ep) = pick(
                self.balance,
                &self.cursor,
                &snapshot.ready,
                &tried[..attempt],
            ) else {
                break;
            };
            tried[attempt] = ep.replica;
            let this_body = match &body {
                Some(Either::Left(full)) => Either::Left(full.clone()),
                _ => match body.take() {
                    Some(b) => b,
                    None => break,
                },
            };
            let mut up = Request::from_parts(parts.clone(), this_body);
            *up.uri_mut() = upstream_uri(ep.addr, &path);
            let guard = ep.load.acquire();
            match self.client.request(up).await {
                Ok(res) => {
                    let (mut rp, rb) = res.into_parts();
                    strip_hop_by_hop(&mut rp.headers);
                    let res = Response::from_parts(rp, Either::Left(Tracked::new(rb, guard)));
                    return (res, None);
                }
                Err(e) => {
                    drop(guard);
                    last_error = format!("replica {}/{}: {e}", self.service, ep.replica);
                    // Never sent: safe for any method. Sent but unanswered: only when the
                    // method is idempotent. A streamed body is gone either way.
                    let retriable = body.is_some() && (e.is_connect() || safe_to_resend);
                    tracing::debug!(service = %self.service, error = %last_error, retriable, "try failed");
                    if !retriable {
                        break;
                    }
                    if attempt + 1 < MAX_ATTEMPTS {
                        self.metrics.retries.inc();
                    }
                }
            }
        }
        if last_error.is_empty() {
            let mut res = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no ready replica for service {}\n", self.service),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return (res, Some(LocalReason::NoReplica));
        }
        let res = answer(StatusCode::BAD_GATEWAY, &format!("{last_error}\n"));
        (res, Some(LocalReason::UpstreamFailed))
    }
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

fn upstream_uri(addr: std::net::SocketAddr, path: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Authority::try_from(addr.to_string()).ok();
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).unwrap_or_default()
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
