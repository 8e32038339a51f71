//! Kubernetes Deployments and Services as a stack file.
//!
//! Each container of a Deployment's pod template becomes a service with the Deployment's
//! replicas, command, environment and probes; a Service that selects the Deployment's pods
//! gives it an `expose` address. Kubernetes' defaults (probe period 10s, grace 30s) are
//! written out, since bulwark's differ. Every other kind of object is noted.

mod container;
mod deployment;
mod env;
mod probe;
mod service;

use crate::fields::Fields;
use crate::note::Notes;
use crate::stack::{self, Names};
use crate::yaml::{self, Node};
use crate::{Error, Imported, Source};

/// A document of a manifest: `kind`, `metadata.name` and where it came from.
pub(crate) struct Object<'a> {
    pub file: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    /// `Deployment/web`: how notes name it.
    pub path: String,
    pub fields: &'a [(String, Node)],
}

pub(crate) fn import(sources: &[Source<'_>]) -> Result<Imported, Error> {
    let mut parsed: Vec<(&str, Vec<Node>)> = Vec::new();
    for src in sources {
        let docs = yaml::parse(src.text).map_err(|e| Error::yaml(src.name, e))?;
        parsed.push((src.name, docs));
    }
    let mut objects = Vec::new();
    for (file, docs) in &parsed {
        for (i, doc) in docs.iter().enumerate() {
            collect(file, i, doc, &mut objects)?;
        }
    }
    let (deployments, rest): (Vec<_>, Vec<_>) =
        objects.into_iter().partition(|o| o.kind == "Deployment");
    if deployments.is_empty() {
        let files: Vec<&str> = sources.iter().map(|s| s.name).collect();
        return Err(Error::NoDeployment {
            files: files.join(", "),
        });
    }
    let (services, others): (Vec<_>, Vec<_>) = rest.into_iter().partition(|o| o.kind == "Service");

    // The Services first: a Deployment's container needs to know which port is exposed.
    let mut service_notes = Notes::default();
    let exposures = service::match_all(&services, &deployments, &mut service_notes);
    let mut notes = Notes::default();
    let mut names = Names::default();
    let mut out = Vec::new();
    for (d, exposure) in deployments.iter().zip(&exposures) {
        notes.file = d.file.to_owned();
        out.extend(deployment::deployment(
            d,
            exposure.as_ref(),
            &mut names,
            &mut notes,
        ));
    }
    notes.list.append(&mut service_notes.list);
    for o in &others {
        notes.file = o.file.to_owned();
        notes.not_carried(o.path.clone(), other_reason(o.kind));
    }

    let files: Vec<&str> = sources.iter().map(|s| s.name).collect();
    if out.is_empty() {
        return Err(Error::NothingToRun {
            files: files.join(", "),
            notes: notes.list,
        });
    }
    Ok(Imported {
        stack: stack::render("k8s", &files.join(", "), &out)?,
        notes: notes.list,
    })
}

/// The objects of one document: itself, or the items of a `kind: List`.
fn collect<'a>(
    file: &'a str,
    doc_index: usize,
    doc: &'a Node,
    out: &mut Vec<Object<'a>>,
) -> Result<(), Error> {
    let not_k8s = |why: String| Error::NotKubernetes {
        file: file.to_owned(),
        why: format!("document {}: {why}", doc_index + 1),
    };
    if doc.is_null() {
        return Ok(()); // `---` at the end of a file, or an empty file.
    }
    let fields = doc.as_map().ok_or_else(|| {
        not_k8s(format!(
            "expected an object with `kind`, found {}",
            doc.describe()
        ))
    })?;
    let kind = doc
        .get("kind")
        .and_then(Node::as_str)
        .ok_or_else(|| not_k8s("it has no `kind`".to_owned()))?;
    if kind == "List" {
        let items = doc.get("items").and_then(Node::as_seq).unwrap_or_default();
        for item in items {
            collect(file, doc_index, item, out)?;
        }
        return Ok(());
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .ok_or_else(|| not_k8s(format!("the {kind} has no `metadata.name`")))?;
    out.push(Object {
        file,
        kind,
        name,
        path: format!("{kind}/{name}"),
        fields,
    });
    Ok(())
}

/// `apiVersion`, `kind` and `metadata` of an object: the name is used, the rest noted.
pub(crate) fn header(f: &mut Fields<'_>, notes: &mut Notes) {
    f.take("apiVersion");
    f.take("kind");
    if let Some(meta) = f.take("metadata").and_then(Node::as_map) {
        let mut m = Fields::new(&f.path("metadata"), meta);
        m.take("name");
        m.note_rest(notes, |key, _| match key {
            "namespace" => "a stack has no namespaces".to_owned(),
            _ => "a stack file has no labels or annotations".to_owned(),
        });
    }
}

/// A mapping at `key` of `f`, or a note saying what was there instead.
pub(crate) fn map_at<'a>(
    f: &mut Fields<'a>,
    key: &str,
    notes: &mut Notes,
) -> Option<&'a [(String, Node)]> {
    let node = f.take(key)?;
    let m = node.as_map();
    if m.is_none() && !node.is_null() {
        notes.not_carried(
            f.path(key),
            format!("expected a mapping, found {}", node.describe()),
        );
    }
    m
}

/// A list at `key` of `f`, or a note saying what was there instead.
pub(crate) fn list_at<'a>(f: &mut Fields<'a>, key: &str, notes: &mut Notes) -> &'a [Node] {
    let Some(node) = f.take(key) else {
        return &[];
    };
    node.as_seq().unwrap_or_else(|| {
        if !node.is_null() {
            notes.not_carried(
                f.path(key),
                format!("expected a list, found {}", node.describe()),
            );
        }
        &[]
    })
}

fn other_reason(kind: &str) -> &'static str {
    match kind {
        "ConfigMap" | "Secret" => "put its values in a service's `env`",
        "Ingress" | "Gateway" | "HTTPRoute" => {
            "expose a service with [services.NAME.expose] `listen`; routes by header or weight \
             are [[services.NAME.expose.routes]]"
        }
        "HorizontalPodAutoscaler" => "replicas are fixed; `bulwark scale` changes them",
        "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Pod" | "Job" | "CronJob" => {
            "only Deployments are imported"
        }
        "PersistentVolumeClaim" | "PersistentVolume" | "StorageClass" => {
            "bulwark runs commands on the host, where the files already are"
        }
        "PodDisruptionBudget" => "bulwark restarts one replica at a time",
        _ => "bulwark has no equivalent",
    }
}

/// The ports a container names: `(name, containerPort)`.
pub(crate) fn container_ports(container: &Node) -> Vec<(Option<&str>, u16)> {
    container
        .get("ports")
        .and_then(Node::as_seq)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.get("containerPort")?.as_int()?).ok()?;
            Some((p.get("name").and_then(Node::as_str), port))
        })
        .collect()
}

/// A port given as a number or as the name of one of `ports`.
pub(crate) fn resolve_port(node: &Node, ports: &[(Option<&str>, u16)]) -> Option<u16> {
    match node.as_int() {
        Some(n) => u16::try_from(n).ok().filter(|p| *p > 0),
        None => {
            let name = node.as_str()?;
            ports
                .iter()
                .find_map(|(n, p)| (*n == Some(name)).then_some(*p))
        }
    }
}

#[cfg(test)]
mod tests;
