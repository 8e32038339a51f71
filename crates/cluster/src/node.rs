use std::collections::BTreeMap;

use etcd_client::{GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use crate::{Error, Etcd, Keys, error::bounded_read};

/// What an agent says about its node, in `nodes/<node>` and `members/<node>` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's name (`--node`), unique in the cluster.
    pub name: String,
    /// Its labels (`--labels zone=a,...`), for placement.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The address of the agent's API.
    pub api: String,
    /// The bulwark version of the agent.
    pub version: String,
    /// When the agent started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// What the replicas placed on it may request in all (`--capacity`, or the
    /// machine's). A record written before agents declared one has none: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
}

/// A node's capacity: millicores and bytes of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory: u64,
}

impl NodeRecord {
    /// The capacity as the placement decision takes it (none declared: unlimited).
    pub fn resources(&self) -> policy::placement::Resources {
        self.capacity
            .map_or(policy::placement::Resources::UNLIMITED, |c| {
                policy::placement::Resources {
                    cpu_millis: c.cpu_millis,
                    memory: c.memory,
                }
            })
    }

    pub(crate) fn parse(kv: &KeyValue) -> Result<Self, Error> {
        serde_json::from_slice(kv.value()).map_err(|e| Error::BadRecord {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_capacity_reads_as_unlimited_and_one_with_it_round_trips() {
        let old =
            r#"{"name":"a","labels":{},"api":"127.0.0.1:1","version":"0.1.0","started_at_ms":1}"#;
        let r: NodeRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.capacity, None);
        assert_eq!(r.resources(), policy::placement::Resources::UNLIMITED);
        assert!(!serde_json::to_string(&r).unwrap().contains("capacity"));
        let capacity = Some(Capacity {
            cpu_millis: 1500,
            memory: 1 << 30,
        });
        let new = NodeRecord { capacity, ..r };
        let back: NodeRecord = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
        assert_eq!(back.resources().cpu_millis, 1500);
    }
}

/// Whether a member of the cluster is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Its agent holds its lease.
    Alive,
    /// It joined and did not leave, but its lease expired (killed, hung, cut off).
    Lost,
}

impl NodeState {
    /// The state in words, as tables show it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Lost => "lost",
        }
    }
}

/// A member of the cluster and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// What it said when it (last) registered.
    #[serde(flatten)]
    pub record: NodeRecord,
    /// Alive or lost.
    pub state: NodeState,
}

/// Every member of the cluster with its state, read in one transaction (one revision), by
/// name; and that revision.
pub async fn list_nodes(etcd: &Etcd, keys: &Keys) -> Result<(Vec<NodeInfo>, i64), Error> {
    let txn = Txn::new().and_then([
        TxnOp::get(keys.members(), Some(GetOptions::new().with_prefix())),
        TxnOp::get(keys.nodes(), Some(GetOptions::new().with_prefix())),
    ]);
    let resp = bounded_read("list nodes", etcd.timeout, || {
        let (mut client, txn) = (etcd.client.clone(), txn.clone());
        async move { client.txn(txn).await }
    })
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(g) => Some(g),
        _ => None,
    });
    let (members, alive) = (gets.next(), gets.next());
    let mut nodes: BTreeMap<String, NodeInfo> = BTreeMap::new();
    for kv in members.iter().flat_map(|g| g.kvs()) {
        let record = NodeRecord::parse(kv)?;
        let state = NodeState::Lost;
        nodes.insert(record.name.clone(), NodeInfo { record, state });
    }
    // The live record is the newer one (a node that re-registered after a restart).
    for kv in alive.iter().flat_map(|g| g.kvs()) {
        let record = NodeRecord::parse(kv)?;
        let state = NodeState::Alive;
        nodes.insert(record.name.clone(), NodeInfo { record, state });
    }
    Ok((nodes.into_values().collect(), revision))
}
