//! `[[services.NAME.slo]]`: unique names, a kind with its own keys, a plausible objective.

use crate::keys::{ServiceTable, SloTable};
use crate::model::{Slo, SloKind, SloKindName};
use crate::problem::Problems;

/// The service's SLOs: names checked for uniqueness, then each SLO on its own, and only
/// for an exposed service.
pub(super) fn slos(service: &str, raw: &ServiceTable, p: &mut Problems) -> Vec<Slo> {
    let list = raw.slo.value().map_or(&[][..], Vec::as_slice);
    super::duplicate_names(
        list.iter().filter_map(|raw| raw.name.given()),
        |n| {
            format!(
                "duplicate SLO name `{n}` in service `{service}`: each \
                 [[services.{service}.slo]] needs a name of its own"
            )
        },
        p,
    );
    let slos = list.iter().filter_map(|raw| slo(raw, p)).collect();
    // An invalid `expose` was reported already; only a missing one is this problem.
    if let Some(list) = raw.slo.given()
        && !raw.expose.is_present()
    {
        p.push(
            list.span(),
            format!(
                "service `{service}` has SLOs but no [services.{service}.expose]: SLIs are \
                 measured by bulwark's proxy from the requests it forwards, so only an exposed \
                 service can have an SLO; add [services.{service}.expose] with a `listen` \
                 address, or remove the [[services.{service}.slo]] tables"
            ),
        );
    }
    slos
}

fn slo(raw: &SloTable, p: &mut Problems) -> Option<Slo> {
    let objective = raw.objective.given().and_then(|o| {
        let v = *o.get_ref();
        // `objective = 0.999` is almost always a fraction written for a percentage, and an
        // objective under 1 % means nothing.
        if v >= 1.0 {
            return Some(shifted(v, -2));
        }
        let percent = shifted(v, 2);
        p.fail(
            o.span(),
            format!(
                "`objective` is a percentage: {v} means {v} % of requests; for {percent} % write \
                 objective = {percent}"
            ),
        )
    });
    let kind = match raw.kind.get()? {
        SloKindName::Availability => {
            if let Some(t) = raw.threshold.span() {
                return p.fail(
                    t,
                    "`threshold` is only for latency SLOs (kind = \"latency\"); an availability \
                     SLO counts failed requests, whatever their latency",
                );
            }
            SloKind::Availability {
                count_429: raw.count_429_as_error.get()?,
            }
        }
        SloKindName::Latency => {
            if let Some(c) = raw.count_429_as_error.span() {
                p.push(
                    c,
                    "`count_429_as_error` is only for availability SLOs (kind = \
                     \"availability\"); a latency SLO counts successful requests only",
                );
            }
            let what = "`threshold`: the latency a request must beat to count as good, for \
                        example threshold = \"300ms\"";
            let needs = ("kind = \"latency\"", what);
            let threshold = super::rules::required(&raw.threshold, raw.place(), needs, p)?;
            SloKind::Latency { threshold }
        }
    };
    Some(Slo {
        name: raw.name.get()?,
        kind,
        objective: objective?,
        period: raw.period.get()?,
        alerts: raw.alerts.value()?.build()?,
    })
}

/// `v` × 10^`exp` as the decimal the user wrote: `99.9` → `0.999`, the double nearest
/// that decimal, not `99.9 / 100` (`0.9990000000000001`); `0.999` → `99.9`. Rust prints
/// the shortest decimal that reads back as `v`, and its exponent is shifted as text. Exported
/// rules and messages print the objective, and should print what the file says.
fn shifted(v: f64, exp: i32) -> f64 {
    format!("{v}e{exp}").parse().unwrap_or(v * 10f64.powi(exp))
}
