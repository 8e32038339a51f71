//! A Compose file (<https://compose-spec.io>) as a stack file.
//!
//! Each service with a `command` (or `entrypoint`) becomes a `[services.NAME]` table running
//! that command on the host; a service with only an image cannot run there and is left out,
//! with a note. Ports, the healthcheck, restart, dependencies, replicas and stop settings
//! carry over; everything about the container itself (image, build, volumes, networks,
//! user, resources…) is noted.

mod depends;
mod deploy;
mod environment;
mod healthcheck;
mod ports;

use std::collections::HashMap;

use crate::command::{Words, compose_dollars, compose_variable, cwd, words};
use crate::fields::{Fields, join};
use crate::note::Notes;
use crate::stack::{self, Names, Service};
use crate::yaml::{self, Node};
use crate::{Error, Imported, duration, port};

pub(crate) fn import(file: &str, text: &str) -> Result<Imported, Error> {
    let not_compose = |why: &str| Error::NotCompose {
        file: file.to_owned(),
        why: why.to_owned(),
    };
    let docs = yaml::parse(text).map_err(|e| Error::yaml(file, e))?;
    let mut notes = Notes::new(file);
    let top = match docs.as_slice() {
        [] => return Err(not_compose("the file is empty")),
        [first, rest @ ..] => {
            if !rest.is_empty() {
                notes.not_carried(
                    "---",
                    format!(
                        "{} more YAML document(s) after the first; Compose reads one",
                        rest.len()
                    ),
                );
            }
            first.as_map().ok_or_else(|| {
                not_compose(&format!(
                    "the top level is {}, not a mapping with `services`",
                    first.describe()
                ))
            })?
        }
    };
    let mut top = Fields::new("", top);
    let services = match top.take("services") {
        None => return Err(not_compose("it has no `services`")),
        Some(s) => s.as_map().ok_or_else(|| {
            not_compose(&format!(
                "`services` must map service names to services, found {}",
                s.describe()
            ))
        })?,
    };
    if services.is_empty() {
        return Err(not_compose("`services` is empty"));
    }
    for (name, svc) in services {
        if svc.as_map().is_none() {
            return Err(not_compose(&format!(
                "services.{name} must be a mapping, found {}",
                svc.describe()
            )));
        }
    }
    top.note_rest(&mut notes, |key, _| top_level_reason(key).to_owned());

    let out = convert(services, &mut notes);
    if out.is_empty() {
        return Err(Error::NothingToRun {
            files: file.to_owned(),
            notes: notes.list,
        });
    }
    Ok(Imported {
        stack: stack::render("compose", file, &out)?,
        notes: notes.list,
    })
}

/// Every service that can run on the host, in the file's order.
fn convert(services: &[(String, Node)], notes: &mut Notes) -> Vec<Service> {
    // First which services can run at all, and their names: `depends_on` needs both.
    let mut names = Names::default();
    let mut runnable: HashMap<&str, (String, Words)> = HashMap::new();
    for (key, svc) in services {
        let path = join("services", key);
        match run_words(svc, &path) {
            Ok(run) => {
                image_entrypoint(svc, &path, notes);
                let name = names.claim_noted(key, &path, notes);
                runnable.insert(key, (name, run));
            }
            Err(why) => notes.not_carried(path, why),
        }
    }
    // Every service of the file, with its name in the stack when it is imported.
    let renamed: HashMap<&str, Option<&str>> = services
        .iter()
        .map(|(k, _)| {
            (
                k.as_str(),
                runnable.get(k.as_str()).map(|(n, _)| n.as_str()),
            )
        })
        .collect();
    let mut out = Vec::new();
    for (key, svc) in services {
        if let (Some((name, run)), Some(entries)) = (runnable.get(key.as_str()), svc.as_map()) {
            let path = join("services", key);
            out.push(service(
                Fields::new(&path, entries),
                name,
                run.clone(),
                &renamed,
                notes,
            ));
        }
    }
    out
}

/// `entrypoint` then `command`, each word with its path; `Err` says why the service cannot
/// run on the host.
fn run_words(svc: &Node, path: &str) -> Result<Words, String> {
    let mut run = Vec::new();
    for key in ["entrypoint", "command"] {
        if let Some(node) = svc.get(key).filter(|n| !n.is_null()) {
            run.extend(words(node, &join(path, key)).map_err(|e| format!("`{key}`: {e}"))?);
        }
    }
    if run.is_empty() {
        let image = svc
            .get("image")
            .and_then(Node::as_str)
            .map(|i| format!(" (`{i}`)"))
            .unwrap_or_default();
        return Err(format!(
            "it has an image{image} but no `command`: bulwark runs commands on the host, \
             containers come later; add `command` with the program to run"
        ));
    }
    if run[0].1.is_empty() {
        return Err("its command starts with an empty word; it names no program".to_owned());
    }
    if !has_entrypoint(svc) && run[0].1.starts_with('-') {
        return Err(
            "`command` without `entrypoint` is the arguments of the image's ENTRYPOINT, which \
             is not known here; add `entrypoint` with the program to run"
                .to_owned(),
        );
    }
    if run.iter().any(|(_, w)| w.contains('\0')) {
        return Err("its command holds a NUL character, which no program can be given".to_owned());
    }
    Ok(run)
}

/// `entrypoint` set, if only to `[]` or `""` (which Compose runs without the image's).
fn has_entrypoint(svc: &Node) -> bool {
    svc.get("entrypoint").is_some_and(|n| !n.is_null())
}

/// A note that `command` runs as it is, when the service's image may have an ENTRYPOINT
/// that Compose would have run it with.
fn image_entrypoint(svc: &Node, path: &str, notes: &mut Notes) {
    if has_entrypoint(svc) || (svc.get("image").is_none() && svc.get("build").is_none()) {
        return;
    }
    notes.changed(
        join(path, "command"),
        "the image's ENTRYPOINT, if it has one, is not known to bulwark: `command` runs as the \
         whole command line",
    );
}

/// One service's table.
fn service(
    mut f: Fields<'_>,
    name: &str,
    mut run: Words,
    renamed: &HashMap<&str, Option<&str>>,
    notes: &mut Notes,
) -> Service {
    let mut s = Service {
        name: name.to_owned(),
        ..Service::default()
    };
    f.take("entrypoint");
    f.take("command");
    // The ports first: the container port is made per replica in what follows.
    let (container_port, port_path) = container_port(&mut f, name, &mut s, notes);
    let mut used_port = port::substitute_all(&mut run, container_port, notes);
    for (path, word) in &mut run {
        dollars(word, path, notes);
    }
    s.run = run.into_iter().map(|(_, w)| w).collect();

    if let Some(env) = f.take("environment") {
        used_port |=
            environment::convert(env, &f.path("environment"), container_port, &mut s, notes);
    }
    service_hosts(&s, f.here(), renamed, notes);
    if let (Some(p), false) = (container_port, used_port) {
        notes.changed(
            port_path,
            format!(
                "the container port {p} is in neither the command nor the environment: the \
                 program must listen on the port bulwark gives each replica, in $PORT"
            ),
        );
    }
    if let Some(h) = f.take("healthcheck") {
        s.readiness = healthcheck::readiness(h, &f.path("healthcheck"), container_port, notes);
    }
    if s.listen.is_some()
        && !matches!(&s.readiness, Some(p) if matches!(p.action, stack::ProbeAction::Http(_)))
    {
        notes.changed(
            f.path("ports"),
            format!(
                "proxied as HTTP, bulwark's default; if the service does not speak HTTP, add \
                 protocol = \"tcp\" to [services.{name}.expose]"
            ),
        );
    }
    deploy::restart(&mut f, &mut s, notes);
    if let Some(d) = f.take("depends_on") {
        depends::convert(d, &f.path("depends_on"), renamed, &mut s, notes);
    }
    let scale = f.take("scale").map(|n| (f.path("scale"), n));
    let deploy = f.take("deploy");
    if let Some(d) = deploy {
        deploy::deploy(d, &f.path("deploy"), &mut s, notes);
    }
    if let Some((path, n)) = scale {
        if s.replicas.is_some() {
            notes.not_carried(path, "`deploy.replicas` is used instead");
        } else {
            s.replicas = deploy::replicas(n, &path, notes);
        }
    }
    stop_and_cwd(&mut f, &mut s, notes);
    f.note_rest(notes, |key, _| service_reason(key).to_owned());
    s
}

/// A note, once per service, when its command or environment names another service of the
/// file as a host (`db:5432`): Compose's service names do not resolve on the host.
fn service_hosts(
    s: &Service,
    path: &str,
    renamed: &HashMap<&str, Option<&str>>,
    notes: &mut Notes,
) {
    let mut others: Vec<&str> = renamed
        .iter()
        .filter(|(_, name)| **name != Some(s.name.as_str()))
        .map(|(key, _)| *key)
        .collect();
    others.sort_unstable();
    let named = s.run.iter().chain(s.env.values()).find_map(|text| {
        let other = others.iter().find(|o| port::names_host_port(text, o))?;
        Some((text, other))
    });
    if let Some((text, other)) = named {
        notes.changed(
            path,
            format!(
                "`{text}` names the Compose service `{other}`, but service names do not resolve \
                 on the host: write 127.0.0.1 and the port `{other}` is exposed on (here and \
                 wherever another service is named)"
            ),
        );
    }
}

/// The container port made per replica, and the path of the field it came from: the proxied
/// entry of `ports`, else the first of `expose`.
fn container_port(
    f: &mut Fields<'_>,
    name: &str,
    s: &mut Service,
    notes: &mut Notes,
) -> (Option<u16>, String) {
    let from_ports = f
        .take("ports")
        .and_then(|p| ports::convert(p, &f.path("ports"), name, s, notes));
    let from_expose = f
        .take("expose")
        .and_then(|e| ports::expose(e, &f.path("expose"), from_ports, name, notes));
    match from_ports {
        Some(p) => (Some(p), f.path("ports")),
        None => (from_expose, f.path("expose")),
    }
}

/// `$$` as Compose reads it, and a note for variables it would have substituted.
fn dollars(word: &mut String, path: &str, notes: &mut Notes) {
    let (text, variables) = compose_dollars(word);
    if variables {
        notes.changed(
            path,
            format!(
                "`{text}` is kept as written: Compose substitutes variables from the shell and \
                 .env when it reads the file"
            ),
        );
    }
    *word = text;
}

fn stop_and_cwd(f: &mut Fields<'_>, s: &mut Service, notes: &mut Notes) {
    if let Some(sig) = f.take("stop_signal") {
        s.stop_signal = signal(sig, &f.path("stop_signal"), notes);
    }
    if let Some(g) = f.take("stop_grace_period") {
        match duration::compose(g) {
            Ok(d) => s.stop_grace = Some(d),
            Err(why) => notes.not_carried(f.path("stop_grace_period"), why),
        }
    }
    if let Some(dir) = f.take("working_dir") {
        s.cwd = cwd(dir, &f.path("working_dir"), notes);
    }
}

/// A signal name bulwark knows (`SIGTERM`, `TERM`), written as given.
pub(crate) fn signal(node: &Node, path: &str, notes: &mut Notes) -> Option<String> {
    const SIGNALS: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    if let Some(why) = compose_variable(node) {
        notes.not_carried(path, why);
        return None;
    }
    let text = node.as_str().unwrap_or_default();
    let upper = text.trim().to_ascii_uppercase();
    if SIGNALS.contains(&upper.strip_prefix("SIG").unwrap_or(&upper)) {
        Some(text.trim().to_owned())
    } else {
        notes.not_carried(
            path,
            format!(
                "expected a signal name such as \"SIGTERM\", found {}",
                node.describe()
            ),
        );
        None
    }
}

fn top_level_reason(key: &str) -> &'static str {
    match key {
        "version" => "obsolete; Compose ignores it too",
        "name" => "a stack file has no project name",
        "volumes" => {
            "bulwark runs commands on the host, where the files already are; volumes come with containers"
        }
        "networks" => {
            "replicas share the host's network; services reach each other through their expose addresses"
        }
        "secrets" => {
            "bulwark runs commands on the host, where the files already are; to pass one as an \
             environment variable, use a service's `secrets = { NAME = \"FILE\" }`"
        }
        "configs" => {
            "bulwark runs commands on the host, where the files already are; put values in `env`"
        }
        "include" => "import each included file on its own",
        k if k.starts_with("x-") => "an extension field",
        _ => "not a Compose key bulwark knows",
    }
}

fn service_reason(key: &str) -> &'static str {
    match key {
        "image" => "bulwark runs commands on the host; containers come later",
        "build" => "bulwark runs commands on the host and builds nothing; containers come later",
        "volumes" | "volumes_from" | "tmpfs" => {
            "bulwark runs commands on the host, where the files already are; mounts come with containers"
        }
        "networks" | "network_mode" | "hostname" | "domainname" | "extra_hosts" | "dns"
        | "dns_search" | "dns_opt" | "links" | "external_links" | "mac_address" => {
            "replicas share the host's network; services reach each other through their expose addresses"
        }
        "env_file" => "list the files in `env_files` (paths relative to the stack file)",
        "user" | "group_add" | "cap_add" | "cap_drop" | "privileged" | "security_opt"
        | "read_only" | "userns_mode" | "devices" | "sysctls" | "ulimits" | "init" | "ipc"
        | "pid" | "platform" | "pull_policy" | "runtime" | "shm_size" | "cgroup"
        | "cgroup_parent" | "isolation" | "oom_kill_disable" | "oom_score_adj" | "stdin_open"
        | "tty" => {
            "replicas run as bulwark's own processes; container settings come with containers"
        }
        "mem_limit" | "mem_reservation" | "memswap_limit" | "cpus" | "cpu_shares" | "cpu_quota"
        | "cpu_period" | "cpuset" | "pids_limit" | "blkio_config" => {
            "resource limits come with container support"
        }
        "container_name" => "replicas are named SERVICE/INDEX",
        "labels" | "annotations" => "a stack file has no labels",
        "logging" => "replica output goes to bulwark's stdout and `bulwark logs`",
        "profiles" => "every imported service is in the stack",
        "secrets" => {
            "bulwark runs commands on the host, where the files already are; to pass one as an \
             environment variable, use a service's `secrets = { NAME = \"FILE\" }`"
        }
        "configs" => {
            "bulwark runs commands on the host, where the files already are; put values in `env`"
        }
        k if k.starts_with("x-") => "an extension field",
        _ => "bulwark has no equivalent",
    }
}

#[cfg(test)]
mod tests;
