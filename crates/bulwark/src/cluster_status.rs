//! `bulwark status --etcd`: every node's replicas of every service, cluster-wide, read from
//! etcd alone (placements, published endpoints, `[leader]` terms), so it answers with no
//! agent's API reachable.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use cluster::schedule::{Endpoint, Term};
use cluster::{NodeState, Placements};

use crate::cli::EtcdArgs;
use crate::output::outln;

/// One replica on one node, as the table and `--json` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub node: String,
    pub service: String,
    pub index: u32,
    /// `running` (placed here, its endpoint published), `starting` (placed here, not
    /// published yet), `leaving` (published here, placed elsewhere or scaled away), `lost`
    /// (placed on a node whose lease expired).
    pub state: &'static str,
    pub ready: bool,
    /// `ip:port`, as its node published it.
    pub address: Option<String>,
    /// For a `[leader]` service's replica: `leader` or `follower`.
    pub role: Option<&'static str>,
    /// The leader's fencing token.
    pub token: Option<i64>,
}

impl Row {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.node,
            "service": self.service,
            "index": self.index,
            "state": self.state,
            "ready": self.ready,
            "address": self.address,
            "role": self.role,
            "token": self.token,
        })
    }
}

/// The rows: the union of the placements and the published endpoints, by node, service
/// and index. `alive` is the set of alive nodes; `leader_services` the stack's `[leader]`
/// services, `terms` their current terms.
pub fn rows(
    placements: &Placements,
    endpoints: &BTreeMap<(String, String, u32), Endpoint>,
    alive: &BTreeSet<String>,
    leader_services: &BTreeSet<String>,
    terms: &BTreeMap<String, Term>,
) -> Vec<Row> {
    // Services whose current term some published endpoint claims (its leader's token):
    // those claims name the leader exactly; otherwise it is read from the term's holder.
    let claimed: BTreeSet<&str> = endpoints
        .iter()
        .filter(|((_, service, _), e)| {
            e.leader
                .is_some_and(|t| terms.get(service).is_some_and(|term| claims(t, term)))
        })
        .map(|((_, service, _), _)| service.as_str())
        .collect();
    let mut keys: BTreeSet<(String, String, u32)> = endpoints.keys().cloned().collect();
    for ((service, index), node) in placements {
        keys.insert((node.clone(), service.clone(), *index));
    }
    keys.into_iter()
        .map(|(node, service, index)| {
            let endpoint = endpoints.get(&(node.clone(), service.clone(), index));
            let placed = placements.get(&(service.clone(), index)) == Some(&node);
            let state = match (placed, endpoint.is_some()) {
                (true, _) if !alive.contains(&node) => "lost",
                (true, true) => "running",
                (true, false) => "starting",
                (false, _) => "leaving",
            };
            let leads = terms.get(&service).is_some_and(|term| {
                if claimed.contains(service.as_str()) {
                    endpoint
                        .and_then(|e| e.leader)
                        .is_some_and(|t| claims(t, term))
                } else {
                    leader_of(&term.holder, placements) == Some((node.as_str(), index))
                }
            });
            let is_leader_service = leader_services.contains(&service);
            Row {
                state,
                ready: endpoint.is_some_and(|e| e.ready),
                address: endpoint.and_then(|e| e.address.clone()),
                role: is_leader_service.then_some(if leads { "leader" } else { "follower" }),
                token: leads.then(|| terms[&service].token),
                node,
                service,
                index,
            }
        })
        .collect()
}

/// Whether a published leader token is the term's.
fn claims(token: u64, term: &Term) -> bool {
    i64::try_from(token).is_ok_and(|t| t == term.token)
}

/// The node and cluster index a term's holder stands for. The holder is
/// `service/LOCAL@node`, named by its agent's supervisor, whose local indices `0..n` stand
/// for the service's indices placed on that node in ascending order (`placed.rs`): so
/// LOCAL is the LOCAL-th of those. Right after a placement change on that node the agent
/// may not have caught up, and this names the replica it is about to run under that index.
fn leader_of<'h>(holder: &'h str, placements: &Placements) -> Option<(&'h str, u32)> {
    let (replica, node) = holder.rsplit_once('@')?;
    let (service, local) = replica.rsplit_once('/')?;
    let local: usize = local.parse().ok()?;
    let index = placements
        .iter()
        .filter(|((s, _), on)| s == service && *on == node)
        .map(|((_, i), _)| *i)
        .nth(local)?;
    Some((node, index))
}

/// `bulwark status --etcd URL`.
pub async fn run(args: EtcdArgs, json: bool) -> anyhow::Result<ExitCode> {
    let (etcd, keys) = crate::cluster_cmd::connect(&args).await?;
    let (nodes, _) = cluster::list_nodes(&etcd, &keys).await?;
    let (placements, scheduler) = cluster::schedule::placements(&etcd, &keys).await?;
    let endpoints = cluster::schedule::endpoints(&etcd, &keys).await?;
    let terms = cluster::schedule::leaders(&etcd, &keys).await?;
    let unplaced = cluster::schedule::unplaced(&etcd, &keys).await?;
    let applied = cluster::stack::current(&etcd, &keys).await?;
    let leader_services: BTreeSet<String> = applied
        .as_ref()
        .and_then(|a| spec::parse_shape(&a.text, std::path::Path::new("cluster stack")).ok())
        .map(|stack| {
            let leads = stack.services.iter().filter(|s| s.leader.is_some());
            leads.map(|s| s.name.clone()).collect()
        })
        .unwrap_or_default();
    let alive: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Alive)
        .map(|n| n.record.name.clone())
        .collect();
    let rows = rows(&placements, &endpoints, &alive, &leader_services, &terms);
    let revision = applied.as_ref().map(|a| a.revision);
    if json {
        let nodes: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| serde_json::json!({"name": n.record.name, "state": n.state.as_str()}))
            .collect();
        let v = serde_json::json!({
            "cluster": args.cluster,
            "stack_revision": revision,
            "scheduler": scheduler,
            "nodes": nodes,
            "replicas": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
            "unplaced": unplaced.replicas,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let stack = revision.map_or("no stack applied".to_owned(), |r| {
        format!("stack revision {r}")
    });
    outln!(
        "cluster `{}`: {} node(s), {} alive; scheduler {}; {stack}",
        args.cluster,
        nodes.len(),
        alive.len(),
        scheduler.as_deref().unwrap_or("-")
    );
    print_rows(&rows);
    crate::cluster_cmd::print_unplaced(&unplaced);
    Ok(ExitCode::SUCCESS)
}

fn print_rows(rows: &[Row]) {
    if rows.is_empty() {
        outln!("no replica is placed or published");
        return;
    }
    outln!(
        "{:<20} {:<20} {:<9} {:<5} {:<22}  ROLE",
        "NODE",
        "REPLICA",
        "STATE",
        "READY",
        "ADDRESS"
    );
    for r in rows {
        let role = match (r.role, r.token) {
            (Some(role), Some(token)) => format!("{role} (token {token})"),
            (Some(role), None) => role.to_owned(),
            (None, _) => "-".to_owned(),
        };
        outln!(
            "{:<20} {:<20} {:<9} {:<5} {:<22}  {role}",
            r.node,
            format!("{}/{}", r.service, r.index),
            r.state,
            if r.ready { "yes" } else { "no" },
            r.address.as_deref().unwrap_or("-"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(address: &str, ready: bool) -> Endpoint {
        Endpoint {
            address: Some(address.to_owned()),
            ready,
            leader: None,
        }
    }

    #[test]
    fn rows_join_placements_endpoints_and_leader_terms() {
        let s = |x: &str| x.to_owned();
        let placements = Placements::from([
            ((s("db"), 0), s("a")),
            ((s("db"), 1), s("b")),
            ((s("web"), 0), s("a")),
            ((s("web"), 1), s("c")),
        ]);
        let endpoints = BTreeMap::from([
            ((s("a"), s("db"), 0), endpoint("10.0.0.1:5000", true)),
            ((s("b"), s("db"), 1), endpoint("10.0.0.2:5000", true)),
            ((s("a"), s("web"), 0), endpoint("10.0.0.1:6000", false)),
            // Moved off b: still published there until b stops it.
            ((s("b"), s("web"), 2), endpoint("10.0.0.2:6000", true)),
        ]);
        let alive = BTreeSet::from([s("a"), s("b")]);
        let leaders = BTreeSet::from([s("db")]);
        // b runs db/1 as its only db replica: its supervisor's db/0.
        let holder = s("db/0@b");
        let terms = BTreeMap::from([(s("db"), Term { holder, token: 42 })]);
        let rows = rows(&placements, &endpoints, &alive, &leaders, &terms);
        let view: Vec<String> = rows
            .iter()
            .map(|r| {
                let role = r.role.unwrap_or("-");
                let token = r.token.map_or(String::new(), |t| format!(" {t}"));
                format!(
                    "{} {}/{} {} {} {role}{token}",
                    r.node, r.service, r.index, r.state, r.ready
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                "a db/0 running true follower",
                "a web/0 running false -",
                "b db/1 running true leader 42",
                "b web/2 leaving true -",
                "c web/1 lost false -",
            ]
        );
        assert_eq!(rows[0].address.as_deref(), Some("10.0.0.1:5000"));
    }

    /// A published claim of the current term names the leader, whatever the holder's local
    /// index would map to (a node that has not caught up with a placement change); an
    /// older term's claim does not.
    #[test]
    fn the_endpoint_claiming_the_current_term_is_the_leader() {
        let s = |x: &str| x.to_owned();
        let placements = Placements::from([((s("db"), 0), s("a")), ((s("db"), 1), s("b"))]);
        let claim = |token| Endpoint {
            leader: Some(token),
            ..endpoint("10.0.0.1:5000", true)
        };
        let endpoints = BTreeMap::from([
            ((s("a"), s("db"), 0), claim(7)),
            ((s("b"), s("db"), 1), claim(42)),
        ]);
        let alive = BTreeSet::from([s("a"), s("b")]);
        let leaders = BTreeSet::from([s("db")]);
        // The holder's name would map to a's db/0.
        let terms = BTreeMap::from([(
            s("db"),
            Term {
                holder: s("db/0@a"),
                token: 42,
            },
        )]);
        let rows = rows(&placements, &endpoints, &alive, &leaders, &terms);
        let roles: Vec<_> = rows.iter().map(|r| (r.index, r.role, r.token)).collect();
        assert_eq!(
            roles,
            [(0, Some("follower"), None), (1, Some("leader"), Some(42))]
        );
    }
}
