//! What load to generate.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};

use crate::{DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, Error};

/// What load to generate. Plain data so a CLI can fill it from flags
/// (`Uri` and `Method` implement `FromStr`; see [`parse_header`] for headers).
/// Invariants checked by [`Config::validate`] (and [`run`](crate::run)): `rate` is finite
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
