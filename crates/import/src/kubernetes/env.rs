//! A container's `env`, and Kubernetes' expansion of `$(NAME)` and `$$` in its values and in
//! `command` and `args` (not in probes): `$(NAME)` becomes the value of the variable NAME of
//! `env` (for a value, one set before it), `$$` becomes `$`, and the rest is kept.

use std::collections::{HashMap, HashSet};

use crate::command::Words;
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

/// What `$(NAME)` expands to: the value of each variable set so far; `None` for one from
/// `valueFrom`, which is kept as written.
type Known = HashMap<String, Option<String>>;

/// The variables of `env` (the list at `path`), in order, their values expanded; the
/// entries that are not, noted.
pub(super) fn read(list: &[Node], path: &str, notes: &mut Notes) -> Vec<Var> {
    let mut vars: Vec<Var> = list
        .iter()
        .enumerate()
        .filter_map(|(i, node)| entry(node, &index(path, i), notes))
        .collect();
    // A variable set later is not expanded in Kubernetes either: no note for those.
    let literal: HashSet<String> = vars
        .iter()
        .filter(|v| v.value.is_some())
        .map(|v| v.name.clone())
        .collect();
    let mut known = Known::new();
    for var in &mut vars {
        if let Some(value) = &mut var.value {
            *value = expand_noted(value, &var.path, &known, &literal, notes);
        }
        known.insert(var.name.clone(), var.value.clone());
    }
    vars
}

/// `command` and `args` expanded with every variable of `env`.
pub(super) fn expand_words(words: &mut Words, vars: &[Var], notes: &mut Notes) {
    let known: Known = vars
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    for (path, word) in words.iter_mut() {
        *word = expand_noted(word, path, &known, &HashSet::new(), notes);
    }
}

/// `text` expanded, with a note for each `$(NAME)` expanded or kept as written (but those of
/// `unnoted`).
fn expand_noted(
    text: &str,
    path: &str,
    known: &Known,
    unnoted: &HashSet<String>,
    notes: &mut Notes,
) -> String {
    let (new, kept, expanded) = expand(text, known);
    if expanded {
        notes.changed(
            path,
            format!(
                "`{text}` became `{new}`: Kubernetes expands $(NAME) from the container's `env`, \
                 and so does the import"
            ),
        );
    }
    let kept: Vec<String> = kept
        .into_iter()
        .filter(|name| !name.is_empty() && !unnoted.contains(*name))
        .map(|name| format!("$({name})"))
        .collect();
    if !kept.is_empty() {
        notes.changed(
            path,
            format!(
                "`{new}` keeps {} as written: Kubernetes would expand a variable set by \
                 `valueFrom` or `envFrom`, which are not carried over; bulwark does not expand \
                 $(NAME)",
                kept.join(", ")
            ),
        );
    }
    new
}

/// Kubernetes' expansion of `text`; also the names kept as written, and whether any was
/// expanded.
fn expand<'a>(text: &'a str, known: &Known) -> (String, Vec<&'a str>, bool) {
    let mut out = String::with_capacity(text.len());
    let mut kept = Vec::new();
    let mut expanded = false;
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|r| r.split_once(')')) {
            match known.get(name) {
                Some(Some(value)) => {
                    out.push_str(value);
                    expanded = true;
                }
                _ => {
                    out.push_str(&rest[i..i + name.len() + 3]);
                    kept.push(name);
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    (out, kept, expanded)
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
