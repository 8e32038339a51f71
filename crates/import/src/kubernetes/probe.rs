//! Kubernetes probes as bulwark probes, with Kubernetes' timings written out: its defaults
//! (period 10s, timeout 1s, 3 failures) are not bulwark's (period 1s), and a liveness probe
//! left to bulwark's would restart a replica after 3 s of failures instead of 30 s.

use std::time::Duration;

use crate::command::{exec_probe, words};
use crate::fields::Fields;
use crate::note::Notes;
use crate::stack::{Probe, ProbeAction};
use crate::yaml::Node;

use super::resolve_port;

const PERIOD: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(1);
const FAILURES: u32 = 3;

/// What a container's probes are checked against.
pub(super) struct Probes<'a> {
    /// The port each replica gets its own copy of.
    pub main_port: Option<u16>,
    pub ports: &'a [(Option<&'a str>, u16)],
}

impl Probes<'_> {
    /// The probe at `key` of the container (`readinessProbe`…), or `None` (noted).
    pub fn convert(&self, c: &mut Fields<'_>, key: &str, notes: &mut Notes) -> Option<Probe> {
        let node = c.take(key)?;
        let path = c.path(key);
        let Some(entries) = node.as_map() else {
            notes.not_carried(path, format!("expected a probe, found {}", node.describe()));
            return None;
        };
        let mut f = Fields::new(&path, entries);
        let action = self.action(&mut f, notes);
        let mut probe = Probe::new(ProbeAction::Tcp);
        probe.period = Some(seconds(&mut f, "periodSeconds", 1, notes).unwrap_or(PERIOD));
        probe.timeout = Some(seconds(&mut f, "timeoutSeconds", 1, notes).unwrap_or(TIMEOUT));
        probe.initial_delay = seconds(&mut f, "initialDelaySeconds", 0, notes);
        probe.failure_threshold =
            Some(count(&mut f, "failureThreshold", notes).unwrap_or(FAILURES));
        let success_path = f.path("successThreshold");
        probe.success_threshold = count(&mut f, "successThreshold", notes);
        if key != "readinessProbe" && probe.success_threshold.is_some_and(|n| n != 1) {
            notes.not_carried(success_path, "must be 1 for liveness and startup probes");
            probe.success_threshold = None;
        }
        f.note_rest(notes, |key, _| match key {
            "terminationGracePeriodSeconds" => {
                "a replica's `stop_grace` applies to every stop".to_owned()
            }
            "grpc" => "bulwark probes by HTTP, TCP or a command; use `exec` with grpc_health_probe"
                .to_owned(),
            _ => "not a probe field bulwark knows".to_owned(),
        });
        probe.action = action?;
        Some(probe)
    }

    /// `httpGet`, `tcpSocket` or `exec`.
    fn action(&self, f: &mut Fields<'_>, notes: &mut Notes) -> Option<ProbeAction> {
        let (key, node) = ["httpGet", "tcpSocket", "exec"]
            .into_iter()
            .find_map(|k| Some((k, f.take(k)?)))
            .or_else(|| {
                notes.not_carried(
                    f.here(),
                    "no httpGet, tcpSocket or exec: bulwark has no other probe",
                );
                None
            })?;
        let path = f.path(key);
        let mut a = Fields::of(node, &path, notes)?;
        match key {
            "httpGet" => self.http_get(&mut a, notes),
            "tcpSocket" => {
                self.check_port(&mut a, notes);
                a.note_rest(notes, |key, _| match key {
                    "host" => "bulwark probes 127.0.0.1".to_owned(),
                    _ => "not a tcpSocket field bulwark knows".to_owned(),
                });
                Some(ProbeAction::Tcp)
            }
            _ => self.exec(&mut a, notes),
        }
    }

    fn http_get(&self, g: &mut Fields<'_>, notes: &mut Notes) -> Option<ProbeAction> {
        let http_path = g.take("path").and_then(Node::as_str).unwrap_or("/");
        self.check_port(g, notes);
        let https = g.take("scheme").and_then(Node::as_str) == Some("HTTPS");
        g.note_rest(notes, |key, _| match key {
            "httpHeaders" => "bulwark's HTTP probe sends no extra headers".to_owned(),
            "host" => "bulwark probes 127.0.0.1".to_owned(),
            _ => "not an httpGet field bulwark knows".to_owned(),
        });
        if https {
            notes.changed(
                g.path("scheme"),
                "bulwark's HTTP probe speaks plain HTTP: this became a TCP probe",
            );
            return Some(ProbeAction::Tcp);
        }
        if http_path.contains(|c: char| c.is_control() || c == ' ') {
            notes.not_carried(
                g.path("path"),
                format!("{http_path:?} is not a path a GET can ask for"),
            );
            return None;
        }
        Some(ProbeAction::Http(if http_path.starts_with('/') {
            http_path.to_owned()
        } else {
            format!("/{http_path}")
        }))
    }

    fn exec(&self, e: &mut Fields<'_>, notes: &mut Notes) -> Option<ProbeAction> {
        let path = e.path("command");
        let Some(command) = e.take("command") else {
            notes.not_carried(e.here(), "it has no `command`");
            return None;
        };
        e.note_rest(notes, |_, _| "not an exec field bulwark knows".to_owned());
        // Kubernetes expands neither $(NAME) nor $$ in a probe's command: nor does bulwark.
        match words(command, &path) {
            Ok(argv) => exec_probe(argv, &path, self.main_port, notes),
            Err(why) => {
                notes.not_carried(path, why);
                None
            }
        }
    }

    /// A probe's `port`: bulwark always probes the replica's own port.
    fn check_port(&self, f: &mut Fields<'_>, notes: &mut Notes) {
        let Some(node) = f.take("port") else { return };
        let p = resolve_port(node, self.ports);
        if p.is_none() || p != self.main_port {
            notes.changed(
                f.path("port"),
                format!(
                    "bulwark probes each replica's own port ({}), not {}",
                    self.main_port.map_or("$PORT".to_owned(), |m| format!(
                        "the container port {m}, made per replica"
                    )),
                    node.describe()
                ),
            );
        }
    }
}

/// Whole seconds at `key`, at least `min`; `None` when absent or noted.
fn seconds(f: &mut Fields<'_>, key: &str, min: i64, notes: &mut Notes) -> Option<Duration> {
    let node = f.take(key)?;
    crate::duration::seconds(node, min)
        .map_err(|why| {
            notes.not_carried(f.path(key), format!("{why}; Kubernetes' default is used"))
        })
        .ok()
}

/// A threshold at `key` (at least 1); `None` when absent or noted.
fn count(f: &mut Fields<'_>, key: &str, notes: &mut Notes) -> Option<u32> {
    let node = f.take(key)?;
    match node.as_int().and_then(|n| u32::try_from(n).ok()) {
        Some(n) if n >= 1 => Some(n),
        _ => {
            notes.not_carried(
                f.path(key),
                format!(
                    "expected a whole number of at least 1, found {}; Kubernetes' default is used",
                    node.describe()
                ),
            );
            None
        }
    }
}
