//! What one agent runs of the cluster's stack: the replicas the scheduler placed on its
//! node. The agent writes its copy of the stack (`cluster-stack.toml`) with each service's
//! `replicas` set to the number placed here, so `up`'s supervisor and reload run it
//! unchanged; the supervisor's local indices `0..n` stand for the placed indices in
//! ascending order ([`Mine`]), which is how endpoints are published under the cluster's
//! indices.

use std::collections::BTreeMap;
use std::sync::Arc;

use cluster::Placements;
use cluster::schedule::{Endpoint, NodeEndpoints};

/// The indices of each service placed on one node, ascending.
pub type Mine = BTreeMap<String, Vec<u32>>;

/// The replicas `placements` puts on `node`.
pub fn mine(placements: &Placements, node: &str) -> Mine {
    let mut out = Mine::new();
    for ((service, index), n) in placements {
        if n == node {
            out.entry(service.clone()).or_default().push(*index);
        }
    }
    // Placements iterate by (service, index): each list is ascending already.
    out
}

/// `text` (the applied stack file) with every service's `replicas` set to how many of its
/// replicas are placed here (0 for a service with none), and a `min_available` count
/// above that lowered to it (the budget is the cluster's, not one node's). Comments and
/// layout are not kept: the result is the agent's own copy.
pub fn local_stack(text: &str, mine: &Mine) -> Result<String, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(toml::Value::Table(services)) = doc.get_mut("services") {
        for (name, service) in services.iter_mut() {
            let Some(service) = service.as_table_mut() else {
                continue;
            };
            let n = mine.get(name).map_or(0, Vec::len);
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            service.insert("replicas".to_owned(), toml::Value::Integer(n));
            if let Some(toml::Value::Integer(m)) = service.get_mut("min_available")
                && *m > n
            {
                *m = n;
            }
        }
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
}

/// This node's replicas as endpoints under the cluster's indices: a replica on loopback (a
/// process's) is published on `advertise` (the node's address, `--advertise`) when given,
/// any other (a container's) on its own.
pub fn endpoints(
    status: &[runtime::ServiceStatus],
    mine: &Mine,
    advertise: Option<std::net::IpAddr>,
) -> NodeEndpoints {
    let local = status.iter().flat_map(|s| {
        s.replicas.iter().map(|r| {
            let ip = match r.addr {
                Some(a) if !a.is_loopback() => a.to_string(),
                _ => advertise.map_or_else(|| "127.0.0.1".to_owned(), |a| a.to_string()),
            };
            // The leader as the proxy routes to it: promoted, ready, not held out.
            let leads = r.role == Some(runtime::Role::Leader) && r.ready && !r.held_out;
            let endpoint = Endpoint {
                address: r.port.map(|p| format!("{ip}:{p}")),
                ready: r.ready,
                leader: r.token.filter(|_| leads),
            };
            (s.name.as_str(), r.index, endpoint)
        })
    });
    translate(local, mine)
}

/// Local replica `i` of a service is `mine[service][i]`; a replica beyond what is placed
/// (one still stopping after a placement moved it) is not published.
fn translate<'a>(
    local: impl Iterator<Item = (&'a str, u32, Endpoint)>,
    mine: &Mine,
) -> NodeEndpoints {
    let mut out = NodeEndpoints::new();
    for (service, i, endpoint) in local {
        let Some(&index) = mine.get(service).and_then(|ix| ix.get(i as usize)) else {
            continue;
        };
        out.insert((service.to_owned(), index), endpoint);
    }
    out
}

/// The mapping the agent's copy of the stack was last written with, shared with the
/// endpoint publisher.
pub type Shared = Arc<std::sync::Mutex<Mine>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn placements(list: &[(&str, u32, &str)]) -> Placements {
        list.iter()
            .map(|(s, i, n)| (((*s).to_owned(), *i), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn a_node_runs_as_many_replicas_as_are_placed_on_it() {
        let p = placements(&[
            ("web", 0, "a"),
            ("web", 1, "b"),
            ("web", 3, "a"),
            ("db", 0, "b"),
        ]);
        let mine = mine(&p, "a");
        assert_eq!(mine, Mine::from([("web".to_owned(), vec![0, 3])]));
        let text = "[services.web]\nrun = [\"x\"]\nreplicas = 6\nmin_available = 4\n\
                    [services.db]\nrun = [\"y\"]\n";
        let local = local_stack(text, &mine).unwrap();
        let doc: toml::Table = toml::from_str(&local).unwrap();
        assert_eq!(doc["services"]["web"]["replicas"].as_integer(), Some(2));
        assert_eq!(
            doc["services"]["web"]["min_available"].as_integer(),
            Some(2)
        );
        assert_eq!(doc["services"]["db"]["replicas"].as_integer(), Some(0));
        assert_eq!(doc["services"]["web"]["run"][0].as_str(), Some("x"));
        // Still a stack file.
        let stack = spec::parse(&local, std::path::Path::new("local.toml")).unwrap();
        assert_eq!(stack.services.len(), 2);
    }

    #[test]
    fn local_replicas_are_published_under_the_cluster_indices() {
        let mine = Mine::from([("web".to_owned(), vec![1, 4])]);
        let at = |port: u16, ready| Endpoint {
            address: Some(format!("127.0.0.1:{port}")),
            ready,
            leader: None,
        };
        let local = [
            ("web", 0, at(9000, true)),
            ("web", 1, at(9001, false)),
            // Beyond what is placed here (stopping), and a service with nothing here.
            ("web", 2, at(9002, true)),
            ("db", 0, at(9100, true)),
        ];
        let out = translate(local.into_iter(), &mine);
        let keys: Vec<_> = out.keys().cloned().collect();
        assert_eq!(keys, [("web".to_owned(), 1), ("web".to_owned(), 4)]);
        assert_eq!(out[&("web".to_owned(), 4)], at(9001, false));
    }
}
