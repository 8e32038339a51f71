//! `[[remediations]]`, `[services.NAME.anomaly]` and `[services.NAME.autoscale]`: one
//! trigger per rule, the keys each action needs, names that exist, bounds that agree.

use crate::keys::remedy::{ActionTable, AutoscaleTable, RemediationTable, ServiceAnomalyTable};
use crate::model::{
    Action, ActionKind as K, Autoscale, Bound, Guards, Remediation, ScaleTarget, ScaleTo, Service,
    ServiceAnomaly, Switch, Trigger,
};
use crate::problem::{Problems, suggest};
use crate::schema::Field;

/// Every rule, checked against the stack's services and switches.
pub(crate) fn remediations(
    list: &Field<Vec<RemediationTable>>,
    services: &[&Service],
    switches: &[Switch],
    p: &mut Problems,
) -> Option<Vec<Remediation>> {
    super::duplicate_names(
        list.value()
            .into_iter()
            .flatten()
            .filter_map(|raw| raw.name.given()),
        |n| {
            format!(
                "duplicate remediation name `{n}`: each [[remediations]] needs a name of its own"
            )
        },
        p,
    );
    super::each(list, |raw| remediation(raw, services, switches, p))
}

fn known_service(
    name: &toml::Spanned<String>,
    what: &str,
    services: &[&Service],
    p: &mut Problems,
) -> bool {
    let n = name.get_ref();
    if services.iter().any(|s| s.name == *n) {
        return true;
    }
    let hint = suggest(n, services.iter().map(|s| s.name.as_str()))
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    p.push(
        name.span(),
        format!("{what}: unknown service `{n}`; {hint}name a [services.NAME] of this stack"),
    );
    false
}

fn remediation(
    raw: &RemediationTable,
    services: &[&Service],
    switches: &[Switch],
    p: &mut Problems,
) -> Option<Remediation> {
    let label = match raw.name.given() {
        Some(n) => format!("remediation `{}`", n.get_ref()),
        None => raw.label.clone(),
    };
    let when = raw.when.given()?.get_ref();
    let service = match when.service.given() {
        Some(s) if known_service(s, &format!("{label}, when"), services, p) => {
            Some(s.get_ref().clone())
        }
        Some(_) => return None,
        None => None,
    };
    let trigger = trigger(when, &label, service.is_some(), p);
    let actions: Vec<Option<Action>> = raw
        .actions
        .value()?
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let label = format!("{label}, do[{i}]");
            action(a, &label, service.as_deref(), services, switches, p)
        })
        .collect();
    let trigger = trigger?;
    if actions.is_empty() {
        return p.fail(
            raw.actions.span().unwrap_or(raw.span.clone()),
            format!(
                "{label}: `do` lists no action; add at least one, such as {{ action = \"restart-service\" }}"
            ),
        );
    }
    let guards = Guards {
        limit: raw.limit.get()?,
        per: raw.per.get()?,
        backoff: raw.backoff.get()?,
        backoff_max: raw.backoff_max.get()?,
        cooldown: raw.cooldown.get()?,
        max_concurrent: raw.max_concurrent.get()?,
    };
    if guards.backoff > guards.backoff_max {
        p.push(
            raw.backoff
                .span()
                .or(raw.backoff_max.span())
                .unwrap_or(raw.span.clone()),
            format!("{label}: `backoff` must not exceed `backoff_max`"),
        );
    }
    Some(Remediation {
        name: raw.name.get()?,
        when: trigger,
        service,
        actions: actions.into_iter().collect::<Option<_>>()?,
        mode: raw.mode.get()?,
        guards,
        approve_timeout: raw.approve_timeout.get()?,
        on_timeout: raw.on_timeout.get()?,
    })
}

fn trigger(
    w: &crate::keys::remedy::WhenTable,
    label: &str,
    has_service: bool,
    p: &mut Problems,
) -> Option<Trigger> {
    let given: Vec<&str> = [
        ("alert", w.alert.is_present()),
        ("event", w.event.is_present()),
        ("anomaly", w.anomaly.is_present()),
        ("probe", w.probe.is_present()),
        ("metric", w.metric.is_present()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    if given.len() != 1 {
        return p.fail(
            w.span.clone(),
            format!(
                "{}: a trigger is exactly one of `alert`, `event`, `anomaly`, `probe` or \
                 `metric`{}",
                label,
                if given.is_empty() {
                    String::new()
                } else {
                    format!(", not {}", given.join(" and "))
                }
            ),
        );
    }
    let only = |key: &str, span: Option<crate::problem::Span>, with: &str, p: &mut Problems| {
        if let Some(span) = span {
            p.push(
                span,
                format!("{}: `{key}` goes with `{with}` only; remove it", label),
            );
        }
    };
    if !w.alert.is_present() {
        only("slo", w.slo.span(), "alert", p);
    }
    if !w.metric.is_present() {
        only("above", w.above.span(), "metric", p);
        only("below", w.below.span(), "metric", p);
        only("for", w.hold.span(), "metric", p);
    }
    if let Some(severity) = w.alert.get() {
        return Some(Trigger::Alert {
            severity,
            slo: w.slo.get(),
        });
    }
    if let Some(e) = w.event.get() {
        return Some(Trigger::Event(e));
    }
    if let Some(a) = w.anomaly.get() {
        return Some(Trigger::Anomaly(a));
    }
    if let Some(k) = w.probe.get() {
        return Some(Trigger::ProbeFailing(k));
    }
    let metric = w.metric.get()?;
    if !has_service {
        return p.fail(
            w.metric.span().unwrap_or(w.span.clone()),
            format!(
                "{}: a `metric` trigger measures one service; add `service = \"NAME\"`",
                label
            ),
        );
    }
    let bound = match (w.above.get(), w.below.get()) {
        (Some(a), None) => Bound::Above(a),
        (None, Some(b)) => Bound::Below(b),
        _ => {
            return p.fail(
                w.metric.span().unwrap_or(w.span.clone()),
                format!(
                    "{}: a `metric` trigger needs exactly one of `above` or `below`",
                    label
                ),
            );
        }
    };
    Some(Trigger::Metric {
        metric,
        bound,
        hold: w.hold.get()?,
    })
}

fn action(
    raw: &ActionTable,
    label: &str,
    when_service: Option<&str>,
    services: &[&Service],
    switches: &[Switch],
    p: &mut Problems,
) -> Option<Action> {
    let kind = raw.kind.get()?;
    let service = match raw.service.given() {
        Some(s) if known_service(s, label, services, p) => Some(s.get_ref().clone()),
        Some(_) => return None,
        None => None,
    };
    let needs = |key: &str, present: bool, p: &mut Problems| {
        if !present {
            p.push(
                raw.span.clone(),
                format!("{label}: action `{}` needs `{key}`", action_name(kind)),
            );
        }
        present
    };
    let timeout = raw.timeout.get()?;
    let hold = raw.hold.get();
    let secs = std::time::Duration::from_secs;
    Some(match kind {
        K::RestartReplica => Action::RestartReplica { service },
        K::ReplaceReplica => Action::ReplaceReplica { service, timeout },
        K::RestartService => Action::RestartService { service },
        K::Scale => scale(raw, label, service, when_service, services, p)?,
        K::Eject => Action::Eject {
            service,
            hold: hold.unwrap_or(secs(30)),
        },
        K::Drain => Action::Drain {
            service,
            hold: hold.unwrap_or(secs(30)),
            timeout,
        },
        K::Rollback => Action::Rollback { service },
        K::Switch => switch(raw, label, switches, p)?,
        K::Silence => Action::Silence {
            hold: hold.unwrap_or(secs(3600)),
        },
        K::Run => {
            if !needs("command", raw.command.is_present(), p) {
                return None;
            }
            Action::Run {
                command: raw.command.get()?,
                timeout,
            }
        }
        K::Webhook => {
            if !needs("url", raw.url.is_present(), p) {
                return None;
            }
            Action::Webhook {
                url: raw.url.get()?,
                timeout,
            }
        }
    })
}

fn scale(
    raw: &ActionTable,
    label: &str,
    service: Option<String>,
    when_service: Option<&str>,
    services: &[&Service],
    p: &mut Problems,
) -> Option<Action> {
    let to = match (raw.to.get(), raw.step.get()) {
        (Some(n), None) => ScaleTo::Count(n),
        (None, Some(s)) => ScaleTo::By(s),
        _ => {
            return p.fail(
                raw.span.clone(),
                format!("{label}: action `scale` needs exactly one of `to` or `step`"),
            );
        }
    };
    let target = service.as_deref().or(when_service);
    if target.is_none()
        && let Some(auto) = services.iter().find(|s| s.autoscale.is_some())
    {
        return p.fail(
            raw.span.clone(),
            format!(
                "{label}: a `scale` action with no `service` scales whichever service \
                 triggered it, and `{}` is autoscaled (its autoscaler would undo it); add \
                 `service = \"NAME\"` to the action or to `when`",
                auto.name
            ),
        );
    }
    if let Some(name) = target
        && services
            .iter()
            .any(|s| s.name == *name && s.autoscale.is_some())
    {
        return p.fail(
            raw.span.clone(),
            format!(
                "{label}: service `{name}` is autoscaled, so its autoscaler would undo \
                 a `scale` action; change [services.{name}.autoscale] instead"
            ),
        );
    }
    Some(Action::Scale { service, to })
}

fn switch(raw: &ActionTable, label: &str, switches: &[Switch], p: &mut Problems) -> Option<Action> {
    let name = raw.switch.given();
    if name.is_none() || !raw.state.is_present() {
        let key = if name.is_none() { "switch" } else { "state" };
        return p.fail(
            raw.span.clone(),
            format!("{label}: action `switch` needs `{key}`"),
        );
    }
    let name = name?;
    if !switches.iter().any(|s| s.name == *name.get_ref()) {
        let hint = suggest(name.get_ref(), switches.iter().map(|s| s.name.as_str()))
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        return p.fail(
            name.span(),
            format!(
                "{label}: unknown switch `{}`; {hint}declare it with a [switches.{}] table",
                name.get_ref(),
                name.get_ref()
            ),
        );
    }
    Some(Action::Switch {
        name: name.get_ref().clone(),
        value: raw.state.get()?,
    })
}

fn action_name(kind: K) -> &'static str {
    match kind {
        K::RestartReplica => "restart-replica",
        K::ReplaceReplica => "replace-replica",
        K::RestartService => "restart-service",
        K::Scale => "scale",
        K::Eject => "eject",
        K::Drain => "drain",
        K::Rollback => "rollback",
        K::Switch => "switch",
        K::Silence => "silence",
        K::Run => "run",
        K::Webhook => "webhook",
    }
}

/// `[services.NAME.anomaly]`.
pub(super) fn service_anomaly(raw: &Field<ServiceAnomalyTable>) -> ServiceAnomaly {
    raw.value()
        .map(|a| ServiceAnomaly {
            enabled: a.enabled.get().unwrap_or(true),
            memory_limit: a.memory_limit.get(),
        })
        .unwrap_or_default()
}

/// `[services.NAME.autoscale]`: exactly one target, `min ≤ replicas ≤ max`.
pub(super) fn autoscale(
    raw: &Field<AutoscaleTable>,
    replicas: Option<u32>,
    p: &mut Problems,
) -> Option<Autoscale> {
    let a = raw.value()?;
    let written = [
        a.in_flight.is_present(),
        a.request_rate.is_present(),
        a.cpu.is_present(),
        a.latency_p99.is_present(),
    ];
    let targets: Vec<ScaleTarget> = [
        a.in_flight.get().map(ScaleTarget::InFlight),
        a.request_rate.get().map(ScaleTarget::RequestRate),
        a.cpu.get().map(ScaleTarget::Cpu),
        a.latency_p99.get().map(ScaleTarget::LatencyP99),
    ]
    .into_iter()
    .flatten()
    .collect();
    if written.iter().filter(|w| **w).count() == 1 && targets.is_empty() {
        return None; // the one target is invalid, and was reported
    }
    let [target] = targets[..] else {
        return p.fail(
            a.span.clone(),
            format!(
                "{}: give exactly one target: `in_flight`, `request_rate`, `cpu` or `latency_p99`",
                a.label
            ),
        );
    };
    let (min, max) = (a.min.get()?, a.max.get()?);
    if min > max {
        return p.fail(
            a.min.span().or(a.max.span()).unwrap_or(a.span.clone()),
            format!("{}: min = {min} is more than max = {max}", a.label),
        );
    }
    if let Some(r) = replicas
        && !(min..=max).contains(&r)
    {
        return p.fail(
            a.span.clone(),
            format!(
                "{}: the service starts with replicas = {r}, outside min = {min} and max = {max}; \
                 set replicas within them",
                a.label
            ),
        );
    }
    Some(Autoscale {
        min,
        max,
        target,
        interval: a.interval.get()?,
        tolerance: a.tolerance.get()?,
        up_window: a.up_window.get()?,
        down_window: a.down_window.get()?,
        up_percent: a.up_percent.get()?,
        up_replicas: a.up_replicas.get()?,
        down_percent: a.down_percent.get()?,
        period: a.period.get()?,
        cover_failures: a.cover_failures.get()?,
    })
}
