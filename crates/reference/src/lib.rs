//! What the stack file's declarations ([`spec::declarations`], from
//! `crates/spec/src/keys.rs`) give users besides the reader: the reference
//! (`docs/stack-file.md`), a JSON Schema for editors (Taplo / Even Better TOML), and
//! `bulwark explain KEY`.

#![warn(missing_docs)]

use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use spec::{Key, NumberRange, Omitted, Shape, suggest};

/// Every key with its path (`services.NAME.expose.timeouts.connect`), in declaration
/// order, depth first.
pub fn keys() -> Vec<(String, Key)> {
    let mut out = Vec::new();
    walk("", &spec::declarations().keys, &mut out);
    out
}

/// Doc-comment lines joined into one paragraph.
fn doc_text(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

fn walk(prefix: &str, keys: &[Key], out: &mut Vec<(String, Key)>) {
    for key in keys {
        let path = format!("{prefix}{}", key.name);
        out.push((path.clone(), key.clone()));
        match &key.shape {
            Shape::Table(t) | Shape::Tables(t) => walk(&format!("{path}."), &t.keys, out),
            Shape::Map { key, value } => {
                if let Shape::Table(t) = value.as_ref() {
                    walk(&format!("{path}.{key}."), &t.keys, out);
                }
            }
            _ => {}
        }
    }
}

/// The type of a key, as the reference writes it.
fn type_text(shape: &Shape) -> String {
    match shape {
        Shape::String(s) if s.non_empty => "string, not empty".into(),
        Shape::String(_) => "string".into(),
        Shape::Bool => "boolean".into(),
        Shape::Int { min, max, unit } => {
            let top = if *max >= i64::from(u32::MAX) {
                "…".to_owned()
            } else {
                max.to_string()
            };
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(" {unit}")
            };
            format!("integer {min} to {top}{unit}")
        }
        Shape::Number(NumberRange {
            min,
            max,
            min_open,
            max_open,
            unit,
        }) => {
            let low = if *min_open { "more than " } else { "" };
            let high = if *max_open { "less than " } else { "" };
            let top = if *max >= 1e15 {
                "…".to_owned()
            } else {
                format!("{high}{max}")
            };
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(" {unit}")
            };
            format!("number {low}{min} to {top}{unit}")
        }
        Shape::Duration(d) => {
            let positive = if d.positive { " > 0" } else { "" };
            let min = match d.min.0 {
                min if min.is_zero() => String::new(),
                min => format!(", at least {}", humantime::format_duration(min)),
            };
            format!("duration{positive}{min}, at most {}", d.max.1)
        }
        Shape::Choice(names) => names
            .iter()
            .map(|n| format!("`\"{n}\"`"))
            .collect::<Vec<_>>()
            .join(", "),
        Shape::Text(form) => form.replace('"', "`").replace("``", "`"),
        Shape::List(item) => format!("array of {}", type_text(item)),
        Shape::Table(_) => "table".into(),
        Shape::Tables(_) => "array of tables".into(),
        Shape::Map { value, .. } => format!("table of {}", type_text(value)),
        Shape::CountOrPercent { max } => {
            format!("integer (0 to {max}) or percentage string such as `\"50%\"`")
        }
    }
}

/// The default of a key in `table` (its key in the parent, e.g. `startup`), as the
/// reference writes it.
fn default_text(d: Omitted, table: &str) -> String {
    match d {
        Omitted::Value(v) => format!("`{v}`"),
        Omitted::ByTable(special, _) if special.iter().any(|(t, _)| *t == table) => {
            format!("`{}`", d.text_for(table).unwrap_or_default())
        }
        Omitted::ByTable(special, otherwise) if table.is_empty() => {
            let s: Vec<String> = special.iter().map(|(t, v)| format!("{t}: `{v}`")).collect();
            format!("`{otherwise}` ({})", s.join(", "))
        }
        Omitted::ByTable(_, otherwise) => format!("`{otherwise}`"),
        Omitted::Required(_) => "**required**".into(),
        Omitted::Optional("") => "—".into(),
        Omitted::Optional(meaning) => meaning.into(),
        Omitted::Table => "(its keys' defaults)".into(),
    }
}

/// `docs/stack-file.md`: every key with its type, default and doc, table by table.
pub fn reference() -> String {
    reference_of(&keys())
}

/// The reference of `all` (every key with its path, as [`keys`] gives them).
pub fn reference_of(all: &[(String, Key)]) -> String {
    let mut out = String::from(
        "# The stack file: reference\n\n\
         <!-- Generated from crates/spec/src/keys.rs by `bulwark schema --markdown`; \
         do not edit. A test fails when this file is stale. -->\n\n\
         Every key bulwark reads, table by table. Durations are strings such as `\"250ms\"`, \
         `\"5s\"` or `\"2m\"`. Enumerated values are written in kebab-case (`\"round-robin\"`); \
         the older snake_case spellings still read, with a warning. Editors can complete and \
         check stack files with the JSON Schema printed by `bulwark schema` (Taplo / Even \
         Better TOML: put `#:schema ./bulwark.schema.json` on the first line).\n",
    );
    let mut tables: Vec<(String, &'static [&'static str])> =
        vec![(String::new(), spec::declarations().doc)];
    for (path, key) in all {
        match &key.shape {
            Shape::Table(t) => tables.push((path.clone(), t.doc)),
            Shape::Tables(t) => tables.push((path.clone(), t.doc)),
            Shape::Map { key: k, value } => {
                if let Shape::Table(t) = value.as_ref() {
                    tables.push((format!("{path}.{k}"), t.doc));
                }
            }
            _ => {}
        }
    }
    for (table, doc) in tables {
        let heading = match all.iter().find(|(p, _)| *p == table) {
            _ if table.is_empty() => "Top level".to_owned(),
            Some((_, k)) if matches!(k.shape, Shape::Tables(_)) => format!("`[[{table}]]`"),
            _ => format!("`[{table}]`"),
        };
        let _ = write!(out, "\n## {heading}\n\n{}\n\n", doc_text(doc));
        out.push_str("| key | type | default | since | meaning |\n|---|---|---|---|---|\n");
        let prefix = if table.is_empty() {
            String::new()
        } else {
            format!("{table}.")
        };
        for (path, key) in all {
            let Some(name) = path.strip_prefix(&prefix) else {
                continue;
            };
            if name.contains('.') || (table.is_empty() && path.contains('.')) {
                continue;
            }
            let _ = writeln!(
                out,
                "| `{name}` | {} | {} | {} | {} |",
                type_text(&key.shape).replace('|', "\\|"),
                default_text(key.default, table.rsplit('.').next().unwrap_or(""))
                    .replace('|', "\\|"),
                key.since,
                doc_text(key.doc).replace('|', "\\|"),
            );
        }
    }
    out
}

/// The JSON Schema (draft 7) of the stack file, for editors and validators.
pub fn json_schema() -> Value {
    let top = spec::declarations();
    let mut root = table_schema(top.doc, &top.keys, "");
    if let Value::Object(m) = &mut root {
        m.insert(
            "$schema".into(),
            json!("http://json-schema.org/draft-07/schema#"),
        );
        m.insert("title".into(), json!("bulwark stack file"));
    }
    root
}

/// `name` is the table's key in its parent: some defaults depend on it (`startup`).
fn table_schema(doc: &[&str], keys: &[Key], name: &str) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for key in keys {
        let mut s = shape_schema(&key.shape, key.name);
        if let Value::Object(m) = &mut s {
            m.insert("description".into(), json!(doc_text(key.doc)));
            if let Some(v) = key.default.text_for(name).and_then(toml_value) {
                m.insert("default".into(), v);
            }
        }
        if matches!(key.default, Omitted::Required(_)) {
            required.push(json!(key.name));
        }
        properties.insert(key.name.into(), s);
    }
    let mut t = json!({
        "type": "object",
        "description": doc_text(doc),
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        t["required"] = Value::Array(required);
    }
    t
}

/// A default written as in TOML, as JSON.
fn toml_value(text: &str) -> Option<Value> {
    let doc: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
    serde_json::to_value(doc.get("v")?).ok()
}

fn shape_schema(shape: &Shape, name: &str) -> Value {
    match shape {
        Shape::String(s) => json!({"type": "string", "minLength": u8::from(s.non_empty)}),
        Shape::Bool => json!({"type": "boolean"}),
        Shape::Int { min, max, .. } => json!({"type": "integer", "minimum": min, "maximum": max}),
        Shape::Number(NumberRange {
            min,
            max,
            min_open,
            max_open,
            ..
        }) => {
            let mut n = json!({"type": "number"});
            n[if *min_open {
                "exclusiveMinimum"
            } else {
                "minimum"
            }] = json!(min);
            if *max < 1e15 {
                n[if *max_open {
                    "exclusiveMaximum"
                } else {
                    "maximum"
                }] = json!(max);
            }
            n
        }
        Shape::Duration(_) => json!({
            "type": "string",
            "pattern": r"^\s*([0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+\s*)+$",
        }),
        Shape::Choice(names) => json!({"type": "string", "enum": names}),
        Shape::Text(_) => json!({"type": "string"}),
        Shape::List(item) => json!({"type": "array", "items": shape_schema(item, name)}),
        Shape::Table(t) => table_schema(t.doc, &t.keys, name),
        Shape::Tables(t) => json!({"type": "array", "items": table_schema(t.doc, &t.keys, name)}),
        Shape::CountOrPercent { max } => json!({"anyOf": [
            {"type": "integer", "minimum": 0, "maximum": max},
            {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?%$"},
        ]}),
        Shape::Map { value, .. } => json!({
            "type": "object",
            "additionalProperties": shape_schema(value, name),
        }),
    }
}

/// `bulwark explain KEY`: a key's doc, type, default and an example. `KEY` is a dotted
/// path, with service names or `NAME` (`services.web.expose.retries.attempts`), or its
/// unique end (`retries.attempts`). `Err` says what matched instead.
pub fn explain(query: &str) -> Result<String, String> {
    let all = keys();
    // `services.web.…` names a service; the reference writes `services.NAME.…`.
    let mut parts: Vec<&str> = query.trim().trim_matches(['[', ']']).split('.').collect();
    if parts.len() > 1 && parts[0] == "services" {
        parts[1] = "NAME";
    }
    if parts.len() > 3 && parts[2] == "env" {
        parts[3] = "NAME";
    }
    let wanted = parts.join(".");
    let exact = all.iter().find(|(p, _)| *p == wanted);
    let exact = exact.as_ref();
    let suffix: Vec<&(String, Key)> = all
        .iter()
        .filter(|(p, _)| p.ends_with(&format!(".{wanted}")))
        .collect();
    let (path, key) = match (exact, suffix.as_slice()) {
        (Some(found), _) | (None, [found]) => *found,
        (None, []) => {
            // Compare with the same number of trailing components: `timeouts.conect` is
            // close to `…timeouts.connect`, not to the whole path.
            let depth = wanted.split('.').count();
            let tails: Vec<&str> = all
                .iter()
                .map(|(p, _)| {
                    let start = p
                        .rmatch_indices('.')
                        .nth(depth - 1)
                        .map_or(0, |(i, _)| i + 1);
                    &p[start..]
                })
                .collect();
            let guess = suggest(&wanted, tails.iter().copied()).and_then(|tail| {
                let i = tails.iter().position(|t| *t == tail)?;
                Some(all[i].0.as_str())
            });
            return Err(match guess {
                Some(g) => format!("no key `{query}` in the stack file; did you mean `{g}`?"),
                None => format!("no key `{query}` in the stack file; see docs/stack-file.md"),
            });
        }
        (None, many) => {
            let paths: Vec<&str> = many.iter().map(|(p, _)| p.as_str()).collect();
            return Err(format!("`{query}` is ambiguous: {}", paths.join(", ")));
        }
    };
    let mut out = format!("{path}\n\n{}\n\n", doc_text(key.doc));
    let _ = writeln!(out, "type:    {}", type_text(&key.shape).replace('`', ""));
    let _ = writeln!(
        out,
        "default: {}",
        default_text(key.default, "").replace(['`', '*'], "")
    );
    let _ = writeln!(out, "since:   {}", key.since);
    if let Some(example) = example(&all, path, key) {
        let _ = write!(out, "\nexample:\n{example}");
    }
    Ok(out)
}

/// A few lines of TOML that set the key.
fn example(all: &[(String, Key)], path: &str, key: &Key) -> Option<String> {
    let value = match (&key.shape, key.default) {
        (_, Omitted::Required(e)) if e.contains('=') => e.split_once('=')?.1.trim().to_owned(),
        (Shape::Choice(names), _) => format!("\"{}\"", names.last()?),
        (_, d) if d.text_for("").is_some() => d.text_for("")?.to_owned(),
        (Shape::Bool, _) => "true".into(),
        (Shape::Duration(_), _) => "\"5s\"".into(),
        (Shape::Int { min, .. }, _) => (*min).max(1).to_string(),
        (Shape::Number(NumberRange { max, .. }), _) => format!("{}", max.min(100.0) / 2.0),
        (Shape::String(_) | Shape::Text(_), _) => "\"...\"".into(),
        (Shape::List(_), _) => "[]".into(),
        (Shape::CountOrPercent { .. }, _) => "1".into(),
        _ => return None,
    };
    let (table, name) = path.rsplit_once('.').unwrap_or(("", path));
    let table = table.replace("NAME", "web");
    let is_array = all
        .iter()
        .any(|(p, k)| p.replace("NAME", "web") == table && matches!(k.shape, Shape::Tables(_)));
    Some(match (table.is_empty(), is_array) {
        (true, _) => format!("{name} = {value}\n"),
        (false, true) => format!("[[{table}]]\n{name} = {value}\n"),
        (false, false) => format!("[{table}]\n{name} = {value}\n"),
    })
}
