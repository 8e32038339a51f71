//! How `bulwark slo` and `bulwark incidents` print what the API answers, and times for people.

use crate::output::outln;

/// A time for people; never panics, whatever the number (humantime's formatter panics past
/// year 9999, and adding to the epoch can overflow).
pub(crate) fn ms_to_time(ms: u64) -> String {
    const YEAR_9999_MS: u64 = 253_402_300_799_000;
    if ms > YEAR_9999_MS {
        return format!("{ms} ms after the epoch");
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn fmt_ms(ms: Option<f64>) -> String {
    ms.map_or("-".into(), |m| {
        humantime::format_duration(std::time::Duration::from_millis(m as u64)).to_string()
    })
}

pub(crate) fn print_slo(reports: &[api::json::SloReport]) {
    // Under `bulwark agent`: which node's proxy counted these requests.
    if let Some(node) = reports.iter().find_map(|r| r.node.as_deref()) {
        outln!("node {node}");
    }
    outln!(
        "{:<12} {:<14} {:>9} {:>9} {:>8}  {:>7} {:>7} {:>7} {:>7}  {:<8} {:<8} EXHAUSTED IN",
        "SERVICE",
        "SLO",
        "OBJECTIVE",
        "SLI",
        "BUDGET",
        "BURN5m",
        "BURN1h",
        "BURN6h",
        "BURN3d",
        "PAGE",
        "TICKET"
    );
    for r in reports {
        let burn = |w: &str| {
            r.windows
                .iter()
                .find(|x| x.window == w)
                .map_or(0.0, |x| x.burn_rate)
        };
        outln!(
            "{:<12} {:<14} {:>8.3}% {:>9} {:>7.1}%  {:>7.2} {:>7.2} {:>7.2} {:>7.2}  {:<8} {:<8} {}",
            r.service,
            r.slo,
            r.objective_percent,
            r.sli.map_or("-".into(), |s| format!("{:.4}%", s * 100.0)),
            r.error_budget_remaining * 100.0,
            burn("5m"),
            burn("1h"),
            burn("6h"),
            burn("3d"),
            r.alerts.get("page").map_or("-", String::as_str),
            r.alerts.get("ticket").map_or("-", String::as_str),
            r.time_to_exhaustion_s
                .map_or("-".into(), |s| humantime::format_duration(
                    std::time::Duration::from_secs(s as u64)
                )
                .to_string()),
        );
    }
}

pub(crate) fn print_incidents(v: &api::json::Incidents) {
    for i in &v.incidents {
        outln!(
            "#{} {}{} [{}] {} — detected {}, MTTD {}, time to resolve {}",
            i.id,
            i.service,
            i.node
                .as_ref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default(),
            match i.state {
                api::json::IncidentState::Open => "OPEN",
                api::json::IncidentState::Resolved => "resolved",
            },
            i.title,
            ms_to_time(i.detected_at_ms),
            fmt_ms(
                i.fault_at_ms
                    .map(|f| i.detected_at_ms.saturating_sub(f) as f64)
            ),
            fmt_ms(
                i.resolved_at_ms
                    .map(|r| r.saturating_sub(i.detected_at_ms) as f64)
            ),
        );
        if let Some(rule) = &i.resolved_by {
            outln!("    resolved by remediation {rule}");
        }
        for e in &i.timeline {
            outln!("    {} {:<8} {}", ms_to_time(e.at_ms), e.kind, e.text);
        }
    }
    outln!();
    outln!(
        "{:<14} {:>9} {:>5} {:>10} {:>10} {:>10} {:>12}",
        "SERVICE",
        "INCIDENTS",
        "OPEN",
        "MTTD",
        "MTTR",
        "MTBF",
        "AVAILABILITY"
    );
    for r in &v.reliability {
        outln!(
            "{:<14} {:>9} {:>5} {:>10} {:>10} {:>10} {:>11.4}%",
            r.service,
            r.incidents,
            r.open,
            fmt_ms(r.mttd_ms),
            fmt_ms(r.mttr_ms),
            fmt_ms(r.mtbf_ms),
            r.availability * 100.0
        );
    }
    for r in v.reliability.iter().filter(|r| r.automated > 0) {
        outln!(
            "{}: {} resolved by remediation, MTTR {} automated, {} otherwise",
            r.service,
            r.automated,
            fmt_ms(r.mttr_automated_ms),
            fmt_ms(r.mttr_manual_ms)
        );
    }
    outln!(
        "MTTD: fault start to detection; MTTR: detection to resolution; availability: time outside incidents."
    );
}
