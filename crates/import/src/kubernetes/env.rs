//! A container's `env`.

use crate::fields::{Fields, index, join};
use crate::note::Notes;
use crate::yaml::Node;

/// A variable of `env`.
pub(super) struct Var {
    /// The path of its `value`.
    pub path: String,
    pub name: String,
    /// `None` when it comes from `valueFrom`, which is not carried over.
    pub value: Option<String>,
}

/// The variables of `env` (the list at `path`), in order; the entries that are not noted.
pub(super) fn read(list: &[Node], path: &str, notes: &mut Notes) -> Vec<Var> {
    list.iter()
        .enumerate()
        .filter_map(|(i, node)| entry(node, &index(path, i), notes))
        .collect()
}

/// One entry: `{name, value}`, `{name, valueFrom}` or `{name}` (the empty string, as in
/// Kubernetes).
fn entry(node: &Node, path: &str, notes: &mut Notes) -> Option<Var> {
    let Some(entries) = node.as_map() else {
        notes.not_carried(
            path,
            format!("expected `name` and `value`, found {}", node.describe()),
        );
        return None;
    };
    let mut f = Fields::new(path, entries);
    let name = f.take("name").and_then(Node::as_str);
    let value = f.take("value");
    let from = f.take("valueFrom").is_some();
    f.note_rest(notes, |_, _| "not an `env` field bulwark knows".to_owned());
    let Some(name) = name.filter(|n| !n.is_empty() && !n.contains(['=', '\0'])) else {
        notes.not_carried(path, "it has no usable `name`");
        return None;
    };
    if from {
        notes.not_carried(
            join(path, "valueFrom"),
            "bulwark reads no ConfigMaps, Secrets or pod fields; write the value",
        );
    }
    let value_path = join(path, "value");
    let text = match value {
        None if from => None,
        None => Some(""),
        Some(v) if v.is_null() => Some(""),
        Some(v) => match v.as_str() {
            Some(t) => Some(t),
            None => {
                notes.not_carried(
                    value_path,
                    format!("expected a string, found {}", v.describe()),
                );
                return None;
            }
        },
    };
    if text.is_some_and(|t| t.contains('\0')) {
        notes.not_carried(value_path, "a value cannot hold a NUL character");
        return None;
    }
    Some(Var {
        path: value_path,
        name: name.to_owned(),
        value: text.map(str::to_owned),
    })
}
