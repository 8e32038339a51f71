//! Why a replica has no node, as data and as the one line `bulwark status` shows.

use std::fmt;

use super::{Refusal, Replica, Resources};

/// A wanted replica that no node can take, and why each node refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// The replica.
    pub replica: Replica,
    /// What it asks of a node.
    pub request: Resources,
    /// The nodes of the cluster, lost ones included.
    pub nodes: usize,
    /// Every node, under the first rule it breaks (in the order of [`Refusal`]).
    pub refused: Vec<(Refusal, Vec<String>)>,
}

/// Names shown per rule; the rest are counted.
const NAMES_SHOWN: usize = 5;

impl fmt::Display for Unplaced {
    /// `web/3 has no node: 0 of 4 nodes can take it: 1 is lost (c); 2 fail zone=a (a, b);
    /// 1 lacks room for 500 millicores and 256 MiB (d)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let service = &self.replica.service;
        if self.nodes == 0 {
            return write!(f, "{} has no node: the cluster has no nodes", self.replica);
        }
        write!(
            f,
            "{} has no node: 0 of {} node{} can take it",
            self.replica,
            self.nodes,
            plural(self.nodes)
        )?;
        for (i, (refusal, names)) in self.refused.iter().enumerate() {
            let n = names.len();
            let one = n == 1;
            let sep = if i == 0 { ": " } else { "; " };
            let why = match refusal {
                Refusal::Gone => format!("{} not in the cluster", if one { "is" } else { "are" }),
                Refusal::Lost => format!("{} lost", if one { "is" } else { "are" }),
                Refusal::Constraint(c) => format!("fail{} constraint {c}", s(one)),
                Refusal::AntiAffinity(other) if other == service => {
                    format!(
                        "run{} {service} already (anti-affinity with itself)",
                        s(one)
                    )
                }
                Refusal::AntiAffinity(other) => format!(
                    "run{} {other}, which must not share a node with {service} (anti-affinity)",
                    s(one)
                ),
                Refusal::MaxPerNode(max) => {
                    format!("run{} {max} of {service} already (max_per_node)", s(one))
                }
                Refusal::Capacity => format!(
                    "lack{} free capacity for its request of {}",
                    s(one),
                    request(self.request)
                ),
            };
            write!(f, "{sep}{n} {why} ({})", names_of(names))?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The verb's `s` for one node ("fails"), none for several ("fail").
fn s(one: bool) -> &'static str {
    if one { "s" } else { "" }
}

fn names_of(names: &[String]) -> String {
    let shown = names.iter().take(NAMES_SHOWN).cloned().collect::<Vec<_>>();
    match names.len().saturating_sub(NAMES_SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// `0.5 cores and 256 MiB`.
fn request(r: Resources) -> String {
    let cores = r.cpu_millis as f64 / 1000.0;
    let mib = r.memory as f64 / f64::from(1u32 << 20);
    format!("{cores} cores and {mib} MiB")
}
