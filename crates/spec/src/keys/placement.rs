//! `[services.NAME.placement]`: where a cluster's scheduler may run the service's replicas.

use toml::Spanned;

use crate::model::{Constraint, ConstraintOp};
use crate::schema::Omitted::Optional;
use crate::schema::{int, list, spanned, string, text};
use crate::section;

section! {
    /// Where the scheduler runs the service's replicas in cluster mode (`bulwark agent`
    /// on several machines); `bulwark up` on one machine ignores it. A node takes a
    /// replica only if it is alive, every constraint holds on its labels, it runs no
    /// replica of a service this one is anti-affine with (either side may say so),
    /// `max_per_node` allows one more, and its capacity covers the requests of all its
    /// replicas: a replica requests its `[services.NAME.resources]` `memory` and `cpu`
    /// (nothing when they are left out). Among those nodes it goes where `spread` says.
    /// A running replica is never moved to even things out: only replicas of a lost node,
    /// or of a node that now breaks one of these rules, are placed again.
    pub(crate) struct PlacementTable {
        /// Spread domains, most important first: `node` (the machine itself) or the name
        /// of a node label (`--labels zone=a`). A new replica goes to the allowed node
        /// whose first domain holds the fewest of the service's replicas, on a tie to the
        /// one whose next domain does, then to the first by name; nodes without the label
        /// count as one domain. `[]` packs replicas onto the first nodes by name.
        spread: Vec<Spanned<String>> =
            list(spanned(text("`node` or a label name such as \"zone\"", label_name))),
            r#"["node", "zone"]"#;
        /// Rules on a node's labels, all of which must hold: `LABEL=VALUE` (the node has
        /// the label with this value) or `LABEL!=VALUE` (it lacks the label, or has another
        /// value). `node` is the node's name: `"node!=db-1"`.
        constraints: Vec<Spanned<Constraint>> = list(spanned(text(
            "a constraint such as \"zone=a\" or \"disk!=hdd\"",
            constraint,
        ))),
            Optional("any node");
        /// Services whose replicas must not run on the same node as this one's (in both
        /// directions). Naming the service itself allows one of its replicas per node.
        anti_affinity: Vec<Spanned<String>> = list(spanned(string().non_empty())), Optional("");
        /// Replicas of this service on one node at most.
        max_per_node: u32 = int(1, 1000), Optional("no limit");
    }
}

/// Label names as Kubernetes spells them: ASCII letters, digits, `-`, `_`, `.` and `/`,
/// starting and ending with a letter or digit, at most 63 characters.
fn label_name(s: &str) -> Result<String, String> {
    label_word(s, "label").map(str::to_owned)
}

fn label_word<'a>(s: &'a str, what: &str) -> Result<&'a str, String> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if s.is_empty() {
        return Err(format!(" (the {what} is empty)"));
    }
    if s.len() > 63 {
        return Err(format!(" (the {what} is longer than 63 characters)"));
    }
    if let Some(c) = s.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            " ({c:?} in the {what}: use ASCII letters, digits, `-`, `_`, `.` and `/`)"
        ));
    }
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err(format!(
            " (the {what} must start and end with a letter or digit)"
        ));
    }
    Ok(s)
}

/// `LABEL=VALUE` or `LABEL!=VALUE`, with optional spaces around the operator.
fn constraint(s: &str) -> Result<Constraint, String> {
    let (label, op, value) = if let Some((l, v)) = s.split_once("!=") {
        (l, ConstraintOp::IsNot, v)
    } else if let Some((l, v)) = s.split_once('=') {
        (l, ConstraintOp::Is, v)
    } else {
        return Err(" (no `=` or `!=` between the label and the value)".to_owned());
    };
    let value = value.trim();
    if value.starts_with('=') {
        return Err(format!(
            " (`{}=` is not an operator: write `=` or `!=`)",
            if op == ConstraintOp::Is { "=" } else { "!=" }
        ));
    }
    Ok(Constraint {
        label: label_word(label.trim(), "label")?.to_owned(),
        op,
        value: label_word(value, "value")?.to_owned(),
    })
}
