//! `[services.NAME.expose]`: the proxy's listener and policies, and the rules between them.

use std::net::SocketAddr;
use std::path::Path;

use super::{each, rules};
use crate::keys::*;
use crate::model::*;
use crate::problem::Problems;

/// Keys of `[expose]` that only mean something for HTTP.
const HTTP_ONLY: [&str; 7] = [
    "balance",
    "hash_on",
    "weights",
    "upstream",
    "request_id_header",
    "slow_start",
    "prefer_local",
];
/// Tables of `[expose]` that only mean something for HTTP.
const HTTP_ONLY_TABLES: [&str; 7] = [
    "retries",
    "hedge",
    "outlier",
    "breaker",
    "rate_limit",
    "upstream_tls",
    "auth",
];

/// The expose settings, and the SNI names claimed when TLS is passed through.
pub(super) fn expose(
    raw: &ExposeTable,
    base_dir: &Path,
    p: &mut Problems,
) -> (Option<Expose>, Option<super::tls::SniClaims>) {
    let tcp = raw.protocol.get() == Some(Protocol::Tcp);
    if tcp {
        for (key, _, value) in &raw.written {
            if HTTP_ONLY.contains(&key.as_str()) {
                p.push(
                    value.clone(),
                    format!("`{key}` applies to HTTP only; remove it or set protocol = \"http\""),
                );
            } else if HTTP_ONLY_TABLES.contains(&key.as_str()) {
                let path = raw.label.trim_start_matches('[').trim_end_matches(']');
                p.push(
                    raw.span.clone(),
                    format!("[{path}.{key}] applies to HTTP only (protocol = \"tcp\")"),
                );
            }
        }
    } else if raw.toxics.given().is_some_and(|t| !t.get_ref().is_empty()) {
        p.push(
            raw.span.clone(),
            format!(
                "toxics apply to protocol = \"tcp\" only; use [[faults]] for HTTP in {}",
                raw.label
            ),
        );
    }
    let (tls, claims) = super::tls::expose_tls(raw, tcp, base_dir, p);
    let built = policies(raw, p).zip(raw.listen.get()).zip(tls);
    let expose = built.map(|((e, listen), (tls, passthrough, upstream_tls))| Expose {
        listen,
        tls,
        passthrough,
        upstream_tls,
        ..e
    });
    (expose, claims)
}

/// Every policy of `[expose]`; `listen` is left unspecified for the caller to fill in.
fn policies(raw: &ExposeTable, p: &mut Problems) -> Option<Expose> {
    let balance = balance(raw, p);
    let rate_limit = raw.rate_limit.built(|r| {
        let rate = r.rate.get()?;
        Some(RateLimit {
            rate,
            // A burst of one second's worth unless told otherwise.
            burst: r.burst.or((rate.ceil() as u32).max(1))?,
            key: r.key.get()?,
            max_keys: r.max_keys.get()?,
        })
    });
    let faults = each(&raw.faults, |f| fault(f, p));
    let toxics = each(&raw.toxics, toxic);
    let routes = each(&raw.routes, |r| route(r, p));
    let outlier = raw.outlier.value().and_then(|o| outlier(o, p));
    Some(Expose {
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        protocol: raw.protocol.get()?,
        balance: balance?,
        slow_start: raw.slow_start.get()?,
        prefer_local: raw.prefer_local.get()?,
        upstream_http2: raw.upstream.get()?,
        request_id_header: raw.request_id_header.get()?.to_ascii_lowercase(),
        timeouts: raw.timeouts.value()?.build()?,
        retries: retries(raw.retries.value()?, p)?,
        hedge: raw.hedge.built(HedgeTable::build)?,
        outlier: outlier?,
        breaker: breaker(raw.breaker.value()?)?,
        limits: raw.limits.value()?.build()?,
        rate_limit: rate_limit?,
        faults: faults?,
        toxics: toxics?,
        routes: routes?,
        // Built by `degrade::fallbacks`, which knows the other services and the stack
        // file's directory.
        fallback: None,
        // Built by `expose`, which knows the stack file's directory.
        tls: None,
        passthrough: None,
        upstream_tls: None,
        auth: raw.auth.built(crate::keys::AuthTable::build)?,
    })
}

/// `weighted` needs `weights`, `hash` needs `hash_on`, and neither key means anything
/// with another balancer.
fn balance(raw: &ExposeTable, p: &mut Problems) -> Option<Balance> {
    let kind = raw.balance.get()?;
    if kind != BalanceName::Hash
        && let Some(h) = raw.hash_on.span()
    {
        p.push(h, "`hash_on` needs balance = \"hash\"");
    }
    if kind != BalanceName::Weighted
        && let Some(w) = raw.weights.span()
    {
        p.push(w, "`weights` needs balance = \"weighted\"");
    }
    let needs = |what| (format!("balance = \"{}\"", kind.as_str()), what);
    Some(match kind {
        BalanceName::P2c => Balance::P2c,
        BalanceName::RoundRobin => Balance::RoundRobin,
        BalanceName::LeastRequest => Balance::LeastRequest,
        BalanceName::Weighted => {
            let what = "`weights = [..]`, one per replica index";
            Balance::Weighted(rules::required(&raw.weights, raw.place(), needs(what), p)?)
        }
        BalanceName::Hash => {
            let what = "`hash_on`: \"header:NAME\", \"cookie:NAME\" or \"client-address\"";
            Balance::Hash(rules::required(&raw.hash_on, raw.place(), needs(what), p)?)
        }
    })
}

/// Invariant: `base_ejection <= max_ejection`.
fn outlier(t: &OutlierTable, p: &mut Problems) -> Option<Outlier> {
    let o = t.build()?;
    let (low, high) = (
        ("base_ejection", o.base_ejection),
        ("max_ejection", o.max_ejection),
    );
    rules::ordered(t.span.clone(), &t.label, low, high, p)?;
    Some(o)
}

/// A cooldown never grows past `max_cooldown`, nor starts above it.
fn breaker(t: &BreakerTable) -> Option<Breaker> {
    let b = t.build()?;
    Some(Breaker {
        max_cooldown: b.max_cooldown.max(b.cooldown),
        ..b
    })
}

/// A fault's action: exactly one of these keys, each as messages show it.
const FAULT_ACTIONS: [(&str, &str); 3] = [
    ("delay", "`delay = \"100ms\"`"),
    ("abort", "`abort = 503`"),
    ("reset", "`reset = true`"),
];

/// Exactly one action, and `percent` or `header` to say when.
fn fault(t: &FaultTable, p: &mut Problems) -> Option<Fault> {
    let action = rules::one_of(t.place(), &FAULT_ACTIONS, false, p)?;
    if !t.percent.is_present() && !t.header.is_present() {
        return p.fail(
            t.span.clone(),
            format!("{} needs `percent` (0 to 100) or `header`", t.label),
        );
    }
    // Reported at the fault, as a fault without an action is.
    if t.reset.get() == Some(false) {
        return p.fail(
            t.span.clone(),
            "`reset = false` is not a fault; remove the entry",
        );
    }
    Some(Fault {
        // Header-triggered faults apply to every request that carries the header by default.
        percent: t.percent.or(100.0)?,
        header: t.header.get().map(|h| h.to_ascii_lowercase()),
        action: match action {
            "delay" => FaultAction::Delay(t.delay.get()?),
            "abort" => FaultAction::Abort(t.abort.get()?),
            _ => FaultAction::Reset,
        },
    })
}

/// `ToxicKind::V { key: t.key.get()?, .. }` for the variant `type` names: each variant's
/// fields are keys of the table.
macro_rules! toxic_kind {
    ($t:ident, $($V:ident { $($key:ident),* }),* $(,)?) => {
        match $t.kind.get()? {
            $(ToxicType::$V => ToxicKind::$V { $($key: $t.$key.get()?),* },)*
        }
    };
}

/// The keys of `type` apply; the others are ignored.
pub(super) fn toxic(t: &ToxicTable) -> Option<Toxic> {
    let kind = toxic_kind!(
        t,
        Latency { latency, jitter },
        Bandwidth { rate },
        ResetPeer { timeout },
        Timeout { timeout },
        SlowClose { delay },
        Slicer {
            average_size,
            size_variation,
            delay
        },
        LimitData { bytes },
    );
    Some(Toxic {
        kind,
        toxicity: t.toxicity.get()?,
        direction: t.direction.get()?,
    })
}

/// A route's match: exactly one of these keys, each as messages show it.
const ROUTE_MATCHES: [(&str, &str); 2] = [
    ("weight", "`weight` (percent)"),
    ("header", "`header = \"NAME: VALUE\"`"),
];

/// Exactly one of `weight` and `header`; `to` is checked against the stack's services
/// ([`super::deps::check_routes`]).
fn route(t: &RouteTable, p: &mut Problems) -> Option<Route> {
    let to = t.to.get()?;
    let matcher = rules::one_of(t.place(), &ROUTE_MATCHES, false, p)?;
    let matcher = if matcher == "weight" {
        RouteMatch::Weight(t.weight.get()?)
    } else {
        let (name, value) = t.header.get()?;
        RouteMatch::Header { name, value }
    };
    Some(Route {
        to,
        matcher,
        switch: t.switch.get(),
    })
}

impl Expose {
    /// An exposed service with every policy at its declared default.
    pub fn new(listen: SocketAddr) -> Self {
        Expose {
            listen,
            ..super::defaults("expose", policies)
        }
    }
}

/// `statuses` and `on = [.., "status"]` go together: either alone would do nothing.
fn retries(raw: &RetriesTable, p: &mut Problems) -> Option<Retries> {
    let retries = raw.build()?;
    let on_status = retries.retries_on(RetryCondition::Status);
    if !retries.statuses.is_empty() && !on_status {
        return p.fail(
            raw.statuses.span().unwrap_or(raw.span.clone()),
            "`statuses` are retried only with \"status\" in `on`; add it: on = [.., \"status\"]",
        );
    }
    if on_status && retries.statuses.is_empty() {
        return p.fail(
            raw.on.span().unwrap_or(raw.span.clone()),
            "`on` has \"status\" but `statuses` lists no code; add them, e.g. statuses = [503]",
        );
    }
    Some(retries)
}
