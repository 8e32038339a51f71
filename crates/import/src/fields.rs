//! A mapping being read: the keys an importer takes, and the rest, each of which becomes a
//! note. Reading through [`Fields`] is what makes "every field not carried over is
//! reported" hold without a list of unsupported keys to keep up to date.

use crate::note::Notes;
use crate::yaml::Node;

pub(crate) struct Fields<'a> {
    path: String,
    entries: &'a [(String, Node)],
    taken: Vec<bool>,
}

impl<'a> Fields<'a> {
    pub fn new(path: &str, entries: &'a [(String, Node)]) -> Fields<'a> {
        Fields {
            path: path.to_owned(),
            entries,
            taken: vec![false; entries.len()],
        }
    }

    /// `node` as a mapping to read, or `None` and a note saying what was there instead.
    pub fn of(node: &'a Node, path: &str, notes: &mut Notes) -> Option<Fields<'a>> {
        match node.as_map() {
            Some(entries) => Some(Fields::new(path, entries)),
            None => {
                let found = node.describe();
                notes.not_carried(path, format!("expected a mapping, found {found}"));
                None
            }
        }
    }

    /// The value of `key`, which counts as read from now on.
    pub fn take(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        self.taken[i] = true;
        Some(&self.entries[i].1)
    }

    /// The value of `key`, still to be read.
    pub fn peek(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The path of this mapping.
    pub fn here(&self) -> &str {
        &self.path
    }

    /// The path of `key` in this mapping.
    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Every key not taken, with its path and value.
    pub fn rest(&self) -> impl Iterator<Item = (String, &'a str, &'a Node)> + '_ {
        self.entries
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|((k, v), _)| (join(&self.path, k), k.as_str(), v))
    }

    /// A note for each key not taken, with `why` for it.
    pub fn note_rest(&self, notes: &mut Notes, why: impl Fn(&str, &Node) -> String) {
        for (path, key, value) in self.rest() {
            notes.not_carried(path, why(key, value));
        }
    }
}

/// `parent.key`; a key that is not a plain word is quoted (`labels["app.kubernetes.io/name"]`),
/// so a path reads back unambiguously.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (true, false) => format!("[{key:?}]"),
        (false, true) => format!("{parent}.{key}"),
        (false, false) => format!("{parent}[{key:?}]"),
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}
