//! `[services.NAME.placement]`: spread domains once each, constraints that some node could
//! satisfy, anti-affinity with services that exist.

use toml::Spanned;

use crate::keys::ServiceTable;
use crate::keys::placement::PlacementTable;
use crate::model::{Constraint, ConstraintOp, PlacementRules};
use crate::problem::{Problems, suggest};
use crate::schema::Field;

/// The service's rules; the defaults when the table is left out (or was invalid, which is
/// reported already).
pub(super) fn placement(field: &Field<PlacementTable>, p: &mut Problems) -> PlacementRules {
    let Some(t) = field.given().map(Spanned::get_ref) else {
        return PlacementRules::default();
    };
    let spread = t.spread.value().map(Vec::as_slice).unwrap_or_default();
    super::duplicate_names(
        spread.iter(),
        |d| {
            format!(
                "{}: `{d}` is listed twice in `spread`; list each domain once",
                t.label
            )
        },
        p,
    );
    let constraints = t.constraints.value().map(Vec::as_slice).unwrap_or_default();
    contradictions(&t.label, constraints, p);
    let anti = t
        .anti_affinity
        .value()
        .map(Vec::as_slice)
        .unwrap_or_default();
    super::duplicate_names(
        anti.iter(),
        |s| format!("{}: `{s}` is listed twice in `anti_affinity`", t.label),
        p,
    );
    let plain = |v: &[Spanned<String>]| v.iter().map(|s| s.get_ref().clone()).collect();
    PlacementRules {
        spread: plain(spread),
        constraints: constraints.iter().map(|c| c.get_ref().clone()).collect(),
        anti_affinity: plain(anti),
        max_per_node: t.max_per_node.get(),
    }
}

/// Two constraints no node can satisfy together (`zone=a` and `zone=b`, or `zone=a` and
/// `zone!=a`) would leave every replica unplaced on any cluster: refused here, at the
/// second.
fn contradictions(label: &str, constraints: &[Spanned<Constraint>], p: &mut Problems) {
    for (i, later) in constraints.iter().enumerate() {
        let b = later.get_ref();
        let clash = constraints[..i].iter().map(Spanned::get_ref).find(|a| {
            a.label == b.label
                && match (a.op, b.op) {
                    (ConstraintOp::Is, ConstraintOp::Is) => a.value != b.value,
                    (ConstraintOp::IsNot, ConstraintOp::IsNot) => false,
                    _ => a.value == b.value,
                }
        });
        if let Some(a) = clash {
            p.push(
                later.span(),
                format!(
                    "{label}: constraints \"{a}\" and \"{b}\" cannot both hold on one node, so \
                     no replica could ever be placed; remove one of them"
                ),
            );
        }
    }
}

/// Every `anti_affinity` entry names a service of the stack.
pub(super) fn anti_affinity(
    services: &[(Spanned<String>, Spanned<ServiceTable>)],
    p: &mut Problems,
) {
    let names: Vec<&str> = services.iter().map(|(n, _)| n.get_ref().as_str()).collect();
    for (name, s) in services {
        let Some(t) = s.get_ref().placement.value() else {
            continue;
        };
        for other in t.anti_affinity.value().into_iter().flatten() {
            let o = other.get_ref().as_str();
            if names.contains(&o) {
                continue;
            }
            let mut msg = format!(
                "[services.{}.placement] anti_affinity names unknown service `{o}`",
                name.get_ref()
            );
            if let Some(m) = suggest(o, names.iter().copied()) {
                msg.push_str(&format!("; did you mean `{m}`?"));
            }
            p.push(other.span(), msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Constraint, ConstraintOp, PlacementRules};

    fn load(extra: &str) -> Result<crate::Stack, String> {
        let toml = format!(
            "[services.db]\nrun = [\"sleep\", \"60\"]\n[services.web]\nrun = [\"sleep\", \"60\"]\n{extra}"
        );
        crate::parse(&toml, std::path::Path::new("stack.toml")).map_err(|e| e.to_string())
    }

    fn web(extra: &str) -> Result<PlacementRules, String> {
        let stack = load(&format!("[services.web.placement]\n{extra}\n"))?;
        Ok(stack.service("web").expect("web").placement.clone())
    }

    #[test]
    fn a_placement_table_reads_into_rules_and_its_absence_is_node_then_zone() {
        let plain = load("").expect("valid");
        let rules = &plain.service("web").expect("web").placement;
        assert_eq!(rules, &PlacementRules::default());
        assert_eq!(rules.spread, ["node", "zone"]);

        let rules = web(
            "spread = [\"rack\", \"node\"]\nconstraints = [\"zone=a\", \"disk != hdd\", \
             \"node!=db-1\", \"topology.kubernetes.io/zone=eu-1a\"]\nanti_affinity = [\"db\", \
             \"web\"]\nmax_per_node = 2",
        )
        .expect("valid");
        assert_eq!(rules.spread, ["rack", "node"]);
        let shown: Vec<String> = rules
            .constraints
            .iter()
            .map(Constraint::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "zone=a",
                "disk!=hdd",
                "node!=db-1",
                "topology.kubernetes.io/zone=eu-1a"
            ]
        );
        assert_eq!(rules.constraints[1].op, ConstraintOp::IsNot);
        assert_eq!(rules.anti_affinity, ["db", "web"]);
        assert_eq!(rules.max_per_node, Some(2));
        assert!(web("spread = []").expect("packing").spread.is_empty());
    }

    /// Each mistake is reported at its element, FILE:LINE:COL, saying what to write.
    #[test]
    fn bad_rules_are_errors_at_the_element_that_is_wrong() {
        for (extra, bad, want) in [
            (
                "constraints = [\"zone=a\", \"zone==b\"]",
                "\"zone==b\"",
                "`==` is not an operator",
            ),
            (
                "constraints = [\"zone\"]",
                "\"zone\"",
                "no `=` or `!=` between",
            ),
            ("constraints = [\"=a\"]", "\"=a\"", "the label is empty"),
            (
                "constraints = [\"zone=\"]",
                "\"zone=\"",
                "the value is empty",
            ),
            (
                "constraints = [\"zone=a b\"]",
                "\"zone=a b\"",
                "' ' in the value",
            ),
            (
                "constraints = [\"zone=a\", \"zone=b\"]",
                "\"zone=b\"",
                "cannot both hold",
            ),
            (
                "constraints = [\"zone=a\", \"zone!=a\"]",
                "\"zone!=a\"",
                "cannot both hold",
            ),
            (
                "spread = [\"node\", \"node\"]",
                "\"node\"]",
                "`node` is listed twice",
            ),
            (
                "spread = [\"-zone\"]",
                "\"-zone\"",
                "start and end with a letter or digit",
            ),
            (
                "anti_affinity = [\"dbb\"]",
                "\"dbb\"",
                "unknown service `dbb`; did you mean `db`?",
            ),
            (
                "anti_affinity = [\"db\", \"db\"]",
                "\"db\"]",
                "`db` is listed twice",
            ),
            ("max_per_node = 0", "0", "between 1 and 1000"),
            ("constraints = \"zone=a\"", "\"zone=a\"", "must be an array"),
        ] {
            let err = web(extra).expect_err(extra);
            let col = extra.rfind(bad).expect("bad part") + 1;
            assert!(
                err.contains(&format!("stack.toml:6:{col}")),
                "{extra}: {err}"
            );
            assert!(err.contains(want), "{extra}: {err}");
        }
        let err = web("spred = [\"zone\"]").expect_err("typo");
        assert!(err.contains("spread"), "{err}");
    }
}
