//! A Deployment: its replicas, its pod template's settings, and a service per container.

use std::time::Duration;

use super::container::container;
use super::service::{Exposure, Target};
use super::{Object, container_ports, header, list_at, map_at};
use crate::duration;
use crate::fields::{Fields, index};
use crate::note::Notes;
use crate::stack::{self, Names, Service};
use crate::yaml::Node;

/// Kubernetes' `terminationGracePeriodSeconds` when a pod does not set it.
const GRACE: Duration = Duration::from_secs(30);

/// What every container of one pod shares.
pub(super) struct Pod {
    pub replicas: u32,
    pub stop_grace: Duration,
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
    let Some((containers, containers_path)) =
        pod_template(template, &s.path("template"), &mut pod, notes)
    else {
        return Vec::new();
    };
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

/// The pod template's containers and their path, its settings into `pod`; `None` (noted)
/// when there is no container.
fn pod_template<'a>(
    template: &'a [(String, Node)],
    path: &str,
    pod: &mut Pod,
    notes: &mut Notes,
) -> Option<(&'a [Node], String)> {
    let mut t = Fields::new(path, template);
    if let Some(meta) = map_at(&mut t, "metadata", notes) {
        let mut m = Fields::new(&t.path("metadata"), meta);
        m.take("labels"); // What Services select.
        m.note_rest(notes, |_, _| {
            "a stack file has no labels or annotations".to_owned()
        });
    }
    let Some(pod_spec) = map_at(&mut t, "spec", notes) else {
        notes.not_carried(t.path("spec"), "it has no pod spec; nothing to run");
        return None;
    };
    t.note_rest(notes, |_, _| {
        "not a pod template field bulwark knows".to_owned()
    });
    let mut p = Fields::new(&t.path("spec"), pod_spec);
    pod_settings(&mut p, pod, notes);
    let containers_path = p.path("containers");
    let containers = list_at(&mut p, "containers", notes);
    p.note_rest(notes, |key, _| pod_reason(key).to_owned());
    if containers.is_empty() {
        notes.not_carried(containers_path, "no containers: nothing to run");
        return None;
    }
    Some((containers, containers_path))
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
