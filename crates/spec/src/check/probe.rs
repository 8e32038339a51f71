//! Probes: exactly one action, and the Kubernetes rule on `success_threshold`.

use crate::keys::ProbeTable;
use crate::model::{Probe, ProbeAction, ProbeKind};
use crate::problem::Problems;
use crate::schema::Field;

pub(super) fn probe(field: &Field<ProbeTable>, kind: ProbeKind, p: &mut Problems) -> Option<Probe> {
    let raw = field.given()?.get_ref();
    let action = action(raw, p);
    // As in Kubernetes: one success is enough to show a process is alive or has started;
    // asking for more only delays a restart decision that failures already drive.
    if let (ProbeKind::Liveness | ProbeKind::Startup, Some(v)) =
        (kind, raw.success_threshold.given())
        && *v.get_ref() != 1
    {
        return p.fail(
            v.span(),
            format!(
                "`success_threshold` must be 1 for {} probes, found {} (as in Kubernetes, \
                 only readiness probes may require several consecutive successes)",
                kind.as_str(),
                v.get_ref()
            ),
        );
    }
    timed(raw, action?)
}

/// `action`, with the table's timings.
fn timed(raw: &ProbeTable, action: ProbeAction) -> Option<Probe> {
    Some(Probe {
        action,
        period: raw.period.get()?,
        timeout: raw.timeout.get()?,
        initial_delay: raw.initial_delay.get()?,
        failure_threshold: raw.failure_threshold.get()?,
        success_threshold: raw.success_threshold.get()?,
    })
}

/// A probe's action: exactly one of these keys, each as messages show it.
const ACTIONS: [(&str, &str); 3] = [
    ("http", "`http = \"/path\"`"),
    ("tcp", "`tcp = true`"),
    ("exec", "`exec = [\"cmd\", \"arg\"]`"),
];

/// The probe's action (`tcp = false` was refused by the reader, whatever else is written).
fn action(raw: &ProbeTable, p: &mut Problems) -> Option<ProbeAction> {
    let chosen = super::rules::one_of(raw.place(), &ACTIONS, true, p)?;
    Some(match chosen {
        "http" => ProbeAction::Http {
            path: raw.http.get()?,
        },
        "tcp" => raw.tcp.get().map(|_| ProbeAction::Tcp)?,
        _ => ProbeAction::Exec {
            command: raw.exec.get()?,
        },
    })
}

impl Probe {
    /// A probe of `kind` with every timing at its declared default.
    ///
    /// Startup polls faster (250ms) and tolerates 120 failures: 30 s to come up, during
    /// which liveness does not run, so a slow start is not mistaken for a crash loop.
    pub fn defaults(kind: ProbeKind, action: ProbeAction) -> Probe {
        super::defaults(kind.as_str(), |raw, _| timed(raw, action))
    }
}
