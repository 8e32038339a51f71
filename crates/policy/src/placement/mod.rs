//! The cluster scheduler's decision: which node runs each replica.
//!
//! [`place`] takes the nodes (labels, alive or lost, capacity), the services (replicas
//! wanted, placement rules, the requests of one replica) and the current placement, and
//! returns the new placement, the moves from the old one to it, and for every replica it
//! cannot place the reason ([`Unplaced`], which prints as one line for `bulwark status`).
//!
//! Hard rules, never broken: a node is alive; the service's `constraints` hold on its
//! labels; no replica of a service the service is anti-affine with runs there (either side
//! may declare it, as Kubernetes' required anti-affinity is honoured both ways);
//! `max_per_node`; the node's capacity covers the requests of all its replicas. The soft
//! rule is `spread`: a new replica goes where the service has the fewest replicas, by the
//! first spread domain (the node), then the next (a label such as `zone`), then the node's
//! name — Kubernetes' topology spread, kept even greedily rather than by a `maxSkew`.
//!
//! **Stability**: a replica on an alive node that breaks no hard rule stays where it is.
//! Only replicas of lost (or vanished) nodes, replicas that break a rule (a constraint
//! changed, a node's capacity shrank, two anti-affine replicas met), and replicas beyond a
//! lowered count move; a node joining moves nothing, it only takes new replicas. Spread is
//! thus even for what is placed in one decision, not rebalanced afterwards (Nomad's
//! behaviour too: no churn is worth a perfectly even map).
//!
//! Cost: O(S × N × C) to read the constraints (S services, N nodes, C constraints each),
//! then O(R × N × (K + A)) for R replicas to place (K spread domains, A anti-affine
//! services), and O(N) for every service that cannot place all its replicas (the reason is
//! worked out once per service: later replicas only find the nodes fuller). Memory O(S × N).
//! `tests::a_thousand_nodes_and_ten_thousand_replicas_are_placed_within_a_bound` measures it.

mod explain;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub use explain::Unplaced;

/// The spread domain and constraint label that means the node itself (its name).
pub const NODE: &str = "node";

/// What a replica asks for, or what a node offers: millicores and bytes of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory: u64,
}

impl Resources {
    /// A node that declared no capacity: nothing ever fills it.
    pub const UNLIMITED: Resources = Resources {
        cpu_millis: u64::MAX,
        memory: u64::MAX,
    };

    /// `self + more` fits within `capacity`.
    fn fits(self, more: Resources, capacity: Resources) -> bool {
        self.cpu_millis.saturating_add(more.cpu_millis) <= capacity.cpu_millis
            && self.memory.saturating_add(more.memory) <= capacity.memory
    }

    fn add(&mut self, more: Resources) {
        self.cpu_millis = self.cpu_millis.saturating_add(more.cpu_millis);
        self.memory = self.memory.saturating_add(more.memory);
    }
}

/// A machine of the cluster. Names are unique (a second node of the same name is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its name (`bulwark agent --node`).
    pub name: String,
    /// Its labels (`--labels zone=a,disk=ssd`).
    pub labels: BTreeMap<String, String>,
    /// Its lease is held; a lost node runs nothing.
    pub alive: bool,
    /// What its replicas' requests may add up to.
    pub capacity: Resources,
}

impl Node {
    /// The value of `label` here: [`NODE`] is the name, a label the node lacks is `None`.
    pub fn label(&self, label: &str) -> Option<&str> {
        if label == NODE {
            Some(&self.name)
        } else {
            self.labels.get(label).map(String::as_str)
        }
    }
}

/// How a constraint compares a label with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `label=value`: the node has the label, with this value.
    Is,
    /// `label!=value`: the node lacks the label, or has another value.
    IsNot,
}

/// A hard rule on a node's labels: `zone=a`, `disk!=hdd`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Constraint {
    /// The label ([`NODE`]: the node's name).
    pub label: String,
    /// The comparison.
    pub op: Op,
    /// The value compared with.
    pub value: String,
}

impl Constraint {
    /// Whether `node` satisfies it.
    pub fn allows(&self, node: &Node) -> bool {
        let here = node.label(&self.label) == Some(self.value.as_str());
        here == (self.op == Op::Is)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Is => "=",
            Op::IsNot => "!=",
        };
        write!(f, "{}{op}{}", self.label, self.value)
    }
}

/// A service's placement rules (`[services.NAME.placement]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Spread domains, most important first: [`NODE`] or a label name.
    pub spread: Vec<String>,
    /// All must hold on a node.
    pub constraints: Vec<Constraint>,
    /// Services whose replicas must not share a node with this one's.
    pub anti_affinity: Vec<String>,
    /// Replicas of this service on one node at most.
    pub max_per_node: Option<u32>,
}

impl Default for Rules {
    /// Spread over nodes, then zones; no constraint.
    fn default() -> Self {
        Rules {
            spread: vec![NODE.to_owned(), "zone".to_owned()],
            constraints: Vec::new(),
            anti_affinity: Vec::new(),
            max_per_node: None,
        }
    }
}

/// A service to place. Names are unique (a second service of the same name is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Replicas wanted, indexed `0..replicas`.
    pub replicas: u32,
    /// What one replica takes of a node's capacity.
    pub request: Resources,
    /// Where its replicas may go and how they spread.
    pub rules: Rules,
}

/// One replica: `web/2`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Replica {
    /// Its service.
    pub service: String,
    /// Its index, `0..replicas`.
    pub index: u32,
}

impl fmt::Display for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.index)
    }
}

/// Which node runs each replica.
pub type Placement = BTreeMap<Replica, String>;

/// Why a node cannot take a replica, in the order they are checked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// The node is not in the cluster (any more).
    Gone,
    /// The node's lease expired.
    Lost,
    /// This constraint does not hold on it.
    Constraint(Constraint),
    /// It runs a replica of this service, and one of the two is anti-affine with the other.
    AntiAffinity(String),
    /// It already runs `max_per_node` replicas of the service.
    MaxPerNode(u32),
    /// Its capacity, less its replicas' requests, is short of the replica's request.
    Capacity,
}

/// Why a replica is where it now is, or no longer anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It was not placed before.
    New,
    /// Its node can no longer hold it.
    Refused(Refusal),
    /// Its index is beyond the replicas now wanted (or its service is gone): it stops.
    ScaledDown,
}

/// One change between the current placement and the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The replica.
    pub replica: Replica,
    /// Where it was (`None`: nowhere).
    pub from: Option<String>,
    /// Where it goes (`None`: nowhere, stopped or unplaced).
    pub to: Option<String>,
    /// Why it moves.
    pub why: Why,
}

/// The decision: the new placement, how to get there, and what could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Every placed replica's node.
    pub placement: Placement,
    /// Every replica whose node changes (including to or from none), by replica.
    pub moves: Vec<Move>,
    /// Every wanted replica without a node, by replica, with the reason.
    pub unplaced: Vec<Unplaced>,
}

/// Places every wanted replica, keeping every current one whose node still may hold it.
/// Deterministic: the same input (in any order of nodes) gives the same decision.
pub fn place(nodes: &[Node], services: &[Service], current: &Placement) -> Decision {
    let mut state = State::new(nodes, services);
    let mut decision = Decision::default();
    let mut pending: Vec<HashMap<u32, (String, Refusal)>> = vec![HashMap::new(); state.svc.len()];
    for (replica, node) in current {
        match state.keep(replica, node) {
            Kept::Yes => {
                decision.placement.insert(replica.clone(), node.clone());
            }
            Kept::Refused(s, why) => {
                pending[s].insert(replica.index, (node.clone(), why));
            }
            Kept::ScaledDown => decision.moves.push(Move {
                replica: replica.clone(),
                from: Some(node.clone()),
                to: None,
                why: Why::ScaledDown,
            }),
        }
    }
    for (s, pending) in pending.iter_mut().enumerate() {
        state.fill(s, pending, &mut decision);
    }
    decision.moves.sort_by(|a, b| a.replica.cmp(&b.replica));
    decision.unplaced.sort_by(|a, b| a.replica.cmp(&b.replica));
    decision
}

/// Why one node refuses one replica, cheaply (no allocation in the hot loop); a
/// [`Refusal`] is made of it only to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    Lost,
    /// Index into the service's constraints.
    Constraint(usize),
    /// The other service's index.
    AntiAffinity(usize),
    MaxPerNode,
    Capacity,
}

enum Kept {
    Yes,
    Refused(usize, Refusal),
    ScaledDown,
}

/// A service during the decision.
struct Svc<'a> {
    spec: &'a Service,
    /// Per node: the first constraint that fails there.
    barred: Vec<Option<usize>>,
    /// Services it must not share a node with (both directions, itself if listed).
    conflicts: Vec<usize>,
    /// Its spread domains, as indices into `State::domains`.
    spread: Vec<usize>,
    /// Its replicas per node.
    per_node: Vec<u32>,
    /// Its replicas per domain value, one vector per entry of `spread`.
    per_domain: Vec<Vec<u32>>,
    /// Which indices are placed.
    placed: Vec<bool>,
}

/// A spread domain: which value of it each node has.
struct Domain<'a> {
    name: &'a str,
    /// Per node: the index of its value (nodes without the label share one value).
    of_node: Vec<usize>,
    values: usize,
}

struct State<'a> {
    /// Sorted by name, unique.
    nodes: Vec<&'a Node>,
    node_index: HashMap<&'a str, usize>,
    used: Vec<Resources>,
    svc: Vec<Svc<'a>>,
    svc_index: HashMap<&'a str, usize>,
    domains: Vec<Domain<'a>>,
}

impl<'a> State<'a> {
    fn new(nodes: &'a [Node], services: &'a [Service]) -> Self {
        let mut sorted: Vec<&Node> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|a, b| a.name == b.name);
        let node_index = sorted
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut svc_index = HashMap::new();
        let unique: Vec<&Service> = services
            .iter()
            .filter(|s| svc_index.insert(s.name.as_str(), usize::MAX).is_none())
            .collect();
        for (i, s) in unique.iter().enumerate() {
            svc_index.insert(s.name.as_str(), i);
        }
        let mut state = State {
            used: vec![Resources::default(); sorted.len()],
            nodes: sorted,
            node_index,
            svc: Vec::with_capacity(unique.len()),
            svc_index,
            domains: Vec::new(),
        };
        for s in &unique {
            let svc = state.service(s, &unique);
            state.svc.push(svc);
        }
        state
    }

    fn service(&mut self, spec: &'a Service, all: &[&'a Service]) -> Svc<'a> {
        let barred = self
            .nodes
            .iter()
            .map(|n| spec.rules.constraints.iter().position(|c| !c.allows(n)))
            .collect();
        let conflicts = all
            .iter()
            .enumerate()
            .filter(|(_, other)| {
                spec.rules.anti_affinity.contains(&other.name)
                    || other.rules.anti_affinity.contains(&spec.name)
            })
            .map(|(i, _)| i)
            .collect();
        let mut spread = Vec::new();
        for name in &spec.rules.spread {
            let d = self.domain(name);
            if !spread.contains(&d) {
                spread.push(d);
            }
        }
        let per_domain = spread
            .iter()
            .map(|&d| vec![0; self.domains[d].values])
            .collect();
        Svc {
            spec,
            barred,
            conflicts,
            spread,
            per_node: vec![0; self.nodes.len()],
            per_domain,
            placed: vec![false; spec.replicas as usize],
        }
    }

    /// The index of the spread domain `name`, made on first use.
    fn domain(&mut self, name: &'a str) -> usize {
        if let Some(i) = self.domains.iter().position(|d| d.name == name) {
            return i;
        }
        let mut values: HashMap<Option<&str>, usize> = HashMap::new();
        let of_node = self
            .nodes
            .iter()
            .map(|n| {
                let next = values.len();
                *values.entry(n.label(name)).or_insert(next)
            })
            .collect();
        self.domains.push(Domain {
            name,
            of_node,
            values: values.len(),
        });
        self.domains.len() - 1
    }

    /// The first hard rule node `n` breaks for one more replica of service `s`.
    fn check(&self, s: usize, n: usize) -> Option<Check> {
        let svc = &self.svc[s];
        if !self.nodes[n].alive {
            return Some(Check::Lost);
        }
        if let Some(c) = svc.barred[n] {
            return Some(Check::Constraint(c));
        }
        if let Some(&other) = svc.conflicts.iter().find(|&&o| self.svc[o].per_node[n] > 0) {
            return Some(Check::AntiAffinity(other));
        }
        if let Some(max) = svc.spec.rules.max_per_node
            && svc.per_node[n] >= max
        {
            return Some(Check::MaxPerNode);
        }
        if !self.used[n].fits(svc.spec.request, self.nodes[n].capacity) {
            return Some(Check::Capacity);
        }
        None
    }

    fn refusal(&self, s: usize, check: Check) -> Refusal {
        let spec = self.svc[s].spec;
        match check {
            Check::Lost => Refusal::Lost,
            Check::Constraint(c) => Refusal::Constraint(spec.rules.constraints[c].clone()),
            Check::AntiAffinity(o) => Refusal::AntiAffinity(self.svc[o].spec.name.clone()),
            Check::MaxPerNode => Refusal::MaxPerNode(spec.rules.max_per_node.unwrap_or(0)),
            Check::Capacity => Refusal::Capacity,
        }
    }

    fn add(&mut self, s: usize, n: usize, index: u32) {
        let svc = &mut self.svc[s];
        svc.per_node[n] += 1;
        for (k, &d) in svc.spread.iter().enumerate() {
            svc.per_domain[k][self.domains[d].of_node[n]] += 1;
        }
        svc.placed[index as usize] = true;
        self.used[n].add(svc.spec.request);
    }

    /// Keeps a current replica on its node if the node may still hold it.
    fn keep(&mut self, replica: &Replica, node: &str) -> Kept {
        let Some(&s) = self.svc_index.get(replica.service.as_str()) else {
            return Kept::ScaledDown;
        };
        if replica.index >= self.svc[s].spec.replicas {
            return Kept::ScaledDown;
        }
        let Some(&n) = self.node_index.get(node) else {
            return Kept::Refused(s, Refusal::Gone);
        };
        match self.check(s, n) {
            None => {
                self.add(s, n, replica.index);
                Kept::Yes
            }
            Some(check) => Kept::Refused(s, self.refusal(s, check)),
        }
    }

    /// The node for one more replica of `s`: allowed by every hard rule, with the fewest
    /// of its replicas in each spread domain in turn, then first by name.
    fn best(&self, s: usize) -> Option<usize> {
        let svc = &self.svc[s];
        let mut best: Option<usize> = None;
        for n in 0..self.nodes.len() {
            if self.check(s, n).is_some() {
                continue;
            }
            let better = best.is_none_or(|b| {
                for (k, &d) in svc.spread.iter().enumerate() {
                    let of = &self.domains[d].of_node;
                    let (here, there) = (svc.per_domain[k][of[n]], svc.per_domain[k][of[b]]);
                    if here != there {
                        return here < there;
                    }
                }
                false
            });
            if better {
                best = Some(n);
            }
        }
        best
    }

    /// Places every replica of `s` not kept, in index order.
    fn fill(
        &mut self,
        s: usize,
        pending: &mut HashMap<u32, (String, Refusal)>,
        decision: &mut Decision,
    ) {
        let spec: &'a Service = self.svc[s].spec;
        let mut failed: Option<Unplaced> = None;
        for index in 0..spec.replicas {
            if self.svc[s].placed[index as usize] {
                continue;
            }
            let replica = Replica {
                service: spec.name.clone(),
                index,
            };
            let (from, why) = match pending.remove(&index) {
                Some((node, refusal)) => (Some(node), Why::Refused(refusal)),
                None => (None, Why::New),
            };
            let to = match failed.is_none().then(|| self.best(s)).flatten() {
                Some(n) => {
                    self.add(s, n, index);
                    let node = self.nodes[n].name.clone();
                    decision.placement.insert(replica.clone(), node.clone());
                    Some(node)
                }
                None => {
                    let why_not = failed.get_or_insert_with(|| self.explain(s, &replica));
                    decision.unplaced.push(Unplaced {
                        replica: replica.clone(),
                        ..why_not.clone()
                    });
                    None
                }
            };
            if from != to {
                decision.moves.push(Move {
                    replica,
                    from,
                    to,
                    why,
                });
            }
        }
    }

    /// Why no node takes one more replica of `s`: every node, grouped by the first rule it
    /// breaks.
    fn explain(&self, s: usize, replica: &Replica) -> Unplaced {
        let mut by: BTreeMap<Check, Vec<String>> = BTreeMap::new();
        for n in 0..self.nodes.len() {
            if let Some(check) = self.check(s, n) {
                by.entry(check)
                    .or_default()
                    .push(self.nodes[n].name.clone());
            }
        }
        Unplaced {
            replica: replica.clone(),
            request: self.svc[s].spec.request,
            nodes: self.nodes.len(),
            refused: by
                .into_iter()
                .map(|(check, nodes)| (self.refusal(s, check), nodes))
                .collect(),
        }
    }
}
