//! A TOML table being read against its declaration.

use toml::Spanned;
use toml::de::DeTable;

use super::kinds::{At, Kind, read_default};
use super::{Field, Omitted};
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
    pub fn new(map: Option<&'a DeTable<'i>>, span: Span, path: String, name: &str) -> Self {
        let label = if path.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("[{path}]")
        };
        Table {
            map,
            span,
            path,
            name: name.to_owned(),
            label,
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
        let path = &if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
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
        // None for a required or optional key; declared defaults read cleanly (a unit test
        // checks every one).
        let default = read_default(kind, omitted, &self.name, &at, &mut Problems::default());
        default.map_or(Field::Absent, Field::Default)
    }
}
