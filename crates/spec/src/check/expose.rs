//! `[services.NAME.expose]`: the proxy's listener and policies, and the rules between them.

use std::net::SocketAddr;
use std::path::Path;

use super::each;
use crate::keys::{
    BalanceName, BreakerTable, ExposeTable, FaultTable, HedgeTable, OutlierTable, RetriesTable,
    RouteTable, ToxicTable, ToxicType,
};
use crate::model::{
    Balance, Breaker, Expose, Fault, FaultAction, Outlier, Protocol, RateLimit, Retries,
    RetryCondition, Route, RouteMatch, Toxic, ToxicKind,
};
use crate::problem::Problems;
use crate::schema::Field;

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
    Some(match kind {
        BalanceName::P2c => Balance::P2c,
        BalanceName::RoundRobin => Balance::RoundRobin,
        BalanceName::LeastRequest => Balance::LeastRequest,
        BalanceName::Weighted => match &raw.weights {
            Field::Absent => {
                return p.fail(
                    raw.span.clone(),
                    "balance = \"weighted\" needs `weights = [..]`, one per replica index",
                );
            }
            w => Balance::Weighted(w.get()?),
        },
        BalanceName::Hash => match &raw.hash_on {
            Field::Absent => {
                return p.fail(
                    raw.span.clone(),
                    "balance = \"hash\" needs `hash_on`: \"header:NAME\", \"cookie:NAME\" or \
                     \"client-address\"",
                );
            }
            h => Balance::Hash(h.get()?),
        },
    })
}

/// Invariant: `base_ejection <= max_ejection`.
fn outlier(t: &OutlierTable, p: &mut Problems) -> Option<Outlier> {
    let o = t.build()?;
    if o.base_ejection > o.max_ejection {
        return p.fail(
            t.span.clone(),
            format!(
                "outlier `base_ejection` ({:?}) must not exceed `max_ejection` ({:?})",
                o.base_ejection, o.max_ejection
            ),
        );
    }
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

/// Exactly one of `delay`, `abort`, `reset`, and `percent` or `header` to say when.
fn fault(t: &FaultTable, p: &mut Problems) -> Option<Fault> {
    if super::written_of(&t.written, &["delay", "abort", "reset"]).len() != 1 {
        return p.fail(
            t.span.clone(),
            format!(
                "{} needs exactly one of `delay = \"100ms\"`, `abort = 503` or `reset = true`",
                t.label
            ),
        );
    }
    if !t.percent.is_present() && !t.header.is_present() {
        return p.fail(
            t.span.clone(),
            format!("{} needs `percent` (0 to 100) or `header`", t.label),
        );
    }
    if t.reset.get() == Some(false) {
        return p.fail(
            t.span.clone(),
            "`reset = false` is not a fault; remove the entry",
        );
    }
    // An invalid key was reported, and the stack is refused: its stand-in goes nowhere.
    let action = match (t.delay.get(), t.abort.get()) {
        (Some(d), _) => FaultAction::Delay(d),
        (_, Some(a)) => FaultAction::Abort(a),
        _ => FaultAction::Reset,
    };
    Some(Fault {
        // Header-triggered faults apply to every request that carries the header by default.
        percent: t.percent.or(100.0)?,
        header: t.header.get().map(|h| h.to_ascii_lowercase()),
        action,
    })
}

/// The keys of `type` apply; the others are ignored.
pub(super) fn toxic(t: &ToxicTable) -> Option<Toxic> {
    let kind = match t.kind.get()? {
        ToxicType::Latency => ToxicKind::Latency {
            latency: t.latency.get()?,
            jitter: t.jitter.get()?,
        },
        ToxicType::Bandwidth => ToxicKind::Bandwidth {
            rate: t.rate.get()?,
        },
        ToxicType::ResetPeer => ToxicKind::ResetPeer {
            timeout: t.timeout.get()?,
        },
        ToxicType::Timeout => ToxicKind::Timeout {
            timeout: t.timeout.get()?,
        },
        ToxicType::SlowClose => ToxicKind::SlowClose {
            delay: t.delay.get()?,
        },
        ToxicType::Slicer => ToxicKind::Slicer {
            average_size: t.average_size.get()?,
            size_variation: t.size_variation.get()?,
            delay: t.delay.get()?,
        },
        ToxicType::LimitData => ToxicKind::LimitData {
            bytes: t.bytes.get()?,
        },
    };
    Some(Toxic {
        kind,
        toxicity: t.toxicity.get()?,
        direction: t.direction.get()?,
    })
}

/// Exactly one of `weight` and `header`; `to` is checked against the stack's services
/// ([`super::deps::check_routes`]).
fn route(t: &RouteTable, p: &mut Problems) -> Option<Route> {
    let to = t.to.get()?;
    let matcher = match (&t.weight, &t.header) {
        (Field::Given(w), Field::Absent) => RouteMatch::Weight(*w.get_ref()),
        (Field::Absent, Field::Given(h)) => {
            let (name, value) = h.get_ref().clone();
            RouteMatch::Header { name, value }
        }
        (Field::Invalid, _) | (_, Field::Invalid) => return None,
        _ => {
            return p.fail(
                t.span.clone(),
                format!(
                    "{} needs exactly one of `weight` (percent) or `header = \"NAME: VALUE\"`",
                    t.label
                ),
            );
        }
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
