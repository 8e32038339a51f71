//! `[[experiments]]`: unique names, a target that exists, the keys of each fault and probe
//! type, and a schedule that is one thing.

use std::path::Path;

use crate::keys::{ChaosFaultTable, ChaosScheduleTable, ExperimentTable, SteadyTable, TargetTable};
use crate::model::{
    ChaosFault, ChaosFaultKind as F, ChaosSchedule, Experiment, FaultAction, Monkey, Pick,
    Protocol, Service, SteadyCheck, SteadyKind as S, SteadyProbe, Target, TargetMode,
};
use crate::problem::{Problems, Span};
use crate::schema::Field;

/// Every experiment checked against the stack's services.
pub(crate) fn experiments(
    list: &Field<Vec<ExperimentTable>>,
    services: &[&Service],
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Vec<Experiment>> {
    super::duplicate_names(
        list.value()
            .into_iter()
            .flatten()
            .filter_map(|raw| raw.name.given()),
        |n| {
            format!("duplicate experiment name `{n}`: each [[experiments]] needs a name of its own")
        },
        p,
    );
    super::each(list, |raw| experiment(raw, services, base_dir, p))
}

fn experiment(
    raw: &ExperimentTable,
    services: &[&Service],
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Experiment> {
    let target = raw
        .target
        .given()
        .and_then(|t| target(t.get_ref(), services, p));
    let fault = raw.fault.given().and_then(|f| {
        let svc = target.as_ref().map(|(_, svc)| *svc);
        fault(f.get_ref(), svc, services, base_dir, p)
    });
    let steady: Vec<Option<SteadyProbe>> = match (raw.steady_state.value(), &target) {
        (Some(list), Some((_, svc))) => list.iter().map(|s| steady(s, svc, services, p)).collect(),
        (None, _) if !raw.steady_state.is_present() => Vec::new(),
        _ => vec![None],
    };
    let schedule = match raw.schedule.given() {
        Some(s) => schedule(s.get_ref(), p),
        None if raw.schedule.is_present() => None,
        None => Some(ChaosSchedule::OnDemand),
    };
    Some(Experiment {
        name: raw.name.get()?,
        target: target?.0,
        fault: fault?,
        duration: raw.duration.get()?,
        steady_state: steady.into_iter().collect::<Option<_>>()?,
        abort_when: raw.abort_when.value()?.build()?,
        rollbacks: raw.rollbacks.get().unwrap_or_default(),
        schedule: schedule?,
    })
}

/// Reports the names of `table` that do not apply to its `type`, at the key.
fn only_for<K: Copy + PartialEq>(
    written: &[(String, Span, Span)],
    kind: K,
    kind_name: &str,
    rules: &[(&str, &[K])],
    label: &str,
    p: &mut Problems,
) -> bool {
    let mut ok = true;
    for (key, span, _) in written {
        let Some((_, kinds)) = rules.iter().find(|(k, _)| k == key) else {
            continue;
        };
        if !kinds.contains(&kind) {
            p.push(
                span.clone(),
                format!("{label}: `{key}` does not apply to type = \"{kind_name}\""),
            );
            ok = false;
        }
    }
    ok
}

/// The service must exist; `value` goes with `fixed` and `percent` only.
fn target<'s>(
    raw: &TargetTable,
    services: &[&'s Service],
    p: &mut Problems,
) -> Option<(Target, &'s Service)> {
    let svc = known(raw.service.given()?, services, "experiment on", p)?;
    let value = raw.value.given();
    let need = |what: &str, p: &mut Problems| {
        p.push(
            raw.span.clone(),
            format!("{}: mode = \"{what}\" needs `value`", raw.label),
        );
    };
    let pick = match (raw.mode.get()?, value) {
        (TargetMode::One | TargetMode::All, Some(v)) => {
            return p.fail(
                v.span(),
                format!(
                    "{}: `value` applies to mode = \"fixed\" or \"percent\"",
                    raw.label
                ),
            );
        }
        (TargetMode::One, None) => Pick::One,
        (TargetMode::All, None) => Pick::All,
        (TargetMode::Fixed, Some(v)) if *v.get_ref() >= 1.0 && v.get_ref().fract() == 0.0 => {
            Pick::Fixed(*v.get_ref() as u32)
        }
        (TargetMode::Percent, Some(v)) if *v.get_ref() > 0.0 && *v.get_ref() <= 100.0 => {
            Pick::Percent(*v.get_ref())
        }
        (TargetMode::Fixed, Some(v)) => {
            let found = v.get_ref();
            return p.fail(
                v.span(),
                format!("`value` must be a whole number of replicas, at least 1, found {found}"),
            );
        }
        (TargetMode::Percent, Some(v)) => {
            let found = v.get_ref();
            return p.fail(
                v.span(),
                format!("`value` must be greater than 0 and at most 100 (percent), found {found}"),
            );
        }
        (TargetMode::Fixed, None) => {
            need("fixed", p);
            return None;
        }
        (TargetMode::Percent, None) => {
            need("percent", p);
            return None;
        }
    };
    Some((
        Target {
            service: svc.name.clone(),
            pick,
        },
        svc,
    ))
}

/// `name` among `services`, or a located error with a did-you-mean.
fn known<'s>(
    name: &toml::Spanned<String>,
    services: &[&'s Service],
    what: &str,
    p: &mut Problems,
) -> Option<&'s Service> {
    if let Some(s) = services.iter().find(|s| &s.name == name.get_ref()) {
        return Some(s);
    }
    let hint = crate::problem::suggest(name.get_ref(), services.iter().map(|s| s.name.as_str()))
        .map(|m| format!("; did you mean `{m}`?"))
        .unwrap_or_default();
    p.fail(
        name.span(),
        format!("{what} unknown service `{}`{hint}", name.get_ref()),
    )
}

const FAULT_KEYS: &[(&str, &[F])] = &[
    ("signal", &[F::Kill]),
    ("delay", &[F::HttpDelay, F::Dependency]),
    ("status", &[F::HttpAbort, F::Dependency]),
    (
        "percent",
        &[F::HttpDelay, F::HttpAbort, F::HttpReset, F::Dependency],
    ),
    ("toxic", &[F::Tcp]),
    ("workers", &[F::Cpu]),
    ("mib", &[F::Memory]),
    ("to", &[F::Dependency]),
    ("path", &[F::DiskFill]),
    ("leave", &[F::DiskFill]),
];

/// `target` is `None` when it was invalid: the fault's own keys are still checked.
fn fault(
    raw: &ChaosFaultTable,
    target: Option<&Service>,
    services: &[&Service],
    base_dir: &Path,
    p: &mut Problems,
) -> Option<ChaosFault> {
    let kind = raw.kind.get()?;
    if !only_for(&raw.written, kind, kind.as_str(), FAULT_KEYS, &raw.label, p) {
        return None;
    }
    let missing = |key: &str, p: &mut Problems| -> Option<ChaosFault> {
        let kind = kind.as_str();
        p.fail(
            raw.span.clone(),
            format!("{}: type = \"{kind}\" needs `{key}`", raw.label),
        )
    };
    let exposed = |protocol: Protocol, svc: Option<&Service>, p: &mut Problems| -> Option<()> {
        let svc = svc?;
        if svc.expose.as_ref().is_some_and(|x| x.protocol == protocol) {
            return Some(());
        }
        let how = if protocol == Protocol::Tcp {
            "protocol = \"tcp\""
        } else {
            "HTTP"
        };
        p.fail(
            raw.kind.span().unwrap_or(raw.span.clone()),
            format!(
                "{}: type = \"{}\" acts through bulwark's proxy, and `{}` is not exposed over {how}",
                raw.label,
                kind.as_str(),
                svc.name
            ),
        )
    };
    let percent = raw.percent.get()?;
    Some(match kind {
        F::Kill => {
            use crate::model::Signal as Sig;
            let sig = raw.signal.get()?;
            if matches!(
                sig,
                Sig::SIGSTOP | Sig::SIGTSTP | Sig::SIGTTIN | Sig::SIGTTOU
            ) {
                return p.fail(
                    raw.signal.span().unwrap_or(raw.span.clone()),
                    format!(
                        "{}: {} stops the replica and `kill` never continues it; use type = \"stop\", which does",
                        raw.label,
                        sig.as_str()
                    ),
                );
            }
            ChaosFault::Kill(sig)
        }
        F::Stop => ChaosFault::Stop,
        F::Restart => ChaosFault::Restart,
        F::HttpDelay | F::HttpAbort | F::HttpReset => {
            exposed(Protocol::Http, target, p)?;
            let action = match kind {
                F::HttpDelay => FaultAction::Delay(match raw.delay.get() {
                    Some(d) => d,
                    None => return missing("delay", p),
                }),
                F::HttpAbort => FaultAction::Abort(raw.status.get().unwrap_or(503)),
                _ => FaultAction::Reset,
            };
            ChaosFault::Http { action, percent }
        }
        F::Tcp => {
            exposed(Protocol::Tcp, target, p)?;
            match raw.toxic.given() {
                Some(t) => ChaosFault::Tcp(super::expose::toxic(t.get_ref())?),
                None => return missing("toxic", p),
            }
        }
        F::Cpu => ChaosFault::Cpu {
            workers: raw.workers.get()?,
        },
        F::Memory => ChaosFault::Memory {
            mib: raw.mib.get()?,
        },
        F::Dependency => dependency(raw, target?, services, percent, p)?,
        F::DiskFill => match raw.path.get() {
            Some(path) => ChaosFault::DiskFill {
                path: base_dir.join(path),
                leave: raw.leave.get()?,
            },
            None => return missing("path", p),
        },
    })
}

/// `to` is another service exposed over HTTP; exactly one of `delay` and `status`.
fn dependency(
    raw: &ChaosFaultTable,
    target: &Service,
    services: &[&Service],
    percent: f64,
    p: &mut Problems,
) -> Option<ChaosFault> {
    let Some(to) = raw.to.given() else {
        return p.fail(
            raw.span.clone(),
            format!(
                "{}: type = \"dependency\" needs `to = \"SERVICE\"`",
                raw.label
            ),
        );
    };
    let dep = known(to, services, "dependency fault on", p)?;
    if dep.name == target.name
        || dep
            .expose
            .as_ref()
            .is_none_or(|x| x.protocol != Protocol::Http)
    {
        return p.fail(
            to.span(),
            format!(
                "{}: `to` must be another service exposed over HTTP, which `{}` calls through its listener",
                raw.label, dep.name
            ),
        );
    }
    let action = match (raw.delay.get(), raw.status.get()) {
        (Some(d), None) => FaultAction::Delay(d),
        (None, Some(s)) => FaultAction::Abort(s),
        _ => {
            return p.fail(
                raw.span.clone(),
                format!(
                    "{}: type = \"dependency\" needs exactly one of `delay` and `status`",
                    raw.label
                ),
            );
        }
    };
    Some(ChaosFault::Dependency {
        to: dep.name.clone(),
        action,
        percent,
    })
}

const STEADY_KEYS: &[(&str, &[S])] = &[
    ("url", &[S::Http]),
    ("status", &[S::Http]),
    ("max", &[S::ErrorRatio, S::BurnRate]),
    ("latency", &[S::Latency]),
    ("percentile", &[S::Latency]),
    ("window", &[S::ErrorRatio, S::Latency]),
    ("min_requests", &[S::ErrorRatio, S::Latency]),
    ("slo", &[S::BurnRate]),
    ("min", &[S::Ready]),
    ("run", &[S::Command]),
    ("timeout", &[S::Http, S::Command]),
    (
        "service",
        &[S::ErrorRatio, S::Latency, S::BurnRate, S::Ready],
    ),
];

fn steady(
    raw: &SteadyTable,
    target: &Service,
    services: &[&Service],
    p: &mut Problems,
) -> Option<SteadyProbe> {
    let kind = raw.kind.get()?;
    let name = match kind {
        S::Http => "http",
        S::ErrorRatio => "error-ratio",
        S::Latency => "latency",
        S::BurnRate => "burn-rate",
        S::Ready => "ready",
        S::Command => "command",
    };
    if !only_for(&raw.written, kind, name, STEADY_KEYS, &raw.label, p) {
        return None;
    }
    let svc = match raw.service.given() {
        Some(s) => known(s, services, "steady-state probe of", p)?,
        None => target,
    };
    let need = |key: &str, p: &mut Problems| -> Option<SteadyProbe> {
        p.fail(
            raw.span.clone(),
            format!("{}: type = \"{name}\" needs `{key}`", raw.label),
        )
    };
    // The proxy's outcomes are kept for five minutes: a longer window could not be judged.
    if let Some(w) = raw.window.given()
        && *w.get_ref() > std::time::Duration::from_secs(300)
    {
        return p.fail(
            w.span(),
            format!(
                "{}: `window` must be at most \"5m\" (bulwark keeps five minutes of outcomes)",
                raw.label
            ),
        );
    }
    let measured = matches!(kind, S::ErrorRatio | S::Latency | S::BurnRate);
    if measured && svc.expose.is_none() {
        return p.fail(
            raw.kind.span().unwrap_or(raw.span.clone()),
            format!(
                "{}: type = \"{name}\" is measured by bulwark's proxy, and `{}` has no `expose`",
                raw.label, svc.name
            ),
        );
    }
    let check = match kind {
        S::Http => match raw.url.get() {
            Some(url) => SteadyCheck::Http {
                url,
                status: raw.status.get()?,
                timeout: raw.timeout.get()?,
            },
            None => return need("url", p),
        },
        S::ErrorRatio => match raw.max.given() {
            Some(m) if *m.get_ref() > 1.0 => {
                return p.fail(
                    m.span(),
                    format!(
                        "`max` of an error ratio must be between 0 and 1, found {}",
                        m.get_ref()
                    ),
                );
            }
            Some(m) => SteadyCheck::ErrorRatio {
                max: *m.get_ref(),
                window: raw.window.get()?,
                min_requests: raw.min_requests.get()?,
            },
            None => return need("max", p),
        },
        S::Latency => match raw.latency.get() {
            Some(max) => SteadyCheck::Latency {
                percentile: raw.percentile.get()?,
                max,
                window: raw.window.get()?,
                min_requests: raw.min_requests.get()?,
            },
            None => return need("latency", p),
        },
        S::BurnRate => burn_rate(raw, svc, p)?,
        S::Ready => SteadyCheck::Ready {
            min: raw.min.get().unwrap_or(svc.replicas),
        },
        S::Command => match raw.run.get() {
            Some(run) => SteadyCheck::Command {
                run,
                timeout: raw.timeout.get()?,
            },
            None => return need("run", p),
        },
    };
    Some(SteadyProbe {
        service: svc.name.clone(),
        check,
    })
}

/// `slo` names an SLO of the service; `max` is given.
fn burn_rate(raw: &SteadyTable, svc: &Service, p: &mut Problems) -> Option<SteadyCheck> {
    let (Some(slo), Some(max)) = (raw.slo.given(), raw.max.get()) else {
        return p.fail(
            raw.span.clone(),
            format!("{}: type = \"burn-rate\" needs `slo` and `max`", raw.label),
        );
    };
    if !svc.slos.iter().any(|s| &s.name == slo.get_ref()) {
        let names = svc.slos.iter().map(|s| s.name.as_str());
        let hint = crate::problem::suggest(slo.get_ref(), names)
            .map(|m| format!("; did you mean `{m}`?"))
            .unwrap_or_default();
        return p.fail(
            slo.span(),
            format!("`{}` has no SLO named `{}`{hint}", svc.name, slo.get_ref()),
        );
    }
    Some(SteadyCheck::BurnRate {
        slo: slo.get_ref().clone(),
        max,
    })
}

/// Exactly one of `cron` and `mean_interval`; the monkey's keys only with the latter.
fn schedule(raw: &ChaosScheduleTable, p: &mut Problems) -> Option<ChaosSchedule> {
    match (raw.cron.given(), raw.mean_interval.get()) {
        (Some(cron), None) => {
            let monkey_key = raw.written.iter().find(|(k, _, _)| k != "cron");
            if let Some((key, span, _)) = monkey_key {
                return p.fail(
                    span.clone(),
                    format!(
                        "{}: `{key}` belongs to the monkey mode (`mean_interval`), not to `cron`",
                        raw.label
                    ),
                );
            }
            super::backup::never_idle(&raw.cron, "cron", p)?;
            Some(ChaosSchedule::Cron(Box::new(cron.get_ref().clone())))
        }
        (None, Some(mean_interval)) => {
            let days = raw.days.get()?;
            if days.is_empty() {
                return p.fail(
                    raw.days.span().unwrap_or(raw.span.clone()),
                    format!(
                        "{}: `days` is empty, so the monkey would never act",
                        raw.label
                    ),
                );
            }
            Some(ChaosSchedule::Monkey(Monkey {
                mean_interval,
                min_gap: raw.min_gap.get()?,
                days,
                hours: raw.hours.get()?,
                leashed: raw.leashed.get()?,
            }))
        }
        (None, None) if raw.cron.is_present() || raw.mean_interval.is_present() => None,
        _ => p.fail(
            raw.span.clone(),
            format!(
                "{} needs exactly one of `cron = \"0 3 * * *\"` or `mean_interval = \"1h\"` \
                 (the monkey mode); leave it out to run only on `bulwark chaos run`",
                raw.label
            ),
        ),
    }
}
