//! Where cluster mode keeps things in etcd: every key of a cluster, in one place.
//!
//! ```text
//! /bulwark/<cluster>/nodes/<node>            NodeRecord (JSON), under the agent's lease:
//!                                            present exactly while the node is alive
//! /bulwark/<cluster>/members/<node>          NodeRecord (JSON), no lease: the node joined
//!                                            once and did not leave; a member without its
//!                                            nodes/ key is *lost*. Deleted when the agent
//!                                            leaves (SIGTERM), so a left node is gone.
//! /bulwark/<cluster>/stack/current           StackRevision (JSON): the applied stack file
//! /bulwark/<cluster>/stack/revisions/<n>     StackRevision (JSON), n zero-padded to 10
//!                                            digits so etcd's key order is numeric order
//! /bulwark/<cluster>/scheduler               the scheduling agent's node name, under its
//!                                            lease; created only if absent (one leader),
//!                                            its create revision fences its writes
//! /bulwark/<cluster>/placements/<service>/<index>   the node that runs a replica (plain
//!                                            text); written only by the scheduler, in
//!                                            one transaction guarded by its key
//! /bulwark/<cluster>/unplaced                Unplaced (JSON): the replicas the scheduler's
//!                                            last decision could not place, each with why;
//!                                            written by the scheduler, fenced like placements
//! /bulwark/<cluster>/endpoints/<node>/<service>/<index>  a replica's address and
//!                                            readiness (JSON), under its node's lease
//! /bulwark/<cluster>/leaders/<service>       a `[leader]` service's term: `HOLDER #CAMPAIGN`
//!                                            (HOLDER is `service/index@node`), under the
//!                                            holder's node lease; its create revision is
//!                                            the fencing token (see `EtcdElection`)
//! ```
//!
//! The stack's history is kept as explicit `revisions/<n>` keys rather than in etcd's MVCC
//! history: etcd compacts history for the whole keyspace at once (there is no per-range
//! retention), and operators compact (or run etcd with `--auto-compaction-*`) to keep its
//! database small, which would silently erase `apply --history`. Explicit keys survive
//! compaction, and `n` is a small number people can say (`revision 3`), while each record
//! also carries etcd's revision of the write.

use crate::Error;

/// The keys of one cluster: everything lives under `/bulwark/<cluster>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The keys of cluster `cluster` (a name of letters, digits, `-`, `_` and `.`).
    pub fn new(cluster: &str) -> Result<Self, Error> {
        check_name("cluster name", cluster)?;
        Ok(Keys {
            root: format!("/bulwark/{cluster}/"),
        })
    }

    /// Every key of the cluster starts with this.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The prefix of the alive nodes' keys.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }

    /// An alive node's key (under its lease).
    pub fn node(&self, node: &str) -> String {
        format!("{}{node}", self.nodes())
    }

    /// The prefix of the members' keys.
    pub fn members(&self) -> String {
        format!("{}members/", self.root)
    }

    /// A member's key (no lease).
    pub fn member(&self, node: &str) -> String {
        format!("{}{node}", self.members())
    }

    /// The applied stack.
    pub fn stack(&self) -> String {
        format!("{}stack/current", self.root)
    }

    /// The prefix of the stack's revisions.
    pub fn stack_revisions(&self) -> String {
        format!("{}stack/revisions/", self.root)
    }

    /// Revision `n` of the stack.
    pub fn stack_revision(&self, n: u64) -> String {
        format!("{}{n:010}", self.stack_revisions())
    }

    /// The scheduler's election key.
    pub fn scheduler(&self) -> String {
        format!("{}scheduler", self.root)
    }

    /// The prefix of replica placements.
    pub fn placements(&self) -> String {
        format!("{}placements/", self.root)
    }

    /// Which node runs replica `index` of `service`.
    pub fn placement(&self, service: &str, index: u32) -> String {
        format!("{}{service}/{index}", self.placements())
    }

    /// The replicas the scheduler could not place, and why.
    pub fn unplaced(&self) -> String {
        format!("{}unplaced", self.root)
    }

    /// The prefix of published endpoints.
    pub fn endpoints(&self) -> String {
        format!("{}endpoints/", self.root)
    }

    /// The prefix of the endpoints node `node` publishes.
    pub fn node_endpoints(&self, node: &str) -> String {
        format!("{}{node}/", self.endpoints())
    }

    /// Replica `index` of `service`'s endpoint, as node `node` publishes it.
    pub fn endpoint(&self, node: &str, service: &str, index: u32) -> String {
        format!("{}{service}/{index}", self.node_endpoints(node))
    }

    /// The prefix of the `[leader]` services' terms.
    pub fn leaders(&self) -> String {
        format!("{}leaders/", self.root)
    }

    /// The term key of `[leader]` service `service`.
    pub fn leader(&self, service: &str) -> String {
        format!("{}{service}", self.leaders())
    }

    /// Which part of the cluster `key` belongs to, for the watch.
    pub(crate) fn classify<'k>(&self, key: &'k str) -> Option<KeyKind<'k>> {
        let rest = key.strip_prefix(self.root.as_str())?;
        if let Some(node) = rest.strip_prefix("nodes/") {
            Some(KeyKind::Node(node))
        } else if let Some(node) = rest.strip_prefix("members/") {
            Some(KeyKind::Member(node))
        } else if rest == "stack/current" {
            Some(KeyKind::Stack)
        } else if rest == "scheduler" {
            Some(KeyKind::Scheduler)
        } else if let Some(p) = rest.strip_prefix("placements/") {
            let (service, index) = p.split_once('/')?;
            Some(KeyKind::Placement(service, index.parse().ok()?))
        } else if let Some(p) = rest.strip_prefix("endpoints/") {
            let (node, p) = p.split_once('/')?;
            let (service, index) = p.split_once('/')?;
            Some(KeyKind::Endpoint(node, service, index.parse().ok()?))
        } else {
            None
        }
    }
}

/// What a key of the cluster is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyKind<'k> {
    Node(&'k str),
    Member(&'k str),
    Stack,
    Scheduler,
    Placement(&'k str, u32),
    Endpoint(&'k str, &'k str, u32),
}

/// Refuses a name that could not be one segment of a key.
pub fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 63 {
        Some("it is longer than 63 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("use letters, digits, `-`, `_` and `.` only")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::BadName {
            what,
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_as_documented() {
        let k = Keys::new("prod").unwrap();
        assert_eq!(k.node("a"), "/bulwark/prod/nodes/a");
        assert_eq!(k.member("a"), "/bulwark/prod/members/a");
        assert_eq!(k.stack(), "/bulwark/prod/stack/current");
        assert_eq!(
            k.stack_revision(3),
            "/bulwark/prod/stack/revisions/0000000003"
        );
        assert_eq!(k.scheduler(), "/bulwark/prod/scheduler");
        assert_eq!(k.leader("db"), "/bulwark/prod/leaders/db");
        assert_eq!(k.unplaced(), "/bulwark/prod/unplaced");
        assert_eq!(k.classify(&k.unplaced()), None);
        assert_eq!(
            k.classify("/bulwark/prod/nodes/a"),
            Some(KeyKind::Node("a"))
        );
        assert_eq!(
            k.classify("/bulwark/prod/stack/current"),
            Some(KeyKind::Stack)
        );
        assert_eq!(k.classify("/bulwark/prod/stack/revisions/0000000003"), None);
        assert_eq!(k.placement("web", 4), "/bulwark/prod/placements/web/4");
        assert_eq!(
            k.classify(&k.placement("web", 4)),
            Some(KeyKind::Placement("web", 4))
        );
        assert_eq!(k.classify(&k.scheduler()), Some(KeyKind::Scheduler));
        assert_eq!(k.endpoint("a", "web", 4), "/bulwark/prod/endpoints/a/web/4");
        assert_eq!(
            k.classify(&k.endpoint("a", "web", 4)),
            Some(KeyKind::Endpoint("a", "web", 4))
        );
        assert_eq!(k.classify("/bulwark/other/nodes/a"), None);
        // Revisions sort as numbers.
        assert!(k.stack_revision(9) < k.stack_revision(10));
    }

    #[test]
    fn names_that_cannot_be_a_key_segment_are_refused() {
        for bad in ["", "a/b", "a b", &"x".repeat(64)] {
            let e = Keys::new(bad).unwrap_err().to_string();
            assert!(e.starts_with("cluster name"), "{e}");
        }
        assert!(check_name("node name", "web-1.zone_a").is_ok());
    }
}
