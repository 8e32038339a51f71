//! An agent's published endpoints: its replicas' addresses and readiness under
//! `endpoints/<node>/<service>/<index>`, put under the node's lease (so they vanish with
//! it), written again on every bus event that may change them (a replica started, ready,
//! stopped...) and on every new lease.

use std::time::Duration;

use cluster::Connection;
use cluster::schedule::{self, NodeEndpoints};
use tokio::sync::watch;

/// What the publisher task needs.
pub struct Publisher {
    pub etcd: cluster::Etcd,
    pub keys: cluster::Keys,
    pub node: String,
    pub connection: watch::Receiver<Connection>,
    pub mine: crate::placed::Shared,
    /// The node's address for other machines (`--advertise`).
    pub advertise: Option<std::net::IpAddr>,
    pub supervisor: runtime::Supervisor,
    pub events: bus::Follower,
}

impl Publisher {
    /// Runs until the bus or the registration ends.
    pub async fn run(mut self) {
        // What etcd holds under which lease, as this task last wrote it.
        let mut published: Option<(i64, NodeEndpoints)> = None;
        let mut failed = false;
        loop {
            let retry = async {
                match failed {
                    true => tokio::time::sleep(Duration::from_secs(1)).await,
                    false => std::future::pending().await,
                }
            };
            tokio::select! {
                e = self.events.next() => if e.is_none() { return },
                r = self.connection.changed() => if r.is_err() { return },
                () = retry => {}
            }
            let Connection::Registered { lease, .. } = *self.connection.borrow_and_update() else {
                continue;
            };
            let now = {
                let mine = self.mine.lock().unwrap_or_else(|e| e.into_inner());
                crate::placed::endpoints(&self.supervisor.status(), &mine, self.advertise)
            };
            let before = match &published {
                Some((l, before)) if *l == lease => before,
                // A new lease: every key is put again under it.
                _ => &NodeEndpoints::new(),
            };
            if *before == now && published.is_some() {
                failed = false;
                continue;
            }
            let write = schedule::publish_endpoints(
                &self.etcd, &self.keys, &self.node, lease, before, &now,
            );
            match write.await {
                Ok(()) => {
                    published = Some((lease, now));
                    failed = false;
                }
                Err(e) => {
                    tracing::warn!("cannot publish this node's endpoints: {e}; trying again");
                    failed = true;
                }
            }
        }
    }
}
