//! Which rules an event triggers, and what each firing carries: the service and replica
//! it concerns, a line for people, the context a runbook gets as JSON.

use bus::EventKind;
use serde_json::{Value, json};
use spec::{EventType, Remediation, Trigger};

/// One rule triggered for one service.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Firing {
    /// The rule's name.
    pub rule: String,
    pub service: String,
    pub replica: Option<u32>,
    /// In words: `page alert web/availability`.
    pub trigger: String,
    /// What a runbook gets on stdin (and, flattened, in `BULWARK_*` variables).
    pub context: Value,
    /// Held while a condition lasts (a firing alert, a metric beyond its bound, a
    /// replica's anomaly): the rule is evaluated again when its guards allow, until the
    /// condition clears.
    pub lasting: bool,
    /// The alert's fingerprint (`service/slo/severity`), for an alert trigger.
    pub alert: Option<String>,
}

/// What an event says, as a trigger.
struct Seen<'a> {
    service: &'a str,
    replica: Option<u32>,
    trigger: String,
    context: Value,
    lasting: bool,
    alert: Option<String>,
}

/// The rules `e` triggers.
pub(crate) fn fired(rules: &[&Remediation], e: &EventKind) -> Vec<Firing> {
    let mut out = Vec::new();
    for rule in rules {
        let Some(seen) = matches(&rule.when, e) else {
            continue;
        };
        if rule.service.as_deref().is_some_and(|s| s != seen.service) {
            continue;
        }
        out.push(Firing {
            rule: rule.name.clone(),
            service: seen.service.to_owned(),
            replica: seen.replica,
            trigger: seen.trigger,
            context: seen.context,
            lasting: seen.lasting,
            alert: seen.alert,
        });
    }
    out
}

/// The alert a resolution clears: `(service, slo, severity)`.
pub(crate) fn resolved(e: &EventKind) -> Option<(&str, &str, &str)> {
    match e {
        EventKind::AlertResolved {
            service,
            name,
            severity,
            ..
        } => Some((service, name, severity)),
        _ => None,
    }
}

fn matches<'a>(when: &Trigger, e: &'a EventKind) -> Option<Seen<'a>> {
    match (when, e) {
        (
            Trigger::Alert {
                severity: want,
                slo,
            },
            EventKind::AlertFiring {
                service,
                name,
                severity,
                summary,
                ..
            },
        ) if want.matches(severity)
            && slo.as_ref().is_none_or(|s| s == name)
            // The ticket that asks for an approval is not itself a trigger.
            && !name.starts_with("approval:") =>
        {
            Some(Seen {
                service,
                replica: None,
                trigger: format!("{severity} alert {service}/{name}"),
                context: json!({
                    "trigger": "alert", "service": service, "slo": name,
                    "severity": severity, "summary": summary,
                }),
                lasting: true,
                alert: Some(format!("{service}/{name}/{severity}")),
            })
        }
        (Trigger::Event(t), e) => event(*t, e),
        (
            Trigger::ProbeFailing(kind),
            EventKind::ProbeFailed {
                service,
                index,
                probe,
                reason,
            },
        ) if kind == probe => Some(Seen {
            service,
            replica: Some(*index),
            trigger: format!("{} probe failed on {service}/{index}", probe.as_str()),
            context: json!({
                "trigger": "probe", "service": service, "replica": index,
                "probe": probe.as_str(), "reason": reason,
            }),
            lasting: false,
            alert: None,
        }),
        (
            Trigger::Anomaly(kind),
            EventKind::AnomalyDetected {
                service,
                replica,
                kind: seen,
                confidence,
                forecast_ms,
                detail,
            },
        ) if kind.as_str() == seen => Some(Seen {
            service,
            replica: *replica,
            trigger: format!("{seen} anomaly on {}", at(service, *replica)),
            context: json!({
                "trigger": "anomaly", "service": service, "replica": replica,
                "anomaly": seen, "confidence": confidence, "forecast_ms": forecast_ms,
                "detail": detail,
            }),
            // A replica's anomaly lasts until the replica is gone: a firing held back
            // (another replacement under way) is looked at again.
            lasting: replica.is_some(),
            alert: None,
        }),
        _ => None,
    }
}

fn at(service: &str, replica: Option<u32>) -> String {
    match replica {
        Some(i) => format!("{service}/{i}"),
        None => service.to_owned(),
    }
}

fn event(t: EventType, e: &EventKind) -> Option<Seen<'_>> {
    let (service, replica, detail) = match (t, e) {
        (
            EventType::CrashLooping,
            EventKind::CrashLooping {
                service,
                index,
                restarts,
                last_exit,
                ..
            },
        ) => (
            service,
            Some(*index),
            format!("{restarts} restarts, last {last_exit}"),
        ),
        (
            EventType::ReplicaExited,
            EventKind::ReplicaExited {
                service,
                index,
                exit,
                ..
            },
        ) => (service, Some(*index), exit.to_string()),
        (
            EventType::ReplicaEjected,
            EventKind::ReplicaEjected {
                service,
                index,
                reason,
                ..
            },
        ) => (service, Some(*index), reason.clone()),
        (
            EventType::SpawnFailed,
            EventKind::SpawnFailed {
                service,
                index,
                error,
            },
        ) => (service, Some(*index), error.clone()),
        (
            EventType::ReplicaUnready,
            EventKind::ReplicaUnready {
                service,
                index,
                reason,
            },
        ) => (service, Some(*index), reason.clone()),
        (
            EventType::RolloutAborted,
            EventKind::RolloutAborted {
                service, reason, ..
            },
        ) => (service, None, reason.clone()),
        (
            EventType::OomKilled,
            EventKind::ReplicaOomKilled {
                service,
                index,
                memory_limit,
                ..
            },
        ) => (
            service,
            Some(*index),
            match memory_limit {
                Some(b) => format!("past its memory limit of {b} bytes"),
                None => "the machine ran out of memory".to_owned(),
            },
        ),
        (EventType::IncidentOpened, EventKind::IncidentOpened { service, id, title }) => {
            (service, None, format!("incident #{id}: {title}"))
        }
        _ => return None,
    };
    Some(Seen {
        service,
        replica,
        trigger: format!("{} on {}", t.as_str(), at(service, replica)),
        context: json!({
            "trigger": "event", "event": t.as_str(), "service": service,
            "replica": replica, "detail": detail,
        }),
        lasting: false,
        alert: None,
    })
}

/// The metric trigger's firing, for a measure that held beyond its bound long enough.
pub(crate) fn metric(r: &Remediation, service: &str, value: f64) -> Firing {
    let (name, bound) = match &r.when {
        Trigger::Metric { metric, bound, .. } => (metric.as_str(), *bound),
        _ => ("metric", spec::Bound::Above(0.0)),
    };
    let (word, b) = match bound {
        spec::Bound::Above(b) => ("above", b),
        spec::Bound::Below(b) => ("below", b),
    };
    Firing {
        rule: r.name.clone(),
        service: service.to_owned(),
        replica: None,
        trigger: format!("{name} of {service} {value:.2} {word} {b}"),
        context: json!({
            "trigger": "metric", "service": service, "metric": name,
            "value": value, "bound": word, "threshold": b,
        }),
        lasting: true,
        alert: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(src: &str) -> Remediation {
        let toml = format!(
            "[services.web]\nrun = [\"x\"]\n[services.db]\nrun = [\"x\"]\n[[remediations]]\nname = \"r\"\n{src}"
        );
        spec::parse(&toml, std::path::Path::new("t.toml"))
            .expect("valid")
            .remediations
            .remove(0)
    }

    #[test]
    fn alerts_match_by_severity_slo_and_service_and_carry_their_context() {
        let page = rule(
            "when = { alert = \"page\", service = \"web\" }\ndo = [{ action = \"restart-service\" }]",
        );
        let firing = |service: &str, severity: &str| EventKind::AlertFiring {
            service: service.into(),
            name: "availability".into(),
            severity: severity.into(),
            summary: "burning".into(),
            silenced: false,
        };
        let got = fired(&[&page], &firing("web", "page"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].trigger, "page alert web/availability");
        assert_eq!(got[0].context["slo"], "availability");
        assert!(got[0].lasting);
        assert!(fired(&[&page], &firing("web", "ticket")).is_empty());
        assert!(fired(&[&page], &firing("db", "page")).is_empty());
    }

    #[test]
    fn an_oom_kill_triggers_its_rule_with_the_replica_and_limit() {
        let oom =
            rule("when = { event = \"oom-killed\" }\ndo = [{ action = \"restart-replica\" }]");
        let e = EventKind::ReplicaOomKilled {
            service: "db".into(),
            index: 1,
            pid: 42,
            memory_limit: Some(64 << 20),
            kills: 1,
        };
        let got = fired(&[&oom], &e);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].service.as_str(), got[0].replica), ("db", Some(1)));
        assert_eq!(got[0].trigger, "oom-killed on db/1");
        assert_eq!(
            got[0].context["detail"],
            "past its memory limit of 67108864 bytes"
        );
    }

    #[test]
    fn events_probes_and_anomalies_name_their_replica() {
        let crash =
            rule("when = { event = \"crash-looping\" }\ndo = [{ action = \"restart-replica\" }]");
        let leak =
            rule("when = { anomaly = \"memory-leak\" }\ndo = [{ action = \"replace-replica\" }]");
        let e = EventKind::CrashLooping {
            service: "db".into(),
            index: 2,
            restarts: 5,
            last_exit: bus::Exit {
                code: Some(1),
                signal: None,
            },
            stderr_tail: vec![],
        };
        let got = fired(&[&crash, &leak], &e);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].rule.as_str(), got[0].replica), ("r", Some(2)));
        assert!(!got[0].lasting);
        let a = EventKind::AnomalyDetected {
            service: "web".into(),
            replica: Some(1),
            kind: "memory-leak".into(),
            confidence: 0.9,
            forecast_ms: Some(60_000),
            detail: "rss 100 MiB".into(),
        };
        let probe = rule(
            "when = { probe = \"liveness\", service = \"web\" }\ndo = [{ action = \"restart-replica\" }]",
        );
        let failed = |kind: spec::ProbeKind| EventKind::ProbeFailed {
            service: "web".into(),
            index: 3,
            probe: kind,
            reason: "timed out".into(),
        };
        let got = fired(&[&probe], &failed(spec::ProbeKind::Liveness));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].replica, Some(3));
        assert_eq!(got[0].trigger, "liveness probe failed on web/3");
        assert!(fired(&[&probe], &failed(spec::ProbeKind::Readiness)).is_empty());
        let got = fired(&[&crash, &leak], &a);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].lasting,
            "a replica's anomaly lasts until the replica is gone"
        );
        assert_eq!(got[0].trigger, "memory-leak anomaly on web/1");
    }
}
