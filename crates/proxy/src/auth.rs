//! `[expose.auth]`: the external authorization check (Envoy's `ext_authz`, Traefik's
//! ForwardAuth, nginx's `auth_request`). Before a request takes a bulkhead permit or has
//! its body read, the proxy sends a GET with the client's credentials to the auth
//! endpoint; [`policy::decide_auth`] turns the answer (or its absence) into the decision,
//! so that fail open or fail closed is one declared choice (`on_error`), never an accident
//! of the code path.
//!
//! Everything is bounded: the whole check (connection, answer, body) by `timeout` and by
//! the request's own deadline; the auth answer's body by [`MAX_BODY`]; the checks in
//! flight by `limits.max_inflight` (one more is no decision, as an auth service down).

use std::net::SocketAddr;
use std::time::Duration;

use bus::LocalReason;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use policy::{AuthDecision, AuthReply, OnError};
use tokio::time::Instant;

use crate::body::ResponseBody;
use crate::metrics::ServiceMetrics;

/// The largest auth answer body read (a denial page); past it, the check has failed.
pub(crate) const MAX_BODY: usize = 64 * 1024;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// One service's check: its settings and a pooled client for the auth endpoint.
pub(crate) struct AuthCheck {
    cfg: spec::Auth,
    on_error: OnError,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Checks in flight at most (`limits.max_inflight`: the check runs before the
    /// bulkhead, so it has a bound of its own); past it, no decision.
    in_flight: tokio::sync::Semaphore,
}

/// What the check decided for a request.
pub(crate) enum Verdict {
    /// Forward it, with these headers of the auth answer set on it.
    Forward(Vec<(HeaderName, HeaderValue)>),
    /// Answer the client with this instead.
    Answer(Response<ResponseBody>, LocalReason),
}

/// The auth endpoint's answer, read whole.
struct Answered {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl AuthCheck {
    pub(crate) fn new(cfg: &spec::Auth, max_in_flight: u32) -> AuthCheck {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.timeout));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(http);
        AuthCheck {
            on_error: match cfg.on_error {
                spec::AuthFailure::Deny => OnError::Deny,
                spec::AuthFailure::Allow => OnError::Allow,
            },
            cfg: cfg.clone(),
            client,
            in_flight: tokio::sync::Semaphore::new(max_in_flight.max(1) as usize),
        }
    }

    /// Asks the auth endpoint about `req` from `peer`, giving up at `timeout` or
    /// `deadline`, whichever comes first.
    ///
    /// # Cancel safety
    /// Dropped (the client went away), the auth request is dropped with it; nothing is
    /// counted.
    pub(crate) async fn check<B>(
        &self,
        req: &Request<B>,
        peer: SocketAddr,
        deadline: Instant,
        metrics: &ServiceMetrics,
    ) -> Verdict {
        let until = (Instant::now() + self.cfg.timeout).min(deadline);
        let asked = match self.in_flight.try_acquire() {
            Ok(_permit) => tokio::time::timeout_at(until, self.ask(req, peer)).await,
            Err(_) => Ok(Err("too many checks in flight".to_owned())),
        };
        let (reply, answered) = match asked {
            Ok(Ok(a)) => (AuthReply::Status(a.status.as_u16()), Some(a)),
            Ok(Err(why)) => {
                tracing::debug!(url = %self.cfg.url, %why, "the auth check failed");
                (AuthReply::Failed, None)
            }
            Err(_) => {
                tracing::debug!(url = %self.cfg.url, "the auth check timed out");
                (AuthReply::Failed, None)
            }
        };
        match (policy::decide_auth(reply, self.on_error), answered) {
            (AuthDecision::Allow, a) => {
                Verdict::Forward(a.map_or_else(Vec::new, |a| self.upstream_headers(&a.headers)))
            }
            (AuthDecision::Deny, Some(a)) => {
                metrics.auth_denied.inc();
                Verdict::Answer(pass_through(a), LocalReason::AuthDenied)
            }
            // (A denial always comes with its answer; were it not, closed is the safe way.)
            (AuthDecision::FailClosed | AuthDecision::Deny, _) => {
                warn_every_doubling(metrics.auth_unavailable.inc() + 1, &self.cfg.url, "deny");
                let mut res = crate::forward::answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authorization unavailable: the auth service did not decide; retry later\n",
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                Verdict::Answer(res, LocalReason::AuthUnavailable)
            }
            (AuthDecision::FailOpen, _) => {
                warn_every_doubling(metrics.auth_failed_open.inc() + 1, &self.cfg.url, "allow");
                Verdict::Forward(Vec::new())
            }
        }
    }

    /// Removes the client's own values of `upstream_headers` from `h` (a client must not
    /// name its own user, least of all when the check fails open), then sets `set`.
    pub(crate) fn apply(&self, h: &mut HeaderMap, set: Vec<(HeaderName, HeaderValue)>) {
        for name in &self.cfg.upstream_headers {
            h.remove(name);
        }
        for (name, value) in set {
            h.append(name, value);
        }
    }

    fn upstream_headers(&self, from: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        self.cfg
            .upstream_headers
            .iter()
            .flat_map(|n| from.get_all(n).iter().map(|v| (n.clone(), v.clone())))
            .collect()
    }

    async fn ask<B>(&self, req: &Request<B>, peer: SocketAddr) -> Result<Answered, String> {
        let mut ask = Request::get(self.cfg.url.clone())
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let h = ask.headers_mut();
        for name in &self.cfg.forward_headers {
            for v in req.headers().get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(req.method().as_str()) {
            h.insert(X_FORWARDED_METHOD, v);
        }
        let uri = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(v) = HeaderValue::from_str(uri) {
            h.insert(X_FORWARDED_URI, v);
        }
        let host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        if let Some(v) = host {
            h.insert(X_FORWARDED_HOST, v);
        }
        if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
            h.insert(X_FORWARDED_FOR, v);
        }
        let res = self.client.request(ask).await.map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Answered {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// The auth endpoint's denial, as it gave it (less its hop-by-hop headers and framing).
fn pass_through(a: Answered) -> Response<ResponseBody> {
    let mut res = Response::new(Either::Right(Full::new(a.body)));
    *res.status_mut() = a.status;
    let mut headers = a.headers;
    crate::headers::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    *res.headers_mut() = headers;
    res
}

/// A failing auth endpoint fails every request: one line at the 1st, 2nd, 4th, 8th...
/// failure keeps the log readable; the metric has the exact count.
fn warn_every_doubling(n: u64, url: &http::Uri, on_error: &str) {
    if n.is_power_of_two() {
        tracing::warn!(
            %url,
            failures = n,
            on_error,
            "the auth service did not decide (down, slow or 5xx); on_error = \"{on_error}\" applies"
        );
    }
}
