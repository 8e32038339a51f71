//! The validating layer: raw, spanned data in; domain types out.
//!
//! Each check records its problem and carries on with a stand-in value, so one run
//! reports every problem in the file. Checks return `Option<T>`: `None` means "invalid
//! (already reported) or unusable", and checks that relate two values (`initial <= max`,
//! cycles, address clashes) only look at values that are themselves valid, so one typo
//! never shows up as three errors. The stand-ins never escape: [`validate`] returns
//! `None` as soon as anything was reported.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use crate::model::{
    AlertSink, Alerts, Api, Backoff, JournalSettings, Probe, ProbeAction, ProbeKind, RestartAction,
    RestartPolicy, RestartRule, Service, Signal, Slo, SloAlerts, SloKind, Stack,
    SupervisorSettings,
};
use crate::problem::{
    MAX_DURATION, MAX_LONG_DURATION, Problems, Span, backticked, bounded, hint, quoted_choices,
    suggest,
};
use crate::raw::{
    Field, RawAlerts, RawApi, RawBackoff, RawProbe, RawRestartRule, RawService, RawSink, RawSlo,
    RawSloAlerts, RawStack,
};

const MAX_REPLICAS: i64 = 1000;
const DURATION_EXAMPLE: &str = "a duration such as \"250ms\" or \"5s\"";

/// Validates `raw` into a [`Stack`], recording every problem in `p`.
///
/// Returns `None` if `p` holds any problem afterwards (including problems recorded by
/// the raw layer before), so a `Stack` built from stand-in values is never returned.
/// Relative `cwd` values are joined onto `base_dir` (the stack file's directory).
pub(crate) fn validate(raw: RawStack, base_dir: &Path, p: &mut Problems) -> Option<Stack> {
    let (api_listen, allow_remote) = match &raw.api {
        Field::Given(api) => api_settings(api.get_ref(), p),
        Field::Absent => (Some(Api::DEFAULT_LISTEN), Some(false)),
        Field::Invalid => (None, None),
    };
    let journal = match &raw.journal {
        Field::Given(j) => long_duration(
            &j.get_ref().retention,
            "retention",
            JournalSettings::DEFAULT_RETENTION,
            p,
        )
        .map(|retention| JournalSettings { retention }),
        Field::Absent => Some(JournalSettings::default()),
        Field::Invalid => None,
    };
    let max_concurrent_restarts = match &raw.supervisor {
        Field::Given(s) => integer(
            &s.get_ref().max_concurrent_restarts,
            "max_concurrent_restarts",
            1..=i64::from(u32::MAX),
            SupervisorSettings::DEFAULT_MAX_CONCURRENT_RESTARTS,
            p,
        ),
        Field::Absent => Some(SupervisorSettings::DEFAULT_MAX_CONCURRENT_RESTARTS),
        Field::Invalid => None,
    };

    let alerts = match &raw.alerts {
        Field::Given(a) => alerts(a.get_ref(), p),
        Field::Absent => Some(Alerts::default()),
        Field::Invalid => None,
    };

    if raw.services.is_empty() {
        p.push(
            raw.services_span.clone(),
            "no services defined; add a [services.NAME] table with at least `run = [...]`",
        );
    }
    let mut checked: Vec<Checked> = raw
        .services
        .into_iter()
        .map(|s| service(s, base_dir, p))
        .collect();

    let order = dependency_order(&mut checked, p);
    check_addresses(&checked, api_listen, p);
    check_routes(&checked, p);

    if !p.is_empty() {
        return None;
    }
    let mut slots: Vec<Option<Service>> = checked.into_iter().map(|c| Some(c.service)).collect();
    let services = order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect();
    Some(Stack {
        services,
        api: Api {
            listen: api_listen.unwrap_or(Api::DEFAULT_LISTEN),
            allow_remote: allow_remote.unwrap_or(false),
        },
        supervisor: SupervisorSettings {
            max_concurrent_restarts: max_concurrent_restarts
                .unwrap_or(SupervisorSettings::DEFAULT_MAX_CONCURRENT_RESTARTS),
        },
        alerts: alerts.unwrap_or_default(),
        journal: journal.unwrap_or_default(),
    })
}

/// `[api]`: a non-loopback address must be asked for in so many words, because the API
/// speaks plain HTTP and its token is all that guards it.
fn api_settings(raw: &RawApi, p: &mut Problems) -> (Option<SocketAddr>, Option<bool>) {
    let listen = address(&raw.listen, "listen", Api::DEFAULT_LISTEN, p);
    let allow_remote = match &raw.allow_remote {
        Field::Given(b) => Some(*b.get_ref()),
        Field::Absent => Some(false),
        Field::Invalid => None,
    };
    if let (Some(addr), Some(false), Some(v)) = (listen, allow_remote, raw.listen.given())
        && !addr.ip().is_loopback()
    {
        p.push(
            v.span(),
            format!(
                "[api] listen = \"{addr}\" is not a loopback address; the API speaks plain \
                 HTTP with a bearer token, so reaching it from other machines must be asked \
                 for: add `allow_remote = true` to [api], or listen on 127.0.0.1"
            ),
        );
        return (None, allow_remote);
    }
    (listen, allow_remote)
}

fn alerts(raw: &RawAlerts, p: &mut Problems) -> Option<Alerts> {
    let group_wait = duration(&raw.group_wait, "group_wait", Alerts::DEFAULT_GROUP_WAIT, p);
    let repeat_interval = long_duration(
        &raw.repeat_interval,
        "repeat_interval",
        Alerts::DEFAULT_REPEAT_INTERVAL,
        p,
    );
    let sinks = match &raw.sinks {
        Field::Absent => Some(vec![AlertSink::Log]),
        Field::Invalid => None,
        Field::Given(list) => {
            let all: Vec<Option<AlertSink>> = list.get_ref().iter().map(|s| sink(s, p)).collect();
            all.into_iter().collect()
        }
    };
    Some(Alerts {
        group_wait: group_wait?,
        repeat_interval: repeat_interval?,
        sinks: sinks?,
    })
}

fn sink(raw: &RawSink, p: &mut Problems) -> Option<AlertSink> {
    let timeout = positive_duration(&raw.timeout, "timeout", Alerts::DEFAULT_SINK_TIMEOUT, p);
    let attempts = integer(
        &raw.attempts,
        "attempts",
        1..=100,
        Alerts::DEFAULT_WEBHOOK_ATTEMPTS,
        p,
    );
    let chosen = usize::from(raw.log.is_present())
        + usize::from(raw.webhook.is_present())
        + usize::from(raw.exec.is_present());
    if chosen != 1 {
        p.push(
            raw.span.clone(),
            format!(
                "{} needs exactly one of `log = true`, `webhook = \"http://HOST:PORT/PATH\"` \
                 or `exec = [\"cmd\", \"arg\"]`",
                raw.label
            ),
        );
        return None;
    }
    if let Some(log) = raw.log.given() {
        if !*log.get_ref() {
            p.push(
                log.span(),
                "`log = false` is not a sink; remove the entry to have no log sink",
            );
            return None;
        }
        return Some(AlertSink::Log);
    }
    if let Some(url) = raw.webhook.given() {
        let parsed =
            url.get_ref().parse::<http::Uri>().ok().filter(|u| {
                u.scheme_str() == Some("http") && u.host().is_some_and(|h| !h.is_empty())
            });
        let Some(url) = parsed else {
            p.push(
                url.span(),
                format!(
                    "`webhook` must be an http:// URL such as \"http://127.0.0.1:9000/hook\", \
                     found {:?} (https is not supported yet: put a local relay in front)",
                    url.get_ref()
                ),
            );
            return None;
        };
        return Some(AlertSink::Webhook {
            url,
            timeout: timeout?,
            attempts: attempts?,
        });
    }
    let command = command("exec", raw.exec.given()?, p)?;
    Some(AlertSink::Exec {
        command,
        timeout: timeout?,
    })
}

/// A route sends traffic to another service that the proxy can reach: one that exists,
/// is not the service itself, and speaks HTTP (its replicas are what the route picks).
fn check_routes(services: &[Checked], p: &mut Problems) {
    let names: Vec<&str> = services.iter().map(|c| c.service.name.as_str()).collect();
    for c in services {
        for t in &c.route_targets {
            let to = t.get_ref().as_str();
            if to == c.service.name {
                p.push(
                    t.span(),
                    format!("a route of `{to}` cannot lead to `{to}` itself"),
                );
            } else if !names.contains(&to) {
                let mut msg = format!("route `to` names unknown service `{to}`");
                if let Some(m) = suggest(to, names.iter().copied()) {
                    msg.push_str(&format!("; did you mean `{m}`?"));
                }
                p.push(t.span(), msg);
            }
        }
    }
}

/// A service plus what the stack-wide checks need to point at.
struct Checked {
    service: Service,
    /// Valid-looking `depends_on` entries (strings), with their spans.
    depends_on: Option<Spanned<Vec<Spanned<String>>>>,
    listen: Option<Spanned<SocketAddr>>,
    /// `to` of the service's routes, checked against the other services.
    route_targets: Vec<Spanned<String>>,
}

// Long on purpose: checks one `[services.NAME]` key by key, one statement per key.
#[allow(clippy::too_many_lines)]
fn service(raw: RawService, base_dir: &Path, p: &mut Problems) -> Checked {
    let name = raw.name.get_ref().clone();
    let label = format!("[services.{name}]");
    if !valid_service_name(&name) {
        p.push(
            raw.name.span(),
            format!(
                "invalid service name `{name}`: a name starts with an ASCII letter and \
                 contains only ASCII letters, digits, `-` and `_`"
            ),
        );
    }

    let run = match &raw.run {
        Field::Absent => {
            p.push(
                raw.span.clone(),
                format!(
                    "missing required field `run` in {label}; for example \
                     run = [\"./server\", \"--port\", \"{{port}}\"]"
                ),
            );
            None
        }
        Field::Invalid => None,
        Field::Given(v) => command("run", v, p),
    };
    let replicas = integer(&raw.replicas, "replicas", 0..=MAX_REPLICAS, 1, p);
    let restart = one_of(
        &raw.restart,
        "restart",
        &[
            ("always", RestartPolicy::Always),
            ("on-failure", RestartPolicy::OnFailure),
            ("never", RestartPolicy::Never),
        ],
        RestartPolicy::Always,
        p,
    );
    let restart_rules = match &raw.restart_rules {
        Field::Given(rules) => rules
            .get_ref()
            .iter()
            .filter_map(|r| restart_rule(r, p))
            .collect(),
        Field::Absent | Field::Invalid => Vec::new(),
    };
    let env = env(&raw.env, p);
    let cwd = raw.cwd.given().and_then(|c| {
        let s = c.get_ref();
        if s.is_empty() {
            p.push(
                c.span(),
                "`cwd` must not be empty; omit it to use the stack file's directory",
            );
            return None;
        }
        no_nul(s, c.span(), "`cwd`", p)?;
        Some(base_dir.join(s))
    });
    let stop_signal = signal(&raw.stop_signal, p);
    let stop_grace = duration(&raw.stop_grace, "stop_grace", Duration::from_secs(10), p);
    let backoff = match &raw.backoff {
        Field::Given(b) => backoff(b.get_ref(), p),
        Field::Absent | Field::Invalid => Backoff::DEFAULT,
    };
    let startup = probe(&raw.startup, ProbeKind::Startup, p);
    let liveness = probe(&raw.liveness, ProbeKind::Liveness, p);
    let mut readiness = probe(&raw.readiness, ProbeKind::Readiness, p);
    let (expose, listen, route_targets) = match &raw.expose {
        Field::Given(e) => crate::expose::expose(e, p),
        Field::Absent | Field::Invalid => (None, None, Vec::new()),
    };
    // A replica is routable only once something answers on its port; without this the
    // proxy would send traffic to replicas that are still starting.
    if expose.is_some() && !raw.readiness.is_present() {
        readiness = Some(Probe::defaults(ProbeKind::Readiness, ProbeAction::Tcp));
    }

    let slos = match &raw.slo {
        Field::Given(list) => slos(&name, list, p),
        Field::Absent | Field::Invalid => Vec::new(),
    };
    // An invalid `expose` was reported already; only a missing one is this problem.
    if let Some(list) = raw.slo.given()
        && !raw.expose.is_present()
    {
        p.push(
            list.span(),
            format!(
                "service `{name}` has SLOs but no [services.{name}.expose]: SLIs are measured \
                 by bulwark's proxy from the requests it forwards, so only an exposed service \
                 can have an SLO; add [services.{name}.expose] with a `listen` address, or \
                 remove the [[services.{name}.slo]] tables"
            ),
        );
    }

    let depends_on = raw.depends_on.given().cloned();
    Checked {
        route_targets,
        service: Service {
            name,
            run: run.unwrap_or_default(),
            replicas: replicas.unwrap_or(1),
            restart: restart.unwrap_or(RestartPolicy::Always),
            restart_rules,
            env,
            cwd,
            stop_signal: stop_signal.unwrap_or(Signal::SIGTERM),
            stop_grace: stop_grace.unwrap_or_default(),
            backoff,
            startup,
            liveness,
            readiness,
            // Filled in by `dependency_order`, once names are known to exist.
            depends_on: Vec::new(),
            expose,
            slos,
        },
        depends_on,
        listen,
    }
}

/// Names show up in URLs, metric labels, log prefixes and `{service}` substitutions, so
/// they are kept to a set of characters that is safe in all of them.
fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `run` / `exec`: a program and its arguments, never passed through a shell.
fn command(key: &str, v: &Spanned<Vec<Spanned<String>>>, p: &mut Problems) -> Option<Vec<String>> {
    if v.get_ref().is_empty() {
        p.push(
            v.span(),
            format!("`{key}` must not be empty: it is the program to run and its arguments"),
        );
        return None;
    }
    let mut ok = true;
    for (i, arg) in v.get_ref().iter().enumerate() {
        // An empty argument is a real value (`--name ""`); only the program must be named.
        if i == 0 && arg.get_ref().is_empty() {
            p.push(
                arg.span(),
                format!("the first element of `{key}` is the program to run and must not be empty"),
            );
            ok = false;
        } else if no_nul(
            arg.get_ref(),
            arg.span(),
            &format!("elements of `{key}`"),
            p,
        )
        .is_none()
        {
            ok = false;
        }
    }
    ok.then(|| v.get_ref().iter().map(|a| a.get_ref().clone()).collect())
}

/// A NUL byte cannot be passed to `execve` or set in the environment; catching it here
/// beats a spawn failure on every restart.
fn no_nul(s: &str, span: Span, what: &str, p: &mut Problems) -> Option<()> {
    if s.contains('\0') {
        p.push(span, format!("{what} must not contain a NUL character"));
        None
    } else {
        Some(())
    }
}

fn restart_rule(raw: &RawRestartRule, p: &mut Problems) -> Option<RestartRule> {
    let exit_codes = match &raw.exit_codes {
        Field::Absent => {
            p.push(
                raw.span.clone(),
                format!("missing required field `exit_codes` in {}", raw.label),
            );
            None
        }
        Field::Invalid => None,
        Field::Given(codes) if codes.get_ref().is_empty() => {
            p.push(
                codes.span(),
                "`exit_codes` must not be empty: list the exit codes this rule applies to",
            );
            None
        }
        Field::Given(codes) => {
            let mut ok = true;
            for code in codes.get_ref() {
                if !(0..=255).contains(code.get_ref()) {
                    p.push(
                        code.span(),
                        format!(
                            "exit code {} is out of range: exit codes are 0 to 255",
                            code.get_ref()
                        ),
                    );
                    ok = false;
                }
            }
            ok.then(|| {
                codes
                    .get_ref()
                    .iter()
                    .filter_map(|c| i32::try_from(*c.get_ref()).ok())
                    .collect::<Vec<i32>>()
            })
        }
    };
    let action = if raw.action.is_present() {
        one_of(
            &raw.action,
            "action",
            &[
                ("restart", RestartAction::Restart),
                ("stop", RestartAction::Stop),
            ],
            RestartAction::Restart,
            p,
        )
    } else {
        p.push(
            raw.span.clone(),
            format!(
                "missing required field `action` in {}; expected \"restart\" or \"stop\"",
                raw.label
            ),
        );
        None
    };
    Some(RestartRule {
        exit_codes: exit_codes?,
        action: action?,
    })
}

fn env(
    field: &Field<Vec<(Spanned<String>, Spanned<String>)>>,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(vars) = field.given() else {
        return out;
    };
    for (name, value) in vars.get_ref() {
        let n = name.get_ref();
        if n.is_empty() || n.contains(['=', '\0']) {
            p.push(
                name.span(),
                format!(
                    "invalid environment variable name {n:?}: it must be non-empty and \
                     contain neither `=` nor a NUL character"
                ),
            );
            continue;
        }
        if no_nul(value.get_ref(), value.span(), &format!("`env.{n}`"), p).is_some() {
            out.insert(n.clone(), value.get_ref().clone());
        }
    }
    out
}

/// `TERM`, `sigterm` and `SIGTERM` all name the same signal: people write all three.
fn signal(field: &Field<String>, p: &mut Problems) -> Option<Signal> {
    let v = match field {
        Field::Absent => return Some(Signal::SIGTERM),
        Field::Invalid => return None,
        Field::Given(v) => v,
    };
    let upper = v.get_ref().trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Ok(signal) = Signal::from_str(&full) {
        return Some(signal);
    }
    let bare = full.trim_start_matches("SIG");
    let names: Vec<&str> = Signal::iterator().map(|s| s.as_str()).collect();
    let suggestion = suggest(bare, names.iter().map(|n| n.trim_start_matches("SIG")));
    let mut message = format!(
        "`stop_signal` must be a signal name such as \"SIGTERM\", \"INT\" or \"QUIT\", found {:?}",
        v.get_ref()
    );
    if let Some(s) = suggestion {
        message.push_str(&format!("; did you mean \"SIG{s}\"?"));
    }
    p.push(v.span(), message);
    None
}

fn duration(
    field: &Field<String>,
    key: &str,
    default: Duration,
    p: &mut Problems,
) -> Option<Duration> {
    bounded_duration(field, key, default, MAX_DURATION, p)
}

/// A duration measured in days or weeks (SLO periods, alert repeats, retention).
fn long_duration(
    field: &Field<String>,
    key: &str,
    default: Duration,
    p: &mut Problems,
) -> Option<Duration> {
    bounded_duration(field, key, default, MAX_LONG_DURATION, p)
}

fn bounded_duration(
    field: &Field<String>,
    key: &str,
    default: Duration,
    max: (Duration, &str),
    p: &mut Problems,
) -> Option<Duration> {
    let v = match field {
        Field::Absent => return Some(default),
        Field::Invalid => return None,
        Field::Given(v) => v,
    };
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) => bounded(key, d, v.get_ref(), max, v.span(), p),
        Err(e) => {
            use humantime::DurationError as E;
            let why = match e {
                E::InvalidCharacter(_) => "unexpected character".to_owned(),
                E::NumberExpected(_) => "expected a number".to_owned(),
                E::UnknownUnit { unit, .. } if unit.is_empty() => "missing unit".to_owned(),
                E::UnknownUnit { unit, .. } => format!("unknown unit {unit:?}"),
                E::NumberOverflow => "too large or too precise".to_owned(),
                E::Empty => "empty".to_owned(),
            };
            p.push(
                v.span(),
                format!(
                    "`{key}` must be {DURATION_EXAMPLE}, found {:?} ({why})",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

/// A duration that must be > 0 because something waits on or divides by it.
fn positive_duration(
    field: &Field<String>,
    key: &str,
    default: Duration,
    p: &mut Problems,
) -> Option<Duration> {
    let d = duration(field, key, default, p)?;
    if d.is_zero() {
        if let Some(v) = field.given() {
            p.push(v.span(), format!("`{key}` must be greater than 0"));
        }
        return None;
    }
    Some(d)
}

/// An integer in `range`, as `u32` (every range used here fits).
fn integer(
    field: &Field<i64>,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
    default: u32,
    p: &mut Problems,
) -> Option<u32> {
    let v = match field {
        Field::Absent => return Some(default),
        Field::Invalid => return None,
        Field::Given(v) => v,
    };
    let n = *v.get_ref();
    let fits = range.contains(&n);
    match u32::try_from(n) {
        Ok(n) if fits => Some(n),
        _ => {
            let message = if *range.end() == i64::from(u32::MAX) && n < *range.start() {
                format!("`{key}` must be at least {}, found {n}", range.start())
            } else {
                format!(
                    "`{key}` must be between {} and {}, found {n}",
                    range.start(),
                    range.end()
                )
            };
            p.push(v.span(), message);
            None
        }
    }
}

/// One of a fixed set of strings; a near miss gets a did-you-mean.
fn one_of<T: Copy>(
    field: &Field<String>,
    key: &str,
    choices: &[(&str, T)],
    default: T,
    p: &mut Problems,
) -> Option<T> {
    let v = match field {
        Field::Absent => return Some(default),
        Field::Invalid => return None,
        Field::Given(v) => v,
    };
    if let Some((_, t)) = choices.iter().find(|(name, _)| name == v.get_ref()) {
        return Some(*t);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let mut message = format!(
        "`{key}` must be {}, found {:?}",
        quoted_choices(&names),
        v.get_ref()
    );
    if let Some(s) = suggest(v.get_ref(), names.iter().copied()) {
        message.push_str(&format!("; did you mean \"{s}\"?"));
    }
    p.push(v.span(), message);
    None
}

fn address(
    field: &Field<String>,
    key: &str,
    default: SocketAddr,
    p: &mut Problems,
) -> Option<SocketAddr> {
    spanned_address(field, key, p).map_or_else(
        || (!field.is_present()).then_some(default),
        |a| Some(*a.get_ref()),
    )
}

/// `IP:PORT` only: a host name would be resolved at bind time, possibly to several
/// addresses, and clashes between services could no longer be checked here.
pub(crate) fn spanned_address(
    field: &Field<String>,
    key: &str,
    p: &mut Problems,
) -> Option<Spanned<SocketAddr>> {
    let v = field.given()?;
    match v.get_ref().trim().parse::<SocketAddr>() {
        Ok(a) => Some(Spanned::new(v.span(), a)),
        Err(_) => {
            p.push(
                v.span(),
                format!(
                    "`{key}` must be an IP:PORT address such as \"127.0.0.1:8080\", found {:?}",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

fn backoff(raw: &RawBackoff, p: &mut Problems) -> Backoff {
    let d = Backoff::DEFAULT;
    let initial = positive_duration(&raw.initial, "initial", d.initial, p);
    let max = duration(&raw.max, "max", d.max, p);
    let reset_after = duration(&raw.reset_after, "reset_after", d.reset_after, p);
    if let (Some(initial), Some(max)) = (initial, max)
        && initial > max
    {
        let span = raw
            .initial
            .given()
            .or(raw.max.given())
            .map(Spanned::span)
            .unwrap_or_default();
        p.push(
            span,
            format!(
                "backoff `initial` ({}) must not exceed `max` ({})",
                humantime::format_duration(initial),
                humantime::format_duration(max)
            ),
        );
    }
    let multiplier = raw.multiplier.given().and_then(|m| {
        let v = *m.get_ref();
        // Not finite would turn every delay into infinity or NaN downstream.
        if v.is_finite() && v >= 1.0 {
            Some(v)
        } else {
            p.push(
                m.span(),
                format!("`multiplier` must be a number of at least 1, found {v}"),
            );
            None
        }
    });
    let jitter = raw.jitter.given().and_then(|j| {
        let v = *j.get_ref();
        if (0.0..1.0).contains(&v) {
            Some(v)
        } else {
            p.push(
                j.span(),
                format!("`jitter` must be at least 0 and less than 1, found {v}"),
            );
            None
        }
    });
    Backoff {
        initial: initial.unwrap_or(d.initial),
        max: max.unwrap_or(d.max),
        reset_after: reset_after.unwrap_or(d.reset_after),
        multiplier: multiplier.unwrap_or(d.multiplier),
        jitter: jitter.unwrap_or(d.jitter),
    }
}

fn probe(field: &Field<RawProbe>, kind: ProbeKind, p: &mut Problems) -> Option<Probe> {
    let raw = field.given()?;
    let span = raw.span();
    let raw = raw.get_ref();
    let action = probe_action(span, raw, p);
    // Timings are checked even when the action is wrong, to report everything at once.
    let d = Probe::defaults(kind, ProbeAction::Tcp);
    let period = positive_duration(&raw.period, "period", d.period, p);
    let timeout = positive_duration(&raw.timeout, "timeout", d.timeout, p);
    let initial_delay = duration(&raw.initial_delay, "initial_delay", d.initial_delay, p);
    let any = 1..=i64::from(u32::MAX);
    let failure_threshold = integer(
        &raw.failure_threshold,
        "failure_threshold",
        any.clone(),
        d.failure_threshold,
        p,
    );
    let success_threshold = integer(
        &raw.success_threshold,
        "success_threshold",
        any,
        d.success_threshold,
        p,
    );
    // As in Kubernetes: one success is enough to show a process is alive or has started;
    // asking for more only delays a restart decision that failures already drive.
    let success_threshold = match (kind, success_threshold, raw.success_threshold.given()) {
        (ProbeKind::Liveness | ProbeKind::Startup, Some(n), Some(v)) if n != 1 => {
            p.push(
                v.span(),
                format!(
                    "`success_threshold` must be 1 for {} probes, found {n} (as in Kubernetes, \
                     only readiness probes may require several consecutive successes)",
                    kind.as_str()
                ),
            );
            None
        }
        (_, n, _) => n,
    };
    Some(Probe {
        action: action?,
        period: period?,
        timeout: timeout?,
        initial_delay: initial_delay?,
        failure_threshold: failure_threshold?,
        success_threshold: success_threshold?,
    })
}

/// The probe's action. Every action key given is checked, even when there are too many,
/// so that fixing the count does not reveal a new error in the action that stays.
fn probe_action(span: Span, raw: &RawProbe, p: &mut Problems) -> Option<ProbeAction> {
    let http = raw.http.given().and_then(|path| {
        let s = path.get_ref();
        if s.starts_with('/') {
            Some(ProbeAction::Http { path: s.clone() })
        } else {
            p.push(
                path.span(),
                format!(
                    "`http` must be a path starting with `/`, found {s:?}; did you mean \"/{}\"?",
                    s.trim_start()
                ),
            );
            None
        }
    });
    let tcp = raw.tcp.given().and_then(|tcp| {
        if *tcp.get_ref() {
            Some(ProbeAction::Tcp)
        } else {
            p.push(
                tcp.span(),
                "`tcp = false` is not a probe action; use `tcp = true` to probe by connecting \
                 to the replica's port, or set `http` or `exec` instead",
            );
            None
        }
    });
    let exec = raw
        .exec
        .given()
        .and_then(|exec| command("exec", exec, p))
        .map(|command| ProbeAction::Exec { command });

    match raw.action_keys.as_slice() {
        [] => {
            p.push(
                span,
                format!(
                    "no probe action in {}; set exactly one of `http = \"/path\"`, \
                     `tcp = true` or `exec = [\"cmd\", \"arg\"]`",
                    raw.label
                ),
            );
            None
        }
        // `None` here means the one action was invalid, which was reported above.
        [_] => http.or(tcp).or(exec),
        [_, second, ..] => {
            let keys: Vec<&str> = raw
                .action_keys
                .iter()
                .map(|k| k.get_ref().as_str())
                .collect();
            p.push(
                second.span(),
                format!(
                    "more than one probe action in {} ({}); set exactly one",
                    raw.label,
                    backticked(&keys)
                ),
            );
            None
        }
    }
}

/// Resolves `depends_on`, reports unknown names and cycles, and returns the indices of
/// `services` in dependency order: dependencies first, ties in file order (so the
/// order is predictable and matches the file when there are no dependencies).
fn dependency_order(services: &mut [Checked], p: &mut Problems) -> Vec<usize> {
    let index: HashMap<String, usize> = services
        .iter()
        .enumerate()
        .map(|(i, c)| (c.service.name.clone(), i))
        .collect();
    let names: Vec<String> = services.iter().map(|c| c.service.name.clone()).collect();

    // deps[i]: services i depends on (edges i -> j).
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, checked) in services.iter_mut().enumerate() {
        let Some(list) = &checked.depends_on else {
            continue;
        };
        let own = &checked.service.name;
        for dep in list.get_ref() {
            let d = dep.get_ref();
            if d == own {
                p.push(dep.span(), format!("service `{own}` depends on itself"));
                continue;
            }
            let Some(&j) = index.get(d) else {
                let others: Vec<&str> = names
                    .iter()
                    .map(String::as_str)
                    .filter(|n| n != own)
                    .collect();
                p.push(
                    dep.span(),
                    format!(
                        "`depends_on` names unknown service `{d}`{}",
                        hint(d, &others, "services are")
                    ),
                );
                continue;
            };
            if deps[i].contains(&j) {
                p.push(dep.span(), format!("`{d}` is listed twice in `depends_on`"));
                continue;
            }
            deps[i].push(j);
            checked.service.depends_on.push(d.clone());
        }
    }

    for component in strongly_connected(&deps) {
        if component.len() < 2 {
            continue;
        }
        let start = component.iter().copied().min().unwrap_or_default();
        let cycle = shortest_cycle(start, &component, &deps);
        let path: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
        let span = services[start]
            .depends_on
            .as_ref()
            .map(Spanned::span)
            .unwrap_or_default();
        p.push(span, format!("dependency cycle: {}", path.join(" -> ")));
    }

    // Kahn's algorithm, always taking the earliest ready service in file order.
    let mut waiting_on: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &j in ds {
            dependents[j].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..services.len())
        .filter(|&i| waiting_on[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(services.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &k in &dependents[i] {
            waiting_on[k] -= 1;
            if waiting_on[k] == 0 {
                ready.insert(k);
            }
        }
    }
    // Services left out are on or behind a cycle, which was reported above.
    order
}

/// Strongly connected components (Kosaraju), iterative so that a long dependency chain
/// in a generated file cannot overflow the stack.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut finished = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    for root in 0..n {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((node, next)) = stack.pop() {
            if let Some(&succ) = edges[node].get(next) {
                stack.push((node, next + 1));
                if !seen[succ] {
                    seen[succ] = true;
                    stack.push((succ, 0));
                }
            } else {
                finished.push(node);
            }
        }
    }

    let mut reverse = vec![Vec::new(); n];
    for (from, tos) in edges.iter().enumerate() {
        for &to in tos {
            reverse[to].push(from);
        }
    }
    let mut assigned = vec![false; n];
    let mut components = Vec::new();
    for &root in finished.iter().rev() {
        if assigned[root] {
            continue;
        }
        assigned[root] = true;
        let mut component = Vec::new();
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            component.push(node);
            for &prev in &reverse[node] {
                if !assigned[prev] {
                    assigned[prev] = true;
                    stack.push(prev);
                }
            }
        }
        components.push(component);
    }
    components
}

/// `start -> ... -> start` through `component`, shortest first (breadth-first), so the
/// message names a cycle the user can break with one edit.
fn shortest_cycle(start: usize, component: &[usize], edges: &[Vec<usize>]) -> Vec<usize> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &succ in &edges[node] {
            if succ == start {
                let mut path = vec![node];
                let mut at = node;
                while let Some(&prev) = parent.get(&at) {
                    path.push(prev);
                    at = prev;
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if succ != start && component.contains(&succ) && !parent.contains_key(&succ) {
                parent.insert(succ, node);
                queue.push_back(succ);
            }
        }
    }
    // Unreachable for a real component; a harmless answer rather than a panic.
    vec![start, start]
}

/// Two exposed services, or a service and the API, cannot listen on one address. Port 0
/// asks the OS for a free port, so it never clashes. An unspecified IP (`0.0.0.0`, `::`)
/// binds every interface, so it clashes with any address on the same port.
fn check_addresses(services: &[Checked], api: Option<SocketAddr>, p: &mut Problems) {
    let clash = |a: SocketAddr, b: SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
    for checked in services {
        let Some(listen) = &checked.listen else {
            continue;
        };
        let addr = *listen.get_ref();
        if let Some(api) = api
            && clash(addr, api)
        {
            p.push(
                listen.span(),
                format!(
                    "`listen` address {addr} clashes with the control API's address {api} \
                     ([api] listen); choose another port"
                ),
            );
        }
        if let Some((other, name)) = seen.iter().find(|(other, _)| clash(addr, *other)) {
            let message = if *other == addr {
                format!("`listen` address {addr} is already exposed by service `{name}`")
            } else {
                format!("`listen` address {addr} clashes with {other}, exposed by service `{name}`")
            };
            p.push(listen.span(), message);
        }
        seen.push((addr, &checked.service.name));
    }
}

/// `[[services.NAME.slo]]`: each one checked on its own, then names for uniqueness.
fn slos(service: &str, list: &Spanned<Vec<RawSlo>>, p: &mut Problems) -> Vec<Slo> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for raw in list.get_ref() {
        if let Some(name) = raw.name.given() {
            let n = name.get_ref().as_str();
            if seen.contains(&n) {
                p.push(
                    name.span(),
                    format!(
                        "duplicate SLO name `{n}` in service `{service}`: each \
                         [[services.{service}.slo]] needs a name of its own"
                    ),
                );
            }
            seen.push(n);
        }
        if let Some(slo) = slo(raw, p) {
            out.push(slo);
        }
    }
    out
}

/// SLO names end up in metric labels, alert labels and URLs: keep them plain.
fn valid_slo_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

// Long on purpose: reads one `[[slo]]` key by key, one statement per key.
#[allow(clippy::too_many_lines)]
fn slo(raw: &RawSlo, p: &mut Problems) -> Option<Slo> {
    let name = match &raw.name {
        Field::Absent => {
            p.push(
                raw.span.clone(),
                format!(
                    "missing required field `name` in {}; for example name = \"availability\"",
                    raw.label
                ),
            );
            None
        }
        Field::Invalid => None,
        Field::Given(n) if !valid_slo_name(n.get_ref()) => {
            p.push(
                n.span(),
                format!(
                    "invalid SLO name {:?}: use only lowercase ASCII letters, digits, `-` and `_`",
                    n.get_ref()
                ),
            );
            None
        }
        Field::Given(n) => Some(n.get_ref().clone()),
    };

    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Availability,
        Latency,
    }
    let kind = if raw.kind.is_present() {
        one_of(
            &raw.kind,
            "kind",
            &[
                ("availability", Kind::Availability),
                ("latency", Kind::Latency),
            ],
            Kind::Availability,
            p,
        )
    } else {
        p.push(
            raw.span.clone(),
            format!(
                "missing required field `kind` in {}; expected \"availability\" or \"latency\"",
                raw.label
            ),
        );
        None
    };

    let objective = match &raw.objective {
        Field::Absent => {
            p.push(
                raw.span.clone(),
                format!(
                    "missing required field `objective` in {}; a percentage, for example \
                     objective = 99.9",
                    raw.label
                ),
            );
            None
        }
        Field::Invalid => None,
        Field::Given(o) => objective(o, p),
    };

    let period = long_duration(&raw.period, "period", Slo::DEFAULT_PERIOD, p).and_then(|d| {
        if d >= Slo::MIN_PERIOD {
            return Some(d);
        }
        if let Some(v) = raw.period.given() {
            p.push(
                v.span(),
                format!(
                    "`period` must be at least 1m, found {:?}; SLO periods are usually \"30d\" \
                     or \"28d\", and short ones such as \"1h\" are for trying things out",
                    v.get_ref()
                ),
            );
        }
        None
    });

    // Checked whatever the kind, so a wrong value is reported along with a wrong kind.
    let threshold = match &raw.threshold {
        Field::Absent | Field::Invalid => None,
        Field::Given(_) => positive_duration(&raw.threshold, "threshold", Duration::ZERO, p),
    };
    let count_429 = raw.count_429_as_error.given().map(|c| *c.get_ref());
    let kind = match kind {
        None => None,
        Some(Kind::Availability) => {
            if let Some(t) = raw.threshold.given() {
                p.push(
                    t.span(),
                    "`threshold` is only for latency SLOs (kind = \"latency\"); an availability \
                     SLO counts failed requests, whatever their latency",
                );
                None
            } else {
                Some(SloKind::Availability {
                    count_429: count_429.unwrap_or(false),
                })
            }
        }
        Some(Kind::Latency) => {
            if let Some(c) = raw.count_429_as_error.given() {
                p.push(
                    c.span(),
                    "`count_429_as_error` is only for availability SLOs (kind = \
                     \"availability\"); a latency SLO counts successful requests only",
                );
            }
            if !raw.threshold.is_present() {
                p.push(
                    raw.span.clone(),
                    format!(
                        "missing required field `threshold` in {} (kind = \"latency\"): the \
                         latency a request must beat to count as good, for example \
                         threshold = \"300ms\"",
                        raw.label
                    ),
                );
            }
            threshold.map(|threshold| SloKind::Latency { threshold })
        }
    };

    let alerts = match &raw.alerts {
        Field::Given(a) => slo_alerts(a.get_ref(), p),
        Field::Absent => Some(SloAlerts::DEFAULT),
        Field::Invalid => None,
    };

    Some(Slo {
        name: name?,
        kind: kind?,
        objective: objective?,
        period: period?,
        alerts: alerts?,
    })
}

/// A percentage in the file, a fraction in the model. Values below 1 are refused even
/// though they are in range: `objective = 0.999` is almost always a fraction written
/// where a percentage was expected, and an objective under 1 % means nothing.
fn objective(o: &Spanned<f64>, p: &mut Problems) -> Option<f64> {
    let v = *o.get_ref();
    if !(v.is_finite() && v > 0.0 && v < 100.0) {
        p.push(
            o.span(),
            format!(
                "`objective` must be a percentage greater than 0 and less than 100, such as \
                 99.9, found {v}"
            ),
        );
        return None;
    }
    if v < 1.0 {
        p.push(
            o.span(),
            format!(
                "`objective` is a percentage: {v} means {v} % of requests; for {} % write \
                 objective = {}",
                clean_number(v * 100.0),
                clean_number(v * 100.0)
            ),
        );
        return None;
    }
    Some(percent_to_fraction(v))
}

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

fn slo_alerts(raw: &RawSloAlerts, p: &mut Problems) -> Option<SloAlerts> {
    let d = SloAlerts::DEFAULT;
    let page = raw.page.given().map_or(d.page, |v| *v.get_ref());
    let ticket = raw.ticket.given().map_or(d.ticket, |v| *v.get_ref());
    let min_requests = integer(
        &raw.min_requests,
        "min_requests",
        0..=i64::from(u32::MAX),
        // The default fits: it is a small constant.
        u32::try_from(d.min_requests).unwrap_or(u32::MAX),
        p,
    );
    // "0s" switches the alert off, like leaving it out.
    let no_data = long_duration(&raw.no_data, "no_data", Duration::ZERO, p);
    let invalid = matches!(raw.page, Field::Invalid) || matches!(raw.ticket, Field::Invalid);
    if invalid {
        return None;
    }
    Some(SloAlerts {
        page,
        ticket,
        min_requests: u64::from(min_requests?),
        no_data: no_data.filter(|d| !d.is_zero()),
    })
}
