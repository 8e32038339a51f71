//! A container of a pod as a service: its command, environment, ports and probes.

use super::deployment::Pod;
use super::env;
use super::service::{Exposure, Target};
use super::{container_ports, list_at, resolve_port};
use crate::command::{Words, cwd, words};
use crate::fields::{Fields, index, join};
use crate::note::Notes;
use crate::port;
use crate::stack::{Restart, Service};
use crate::yaml::Node;

/// One container as a service; `None` (noted) when it names no command to run.
pub(super) fn container(
    c: &Node,
    path: &str,
    name: String,
    pod: &Pod,
    exposure: Option<&Exposure>,
    notes: &mut Notes,
) -> Option<Service> {
    let Some(entries) = c.as_map() else {
        notes.not_carried(
            path,
            format!("expected a container, found {}", c.describe()),
        );
        return None;
    };
    let mut f = Fields::new(path, entries);
    f.take("name");
    let ports = container_ports(c);
    let main_port = main_port(c, exposure, &ports);
    let mut run = run(&mut f, notes)?;
    let env_path = f.path("env");
    let vars = env::read(list_at(&mut f, "env", notes), &env_path, notes);
    env::expand_words(&mut run, &vars, notes);
    let mut used_port = port::substitute_all(&mut run, main_port, notes);
    let mut s = Service {
        name,
        run: run.into_iter().map(|(_, w)| w).collect(),
        replicas: Some(pod.replicas),
        restart: Some(Restart::Always),
        stop_grace: Some(pod.stop_grace),
        listen: exposure.map(|e| e.listen.clone()),
        ..Service::default()
    };
    for var in vars {
        let Some(value) = var.value else { continue };
        let (value, used) = port::substitute_one(var.path, value, main_port, notes);
        used_port |= used;
        s.env.insert(var.name, value);
    }
    if let Some(dir) = f.take("workingDir") {
        s.cwd = cwd(dir, &f.path("workingDir"), notes);
    }
    other_ports(&mut f, main_port, &s.name, notes);
    if let (Some(p), false) = (main_port, used_port) {
        notes.changed(
            path,
            format!(
                "the container port {p} is in neither the command nor `env`: the program must \
                 listen on the port bulwark gives each replica, in $PORT"
            ),
        );
    }
    let probes = super::probe::Probes {
        main_port,
        ports: &ports,
    };
    s.startup = probes.convert(&mut f, "startupProbe", notes);
    s.liveness = probes.convert(&mut f, "livenessProbe", notes);
    s.readiness = probes.convert(&mut f, "readinessProbe", notes);
    f.note_rest(notes, |key, _| container_reason(key).to_owned());
    Some(s)
}

/// A note for each port but the one made per replica (`main_port`), and for each `hostPort`.
fn other_ports(f: &mut Fields<'_>, main_port: Option<u16>, name: &str, notes: &mut Notes) {
    let ports_path = f.path("ports");
    let ports = list_at(f, "ports", notes);
    let container_port = |p: &Node| p.get("containerPort").and_then(Node::as_int);
    let main = main_port.and_then(|m| {
        ports
            .iter()
            .position(|p| container_port(p) == Some(m.into()))
    });
    for (i, p) in ports.iter().enumerate() {
        let path = index(&ports_path, i);
        if let Some(host) = p.get("hostPort") {
            let listen = host
                .as_int()
                .map_or_else(String::new, |n| format!(" = \"0.0.0.0:{n}\""));
            notes.not_carried(
                join(&path, "hostPort"),
                format!(
                    "bulwark publishes a service through its proxy, not a container's port: \
                     write [services.{name}.expose] listen{listen}"
                ),
            );
        }
        if Some(i) != main {
            notes.not_carried(
                path,
                "each replica gets one port; only the container's first port (or the one its \
                 Service targets) is made per replica",
            );
        }
    }
}

/// The port made per replica: the one the Service targets, else the container's first,
/// else the one its probes check.
fn main_port(c: &Node, exposure: Option<&Exposure>, ports: &[(Option<&str>, u16)]) -> Option<u16> {
    let targeted = exposure.and_then(|e| match &e.target {
        Target::Number(n) => Some(*n),
        Target::Name(name) => ports
            .iter()
            .find_map(|(n, p)| (*n == Some(name.as_str())).then_some(*p)),
    });
    targeted
        .or_else(|| ports.first().map(|(_, p)| *p))
        .or_else(|| {
            ["startupProbe", "livenessProbe", "readinessProbe"]
                .iter()
                .filter_map(|k| c.get(k))
                .find_map(|probe| {
                    let action = probe.get("httpGet").or_else(|| probe.get("tcpSocket"))?;
                    resolve_port(action.get("port")?, ports)
                })
        })
}

/// `command` then `args`; `None` (noted) when there is nothing to run.
fn run(f: &mut Fields<'_>, notes: &mut Notes) -> Option<Words> {
    let mut run = Vec::new();
    let mut has_command = false;
    for key in ["command", "args"] {
        let Some(node) = f.take(key).filter(|n| !n.is_null()) else {
            continue;
        };
        match words(node, &f.path(key)) {
            Ok(w) => {
                has_command |= key == "command" && !w.is_empty();
                run.extend(w);
            }
            Err(why) => {
                notes.not_carried(f.path(key), why);
                return None;
            }
        }
    }
    let first = run.first().map(|(_, w)| w.clone());
    match first {
        None => {
            notes.not_carried(
                f.path("command"),
                "no `command` or `args`: the image's entrypoint is not known here, and \
                 bulwark runs commands on the host; add `command` with the program to run",
            );
            None
        }
        Some(w) if !has_command && (w.starts_with('-') || w.is_empty()) => {
            notes.not_carried(
                f.path("args"),
                "`args` without `command` are arguments to the image's entrypoint, which is \
                 not known here; add `command` with the program to run",
            );
            None
        }
        Some(w) if w.contains('\0') || w.is_empty() => {
            notes.not_carried(f.path("command"), "the command names no program");
            None
        }
        Some(_) => {
            if !has_command {
                notes.changed(
                    f.path("args"),
                    "no `command`: `args` are run as the command (the image's entrypoint is \
                     not known here)",
                );
            }
            if run.iter().any(|(_, w)| w.contains('\0')) {
                notes.not_carried(f.path("args"), "an argument cannot hold a NUL character");
                return None;
            }
            Some(run)
        }
    }
}

fn container_reason(key: &str) -> &'static str {
    match key {
        "image" => "bulwark runs commands on the host; containers come later",
        "imagePullPolicy" => "bulwark pulls no images",
        "resources" => "resource limits come with container support",
        "volumeMounts" | "volumeDevices" => {
            "bulwark runs commands on the host, where the files already are; mounts come with containers"
        }
        "envFrom" => "bulwark reads no ConfigMaps or Secrets; copy the variables into `env`",
        "securityContext" | "stdin" | "stdinOnce" | "tty" => {
            "replicas run as bulwark's own processes; container settings come with containers"
        }
        "lifecycle" => {
            "bulwark has no start or stop hooks; `stop_signal` and `stop_grace` set how a replica stops"
        }
        "terminationMessagePath" | "terminationMessagePolicy" => {
            "bulwark keeps the tail of a replica's stderr (`bulwark status`)"
        }
        _ => "not a container field bulwark knows",
    }
}
