//! `[services.NAME]`: one service, its restart rules and environment.

use std::path::Path;

use toml::Spanned;

use crate::keys::{BackoffTable, RestartRuleTable, ServiceTable};
use crate::model::{Backoff, Probe, ProbeAction, ProbeKind, Service};
use crate::problem::Problems;

/// A service, and the table it was read from: the stack-wide checks point at its keys.
pub(super) struct Checked<'a> {
    pub service: Service,
    pub raw: &'a ServiceTable,
    /// The SNI names claimed on `listen` when TLS is passed through.
    pub sni: Option<super::tls::SniClaims>,
}

pub(super) fn service<'a>(
    name: &Spanned<String>,
    raw: &'a ServiceTable,
    base_dir: &Path,
    p: &mut Problems,
) -> Checked<'a> {
    let name_str = name.get_ref().clone();
    if !valid_name(&name_str) {
        p.push(
            name.span(),
            format!(
                "invalid service name `{name_str}`: a name starts with an ASCII letter and \
                 contains only ASCII letters, digits, `-` and `_`"
            ),
        );
    }
    let restart_rules = super::each(&raw.restart_rules, RestartRuleTable::build);
    let backoff = raw
        .backoff
        .value()
        .map_or_else(Backoff::default, |b| backoff(b, p));
    let startup = super::probe::probe(&raw.startup, ProbeKind::Startup, p);
    let liveness = super::probe::probe(&raw.liveness, ProbeKind::Liveness, p);
    let mut readiness = super::probe::probe(&raw.readiness, ProbeKind::Readiness, p);
    let (expose, sni) = match raw.expose.given() {
        Some(e) => super::expose::expose(e.get_ref(), base_dir, p),
        None => (None, None),
    };
    // A replica is routable only once something answers on its port; without this the
    // proxy would send traffic to replicas that are still starting.
    if expose.is_some() && !raw.readiness.is_present() {
        readiness = Some(Probe::defaults(ProbeKind::Readiness, ProbeAction::Tcp));
    }
    let leader = super::leader::leader(&name_str, raw, expose.as_ref(), base_dir, p);
    let (env, secrets) = super::env::environment(raw, base_dir, p);
    let resources = super::resources::resources(&raw.resources);
    Checked {
        raw,
        sni,
        service: Service {
            run: raw.run.get().unwrap_or_default(),
            replicas: raw.replicas.get().unwrap_or(1),
            restart: raw.restart.get().unwrap_or(crate::RestartPolicy::Always),
            restart_rules: restart_rules.unwrap_or_default(),
            env,
            secrets,
            cwd: raw.cwd.given().map(|c| base_dir.join(c.get_ref())),
            stop_signal: raw.stop_signal.get().unwrap_or(crate::Signal::SIGTERM),
            stop_grace: raw.stop_grace.get().unwrap_or_default(),
            backoff,
            startup,
            liveness,
            readiness,
            notify: super::notify::notify(&raw.notify, p),
            warm: super::warm::warm(&name_str, raw, p),
            leader,
            // Filled in by `dependency_order`, once names are known to exist.
            depends_on: Vec::new(),
            min_available: min_available(raw, p),
            rollout: super::rollout::rollout(
                &raw.rollout,
                raw.expose.is_present(),
                expose
                    .as_ref()
                    .is_some_and(|e| e.protocol == crate::Protocol::Tcp),
                p,
            ),
            container: super::container::container(raw, base_dir, p),
            expose,
            slos: super::slo::slos(&name_str, raw, p),
            autoscale: super::remedy::autoscale(&raw.autoscale, raw.replicas.get(), p),
            anomaly: super::resources::anomaly_with_limit(
                super::remedy::service_anomaly(&raw.anomaly),
                &resources,
            ),
            resources,
            on_oom: raw.on_oom.get().unwrap_or(crate::OnOom::Restart),
            priority: raw.priority.get().unwrap_or(crate::Priority::Normal),
            placement: super::placement::placement(&raw.placement, p),
            name: name_str,
        },
    }
}

/// Service and switch names show up in URLs, metric labels, log prefixes and `{service}`
/// substitutions, so they are kept to a set of characters that is safe in all of them.
pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Invariant: `initial <= max`.
fn backoff(raw: &BackoffTable, p: &mut Problems) -> Backoff {
    if let (Some(initial), Some(max)) = (raw.initial.get(), raw.max.get()) {
        let at = raw.initial.span().or(raw.max.span()).unwrap_or_default();
        super::rules::ordered(at, &raw.label, ("initial", initial), ("max", max), p);
    }
    raw.build().unwrap_or_default()
}

/// A count above `replicas` would forbid every voluntary disruption, forever.
fn min_available(raw: &ServiceTable, p: &mut Problems) -> crate::Amount {
    let amount = raw.min_available.get().unwrap_or(crate::Amount::Count(0));
    if let (crate::Amount::Count(n), Some(v), Some(replicas)) =
        (amount, raw.min_available.given(), raw.replicas.get())
        && n > replicas
    {
        p.push(
            v.span(),
            format!(
                "{}: min_available = {n} is more than replicas = {replicas}, so no replica \
                 could ever be disrupted on purpose; lower it or use a percentage",
                raw.label
            ),
        );
    }
    amount
}
