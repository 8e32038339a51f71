//! `depends_on`, as a list of services or a mapping with conditions.

use std::collections::HashMap;

use crate::fields::{Fields, index, join};
use crate::note::Notes;
use crate::stack::Service;
use crate::yaml::Node;

/// A dependency as written: its path, the service it names and its `condition`.
type Dependency<'a> = (String, &'a str, Option<&'a str>);

/// Sets `s.depends_on`. `renamed` maps every service of the file to its name in the stack,
/// `None` when it is not imported.
pub(super) fn convert(
    node: &Node,
    path: &str,
    renamed: &HashMap<&str, Option<&str>>,
    s: &mut Service,
    notes: &mut Notes,
) {
    for (p, dep, condition) in dependencies(node, path, notes) {
        let target = match renamed.get(dep) {
            Some(Some(target)) => *target,
            Some(None) => {
                notes.not_carried(
                    p,
                    format!(
                        "`{dep}` is not imported (see services.{dep}); the dependency is dropped"
                    ),
                );
                continue;
            }
            None => {
                notes.not_carried(
                    p,
                    format!("there is no service `{dep}`; the dependency is dropped"),
                );
                continue;
            }
        };
        match condition.unwrap_or("service_started") {
            "service_healthy" => {}
            "service_started" => notes.changed(
                p,
                format!("`{dep}` must have a ready replica before this service starts (Compose: only started)"),
            ),
            "service_completed_successfully" => {
                notes.not_carried(
                    p,
                    format!("bulwark has no run-to-completion services; `{dep}` is not waited for"),
                );
                continue;
            }
            other => {
                notes.not_carried(p, format!("unknown condition {other:?}; the dependency is dropped"));
                continue;
            }
        }
        if !s.depends_on.iter().any(|d| d == target) {
            s.depends_on.push(target.to_owned());
        }
    }
}

/// The dependencies of a list or a mapping; the rest noted.
fn dependencies<'a>(node: &'a Node, path: &str, notes: &mut Notes) -> Vec<Dependency<'a>> {
    let mut deps = Vec::new();
    if let Some(items) = node.as_seq() {
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(d) => deps.push((index(path, i), d, None)),
                None => notes.not_carried(
                    index(path, i),
                    format!("expected a service name, found {}", item.describe()),
                ),
            }
        }
    } else if let Some(entries) = node.as_map() {
        for (dep, spec) in entries {
            let p = join(path, dep);
            let condition = condition(spec, &p, notes);
            deps.push((p, dep.as_str(), condition));
        }
    } else {
        notes.not_carried(
            path,
            format!("expected a list or a mapping, found {}", node.describe()),
        );
    }
    deps
}

/// The `condition` of one dependency of the long syntax; its other keys noted.
fn condition<'a>(spec: &'a Node, path: &str, notes: &mut Notes) -> Option<&'a str> {
    if let Some(fields) = spec.as_map() {
        let mut f = Fields::new(path, fields);
        let condition = f.take("condition").map(|c| c.as_str().unwrap_or_default());
        f.note_rest(notes, |key, _| match key {
            "restart" => {
                "bulwark does not restart a service when its dependency restarts".to_owned()
            }
            "required" => "every dependency is required in bulwark".to_owned(),
            _ => "not a `depends_on` setting bulwark knows".to_owned(),
        });
        condition
    } else {
        if !spec.is_null() {
            notes.not_carried(
                path,
                format!(
                    "expected a mapping with `condition`, found {}",
                    spec.describe()
                ),
            );
        }
        None
    }
}
