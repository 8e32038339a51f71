//! The scheduler's etcd side: the election on `scheduler` (create-if-absent under the
//! node's lease), placements written in one transaction fenced by the key's create
//! revision, and a node's published endpoints under its lease. What to place where is
//! decided elsewhere (`policy::placement`); nothing here decides.

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use crate::{Error, Etcd, Keys, Placements, error::bounded};

/// What a [`campaign`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    /// This node holds the key: its create revision fences every write.
    Won {
        /// The key's create revision.
        token: i64,
    },
    /// Another lease holds it.
    Held {
        /// The holder's node name.
        by: String,
    },
}

/// Creates the scheduler key under `lease` with `node` as its value, unless it exists; a
/// key this node already holds under the same lease is won again (same token).
pub async fn campaign(etcd: &Etcd, keys: &Keys, node: &str, lease: i64) -> Result<Campaign, Error> {
    let key = keys.scheduler();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            node,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let mut client = etcd.client.clone();
    let resp = bounded("campaign for the scheduler", etcd.timeout, client.txn(txn)).await?;
    if resp.succeeded() {
        let token = resp.header().map_or(0, |h| h.revision());
        return Ok(Campaign::Won { token });
    }
    let held = resp.op_responses().into_iter().find_map(|o| match o {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    });
    Ok(match held {
        Some(kv) if kv.lease() == lease && kv.value() == node.as_bytes() => Campaign::Won {
            token: kv.create_revision(),
        },
        Some(kv) => Campaign::Held {
            by: String::from_utf8_lossy(kv.value()).into_owned(),
        },
        // Gone between the compare and the get: the next state change campaigns again.
        None => Campaign::Held { by: String::new() },
    })
}

/// Turns the placements in etcd from `old` into `new` (puts of what changed, deletes of
/// what went), each transaction holding only while the scheduler key still has create
/// revision `token`: `Some` etcd revision of the last write, or `None` when the key is
/// someone else's (or gone) and the rest was not written.
///
/// One transaction for up to [`MAX_TXN_OPS`] changes (etcd's default `--max-txn-ops`);
/// more are written in several, in replica order, each fenced alike: every key is one
/// replica's, so a reader between two sees each replica either where it was or where it
/// goes, never twice.
pub async fn write_placements(
    etcd: &Etcd,
    keys: &Keys,
    token: i64,
    old: &Placements,
    new: &Placements,
) -> Result<Option<i64>, Error> {
    let mut ops = Vec::new();
    for ((service, index), node) in new {
        if old.get(&(service.clone(), *index)) != Some(node) {
            ops.push(TxnOp::put(
                keys.placement(service, *index),
                node.as_str(),
                None,
            ));
        }
    }
    for (service, index) in old.keys() {
        if !new.contains_key(&(service.clone(), *index)) {
            ops.push(TxnOp::delete(keys.placement(service, *index), None));
        }
    }
    if ops.is_empty() {
        return Ok(Some(0));
    }
    let mut last = None;
    for chunk in ops.chunks(MAX_TXN_OPS) {
        let txn = Txn::new()
            .when([Compare::create_revision(
                keys.scheduler(),
                CompareOp::Equal,
                token,
            )])
            .and_then(chunk.to_vec());
        let mut client = etcd.client.clone();
        let resp = bounded("write the placements", etcd.timeout, client.txn(txn)).await?;
        if !resp.succeeded() {
            return Ok(None);
        }
        last = Some(resp.header().map_or(0, |h| h.revision()));
    }
    Ok(last)
}

/// What the scheduler's last decision could not place (`unplaced`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    /// The stack revision decided on.
    pub stack_revision: u64,
    /// One line per replica without a node: `web/3 has no node: ...`.
    pub replicas: Vec<String>,
}

/// Stores `unplaced` while the scheduler key still has create revision `token`: false when
/// the key is someone else's (nothing written).
pub async fn write_unplaced(
    etcd: &Etcd,
    keys: &Keys,
    token: i64,
    unplaced: &Unplaced,
) -> Result<bool, Error> {
    let value = serde_json::to_vec(unplaced).expect("unplaced replicas serialize");
    let txn = Txn::new()
        .when([Compare::create_revision(
            keys.scheduler(),
            CompareOp::Equal,
            token,
        )])
        .and_then([TxnOp::put(keys.unplaced(), value, None)]);
    let mut client = etcd.client.clone();
    let resp = bounded("write the unplaced replicas", etcd.timeout, client.txn(txn)).await?;
    Ok(resp.succeeded())
}

/// What the scheduler last could not place (empty before it decided anything).
pub async fn unplaced(etcd: &Etcd, keys: &Keys) -> Result<Unplaced, Error> {
    let key = keys.unplaced();
    let resp = crate::error::bounded_read("read the unplaced replicas", etcd.timeout, || {
        let (mut client, key) = (etcd.client.clone(), key.clone());
        async move { client.get(key, None).await }
    })
    .await?;
    match resp.kvs().first() {
        None => Ok(Unplaced::default()),
        Some(kv) => serde_json::from_slice(kv.value()).map_err(|e| Error::BadRecord {
            key,
            detail: e.to_string(),
        }),
    }
}

/// A `[leader]` service's current term as etcd holds it (`leaders/<service>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The holder: `service/index@node`.
    pub holder: String,
    /// The fencing token: the key's create revision.
    pub token: i64,
}

/// Every key under `prefix`, as one bounded read (`what` names it in errors).
async fn read_prefix(
    etcd: &Etcd,
    what: &'static str,
    prefix: &str,
) -> Result<etcd_client::GetResponse, Error> {
    crate::error::bounded_read(what, etcd.timeout, || {
        let mut client = etcd.client.clone();
        let prefix = prefix.to_owned();
        async move {
            client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
        }
    })
    .await
}

/// Every `[leader]` service's current term, by service.
pub async fn leaders(
    etcd: &Etcd,
    keys: &Keys,
) -> Result<std::collections::BTreeMap<String, Term>, Error> {
    let prefix = keys.leaders();
    let resp = read_prefix(etcd, "read the leaders", &prefix).await?;
    let mut out = std::collections::BTreeMap::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let service = key[prefix.len()..].to_owned();
        let value = String::from_utf8_lossy(kv.value());
        let holder = crate::election::name_of(&value).to_owned();
        let token = kv.create_revision();
        out.insert(service, Term { holder, token });
    }
    Ok(out)
}

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// A replica's endpoint as its node publishes it (`endpoints/<node>/<service>/<index>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `ip:port` where the replica listens, if it has a port.
    pub address: Option<String>,
    /// Its readiness probe passes.
    pub ready: bool,
    /// A `[leader]` service's promoted leader: its fencing token (absent for a standby and
    /// for every other service). Under the node's lease like the term it was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
}

/// One node's endpoints, by service and index.
pub type NodeEndpoints = std::collections::BTreeMap<(String, u32), Endpoint>;

/// Makes node `node`'s endpoints in etcd `now`, under `lease`, from `before` (what this
/// node last published): puts of what changed, deletes of what went, one transaction.
pub async fn publish_endpoints(
    etcd: &Etcd,
    keys: &Keys,
    node: &str,
    lease: i64,
    before: &NodeEndpoints,
    now: &NodeEndpoints,
) -> Result<(), Error> {
    let mut ops = Vec::new();
    for ((service, index), e) in now {
        if before.get(&(service.clone(), *index)) != Some(e) {
            let value = serde_json::to_vec(e).expect("an endpoint serializes");
            let options = PutOptions::new().with_lease(lease);
            let key = keys.endpoint(node, service, *index);
            ops.push(TxnOp::put(key, value, Some(options)));
        }
    }
    for (service, index) in before.keys() {
        if !now.contains_key(&(service.clone(), *index)) {
            ops.push(TxnOp::delete(keys.endpoint(node, service, *index), None));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let mut client = etcd.client.clone();
    bounded(
        "publish endpoints",
        etcd.timeout,
        client.txn(Txn::new().and_then(ops)),
    )
    .await?;
    Ok(())
}

/// Every published endpoint, by node, service and index.
pub async fn endpoints(
    etcd: &Etcd,
    keys: &Keys,
) -> Result<std::collections::BTreeMap<(String, String, u32), Endpoint>, Error> {
    let prefix = keys.endpoints();
    let resp = read_prefix(etcd, "read the endpoints", &prefix).await?;
    let mut out = std::collections::BTreeMap::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let mut parts = key[prefix.len()..].splitn(3, '/');
        let (Some(node), Some(service), Some(index)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(index) = index.parse() else { continue };
        let e: Endpoint = serde_json::from_slice(kv.value()).map_err(|e| Error::BadRecord {
            key: key.clone(),
            detail: e.to_string(),
        })?;
        out.insert((node.to_owned(), service.to_owned(), index), e);
    }
    Ok(out)
}

/// The placements and the scheduler's node (if one holds the key), read at one revision.
pub async fn placements(etcd: &Etcd, keys: &Keys) -> Result<(Placements, Option<String>), Error> {
    let txn = Txn::new().and_then([
        TxnOp::get(keys.placements(), Some(GetOptions::new().with_prefix())),
        TxnOp::get(keys.scheduler(), None),
    ]);
    let resp = crate::error::bounded_read("read the placements", etcd.timeout, || {
        let (mut client, txn) = (etcd.client.clone(), txn.clone());
        async move { client.txn(txn).await }
    })
    .await?;
    let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(g) => Some(g),
        _ => None,
    });
    let (placed, scheduler) = (gets.next(), gets.next());
    let mut out = Placements::new();
    for kv in placed.iter().flat_map(|g| g.kvs()) {
        let key = String::from_utf8_lossy(kv.key());
        if let Some(crate::keys::KeyKind::Placement(service, index)) = keys.classify(&key) {
            let node = String::from_utf8_lossy(kv.value()).into_owned();
            out.insert((service.to_owned(), index), node);
        }
    }
    let holder = scheduler
        .and_then(|g| g.kvs().first().cloned())
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
    Ok((out, holder))
}
