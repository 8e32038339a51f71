//! `[[services.NAME.slo]]`: unique names, a kind with its own keys, a plausible objective.

use std::time::Duration;

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
            return Some(percent_to_fraction(v));
        }
        let percent = clean_number(v * 100.0);
        p.fail(
            o.span(),
            format!(
                "`objective` is a percentage: {v} means {v} % of requests; for {percent} % write \
                 objective = {percent}"
            ),
        )
    });
    let period = raw.period.get().filter(|d| *d >= MIN_PERIOD);
    if let Some(v) = raw.period.given()
        && period.is_none()
    {
        p.push(
            v.span(),
            format!(
                "`period` must be at least 1m, found {:?}; SLO periods are usually \"30d\" or \
                 \"28d\", and short ones such as \"1h\" are for trying things out",
                humantime::format_duration(*v.get_ref()).to_string()
            ),
        );
    }
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
        period: period?,
        alerts: raw.alerts.value()?.build()?,
    })
}

/// The shortest SLO period: shorter ones measure nothing.
const MIN_PERIOD: Duration = Duration::from_secs(60);

/// `99.9` → `0.999`, the double nearest the decimal the user wrote, not `99.9 / 100`
/// (`0.9990000000000001`): the shortest decimal form of `v` with its exponent lowered by
/// two, parsed again. Exported rules print the objective, and should print what the file
/// says.
fn percent_to_fraction(v: f64) -> f64 {
    let text = format!("{v:e}");
    text.split_once('e')
        .and_then(|(digits, exp)| {
            let exp: i32 = exp.parse().ok()?;
            format!("{digits}e{}", exp - 2).parse().ok()
        })
        .unwrap_or(v / 100.0)
}

/// `99.9` rather than `99.89999999999999`: at most 9 decimals, trailing zeros dropped.
fn clean_number(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0');
    s.trim_end_matches('.').to_owned()
}
