//! The cluster's scheduler, as one agent runs it: a task that, on every change of the
//! cluster (nodes, stack revision, placements, the scheduler key) or of this node's lease,
//! campaigns for the scheduler key if nobody holds it and, while this node holds it, asks
//! `policy::placement::place` for the placement and writes it in one transaction fenced
//! by the key. The decision is policy's; etcd's side is `cluster::schedule`.
//!
//! Fail static across an etcd outage: while this node's lease is unanswered the task
//! decides nothing, and for a settling window after it is held again (two TTLs) a lost
//! node keeps its replicas. When etcd lost quorum for longer than a TTL every lease may
//! have lapsed at once; the agents, still running their replicas, register again within
//! that window, and only a node still lost after it has its replicas moved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, EventKind};
use cluster::schedule::{self, Campaign};
use cluster::{ClusterState, Connection, NodeState, Placements};
use policy::placement::{self as place, Decision, Move, Why};
use tokio::sync::watch;

/// What the scheduler task needs.
pub struct Scheduler {
    pub etcd: cluster::Etcd,
    pub keys: cluster::Keys,
    pub node: String,
    pub connection: watch::Receiver<Connection>,
    pub state: watch::Receiver<ClusterState>,
    pub bus: Arc<Bus>,
    /// The agents' lease TTL: the settling window after an outage is two of them.
    pub ttl: Duration,
}

/// The services of one stack revision, as the decision takes them.
struct Services {
    revision: u64,
    list: Vec<place::Service>,
}

/// The task's memory between passes.
#[derive(Default)]
struct Memory {
    services: Option<Services>,
    /// The token of the key this node won, and the placement it last wrote with it at
    /// which etcd revision (the watch may not have shown it yet).
    held: Option<i64>,
    written: Option<(i64, Placements)>,
    /// The unplaced replicas' reasons etcd holds, as far as this term knows (read once).
    unplaced: Option<Vec<String>>,
    /// This node's lease went unanswered since the last pass that could decide.
    cut_off: bool,
    /// Until when lost nodes keep their replicas (the settling window after an outage).
    settling: Option<tokio::time::Instant>,
}

impl Scheduler {
    /// Runs until the cluster watch or the registration ends.
    pub async fn run(mut self) {
        let mut memory = Memory::default();
        loop {
            let failed = match self.pass(&mut memory).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!("scheduler: {e:#}; trying again");
                    true
                }
            };
            // A failed pass is tried again after a second even if nothing changes, and the
            // end of a settling window is a change.
            let wake = match (failed, memory.settling) {
                (true, _) => Some(tokio::time::Instant::now() + Duration::from_secs(1)),
                (false, until) => until,
            };
            let retry = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.state.changed() => if r.is_err() { return },
                r = self.connection.changed() => if r.is_err() { return },
                () = retry => {}
            }
        }
    }

    /// One look at the cluster: campaign if the key is free, place if it is ours.
    async fn pass(&mut self, memory: &mut Memory) -> anyhow::Result<()> {
        let Connection::Registered { lease, .. } = *self.connection.borrow_and_update() else {
            // Cut off: fail static, decide nothing.
            memory.cut_off = true;
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        if std::mem::take(&mut memory.cut_off) {
            tracing::info!(node = %self.node, "etcd answers again: lost nodes keep their replicas for two TTLs");
            memory.settling = Some(now + 2 * self.ttl);
        }
        if memory.settling.is_some_and(|until| until <= now) {
            memory.settling = None;
        }
        let state = self.state.borrow_and_update().clone();
        if !state.connected {
            return Ok(());
        }
        let token = match &state.scheduler {
            Some(k) if k.lease == lease && k.node == self.node => k.create_revision,
            Some(_) => {
                memory.held = None;
                return Ok(());
            }
            None => match schedule::campaign(&self.etcd, &self.keys, &self.node, lease).await? {
                Campaign::Won { token } => token,
                Campaign::Held { .. } => return Ok(()),
            },
        };
        if memory.held != Some(token) {
            memory.held = Some(token);
            memory.written = None;
            memory.unplaced = None;
            tracing::info!(node = %self.node, token, "this agent is the cluster's scheduler");
            self.bus.publish(EventKind::SchedulerElected {
                node: self.node.clone(),
            });
        }
        let Some(revision) = state.stack_revision else {
            return Ok(());
        };
        self.load_services(memory, revision).await?;
        // What etcd holds: the watch's view, unless this node wrote after it.
        let current = match &memory.written {
            Some((at, written)) if *at > state.revision => written.clone(),
            _ => state.placements.clone(),
        };
        let services = memory.services.as_ref().map_or(&[][..], |s| &s.list[..]);
        let decision = decide(&state, services, &current, memory.settling.is_some());
        self.store(memory, token, revision, &current, &decision)
            .await
    }

    /// Writes what `decision` changed (the placement, the unplaced replicas' reasons) and
    /// announces it; nothing when nothing changed.
    async fn store(
        &self,
        memory: &mut Memory,
        token: i64,
        revision: u64,
        current: &Placements,
        decision: &Decision,
    ) -> anyhow::Result<()> {
        let new = placements_of(decision);
        let reasons: Vec<String> = decision.unplaced.iter().map(ToString::to_string).collect();
        if memory.unplaced.is_none() {
            memory.unplaced = Some(schedule::unplaced(&self.etcd, &self.keys).await?.replicas);
        }
        let reasons_changed = memory.unplaced.as_ref() != Some(&reasons);
        if new == *current && !reasons_changed {
            return Ok(());
        }
        if new != *current {
            let written =
                schedule::write_placements(&self.etcd, &self.keys, token, current, &new).await?;
            let Some(at) = written else {
                self.lost_key(memory);
                return Ok(());
            };
            memory.written = Some((at, new));
        }
        if reasons_changed {
            let unplaced = schedule::Unplaced {
                stack_revision: revision,
                replicas: reasons,
            };
            if !schedule::write_unplaced(&self.etcd, &self.keys, token, &unplaced).await? {
                self.lost_key(memory);
                return Ok(());
            }
            memory.unplaced = Some(unplaced.replicas);
        }
        self.announce(revision, decision);
        Ok(())
    }

    fn lost_key(&self, memory: &mut Memory) {
        tracing::warn!(node = %self.node, "lost the scheduler key before writing; not scheduling");
        memory.held = None;
    }

    /// Reads the stack's services at `revision` from etcd, once per revision.
    async fn load_services(&self, memory: &mut Memory, revision: u64) -> anyhow::Result<()> {
        if memory
            .services
            .as_ref()
            .is_none_or(|s| s.revision != revision)
        {
            let applied = cluster::stack::current(&self.etcd, &self.keys)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the stack was removed from etcd"))?;
            let stack = spec::parse_shape(&applied.text, std::path::Path::new("cluster stack"))
                .map_err(|e| anyhow::anyhow!("the applied stack does not parse:\n{e}"))?;
            memory.services = Some(Services {
                revision: applied.revision,
                list: services_of(&stack),
            });
        }
        Ok(())
    }

    fn announce(&self, revision: u64, d: &Decision) {
        let moves: Vec<String> = d.moves.iter().map(describe).collect();
        let unplaced: Vec<String> = d.unplaced.iter().map(ToString::to_string).collect();
        tracing::info!(
            revision,
            moves = moves.len(),
            unplaced = unplaced.len(),
            "placement changed"
        );
        for u in &unplaced {
            tracing::warn!("cannot place {u}");
        }
        self.bus.publish(EventKind::PlacementChanged {
            stack_revision: revision,
            moves,
            unplaced,
        });
    }
}

/// The decision for this state: the cluster's nodes, the stack's services, the current
/// placement. While `settling` (just after an etcd outage) a lost node that holds
/// replicas counts as alive: its agent, which kept them running, is expected to register
/// again (nothing new goes to a node lost before the outage).
fn decide(
    state: &ClusterState,
    services: &[place::Service],
    current: &Placements,
    settling: bool,
) -> Decision {
    let nodes: Vec<place::Node> = state
        .nodes
        .values()
        .map(|n| place::Node {
            name: n.record.name.clone(),
            labels: n.record.labels.clone(),
            alive: n.state == NodeState::Alive
                || (settling && current.values().any(|on| *on == n.record.name)),
            capacity: n.record.resources(),
        })
        .collect();
    let current: place::Placement = current
        .iter()
        .map(|((service, index), node)| {
            let replica = place::Replica {
                service: service.clone(),
                index: *index,
            };
            (replica, node.clone())
        })
        .collect();
    place::place(&nodes, services, &current)
}

fn placements_of(d: &Decision) -> Placements {
    d.placement
        .iter()
        .map(|(r, node)| ((r.service.clone(), r.index), node.clone()))
        .collect()
}

/// The stack's services as the decision takes them.
fn services_of(stack: &spec::Stack) -> Vec<place::Service> {
    stack
        .services
        .iter()
        .map(|s| {
            let rules = &s.placement;
            place::Service {
                name: s.name.clone(),
                replicas: s.replicas,
                request: request_of(s),
                rules: place::Rules {
                    spread: rules.spread.clone(),
                    constraints: rules
                        .constraints
                        .iter()
                        .map(|c| place::Constraint {
                            label: c.label.clone(),
                            op: match c.op {
                                spec::ConstraintOp::Is => place::Op::Is,
                                spec::ConstraintOp::IsNot => place::Op::IsNot,
                            },
                            value: c.value.clone(),
                        })
                        .collect(),
                    anti_affinity: rules.anti_affinity.clone(),
                    max_per_node: rules.max_per_node,
                },
            }
        })
        .collect()
}

/// What one replica of `service` takes of its node's capacity: its
/// `[services.NAME.resources]` `cpu` and `memory` (none when unset).
pub fn request_of(service: &spec::Service) -> place::Resources {
    let r = &service.resources;
    place::Resources {
        cpu_millis: r.cpu.map_or(0, |c| (c * 1000.0).round() as u64),
        memory: r.memory.unwrap_or(0),
    }
}

/// `web/2 h2 -> h0 (node lost)`.
fn describe(m: &Move) -> String {
    let why = match &m.why {
        Why::New => "new".to_owned(),
        Why::ScaledDown => "scaled down".to_owned(),
        Why::Refused(place::Refusal::Gone) => "node gone".to_owned(),
        Why::Refused(place::Refusal::Lost) => "node lost".to_owned(),
        Why::Refused(place::Refusal::Constraint(c)) => format!("constraint {c} fails there"),
        Why::Refused(place::Refusal::AntiAffinity(o)) => format!("anti-affine with {o} there"),
        Why::Refused(place::Refusal::MaxPerNode(n)) => format!("max_per_node {n}"),
        Why::Refused(place::Refusal::Capacity) => "node full".to_owned(),
    };
    let at = |n: &Option<String>| n.clone().unwrap_or_else(|| "-".to_owned());
    format!("{} {} -> {} ({why})", m.replica, at(&m.from), at(&m.to))
}

/// Replicas per node, for `bulwark nodes`: `web/0,web/3`.
pub fn by_node(placements: &Placements) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((service, index), node) in placements {
        out.entry(node.clone())
            .or_default()
            .push(format!("{service}/{index}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(alive: &[&str], lost: &[&str]) -> ClusterState {
        let mut s = ClusterState::default();
        for (names, state) in [(alive, NodeState::Alive), (lost, NodeState::Lost)] {
            for (i, name) in names.iter().enumerate() {
                let record = cluster::NodeRecord {
                    name: (*name).to_owned(),
                    labels: BTreeMap::from([("zone".to_owned(), format!("z{i}"))]),
                    api: String::new(),
                    version: String::new(),
                    started_at_ms: 0,
                    capacity: None,
                };
                s.nodes
                    .insert((*name).to_owned(), cluster::NodeInfo { record, state });
            }
        }
        s
    }

    #[test]
    fn the_stack_file_decides_and_a_lost_nodes_replicas_move_with_a_reason() {
        let text = "[services.web]\nrun = [\"x\"]\nreplicas = 6\n\
                    [services.web.placement]\nconstraints = [\"node!=d\"]\n";
        let stack = spec::parse(text, std::path::Path::new("t.toml")).unwrap();
        let services = services_of(&stack);
        assert_eq!(services[0].replicas, 6);
        assert_eq!(services[0].rules.constraints[0].to_string(), "node!=d");
        let all = state(&["a", "b", "c", "d"], &[]);
        let first = placements_of(&decide(&all, &services, &Placements::new(), false));
        let counts: Vec<usize> = by_node(&first).values().map(Vec::len).collect();
        assert_eq!(counts, [2, 2, 2], "d is excluded: {first:?}");

        let lost = state(&["a", "b", "d"], &["c"]);
        // Just after an etcd outage, a lost node keeps its replicas (fail static).
        let settling = decide(&lost, &services, &first, true);
        assert!(settling.moves.is_empty(), "{:?}", settling.moves);
        assert_eq!(placements_of(&settling), first);
        let d = decide(&lost, &services, &first, false);
        let moves: Vec<String> = d.moves.iter().map(describe).collect();
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert!(
            moves
                .iter()
                .all(|m| m.contains(" c -> ") && m.ends_with("(node lost)"))
        );
        let after = placements_of(&d);
        assert!(after.values().all(|n| n == "a" || n == "b"), "{after:?}");
    }

    #[test]
    fn node_capacity_and_replica_requests_leave_a_replica_unplaced_with_the_reason() {
        let text = "[services.web]\nrun = [\"x\"]\nreplicas = 4\n\
                    [services.web.resources]\nmemory = \"64MiB\"\ncpu = 0.5\n";
        let stack = spec::parse(text, std::path::Path::new("t.toml")).unwrap();
        let services = services_of(&stack);
        assert_eq!(services[0].request.memory, 64 << 20);
        assert_eq!(services[0].request.cpu_millis, 500);
        let mut s = state(&["a", "b", "c"], &[]);
        for n in s.nodes.values_mut() {
            n.record.capacity = Some(cluster::Capacity {
                cpu_millis: 2000,
                memory: 100 << 20,
            });
        }
        let d = decide(&s, &services, &Placements::new(), false);
        let counts: Vec<usize> = by_node(&placements_of(&d)).values().map(Vec::len).collect();
        assert_eq!(counts, [1, 1, 1]);
        let why: Vec<String> = d.unplaced.iter().map(ToString::to_string).collect();
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0].starts_with("web/3 has no node") && why[0].contains("lack free capacity"),
            "{why:?}"
        );
        // Records without a capacity (older agents) take everything.
        let unlimited = decide(&state(&["a"], &[]), &services, &Placements::new(), false);
        assert!(unlimited.unplaced.is_empty());
    }
}
