//! A TOML table being read against its declaration.

use toml::Spanned;
use toml::de::DeTable;

use super::kinds::{At, Kind, read_default};
use super::{Field, Key, Omitted, Section};
use crate::problem::{Problems, Span, hint};

/// A table of the file (or one left out: `map` is `None`, and every key takes its default).
pub(crate) struct Table<'a, 'i> {
    pub map: Option<&'a DeTable<'i>>,
    pub span: Span,
    /// Dotted path: `services.web.expose`; empty at the top level.
    pub path: String,
    /// Its key in the parent (`startup`): some defaults depend on it.
    pub name: String,
    /// How messages name it: `[services.web]`, `[[services.web.slo]]`, `at the top level`.
    pub label: String,
}

impl<'a, 'i> Table<'a, 'i> {
    /// The table at `path`, named `[path]` in messages.
    pub fn new(map: Option<&'a DeTable<'i>>, span: Span, path: String, name: &str) -> Self {
        Table {
            map,
            span,
            label: format!("[{path}]"),
            path,
            name: name.to_owned(),
        }
    }

    /// The keys written, in file order, with the spans of the key and of its value. Every
    /// key not in `known` is reported (not just the first), at the key.
    pub fn written(&self, known: &[&str], p: &mut Problems) -> Vec<(String, Span, Span)> {
        let place = if self.path.is_empty() {
            self.label.clone()
        } else {
            format!("in {}", self.label)
        };
        let mut keys = Vec::new();
        for (k, v) in self.map.iter().flat_map(|m| m.iter()) {
            let key: &str = k.get_ref();
            if !known.contains(&key) {
                let hint = hint(key, known, "expected one of");
                p.push(k.span(), format!("unknown field `{key}` {place}{hint}"));
            }
            keys.push((key.to_owned(), k.span(), v.span()));
        }
        keys.sort_by_key(|(_, s, _)| s.start);
        keys
    }

    /// Reads `key` as `kind`; left out, it takes `omitted`.
    pub fn read<K: Kind>(
        &self,
        key: &str,
        kind: &K,
        omitted: Omitted,
        p: &mut Problems,
    ) -> Field<K::Out> {
        // `services.web.expose.listen`; a key of the top level is its own path.
        let path = format!("{}.{key}", self.path);
        let path = path.trim_start_matches('.');
        let what = &format!("`{key}`");
        let at = At { key, what, path };
        if let Some(v) = self.map.and_then(|m| m.get(key)) {
            return match kind.read(v, &at, p) {
                Some(x) => Field::Given(Spanned::new(v.span(), x)),
                None => Field::Invalid,
            };
        }
        // A table left out as a whole is not missing its keys.
        if let Omitted::Required(example) = omitted
            && self.map.is_some()
        {
            let how = if example.is_empty() {
                format!("expected {}", kind.shape().expected())
            } else {
                format!("for example {example}")
            };
            p.push(
                self.span.clone(),
                format!("missing required field `{key}` in {}; {how}", self.label),
            );
        }
        // None for a required or optional key. A default that does not read is a mistake
        // of its declaration, caught in debug builds ([`read_defaults`]).
        let mut wrong = Problems::default();
        let default = read_default(kind, omitted, &self.name, &at, &mut wrong);
        let wrong = wrong.into_sorted();
        debug_assert!(
            wrong.is_empty(),
            "the default of `{path}` does not read: {wrong:?}"
        );
        default.map_or(Field::Absent, Field::Default)
    }
}

/// Reads the table `S` left out, under every table name its defaults depend on
/// ([`Omitted::ByTable`]), so that in debug builds a default that does not read as its
/// key's kind fails [`Table::read`]'s assertion. Building the declarations calls it for
/// every table (a unit test builds them): a default is otherwise read only when its key is
/// left out, where a failure would go unnoticed.
pub(crate) fn read_defaults<S: Section>(keys: &[Key]) {
    let by_table = keys.iter().filter_map(|k| match k.default {
        Omitted::ByTable(special, _) => Some(special),
        _ => None,
    });
    let names = by_table.flatten().map(|(table, _)| *table).chain([""]);
    for name in names.filter(|_| cfg!(debug_assertions)) {
        let path = format!("{}({name})", std::any::type_name::<S>());
        S::read(
            &Table::new(None, 0..0, path, name),
            &mut Problems::default(),
        );
    }
}
