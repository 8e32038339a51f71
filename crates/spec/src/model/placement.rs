//! `[services.NAME.placement]`, after validation: the scheduler's rules for one service.

use std::fmt;

/// Where a cluster's scheduler may run a service's replicas, and how it spreads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRules {
    /// Spread domains, most important first: `node` or a label name. No name twice.
    pub spread: Vec<String>,
    /// All must hold on a node's labels. No two contradict each other.
    pub constraints: Vec<Constraint>,
    /// Services whose replicas must not share a node with this one's: existing services,
    /// each once (this one itself allowed).
    pub anti_affinity: Vec<String>,
    /// Replicas of the service on one node at most (≥ 1).
    pub max_per_node: Option<u32>,
}

impl PlacementRules {
    /// The spread domain, and constraint label, that is the node itself (its name).
    pub const NODE: &'static str = "node";
}

impl Default for PlacementRules {
    /// Spread over nodes, then zones; any node.
    fn default() -> Self {
        PlacementRules {
            spread: vec![Self::NODE.to_owned(), "zone".to_owned()],
            constraints: Vec::new(),
            anti_affinity: Vec::new(),
            max_per_node: None,
        }
    }
}

/// How a [`Constraint`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintOp {
    /// `LABEL=VALUE`: the node has the label, with this value.
    Is,
    /// `LABEL!=VALUE`: the node lacks the label or has another value.
    IsNot,
}

/// A rule on a node's labels: `zone=a`, `disk!=hdd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The label (`node`: the node's name).
    pub label: String,
    /// The comparison.
    pub op: ConstraintOp,
    /// The value.
    pub value: String,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            ConstraintOp::Is => "=",
            ConstraintOp::IsNot => "!=",
        };
        write!(f, "{}{op}{}", self.label, self.value)
    }
}
