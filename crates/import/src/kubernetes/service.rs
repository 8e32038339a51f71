//! Kubernetes Services: which Deployment each selects, and the port it serves, which
//! becomes that Deployment's `expose` address on 127.0.0.1.

use super::{Object, header, list_at, map_at};
use crate::fields::{Fields, index};
use crate::note::Notes;
use crate::yaml::Node;

/// What a Service gives the Deployment it selects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exposure {
    /// `127.0.0.1:PORT`.
    pub listen: String,
    /// The container port the Service forwards to: a number, or a port's name.
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    Number(u16),
    Name(String),
}

/// For each Deployment, the first Service that selects its pods.
pub(crate) fn match_all(
    services: &[Object<'_>],
    deployments: &[Object<'_>],
    notes: &mut Notes,
) -> Vec<Option<Exposure>> {
    let labels: Vec<Vec<(&str, &str)>> = deployments.iter().map(pod_labels).collect();
    let mut exposures: Vec<Option<(Exposure, &str)>> = vec![None; deployments.len()];
    for svc in services {
        notes.file = svc.file.to_owned();
        let mut f = Fields::new(&svc.path, svc.fields);
        header(&mut f, notes);
        let Some(spec) = map_at(&mut f, "spec", notes) else {
            notes.not_carried(svc.path.clone(), "it has no `spec`");
            continue;
        };
        f.note_rest(notes, |key, _| reason(key).to_owned());
        let mut s = Fields::new(&f.path("spec"), spec);
        let selector = selector(&mut s, notes);
        let exposure = ports(&mut s, &svc.path, notes);
        s.note_rest(notes, spec_reason);
        let (Some(selector), Some(exposure)) = (selector, exposure) else {
            continue;
        };
        let selected: Vec<usize> = labels
            .iter()
            .enumerate()
            .filter(|(_, l)| selector.iter().all(|kv| l.contains(kv)))
            .map(|(i, _)| i)
            .collect();
        let Some((&first, more)) = selected.split_first() else {
            notes.not_carried(
                s.path("selector"),
                "it selects the pods of no Deployment in these files",
            );
            continue;
        };
        for &i in more {
            notes.not_carried(
                s.path("selector"),
                format!(
                    "it also selects {}'s pods; only {} is exposed",
                    deployments[i].path, deployments[first].path
                ),
            );
        }
        match &exposures[first] {
            Some((_, by)) => notes.not_carried(
                svc.path.clone(),
                format!(
                    "{} is exposed by {by} already; a service has one listen address",
                    deployments[first].path
                ),
            ),
            None => exposures[first] = Some((exposure, svc.path.as_str())),
        }
    }
    exposures
        .into_iter()
        .map(|e| e.map(|(exposure, _)| exposure))
        .collect()
}

/// A Deployment's pod template labels.
fn pod_labels<'a>(d: &Object<'a>) -> Vec<(&'a str, &'a str)> {
    let spec = d
        .fields
        .iter()
        .find_map(|(k, v)| (k == "spec").then_some(v));
    spec.and_then(|s| s.get("template")?.get("metadata")?.get("labels")?.as_map())
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect()
}

/// `spec.selector` as label pairs; `None` (noted) when it selects nothing.
fn selector<'a>(s: &mut Fields<'a>, notes: &mut Notes) -> Option<Vec<(&'a str, &'a str)>> {
    let path = s.path("selector");
    let pairs: Vec<(&str, &str)> = map_at(s, "selector", notes)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect();
    if pairs.is_empty() {
        notes.not_carried(
            path,
            "no selector: the Service selects no pods bulwark runs",
        );
        return None;
    }
    Some(pairs)
}

/// The first TCP port as an exposure; the others noted.
fn ports(s: &mut Fields<'_>, svc: &str, notes: &mut Notes) -> Option<Exposure> {
    let ports_path = s.path("ports");
    let mut exposure = None;
    for (i, port) in list_at(s, "ports", notes).iter().enumerate() {
        let p = index(&ports_path, i);
        let Some(mut f) = Fields::of(port, &p, notes) else {
            continue;
        };
        let number = f
            .take("port")
            .and_then(Node::as_int)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0);
        let target = match f.take("targetPort") {
            None => number.map(Target::Number),
            Some(t) => match t.as_int() {
                Some(n) => u16::try_from(n).ok().filter(|n| *n > 0).map(Target::Number),
                None => t.as_str().map(|n| Target::Name(n.to_owned())),
            },
        };
        let tcp = f
            .take("protocol")
            .and_then(Node::as_str)
            .is_none_or(|p| p == "TCP");
        f.take("name");
        f.note_rest(notes, |key, _| match key {
            "nodePort" => {
                "bulwark listens on 127.0.0.1 only; write 0.0.0.0 in `listen` to serve other hosts"
                    .to_owned()
            }
            "appProtocol" => "the proxy speaks HTTP unless `protocol = \"tcp\"`".to_owned(),
            _ => "not a Service port setting bulwark knows".to_owned(),
        });
        let (Some(number), Some(target)) = (number, target) else {
            notes.not_carried(
                p,
                "it needs a `port` from 1 to 65535 and a valid `targetPort`",
            );
            continue;
        };
        if !tcp {
            notes.not_carried(p, "bulwark proxies TCP only");
        } else if exposure.is_some() {
            notes.not_carried(
                p,
                "each replica gets one port, and only the first port of a Service is proxied",
            );
        } else {
            let privileged = if number < 1024 {
                " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
            } else {
                ""
            };
            notes.changed(
                p,
                format!(
                    "bulwark listens on 127.0.0.1:{number}{privileged}; in the cluster {svc} \
                     served it on its cluster IP"
                ),
            );
            exposure = Some(Exposure {
                listen: format!("127.0.0.1:{number}"),
                target,
            });
        }
    }
    if exposure.is_none() {
        notes.not_carried(ports_path, "no TCP port to expose");
    }
    exposure
}

fn reason(key: &str) -> &'static str {
    match key {
        "status" => "the cluster's state, not configuration",
        _ => "not a Service field bulwark knows",
    }
}

fn spec_reason(key: &str, value: &Node) -> String {
    match key {
        "type" => match value.as_str() {
            Some("ClusterIP") => "bulwark's proxy listens on 127.0.0.1".to_owned(),
            _ => {
                "bulwark listens on 127.0.0.1 only; write 0.0.0.0 in `listen` to serve other hosts"
                    .to_owned()
            }
        },
        "sessionAffinity" | "sessionAffinityConfig" => {
            "for stickiness use balance = \"hash\" with hash_on = \"client-address\" in `expose`"
                .to_owned()
        }
        "clusterIP" | "clusterIPs" | "ipFamilies" | "ipFamilyPolicy" | "externalIPs" => {
            "bulwark's proxy listens on 127.0.0.1".to_owned()
        }
        _ => "bulwark has no equivalent".to_owned(),
    }
}
