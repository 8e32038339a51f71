//! What a client gets when no replica can answer (`[expose.fallback]`): a stale copy of
//! a cacheable GET response if one is at hand, else a static answer or the request
//! forwarded to another service. Also what a route whose switch is off answers.
//!
//! "No replica can answer" is a forward that ended in 502, 503 or 504: none ready, all
//! ejected or behind open breakers, every try failed, or the deadline passed. The
//! request's outcome keeps the reason of that failure, so an availability SLO still
//! counts it as bad: a fallback hides an outage from clients, not from the SLO.

use std::sync::Arc;

use bus::LocalReason;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use spec::FallbackAnswer;
use tokio::time::Instant;

use crate::body::{ResponseBody, UpstreamBody};
use crate::conn::{Conn, after};
use crate::forward::{ServiceProxy, answer, clone_request, idempotent};
use crate::service::ServicePolicy;
use crate::stale::{FALLBACK_HEADER, MAX_KEY_BYTES, StaleCache, Tee, cacheable};

/// A service's fallback, built once per policy.
pub(crate) struct Fallback {
    answer: Option<Answer>,
    pub stale: Option<Arc<StaleCache>>,
}

enum Answer {
    Static {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Service(String),
}

impl Fallback {
    pub fn new(spec: &spec::Fallback) -> Fallback {
        let answer = spec.answer.as_ref().map(|a| match a {
            FallbackAnswer::Static {
                status,
                headers,
                body,
            } => Answer::Static {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                // Checked by `spec`: every name and value is valid.
                headers: headers
                    .iter()
                    .filter_map(|(n, v)| {
                        Some((
                            HeaderName::from_bytes(n.as_bytes()).ok()?,
                            HeaderValue::from_str(v).ok()?,
                        ))
                    })
                    .collect(),
                body: Bytes::copy_from_slice(body),
            },
            FallbackAnswer::Service(s) => Answer::Service(s.clone()),
        });
        Fallback {
            answer,
            stale: spec.stale.map(|s| Arc::new(StaleCache::new(s))),
        }
    }

    /// Keeps the copies of the policy a reload replaces, if the bounds are unchanged.
    pub fn keep_copies(&mut self, old: &Fallback) {
        if let (Some(new), Some(old)) = (&self.stale, &old.stale)
            && new.limits == old.limits
        {
            self.stale = Some(old.clone());
        }
    }
}

/// `GET host path?query`: what a stale copy of a GET is kept under — the Host the
/// replica is sent (validated as an authority; `-` without one) and the path and query.
/// `None` for another method or a key longer than [`MAX_KEY_BYTES`].
fn cache_key(req: &Request<UpstreamBody>) -> Option<String> {
    if req.method() != Method::GET {
        return None;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let host = host.as_ref().map_or("-", |a| a.as_str());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let key = format!("GET {host} {path}");
    (key.len() <= MAX_KEY_BYTES).then_some(key)
}

/// Whether a response to `req` may become a copy others are served: not one that
/// depends on who asked (`Authorization`, `Cookie`, RFC 9111 §3.5) or asked for a part
/// (`Range`).
fn shareable(req: &Request<UpstreamBody>) -> bool {
    let h = req.headers();
    !(h.contains_key(header::AUTHORIZATION)
        || h.contains_key(header::COOKIE)
        || h.contains_key(header::RANGE))
}

impl ServiceProxy {
    /// Forwards to `target`; if no replica can answer, the fallback does. A cacheable
    /// answer is copied as it streams.
    pub(crate) async fn forward_or_fallback(
        &self,
        policy: &ServicePolicy,
        fallback: &Fallback,
        target: &ServiceProxy,
        req: Request<UpstreamBody>,
        conn: &Arc<Conn>,
        deadline: Instant,
    ) -> (Response<ResponseBody>, Option<LocalReason>) {
        let key = fallback.stale.as_ref().and_then(|_| cache_key(&req));
        let share = shareable(&req);
        // Replayed on the other service only when it may be sent twice.
        let replay = match fallback.answer {
            Some(Answer::Service(_))
                if idempotent(req.method()) || policy.expose.retries.all_methods =>
            {
                clone_request(&req)
            }
            _ => None,
        };
        let (mut res, local) = target.forward(req, conn, deadline).await;
        if !matches!(res.status().as_u16(), 502..=504) {
            if let (Some(cache), Some(key), true) = (&fallback.stale, key, share) {
                copy_if_cacheable(cache, key, &mut res, &policy.expose.request_id_header);
            }
            return (res, local);
        }
        match self.fallback_answer(fallback, key, replay, conn).await {
            Some(answer) => (answer, local),
            None => (res, local),
        }
    }

    /// A route whose switch is off for this request: the fallback answers.
    pub(crate) async fn switched_off(
        &self,
        policy: &ServicePolicy,
        req: Request<UpstreamBody>,
        conn: &Arc<Conn>,
    ) -> (Response<ResponseBody>, Option<LocalReason>) {
        let answered = match &policy.fallback {
            Some(fallback) => {
                let key = fallback.stale.as_ref().and_then(|_| cache_key(&req));
                self.fallback_answer(fallback, key, Some(req), conn).await
            }
            None => None,
        };
        let res = answered.unwrap_or_else(|| {
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "switched off, and no fallback\n",
            )
        });
        (res, None)
    }

    /// A stale copy, else the static answer or the other service's.
    async fn fallback_answer(
        &self,
        fallback: &Fallback,
        key: Option<String>,
        replay: Option<Request<UpstreamBody>>,
        conn: &Arc<Conn>,
    ) -> Option<Response<ResponseBody>> {
        if let (Some(cache), Some(key)) = (&fallback.stale, &key)
            && let Some(res) = cache.answer(key, std::time::Instant::now())
        {
            self.metrics.fallback_stale.inc();
            return Some(res);
        }
        match fallback.answer.as_ref()? {
            Answer::Static {
                status,
                headers,
                body,
            } => {
                self.metrics.fallback_static.inc();
                let mut res = Response::new(Either::Right(Full::new(body.clone())));
                *res.status_mut() = *status;
                *res.headers_mut() = headers.clone();
                res.headers_mut()
                    .insert(FALLBACK_HEADER, HeaderValue::from_static("static"));
                Some(res)
            }
            Answer::Service(name) => {
                // A streamed body was sent once already and cannot be sent again.
                let req = replay?;
                let proxy = self
                    .hooks
                    .services
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .cloned()?;
                self.metrics.fallback_service.inc();
                // The other service gets its own time: the first may have used it all.
                let deadline = after(Instant::now(), proxy.policy().expose.timeouts.request);
                let (mut res, _) = proxy.forward(req, conn, deadline).await;
                res.headers_mut()
                    .insert(FALLBACK_HEADER, HeaderValue::from_static("service"));
                Some(res)
            }
        }
    }
}

/// Tees a cacheable 2xx answer into the cache as it streams; forgets the key of one
/// that must not be kept (so a `no-store` answer is never served stale), and of one too
/// large to copy.
fn copy_if_cacheable(
    cache: &Arc<StaleCache>,
    key: String,
    res: &mut Response<ResponseBody>,
    request_id_header: &str,
) {
    // A whole answer only: a 206 would stand for the resource, a 201 or 204 is no copy.
    if res.status() != StatusCode::OK {
        return;
    }
    let expected = hyper::body::Body::size_hint(res.body()).exact();
    let usable = cacheable(res.headers(), cache.limits.max_age)
        .filter(|_| expected.is_none_or(|n| n <= cache.limits.max_entry_bytes));
    let Some(usable) = usable else {
        cache.remove(&key);
        return;
    };
    let mut headers = res.headers().clone();
    // The copy answers other requests: not with this one's id.
    headers.remove(request_id_header);
    let status = res.status();
    if let Either::Left(tracked) = res.body_mut()
        && let Some(tee) = Tee::new(cache.clone(), key, status, headers, usable, expected)
    {
        tracked.copy_into(tee);
    }
}
