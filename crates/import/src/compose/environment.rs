//! `environment`, as a list of `NAME=value` or a mapping, as the service's `env`.

use crate::fields::{index, join};
use crate::note::Notes;
use crate::port;
use crate::stack::Service;
use crate::yaml::Node;

/// Sets `s.env`; returns whether the container port was made `{port}` in a value.
pub(super) fn convert(
    node: &Node,
    path: &str,
    port: Option<u16>,
    s: &mut Service,
    notes: &mut Notes,
) -> bool {
    let Some(vars) = variables(node, path, notes) else {
        return false;
    };
    let mut used_port = false;
    for (p, name, value) in vars {
        if name.is_empty() || name.contains(['=', '\0']) {
            notes.not_carried(p, format!("{name:?} is not a variable name"));
            continue;
        }
        let Some(mut value) = value else {
            notes.not_carried(
                p,
                format!(
                    "`{name}` has no value: Compose takes it from the shell it runs in; each \
                     replica inherits it from bulwark's environment instead"
                ),
            );
            continue;
        };
        if value.contains('\0') {
            notes.not_carried(p, "a value cannot hold a NUL character");
            continue;
        }
        super::dollars(&mut value, &p, notes);
        let (value, used) = port::substitute_one(p, value, port, notes);
        used_port |= used;
        s.env.insert(name, value);
    }
    used_port
}

/// `(path, name, value)` of each variable; `None` (noted) when `node` is neither a list nor
/// a mapping.
fn variables(
    node: &Node,
    path: &str,
    notes: &mut Notes,
) -> Option<Vec<(String, String, Option<String>)>> {
    let mut vars = Vec::new();
    if let Some(items) = node.as_seq() {
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            match item.as_str() {
                Some(kv) => match kv.split_once('=') {
                    Some((k, v)) => vars.push((p, k.to_owned(), Some(v.to_owned()))),
                    None => vars.push((p, kv.to_owned(), None)),
                },
                None => notes.not_carried(
                    p,
                    format!("expected `NAME=value`, found {}", item.describe()),
                ),
            }
        }
    } else if let Some(entries) = node.as_map() {
        for (k, v) in entries {
            let p = join(path, k);
            match v {
                Node::Scalar(_) => vars.push((p, k.clone(), v.as_str().map(str::to_owned))),
                _ => notes.not_carried(p, format!("expected a string, found {}", v.describe())),
            }
        }
    } else {
        notes.not_carried(
            path,
            format!("expected a list or a mapping, found {}", node.describe()),
        );
        return None;
    }
    Some(vars)
}
