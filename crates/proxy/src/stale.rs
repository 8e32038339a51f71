//! Stale copies of cacheable GET responses, served when no replica can answer
//! (`[expose.fallback] stale = true`). A bounded LRU: at most `max_entries` copies and
//! `max_bytes` of bodies; a body over `max_entry_bytes` is never copied. Only what a
//! replica marks cacheable is kept (`Cache-Control` without `no-store` or `private`, no
//! `Set-Cookie`, no `Vary`), and a copy is served only while its staleness limit holds:
//! `max-age` plus `stale-if-error` (RFC 5861) when the response carries one, else the
//! fallback's `stale_max_age` from when it was stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use spec::Stale;

use crate::body::ResponseBody;

/// The header that marks an answer bulwark gave in a replica's stead.
pub(crate) const FALLBACK_HEADER: &str = "bulwark-fallback";

/// Longest key kept: a longer path and query is not copied (nor looked up).
pub(crate) const MAX_KEY_BYTES: usize = 2048;

/// One service's stale copies.
pub(crate) struct StaleCache {
    pub limits: Stale,
    lru: Mutex<Lru>,
    /// Bytes reserved by copies still streaming: at most `max_bytes` together, so
    /// clients that stall cannot hold more than the cache itself may.
    teeing: AtomicU64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<String, Entry>,
    /// Use order: the smallest tick is the least recently used.
    order: BTreeMap<u64, String>,
    bytes: u64,
    tick: u64,
}

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    /// Served only until `stored + usable`.
    usable: Duration,
    tick: u64,
    /// What it counts against `max_bytes`.
    size: u64,
}

/// How long a response may be served stale, if it may be kept at all.
pub(crate) fn cacheable(headers: &HeaderMap, max_age: Duration) -> Option<Duration> {
    if headers.contains_key(header::SET_COOKIE) || headers.contains_key(header::VARY) {
        return None;
    }
    let mut fresh = Duration::ZERO;
    let mut stale_if_error = None;
    let mut any = false;
    let mut revalidate = false;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().ok()?.split(',') {
            any = true;
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let secs = || {
                arg.and_then(|a| a.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" | "private" => return None,
                // A copy that must be revalidated may not be served stale (RFC 9111
                // §4.2.4), except as `stale-if-error` allows (RFC 5861 §4).
                "no-cache" | "must-revalidate" | "proxy-revalidate" => revalidate = true,
                "max-age" | "s-maxage" => fresh = fresh.max(secs().unwrap_or_default()),
                "stale-if-error" => stale_if_error = secs(),
                _ => {}
            }
        }
    }
    // `stale-if-error` is the replica's own limit, capped by the operator's.
    match stale_if_error {
        Some(s) => any.then(|| fresh.saturating_add(s).min(max_age)),
        None => (any && !revalidate).then_some(max_age),
    }
}

impl StaleCache {
    pub fn new(limits: Stale) -> StaleCache {
        StaleCache {
            limits,
            lru: Mutex::new(Lru::default()),
            teeing: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies held and their bytes.
    #[cfg(test)]
    pub fn size(&self) -> (usize, u64) {
        let lru = self.lock();
        (lru.entries.len(), lru.bytes)
    }

    /// Keeps a copy, evicting the least recently used until it fits. A body over the
    /// per-entry limit is not kept (and an older copy of the key is dropped).
    pub fn insert(
        &self,
        key: String,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        usable: Duration,
        now: Instant,
    ) {
        // The key (held twice) and the headers count with the body.
        let size = body.len() as u64 + 2 * key.len() as u64 + header_bytes(&headers);
        let mut lru = self.lock();
        lru.remove(&key);
        if body.len() as u64 > self.limits.max_entry_bytes || usable.is_zero() {
            return;
        }
        while !lru.entries.is_empty()
            && (lru.entries.len() >= self.limits.max_entries as usize
                || lru.bytes + size > self.limits.max_bytes)
        {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.remove(&oldest);
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.bytes += size;
        lru.order.insert(tick, key.clone());
        let entry = Entry {
            status,
            headers,
            body,
            stored: now,
            usable,
            tick,
            size,
        };
        lru.entries.insert(key, entry);
    }

    /// Forgets a key (its replica now says the response must not be kept).
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// The copy of `key` as an answer, marked, with its `Age`, if one is still usable.
    pub fn answer(&self, key: &str, now: Instant) -> Option<Response<ResponseBody>> {
        let mut lru = self.lock();
        let entry = lru.entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored);
        if age > entry.usable {
            lru.remove(key);
            return None;
        }
        let (status, mut headers, body) = (entry.status, entry.headers.clone(), entry.body.clone());
        lru.touch(key);
        drop(lru);
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        headers.insert(FALLBACK_HEADER, HeaderValue::from_static("stale"));
        let mut res = Response::new(Either::Right(Full::new(body)));
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        Some(res)
    }
}

impl Lru {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
            self.bytes -= e.size;
        }
    }

    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.tick);
            e.tick = tick;
            self.order.insert(tick, key.to_owned());
        }
    }
}

/// Copies a response body as it streams to the client; kept once it ends whole within
/// the per-entry limit, dropped as soon as it goes over or fails.
pub(crate) struct Tee {
    cache: Arc<StaleCache>,
    key: String,
    status: StatusCode,
    headers: HeaderMap,
    usable: Duration,
    buf: Vec<u8>,
    /// Bytes reserved in `cache.teeing`, given back on drop.
    reserved: u64,
}

impl Tee {
    /// A copy of a body of `expected` bytes (if known); `None` when the copies already
    /// streaming hold the cache's whole byte budget.
    pub fn new(
        cache: Arc<StaleCache>,
        key: String,
        status: StatusCode,
        headers: HeaderMap,
        usable: Duration,
        expected: Option<u64>,
    ) -> Option<Tee> {
        let reserved = expected.map_or(cache.limits.max_entry_bytes, |n| {
            n.min(cache.limits.max_entry_bytes)
        });
        let budget = cache.limits.max_bytes;
        cache
            .teeing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t + reserved <= budget).then_some(t + reserved)
            })
            .ok()?;
        let capacity = expected.map_or(0, |_| reserved);
        Some(Tee {
            cache,
            key,
            status,
            headers,
            usable,
            buf: Vec::with_capacity(usize::try_from(capacity).unwrap_or(0)),
            reserved,
        })
    }

    /// `false`: the body went over the limit; drop the tee.
    pub fn push(&mut self, data: &[u8]) -> bool {
        if (self.buf.len() + data.len()) as u64 > self.reserved {
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    /// The body ended whole: keep the copy.
    pub fn finish(mut self) {
        let (key, headers, buf) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.headers),
            std::mem::take(&mut self.buf),
        );
        self.cache.insert(
            key,
            self.status,
            headers,
            Bytes::from(buf),
            self.usable,
            Instant::now(),
        );
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.cache.teeing.fetch_sub(self.reserved, Ordering::AcqRel);
    }
}

/// Header bytes as held (names and values).
fn header_bytes(h: &HeaderMap) -> u64 {
    h.iter()
        .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: u32, max_bytes: u64, max_entry_bytes: u64) -> StaleCache {
        StaleCache::new(Stale {
            max_entries,
            max_bytes,
            max_entry_bytes,
            max_age: Duration::from_secs(3600),
        })
    }

    fn put(c: &StaleCache, key: &str, len: usize, usable: Duration, now: Instant) {
        let body = Bytes::from(vec![b'x'; len]);
        c.insert(
            key.into(),
            StatusCode::OK,
            HeaderMap::new(),
            body,
            usable,
            now,
        );
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_least_recently_used_copy_goes_first_past_the_entry_bound() {
        let c = cache(2, 1 << 20, 1 << 20);
        let now = Instant::now();
        put(&c, "a", 1, HOUR, now);
        put(&c, "b", 1, HOUR, now);
        assert!(
            c.answer("a", now).is_some(),
            "a is now the most recently used"
        );
        put(&c, "c", 1, HOUR, now);
        assert!(
            c.answer("b", now).is_none(),
            "b was the least recently used"
        );
        assert!(c.answer("a", now).is_some() && c.answer("c", now).is_some());
        // Each: one body byte and the one-byte key, held twice.
        assert_eq!(c.size(), (2, 6));
    }

    #[test]
    fn the_byte_bound_evicts_and_a_huge_body_is_never_kept() {
        // Each copy below holds 4 body bytes and its one-byte key twice: 6 bytes.
        let c = cache(100, 14, 6);
        let now = Instant::now();
        put(&c, "a", 4, HOUR, now);
        put(&c, "b", 4, HOUR, now);
        put(&c, "c", 4, HOUR, now);
        assert_eq!(c.size(), (2, 12));
        assert!(c.answer("a", now).is_none());
        put(&c, "huge", 7, HOUR, now);
        assert!(c.answer("huge", now).is_none());
        assert_eq!(c.size(), (2, 12));
        // A key whose new response is too large loses its old copy too.
        put(&c, "b", 7, HOUR, now);
        assert!(c.answer("b", now).is_none());
        assert_eq!(c.size(), (1, 6));
    }

    #[test]
    fn a_copy_past_its_staleness_limit_is_not_served() {
        let c = cache(10, 1 << 20, 1 << 20);
        let now = Instant::now();
        put(&c, "a", 3, Duration::from_secs(30), now);
        let res = c.answer("a", now + Duration::from_secs(12)).unwrap();
        assert_eq!(res.headers()[header::AGE], "12");
        assert_eq!(res.headers()[FALLBACK_HEADER], "stale");
        assert!(c.answer("a", now + Duration::from_secs(31)).is_none());
        assert_eq!(c.size(), (0, 0), "an expired copy is dropped when found");
    }

    #[test]
    fn cacheability_follows_cache_control() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
            m
        };
        let max = Duration::from_secs(3600);
        assert_eq!(cacheable(&HeaderMap::new(), max), None, "no Cache-Control");
        assert_eq!(cacheable(&h("no-store"), max), None);
        assert_eq!(cacheable(&h("private, max-age=60"), max), None);
        assert_eq!(cacheable(&h("max-age=60"), max), Some(max));
        assert_eq!(
            cacheable(&h("public, max-age=60, stale-if-error=120"), max),
            Some(Duration::from_secs(180))
        );
        let mut cookie = h("max-age=60");
        cookie.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        assert_eq!(cacheable(&cookie, max), None);
        // Must be revalidated: never served stale, unless stale-if-error allows it.
        assert_eq!(cacheable(&h("no-cache"), max), None);
        assert_eq!(cacheable(&h("max-age=60, must-revalidate"), max), None);
        assert_eq!(
            cacheable(&h("max-age=60, must-revalidate, stale-if-error=30"), max),
            Some(Duration::from_secs(90))
        );
        // The replica's stale-if-error is capped by the operator's limit.
        assert_eq!(
            cacheable(&h("max-age=60, stale-if-error=31536000"), max),
            Some(max)
        );
    }

    #[test]
    fn keys_and_headers_count_against_the_byte_bound() {
        let c = cache(100, 300, 300);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let now = Instant::now();
        let key = "k".repeat(100);
        c.insert(
            key.clone(),
            StatusCode::OK,
            headers.clone(),
            Bytes::from_static(b"x"),
            Duration::from_secs(60),
            now,
        );
        // 1 body byte + twice the 100-byte key + 22 header bytes.
        assert_eq!(c.size(), (1, 1 + 200 + 22));
        c.insert(
            "other".repeat(10),
            StatusCode::OK,
            headers,
            Bytes::from_static(b"y"),
            Duration::from_secs(60),
            now,
        );
        assert_eq!(c.size().0, 1, "the first was evicted for the second to fit");
    }

    #[test]
    fn copies_streaming_at_once_share_the_cache_byte_budget() {
        let c = Arc::new(cache(100, 1000, 600));
        let tee = |expected| {
            Tee::new(
                c.clone(),
                "k".into(),
                StatusCode::OK,
                HeaderMap::new(),
                Duration::from_secs(60),
                expected,
            )
        };
        let a = tee(Some(600)).expect("within the budget");
        assert!(
            tee(Some(500)).is_none(),
            "600 + 500 is over the 1000-byte budget"
        );
        let b = tee(Some(400)).expect("600 + 400 fits");
        assert!(
            tee(None).is_none(),
            "an unknown length reserves the per-entry limit"
        );
        drop(a);
        let mut d = tee(None).expect("given back on drop");
        assert!(d.push(&[0; 600]));
        assert!(!d.push(&[0]), "no more than it reserved");
        drop((b, d));
        assert_eq!(c.teeing.load(Ordering::Acquire), 0);
    }
}
