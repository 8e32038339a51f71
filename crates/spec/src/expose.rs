//! Validation of `[services.NAME.expose]`: the proxy's listener and policies.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Spanned;

use crate::model::{
    Balance, Breaker, Direction, Expose, Fault, FaultAction, HashOn, Hedge, Limits, Outlier,
    Protocol, RateKey, RateLimit, Retries, RetryOn, Route, RouteMatch, Timeouts, Toxic, ToxicKind,
};
use crate::problem::{MAX_DURATION, Problems, Span, bounded, suggest};
use crate::raw::{RawExpose, RawTable, RawValue};
use crate::validate::spanned_address;

/// Typed reads of a generic table: each reports a wrong type or range at the value and
/// returns `None` (the caller then builds nothing from it).
impl RawTable {
    fn dur(&self, key: &str, default: Duration, p: &mut Problems) -> Option<Duration> {
        let Some(v) = self.get(key) else {
            return Some(default);
        };
        match v.get_ref() {
            RawValue::Str(s) => match humantime::parse_duration(s) {
                Ok(d) => bounded(key, d, s, MAX_DURATION, v.span(), p),
                Err(e) => {
                    p.push(v.span(), format!("`{key}` must be a duration such as \"250ms\" or \"5s\", found {s:?} ({e})"));
                    None
                }
            },
            other => self.wrong(
                key,
                "a duration string such as \"250ms\" or \"5s\"",
                other,
                v.span(),
                p,
            ),
        }
    }

    fn uint(
        &self,
        key: &str,
        range: RangeInclusive<u64>,
        default: u64,
        p: &mut Problems,
    ) -> Option<u64> {
        let Some(v) = self.get(key) else {
            return Some(default);
        };
        match v.get_ref() {
            RawValue::Int(i) if *i >= 0 && range.contains(&(*i as u64)) => Some(*i as u64),
            RawValue::Int(i) => {
                p.push(
                    v.span(),
                    format!(
                        "`{key}` must be between {} and {}, found {i}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            other => self.wrong(key, "an integer", other, v.span(), p),
        }
    }

    fn num(
        &self,
        key: &str,
        range: RangeInclusive<f64>,
        default: f64,
        p: &mut Problems,
    ) -> Option<f64> {
        let Some(v) = self.get(key) else {
            return Some(default);
        };
        let n = match v.get_ref() {
            RawValue::Int(i) => *i as f64,
            RawValue::Float(f) => *f,
            other => return self.wrong(key, "a number", other, v.span(), p),
        };
        if range.contains(&n) {
            Some(n)
        } else {
            p.push(
                v.span(),
                format!(
                    "`{key}` must be between {} and {}, found {n}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }

    fn flag(&self, key: &str, default: bool, p: &mut Problems) -> Option<bool> {
        let Some(v) = self.get(key) else {
            return Some(default);
        };
        match v.get_ref() {
            RawValue::Bool(b) => Some(*b),
            other => self.wrong(key, "a boolean", other, v.span(), p),
        }
    }

    fn text(&self, key: &str, p: &mut Problems) -> Option<Option<Spanned<String>>> {
        let Some(v) = self.get(key) else {
            return Some(None);
        };
        match v.get_ref() {
            RawValue::Str(s) if !s.is_empty() => Some(Some(Spanned::new(v.span(), s.clone()))),
            RawValue::Str(_) => {
                p.push(v.span(), format!("`{key}` must not be empty"));
                None
            }
            other => self.wrong(key, "a string", other, v.span(), p),
        }
    }

    fn choice<T: Clone>(
        &self,
        key: &str,
        choices: &[(&str, T)],
        default: T,
        p: &mut Problems,
    ) -> Option<T> {
        let Some(s) = self.text(key, p)? else {
            return Some(default);
        };
        if let Some((_, t)) = choices.iter().find(|(n, _)| *n == s.get_ref()) {
            return Some(t.clone());
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let mut msg = format!(
            "`{key}` must be one of {}, found {:?}",
            quote(&names),
            s.get_ref()
        );
        if let Some(m) = suggest(s.get_ref(), names.iter().copied()) {
            msg.push_str(&format!("; did you mean \"{m}\"?"));
        }
        p.push(s.span(), msg);
        None
    }

    fn wrong<T>(
        &self,
        key: &str,
        expected: &str,
        found: &RawValue,
        span: Span,
        p: &mut Problems,
    ) -> Option<T> {
        p.push(
            span,
            format!("`{key}` must be {expected}, found {}", found.type_name()),
        );
        None
    }
}

fn quote(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table that was not in the file: every key at its default.
fn empty(label: &str, span: Span) -> RawTable {
    RawTable {
        label: label.to_owned(),
        span,
        fields: Vec::new(),
    }
}

/// Route targets, checked against the stack's services by the caller.
pub(crate) type Targets = Vec<Spanned<String>>;

// Long on purpose: reads `[expose]` key by key, one statement per key, in file order.
#[allow(clippy::too_many_lines)]
pub(crate) fn expose(
    raw: &Spanned<RawExpose>,
    p: &mut Problems,
) -> (Option<Expose>, Option<Spanned<SocketAddr>>, Targets) {
    let span = raw.span();
    let raw = raw.get_ref();
    let listen = spanned_address(&raw.listen, "listen", p);
    if !raw.listen.is_present() {
        p.push(
            span.clone(),
            format!(
                "missing required field `listen` in {}; for example listen = \"127.0.0.1:8080\"",
                raw.label
            ),
        );
    }
    let table = |name: &str| {
        raw.tables
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| empty(&format!("{} {name}", raw.label), span.clone()))
    };
    let array = |name: &str| {
        raw.arrays
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    };
    let r = &raw.rest;

    let protocol = r.choice(
        "protocol",
        &[("http", Protocol::Http), ("tcp", Protocol::Tcp)],
        Protocol::Http,
        p,
    );
    let balance = balance(r, p);
    let slow_start = r.dur("slow_start", Duration::ZERO, p);
    let upstream_http2 = r.choice("upstream", &[("http1", false), ("http2", true)], false, p);
    let request_id_header = r.text("request_id_header", p).map(|h| {
        h.map_or_else(
            || "x-request-id".to_owned(),
            |h| h.into_inner().to_ascii_lowercase(),
        )
    });
    let timeouts = timeouts(&table("timeouts"), p);
    let retries = retries(&table("retries"), p);
    let hedge = raw
        .tables
        .iter()
        .find(|(k, _)| *k == "hedge")
        .map(|(_, t)| hedge(t, p));
    let outlier = outlier(&table("outlier"), p);
    let breaker = breaker(&table("breaker"), p);
    let limits = limits(&table("limits"), p);
    let rate_limit = raw
        .tables
        .iter()
        .find(|(k, _)| *k == "rate_limit")
        .map(|(_, t)| rate_limit(t, p));
    let faults: Vec<Option<Fault>> = array("faults").iter().map(|t| fault(t, p)).collect();
    let toxics: Vec<Option<Toxic>> = array("toxics").iter().map(|t| toxic(t, p)).collect();
    let mut targets = Vec::new();
    let routes: Vec<Option<Route>> = array("routes")
        .iter()
        .map(|t| route(t, &mut targets, p))
        .collect();
    if protocol == Some(Protocol::Tcp) {
        for (key, v) in &r.fields {
            if matches!(
                key.as_str(),
                "balance" | "hash_on" | "weights" | "upstream" | "request_id_header" | "slow_start"
            ) {
                p.push(
                    v.span(),
                    format!("`{key}` applies to HTTP only; remove it or set protocol = \"http\""),
                );
            }
        }
        for (key, _) in &raw.tables {
            if *key != "timeouts" && *key != "limits" {
                p.push(
                    span.clone(),
                    format!(
                        "[{}.{key}] applies to HTTP only (protocol = \"tcp\")",
                        raw.label.trim_start_matches('[').trim_end_matches(']')
                    ),
                );
            }
        }
    } else if !array("toxics").is_empty() {
        p.push(
            span.clone(),
            format!(
                "toxics apply to protocol = \"tcp\" only; use [[faults]] for HTTP in {}",
                raw.label
            ),
        );
    }

    let build = || -> Option<Expose> {
        Some(Expose {
            listen: *listen.as_ref()?.get_ref(),
            protocol: protocol?,
            balance: balance?,
            slow_start: slow_start?,
            upstream_http2: upstream_http2?,
            request_id_header: request_id_header.clone()?,
            timeouts: timeouts?,
            retries: retries.clone()?,
            hedge: match hedge {
                None => None,
                Some(h) => Some(h?),
            },
            outlier: outlier?,
            breaker: breaker?,
            limits: limits?,
            rate_limit: match rate_limit.clone() {
                None => None,
                Some(r) => Some(r?),
            },
            faults: faults.iter().cloned().collect::<Option<Vec<_>>>()?,
            toxics: toxics.iter().cloned().collect::<Option<Vec<_>>>()?,
            routes: routes.iter().cloned().collect::<Option<Vec<_>>>()?,
        })
    };
    (build(), listen, targets)
}

fn balance(r: &RawTable, p: &mut Problems) -> Option<Balance> {
    #[derive(Clone, Copy, PartialEq)]
    enum K {
        P2c,
        Rr,
        Least,
        Weighted,
        Hash,
    }
    let kind = r.choice(
        "balance",
        &[
            ("p2c", K::P2c),
            ("round_robin", K::Rr),
            ("least_request", K::Least),
            ("weighted", K::Weighted),
            ("hash", K::Hash),
        ],
        K::P2c,
        p,
    )?;
    let hash_on = r.text("hash_on", p)?;
    let weights = r.get("weights");
    if kind != K::Hash
        && let Some(h) = &hash_on
    {
        p.push(h.span(), "`hash_on` needs balance = \"hash\"");
    }
    if kind != K::Weighted
        && let Some(w) = weights
    {
        p.push(w.span(), "`weights` needs balance = \"weighted\"");
    }
    Some(match kind {
        K::P2c => Balance::P2c,
        K::Rr => Balance::RoundRobin,
        K::Least => Balance::LeastRequest,
        K::Weighted => {
            let Some(w) = weights else {
                p.push(
                    r.span.clone(),
                    "balance = \"weighted\" needs `weights = [..]`, one per replica index",
                );
                return None;
            };
            let RawValue::Array(items) = w.get_ref() else {
                return r.wrong("weights", "an array of integers", w.get_ref(), w.span(), p);
            };
            let mut out = Vec::new();
            for i in items {
                match i.get_ref() {
                    RawValue::Int(n) if (0..=1_000_000).contains(n) => out.push(*n as u32),
                    _ => {
                        p.push(
                            i.span(),
                            "each weight must be an integer between 0 and 1000000",
                        );
                        return None;
                    }
                }
            }
            Balance::Weighted(out)
        }
        K::Hash => {
            let Some(h) = hash_on else {
                p.push(r.span.clone(), "balance = \"hash\" needs `hash_on`: \"header:NAME\", \"cookie:NAME\" or \"client_address\"");
                return None;
            };
            let on = match h.get_ref().split_once(':') {
                Some(("header", name)) if !name.is_empty() => {
                    HashOn::Header(name.to_ascii_lowercase())
                }
                Some(("cookie", name)) if !name.is_empty() => HashOn::Cookie(name.to_owned()),
                None if h.get_ref() == "client_address" => HashOn::ClientAddress,
                _ => {
                    p.push(h.span(), format!("`hash_on` must be \"header:NAME\", \"cookie:NAME\" or \"client_address\", found {:?}", h.get_ref()));
                    return None;
                }
            };
            Balance::Hash(on)
        }
    })
}

fn positive(d: Option<Duration>, t: &RawTable, key: &str, p: &mut Problems) -> Option<Duration> {
    let d = d?;
    if d.is_zero() {
        if let Some(v) = t.get(key) {
            p.push(v.span(), format!("`{key}` must be greater than 0"));
        }
        return None;
    }
    Some(d)
}

fn timeouts(t: &RawTable, p: &mut Problems) -> Option<Timeouts> {
    let d = Timeouts::default();
    let connect = positive(t.dur("connect", d.connect, p), t, "connect", p);
    let request = positive(t.dur("request", d.request, p), t, "request", p);
    let idle = positive(t.dur("idle", d.idle, p), t, "idle", p);
    let header_read = positive(t.dur("header_read", d.header_read, p), t, "header_read", p);
    Some(Timeouts {
        connect: connect?,
        request: request?,
        idle: idle?,
        header_read: header_read?,
    })
}

// Long on purpose: reads `[expose.retries]` key by key, one statement per key.
#[allow(clippy::too_many_lines)]
fn retries(t: &RawTable, p: &mut Problems) -> Option<Retries> {
    let d = Retries::default();
    let attempts = t.uint("attempts", 1..=10, u64::from(d.attempts), p);
    let per_try_timeout = t.dur("per_try_timeout", d.per_try_timeout, p);
    let backoff = t.dur("backoff", d.backoff, p);
    let budget_percent = t.num("budget_percent", 0.0..=100.0, d.budget_percent, p);
    let budget_min = t.uint(
        "budget_min_per_second",
        0..=1_000_000,
        u64::from(d.budget_min_per_second),
        p,
    );
    let all_methods = t.choice("methods", &[("idempotent", false), ("all", true)], false, p);
    let max_body = t.uint("max_body", 0..=64 * 1024 * 1024, d.max_body as u64, p);
    let mut on = RetryOn {
        connect_failure: false,
        reset: false,
        per_try_timeout: false,
        status_5xx: false,
        gateway_error: false,
        statuses: Vec::new(),
    };
    let mut ok = true;
    match t.get("on") {
        None => on = RetryOn::default(),
        Some(v) => match v.get_ref() {
            RawValue::Array(items) => {
                for i in items {
                    let names = [
                        "connect-failure",
                        "reset",
                        "per-try-timeout",
                        "5xx",
                        "gateway-error",
                        "status",
                    ];
                    match i.get_ref() {
                        RawValue::Str(s) => match s.as_str() {
                            "connect-failure" => on.connect_failure = true,
                            "reset" => on.reset = true,
                            "per-try-timeout" => on.per_try_timeout = true,
                            "5xx" => on.status_5xx = true,
                            "gateway-error" => on.gateway_error = true,
                            "status" => {}
                            other => {
                                let mut msg = format!(
                                    "retry condition must be one of {}, found {other:?}",
                                    quote(&names)
                                );
                                if let Some(m) = suggest(other, names.iter().copied()) {
                                    msg.push_str(&format!("; did you mean \"{m}\"?"));
                                }
                                p.push(i.span(), msg);
                                ok = false;
                            }
                        },
                        _ => {
                            p.push(
                                i.span(),
                                "retry conditions are strings such as \"connect-failure\"",
                            );
                            ok = false;
                        }
                    }
                }
            }
            other => {
                t.wrong::<()>("on", "an array of strings", other, v.span(), p);
                ok = false;
            }
        },
    }
    if let Some(v) = t.get("statuses") {
        match v.get_ref() {
            RawValue::Array(items) => {
                for i in items {
                    match i.get_ref() {
                        RawValue::Int(c) if (100..=599).contains(c) => on.statuses.push(*c as u16),
                        _ => {
                            p.push(
                                i.span(),
                                "each status must be an HTTP status code (100 to 599)",
                            );
                            ok = false;
                        }
                    }
                }
            }
            other => {
                t.wrong::<()>("statuses", "an array of status codes", other, v.span(), p);
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    Some(Retries {
        attempts: attempts? as u32,
        on,
        per_try_timeout: per_try_timeout?,
        backoff: backoff?,
        budget_percent: budget_percent?,
        budget_min_per_second: budget_min? as u32,
        all_methods: all_methods?,
        max_body: max_body? as usize,
    })
}

fn hedge(t: &RawTable, p: &mut Problems) -> Option<Hedge> {
    let percentile = t.num("percentile", 1.0..=99.99, 95.0, p);
    let min_delay = t.dur("min_delay", Duration::from_millis(5), p);
    Some(Hedge {
        percentile: percentile?,
        min_delay: min_delay?,
    })
}

fn outlier(t: &RawTable, p: &mut Problems) -> Option<Outlier> {
    let d = Outlier::default();
    let enabled = t.flag("enabled", d.enabled, p);
    let c5 = t.uint(
        "consecutive_5xx",
        0..=10_000,
        u64::from(d.consecutive_5xx),
        p,
    );
    let cg = t.uint(
        "consecutive_gateway_errors",
        0..=10_000,
        u64::from(d.consecutive_gateway_errors),
        p,
    );
    let sr = t.num("success_rate", 0.0..=100.0, d.success_rate, p);
    let srn = t.uint(
        "success_rate_min_requests",
        1..=1_000_000,
        u64::from(d.success_rate_min_requests),
        p,
    );
    let srw = positive(
        t.dur("success_rate_window", d.success_rate_window, p),
        t,
        "success_rate_window",
        p,
    );
    let base = positive(
        t.dur("base_ejection", d.base_ejection, p),
        t,
        "base_ejection",
        p,
    );
    let max = positive(
        t.dur("max_ejection", d.max_ejection, p),
        t,
        "max_ejection",
        p,
    );
    let mep = t.num(
        "max_ejection_percent",
        0.0..=100.0,
        d.max_ejection_percent,
        p,
    );
    let panic = t.num("panic_threshold", 0.0..=100.0, d.panic_threshold, p);
    let restart = t.flag("restart_ejected", d.restart_ejected, p);
    if let (Some(b), Some(m)) = (base, max)
        && b > m
    {
        p.push(
            t.span.clone(),
            format!("outlier `base_ejection` ({b:?}) must not exceed `max_ejection` ({m:?})"),
        );
        return None;
    }
    Some(Outlier {
        enabled: enabled?,
        consecutive_5xx: c5? as u32,
        consecutive_gateway_errors: cg? as u32,
        success_rate: sr?,
        success_rate_min_requests: srn? as u32,
        success_rate_window: srw?,
        base_ejection: base?,
        max_ejection: max?,
        max_ejection_percent: mep?,
        panic_threshold: panic?,
        restart_ejected: restart?,
    })
}

fn breaker(t: &RawTable, p: &mut Problems) -> Option<Breaker> {
    let d = Breaker::default();
    let n = t.uint(
        "consecutive_failures",
        0..=10_000,
        u64::from(d.consecutive_failures),
        p,
    );
    let cool = positive(t.dur("cooldown", d.cooldown, p), t, "cooldown", p);
    let max = positive(
        t.dur("max_cooldown", d.max_cooldown, p),
        t,
        "max_cooldown",
        p,
    );
    Some(Breaker {
        consecutive_failures: n? as u32,
        cooldown: cool?,
        max_cooldown: max?.max(cool?),
    })
}

fn limits(t: &RawTable, p: &mut Problems) -> Option<Limits> {
    let d = Limits::default();
    let conns = t.uint(
        "max_connections",
        1..=10_000_000,
        u64::from(d.max_connections),
        p,
    );
    let inflight = t.uint("max_inflight", 1..=10_000_000, u64::from(d.max_inflight), p);
    let queue = t.uint("queue", 0..=10_000_000, u64::from(d.queue), p);
    let qt = t.dur("queue_timeout", d.queue_timeout, p);
    Some(Limits {
        max_connections: conns? as u32,
        max_inflight: inflight? as u32,
        queue: queue? as u32,
        queue_timeout: qt?,
    })
}

fn rate_limit(t: &RawTable, p: &mut Problems) -> Option<RateLimit> {
    let rate = match t.get("rate") {
        None => {
            p.push(
                t.span.clone(),
                format!(
                    "missing required field `rate` (requests per second) in {}",
                    t.label
                ),
            );
            None
        }
        Some(_) => t.num("rate", 0.001..=10_000_000.0, 1.0, p),
    };
    let burst = t.uint("burst", 1..=10_000_000, 0, p);
    let key = t.text("key", p);
    let max_keys = t.uint("max_keys", 1..=10_000_000, 100_000, p);
    let key = match key? {
        None => RateKey::Service,
        Some(k) => match k.get_ref().as_str() {
            "service" => RateKey::Service,
            "client_address" => RateKey::ClientAddress,
            s => match s.strip_prefix("header:") {
                Some(h) if !h.is_empty() => RateKey::Header(h.to_ascii_lowercase()),
                _ => {
                    p.push(k.span(), format!("rate limit `key` must be \"service\", \"client_address\" or \"header:NAME\", found {s:?}"));
                    return None;
                }
            },
        },
    };
    let rate = rate?;
    // A burst of one second's worth unless told otherwise.
    let burst = match burst? {
        0 => (rate.ceil() as u64).max(1),
        b => b,
    };
    Some(RateLimit {
        rate,
        burst: burst.min(u64::from(u32::MAX)) as u32,
        key,
        max_keys: max_keys? as u32,
    })
}

fn fault(t: &RawTable, p: &mut Problems) -> Option<Fault> {
    let header = t
        .text("header", p)?
        .map(|h| h.into_inner().to_ascii_lowercase());
    // Header-triggered faults apply to every request that carries the header by default.
    let percent = t.num(
        "percent",
        0.0..=100.0,
        if header.is_some() { 100.0 } else { 0.0 },
        p,
    );
    let delay = t.get("delay").map(|_| t.dur("delay", Duration::ZERO, p));
    let abort = t.get("abort").map(|_| t.uint("abort", 200..=599, 503, p));
    let reset = t.get("reset").map(|_| t.flag("reset", false, p));
    let chosen =
        usize::from(delay.is_some()) + usize::from(abort.is_some()) + usize::from(reset.is_some());
    if chosen != 1 {
        p.push(
            t.span.clone(),
            format!(
                "{} needs exactly one of `delay = \"100ms\"`, `abort = 503` or `reset = true`",
                t.label
            ),
        );
        return None;
    }
    if t.get("percent").is_none() && header.is_none() {
        p.push(
            t.span.clone(),
            format!("{} needs `percent` (0 to 100) or `header`", t.label),
        );
        return None;
    }
    let action = if let Some(d) = delay {
        FaultAction::Delay(d?)
    } else if let Some(a) = abort {
        FaultAction::Abort(a? as u16)
    } else {
        if reset? != Some(true) {
            p.push(
                t.span.clone(),
                "`reset = false` is not a fault; remove the entry",
            );
            return None;
        }
        FaultAction::Reset
    };
    Some(Fault {
        percent: percent?,
        header,
        action,
    })
}

fn toxic(t: &RawTable, p: &mut Problems) -> Option<Toxic> {
    let kinds = [
        "latency",
        "bandwidth",
        "reset_peer",
        "timeout",
        "slow_close",
        "slicer",
        "limit_data",
    ];
    let Some(ty) = t.text("type", p)? else {
        p.push(
            t.span.clone(),
            format!("{} needs `type`: one of {}", t.label, quote(&kinds)),
        );
        return None;
    };
    let toxicity = t.num("toxicity", 0.0..=1.0, 1.0, p);
    let direction = t.choice(
        "direction",
        &[
            ("upstream", Direction::Upstream),
            ("downstream", Direction::Downstream),
        ],
        Direction::Downstream,
        p,
    );
    let zero = Duration::ZERO;
    let kind = match ty.get_ref().as_str() {
        "latency" => ToxicKind::Latency {
            latency: t.dur("latency", zero, p)?,
            jitter: t.dur("jitter", zero, p)?,
        },
        "bandwidth" => ToxicKind::Bandwidth {
            rate: t.uint("rate", 1..=u64::from(u32::MAX), 1024 * 1024, p)?,
        },
        "reset_peer" => ToxicKind::ResetPeer {
            timeout: t.dur("timeout", zero, p)?,
        },
        "timeout" => ToxicKind::Timeout {
            timeout: t.dur("timeout", zero, p)?,
        },
        "slow_close" => ToxicKind::SlowClose {
            delay: t.dur("delay", zero, p)?,
        },
        "slicer" => ToxicKind::Slicer {
            average_size: t.uint("average_size", 1..=1 << 20, 64, p)? as usize,
            size_variation: t.uint("size_variation", 0..=1 << 20, 0, p)? as usize,
            delay: t.dur("delay", zero, p)?,
        },
        "limit_data" => ToxicKind::LimitData {
            bytes: t.uint("bytes", 0..=u64::MAX >> 1, 0, p)?,
        },
        other => {
            let mut msg = format!(
                "toxic `type` must be one of {}, found {other:?}",
                quote(&kinds)
            );
            if let Some(m) = suggest(other, kinds.iter().copied()) {
                msg.push_str(&format!("; did you mean \"{m}\"?"));
            }
            p.push(ty.span(), msg);
            return None;
        }
    };
    Some(Toxic {
        kind,
        toxicity: toxicity?,
        direction: direction?,
    })
}

fn route(t: &RawTable, targets: &mut Targets, p: &mut Problems) -> Option<Route> {
    let to = t.text("to", p)?;
    let weight = t
        .get("weight")
        .map(|_| t.num("weight", 0.0..=100.0, 0.0, p));
    let header = t.text("header", p)?;
    let Some(to) = to else {
        p.push(
            t.span.clone(),
            format!(
                "missing required field `to` (a service name) in {}",
                t.label
            ),
        );
        return None;
    };
    targets.push(to.clone());
    let matcher = match (weight, header) {
        (Some(w), None) => RouteMatch::Weight(w?),
        (None, Some(h)) => match h.get_ref().split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => RouteMatch::Header {
                name: name.trim().to_ascii_lowercase(),
                value: value.trim().to_owned(),
            },
            _ => {
                p.push(
                    h.span(),
                    format!(
                        "route `header` must look like \"x-canary: 1\", found {:?}",
                        h.get_ref()
                    ),
                );
                return None;
            }
        },
        _ => {
            p.push(
                t.span.clone(),
                format!(
                    "{} needs exactly one of `weight` (percent) or `header = \"NAME: VALUE\"`",
                    t.label
                ),
            );
            return None;
        }
    };
    Some(Route {
        to: to.into_inner(),
        matcher,
    })
}
