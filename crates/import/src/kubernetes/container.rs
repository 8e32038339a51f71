//! A Deployment's containers as services.

use std::time::Duration;

use super::service::{Exposure, Target};
use super::{Object, container_ports, header, list_at, map_at, resolve_port, variables};
use crate::command::{Words, cwd, words};
use crate::fields::{Fields, index, join};
use crate::note::Notes;
use crate::stack::{self, Names, Restart, Service};
use crate::yaml::Node;
use crate::{duration, port};

/// Kubernetes' `terminationGracePeriodSeconds` when a pod does not set it.
const GRACE: Duration = Duration::from_secs(30);

/// What every container of one pod shares.
struct Pod {
    replicas: u32,
    stop_grace: Duration,
}

pub(super) fn deployment(
    d: &Object<'_>,
    exposure: Option<&Exposure>,
    names: &mut Names,
    notes: &mut Notes,
) -> Vec<Service> {
    let mut f = Fields::new(&d.path, d.fields);
    header(&mut f, notes);
    let Some(spec) = map_at(&mut f, "spec", notes) else {
        notes.not_carried(d.path.clone(), "it has no `spec`");
        return Vec::new();
    };
    f.note_rest(notes, |key, _| match key {
        "status" => "the cluster's state, not configuration".to_owned(),
        _ => "not a Deployment field bulwark knows".to_owned(),
    });
    let mut s = Fields::new(&f.path("spec"), spec);
    let mut pod = Pod {
        replicas: 1,
        stop_grace: GRACE,
    };
    if let Some(n) = s.take("replicas") {
        match stack::replicas(n) {
            Ok(n) => pod.replicas = n,
            Err(why) => notes.not_carried(s.path("replicas"), format!("{why}; 1 is used")),
        }
    }
    // The selector only has to agree with the template's labels, which Services select.
    s.take("selector");
    let template = map_at(&mut s, "template", notes);
    s.note_rest(notes, |key, _| match key {
        "strategy"
        | "minReadySeconds"
        | "progressDeadlineSeconds"
        | "revisionHistoryLimit"
        | "paused" => "rollouts come later".to_owned(),
        _ => "not a Deployment field bulwark knows".to_owned(),
    });
    let Some(template) = template else {
        notes.not_carried(s.path("template"), "it has no pod template; nothing to run");
        return Vec::new();
    };
    let mut t = Fields::new(&s.path("template"), template);
    if let Some(meta) = map_at(&mut t, "metadata", notes) {
        let mut m = Fields::new(&t.path("metadata"), meta);
        m.take("labels"); // What Services select.
        m.note_rest(notes, |_, _| {
            "a stack file has no labels or annotations".to_owned()
        });
    }
    let Some(pod_spec) = map_at(&mut t, "spec", notes) else {
        notes.not_carried(t.path("spec"), "it has no pod spec; nothing to run");
        return Vec::new();
    };
    t.note_rest(notes, |_, _| {
        "not a pod template field bulwark knows".to_owned()
    });
    let mut p = Fields::new(&t.path("spec"), pod_spec);
    pod_settings(&mut p, &mut pod, notes);
    let containers_path = p.path("containers");
    let containers = list_at(&mut p, "containers", notes);
    p.note_rest(notes, |key, _| pod_reason(key).to_owned());
    if containers.is_empty() {
        notes.not_carried(containers_path, "no containers: nothing to run");
        return Vec::new();
    }
    self::containers(
        d,
        containers,
        &containers_path,
        &pod,
        exposure,
        names,
        notes,
    )
}

/// Each container of a pod as a service; the one the Service targets is exposed.
fn containers(
    d: &Object<'_>,
    containers: &[Node],
    containers_path: &str,
    pod: &Pod,
    exposure: Option<&Exposure>,
    names: &mut Names,
    notes: &mut Notes,
) -> Vec<Service> {
    // The container the Service's target port belongs to gets the exposure.
    let exposed = exposure.map(|e| match &e.target {
        Target::Name(name) => containers
            .iter()
            .position(|c| container_ports(c).iter().any(|(n, _)| *n == Some(name)))
            .map(|i| (i, e)),
        Target::Number(n) => Some((
            containers
                .iter()
                .position(|c| container_ports(c).iter().any(|(_, p)| p == n))
                .unwrap_or(0),
            e,
        )),
    });
    if let (Some(e), Some(None)) = (exposure, &exposed) {
        notes.not_carried(
            containers_path,
            format!(
                "no container has a port named {:?}, the Service's targetPort; not exposed",
                match &e.target {
                    Target::Name(n) => n.as_str(),
                    Target::Number(_) => "",
                }
            ),
        );
    }
    let exposed = exposed.flatten();
    let mut out = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let path = index(containers_path, i);
        let exposure = exposed.and_then(|(at, e)| (at == i).then_some(e));
        let name = if containers.len() == 1 {
            names.claim_noted(d.name, &d.path, notes)
        } else {
            let cname = c.get("name").and_then(Node::as_str).unwrap_or("container");
            names.claim(&format!("{}-{cname}", d.name))
        };
        if containers.len() > 1 {
            notes.changed(
                path.clone(),
                format!(
                    "service `{name}`: one service per container; in the pod they shared \
                     localhost, here each has its own port"
                ),
            );
        }
        match container(c, &path, name, pod, exposure, notes) {
            Some(s) => out.push(s),
            None if exposure.is_some() => notes.not_carried(
                path,
                "the Service's port leads to this container, which is not imported: nothing \
                 is exposed",
            ),
            None => {}
        }
    }
    out
}

/// `restartPolicy` and `terminationGracePeriodSeconds`.
fn pod_settings(p: &mut Fields<'_>, pod: &mut Pod, notes: &mut Notes) {
    if let Some(policy) = p.take("restartPolicy")
        && policy.as_str() != Some("Always")
    {
        notes.not_carried(
            p.path("restartPolicy"),
            format!(
                "a Deployment's pods restart always; found {}",
                policy.describe()
            ),
        );
    }
    if let Some(g) = p.take("terminationGracePeriodSeconds") {
        match duration::seconds(g, 0) {
            Ok(d) => pod.stop_grace = d,
            Err(why) => notes.not_carried(
                p.path("terminationGracePeriodSeconds"),
                format!("{why}; Kubernetes' default of 30s is used"),
            ),
        }
    }
}

/// One container as a service; `None` (noted) when it names no command to run.
fn container(
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
    let mut used_port = port::substitute_all(&mut run, main_port, notes);
    for (p, w) in &run {
        variables(w, p, notes);
    }
    let mut s = Service {
        name,
        run: run.into_iter().map(|(_, w)| w).collect(),
        replicas: Some(pod.replicas),
        restart: Some(Restart::Always),
        stop_grace: Some(pod.stop_grace),
        listen: exposure.map(|e| e.listen.clone()),
        ..Service::default()
    };
    let env_path = f.path("env");
    for (i, var) in list_at(&mut f, "env", notes).iter().enumerate() {
        used_port |= env(var, &index(&env_path, i), main_port, &mut s, notes);
    }
    if let Some(dir) = f.take("workingDir") {
        s.cwd = cwd(dir, &f.path("workingDir"), notes);
    }
    let ports_path = f.path("ports");
    for (i, _) in list_at(&mut f, "ports", notes).iter().enumerate().skip(1) {
        notes.not_carried(
            index(&ports_path, i),
            "each replica gets one port; only the container's first port (or the one its \
             Service targets) is made per replica",
        );
    }
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

/// One `env` entry; returns whether the container port became `{port}` in it.
fn env(var: &Node, path: &str, main_port: Option<u16>, s: &mut Service, notes: &mut Notes) -> bool {
    let Some(entries) = var.as_map() else {
        notes.not_carried(
            path,
            format!("expected `name` and `value`, found {}", var.describe()),
        );
        return false;
    };
    let mut f = Fields::new(path, entries);
    let name = f.take("name").and_then(Node::as_str);
    let value = f.take("value");
    f.note_rest(notes, |key, _| match key {
        "valueFrom" => {
            "bulwark reads no ConfigMaps, Secrets or pod fields; write the value".to_owned()
        }
        _ => "not an `env` field bulwark knows".to_owned(),
    });
    let Some(name) = name.filter(|n| !n.is_empty() && !n.contains(['=', '\0'])) else {
        notes.not_carried(path, "it has no usable `name`");
        return false;
    };
    let Some(value) = value else {
        return false;
    };
    let value = value.as_str().unwrap_or_default().to_owned();
    let value_path = join(path, "value");
    if value.contains('\0') {
        notes.not_carried(value_path, "a value cannot hold a NUL character");
        return false;
    }
    variables(&value, &value_path, notes);
    let (value, used) = port::substitute_one(value_path, value, main_port, notes);
    s.env.insert(name.to_owned(), value);
    used
}

fn pod_reason(key: &str) -> &'static str {
    match key {
        "initContainers" => "bulwark has no init containers; run them before `bulwark up`",
        "volumes" => {
            "bulwark runs commands on the host, where the files already are; volumes come with containers"
        }
        "securityContext"
        | "serviceAccountName"
        | "serviceAccount"
        | "automountServiceAccountToken"
        | "imagePullSecrets"
        | "runtimeClassName"
        | "hostPID"
        | "hostIPC"
        | "shareProcessNamespace" => {
            "replicas run as bulwark's own processes; container settings come with containers"
        }
        "nodeSelector"
        | "affinity"
        | "tolerations"
        | "topologySpreadConstraints"
        | "nodeName"
        | "priorityClassName"
        | "priority"
        | "schedulerName" => "bulwark runs on one host",
        "hostNetwork" | "dnsPolicy" | "dnsConfig" | "hostname" | "subdomain" | "hostAliases" => {
            "replicas share the host's network; services reach each other through their expose addresses"
        }
        _ => "not a pod field bulwark knows",
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
