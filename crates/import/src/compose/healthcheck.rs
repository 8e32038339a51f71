//! `healthcheck` as a readiness probe.
//!
//! Compose's health only gates `depends_on`; bulwark's readiness gates `depends_on` and the
//! proxy's traffic, which is what the check is for. Timings Compose defaults (interval and
//! timeout 30s, 3 retries) are written out, so the probe behaves as it did.

use std::time::Duration;

use crate::command::{compose_variable, exec_probe, words};
use crate::fields::Fields;
use crate::note::Notes;
use crate::stack::{Probe, ProbeAction};
use crate::yaml::Node;

const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(30);
const RETRIES: u32 = 3;

pub(super) fn readiness(
    node: &Node,
    path: &str,
    container_port: Option<u16>,
    notes: &mut Notes,
) -> Option<Probe> {
    let mut f = Fields::of(node, path, notes)?;
    let disabled = f.take("disable").and_then(Node::as_bool) == Some(true);
    let test = f.take("test");
    let mut timings = Timings::default();
    timings.read(&mut f, notes);
    f.note_rest(notes, |key, _| match key {
        "start_interval" => "bulwark probes at one `period`".to_owned(),
        _ => "not a healthcheck setting bulwark knows".to_owned(),
    });
    if disabled {
        return None;
    }
    let test_path = f.path("test");
    let Some(test) = test else {
        notes.not_carried(
            path,
            "it has no `test`: the image's HEALTHCHECK is not known here; no readiness probe",
        );
        return None;
    };
    let action = action(test, &test_path, container_port, notes)?;
    notes.changed(
        path,
        "became the readiness probe: besides gating `depends_on` as in Compose, it decides \
         which replicas get traffic",
    );
    Some(Probe {
        action,
        period: Some(timings.period),
        timeout: Some(timings.timeout),
        initial_delay: timings.initial_delay,
        failure_threshold: Some(timings.retries),
        success_threshold: None,
    })
}

struct Timings {
    period: Duration,
    timeout: Duration,
    retries: u32,
    initial_delay: Option<Duration>,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            period: INTERVAL,
            timeout: TIMEOUT,
            retries: RETRIES,
            initial_delay: None,
        }
    }
}

impl Timings {
    fn read(&mut self, f: &mut Fields<'_>, notes: &mut Notes) {
        for key in ["interval", "timeout"] {
            let Some(node) = f.take(key) else { continue };
            match crate::duration::compose(node) {
                Ok(d) if d.is_zero() => notes.not_carried(
                    f.path(key),
                    "must be more than 0; Compose's default of 30s is used",
                ),
                Ok(d) if key == "interval" => self.period = d,
                Ok(d) => self.timeout = d,
                Err(why) => notes.not_carried(f.path(key), format!("{why}; 30s is used")),
            }
        }
        if let Some(node) = f.take("retries") {
            match node.as_int().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => self.retries = n,
                _ => {
                    let why = compose_variable(node).unwrap_or_else(|| {
                        format!(
                            "expected a whole number of at least 1, found {}",
                            node.describe()
                        )
                    });
                    notes.not_carried(f.path("retries"), format!("{why}; 3 is used"));
                }
            }
        }
        if let Some(node) = f.take("start_period") {
            match crate::duration::compose(node) {
                Ok(d) => {
                    self.initial_delay = Some(d);
                    notes.changed(
                        f.path("start_period"),
                        "became `initial_delay`: bulwark does not probe during it (Compose \
                         probes, and ignores failures)",
                    );
                }
                Err(why) => notes.not_carried(f.path("start_period"), why),
            }
        }
    }
}

/// `test`: `["CMD", …]`, `["CMD-SHELL", "…"]`, a string (run by a shell) or `["NONE"]`.
fn action(
    test: &Node,
    path: &str,
    container_port: Option<u16>,
    notes: &mut Notes,
) -> Option<ProbeAction> {
    let mut argv: Vec<(String, String)> = match test.as_str() {
        Some(script) => shell(path, script),
        None => {
            let items = match words(test, path) {
                Ok(w) => w,
                Err(why) => {
                    notes.not_carried(path, why);
                    return None;
                }
            };
            match items.split_first() {
                Some((first, rest)) if first.1 == "CMD" => rest.to_vec(),
                Some((first, rest)) if first.1 == "CMD-SHELL" => {
                    let script: Vec<&str> = rest.iter().map(|(_, w)| w.as_str()).collect();
                    shell(path, &script.join(" "))
                }
                Some((first, _)) if first.1 == "NONE" => return None,
                _ => {
                    notes.not_carried(
                        path,
                        "expected [\"CMD\", …], [\"CMD-SHELL\", \"…\"] or [\"NONE\"]",
                    );
                    return None;
                }
            }
        }
    };
    for (p, w) in &mut argv {
        super::dollars(w, p, notes);
    }
    exec_probe(argv, path, container_port, notes)
}

/// `sh -c SCRIPT`, as Compose runs a shell check.
fn shell(path: &str, script: &str) -> Vec<(String, String)> {
    ["sh", "-c", script]
        .into_iter()
        .map(|w| (path.to_owned(), w.to_owned()))
        .collect()
}
