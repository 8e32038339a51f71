//! Faults injected at run time (by chaos experiments), on top of the stack file's.
//!
//! Invariant: with nothing injected, the request path pays one atomic load. Every
//! injection is subject to the global kill switch like the stack file's faults: the
//! callers look here only while faults are on. What an injection started ends with it: each
//! comes with a [`Live`] flag that turns false when it is removed, which cuts short a delay
//! under way and closes a TCP connection that drew its toxic.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spec::{FaultAction, Toxic};
use tokio::sync::watch;

/// Where an injected fault acts, and what it does.
#[derive(Debug, Clone, PartialEq)]
pub enum Injection {
    /// Tries the proxy sends to these replicas of `service`: they look to the proxy as if
    /// the replica had been slow, answered `status`, or reset the connection, so retries,
    /// outlier ejection and breakers see them.
    Replica {
        /// The service.
        service: String,
        /// Replica indexes.
        replicas: Vec<u32>,
        /// What happens to a try.
        action: FaultAction,
        /// Share of tries affected, in percent.
        percent: f64,
    },
    /// Requests arriving on `service`'s listener (what its clients see of a dependency).
    Entry {
        /// The service.
        service: String,
        /// What happens to a request.
        action: FaultAction,
        /// Share of requests affected, in percent.
        percent: f64,
    },
    /// A toxic on new TCP connections to these replicas of `service`.
    Toxic {
        /// The service.
        service: String,
        /// Replica indexes.
        replicas: Vec<u32>,
        /// The toxic.
        toxic: Toxic,
    },
}

impl Injection {
    fn service(&self) -> &str {
        match self {
            Injection::Replica { service, .. }
            | Injection::Entry { service, .. }
            | Injection::Toxic { service, .. } => service,
        }
    }
}

/// Whether an injection is still in effect: `true` until it is removed.
pub type Live = watch::Receiver<bool>;

/// Resolves once the injection `live` belongs to has been removed.
pub async fn ended(live: &mut Live) {
    let _ = live.wait_for(|on| !*on).await;
}

/// The faults injected at run time, shared by every listener.
#[derive(Debug, Default)]
pub struct Injected {
    any: AtomicBool,
    next: AtomicU64,
    list: RwLock<Vec<(u64, Injection, watch::Sender<bool>)>>,
}

impl Injected {
    /// Adds `injection`; the id removes it.
    pub fn add(&self, injection: Injection) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.push((id, injection, watch::channel(true).0));
        self.any.store(true, Ordering::Release);
        id
    }

    /// Removes the injection `id` (nothing if it is gone).
    pub fn remove(&self, id: u64) {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.retain(|(i, _, live)| {
            if *i == id {
                live.send_replace(false);
            }
            *i != id
        });
        self.any.store(!list.is_empty(), Ordering::Release);
    }

    /// Removes every injection.
    pub fn clear(&self) {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        for (_, _, live) in list.drain(..) {
            live.send_replace(false);
        }
        self.any.store(false, Ordering::Release);
    }

    /// How many injections are in effect.
    pub fn len(&self) -> usize {
        self.list.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Nothing injected.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// The first injection of `service` that `select` accepts and whose roll hits, with its
    /// live flag.
    fn roll<T>(
        &self,
        service: &str,
        select: impl Fn(&Injection) -> Option<(T, f64)>,
    ) -> Option<(T, Live)> {
        if self.is_empty() {
            return None;
        }
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .filter(|(_, i, _)| i.service() == service)
            .filter_map(|(_, i, live)| select(i).map(|(t, p)| (t, p, live)))
            .find(|(_, percent, _)| rand::random::<f64>() * 100.0 < *percent)
            .map(|(t, _, live)| (t, live.subscribe()))
    }

    /// What happens to a try sent to `replica` of `service`, if anything.
    pub(crate) fn on_replica(&self, service: &str, replica: u32) -> Option<(FaultAction, Live)> {
        self.roll(service, |i| match i {
            Injection::Replica {
                replicas,
                action,
                percent,
                ..
            } if replicas.contains(&replica) => Some((*action, *percent)),
            _ => None,
        })
    }

    /// What happens to a request arriving on `service`'s listener, if anything.
    pub(crate) fn on_entry(&self, service: &str) -> Option<(FaultAction, Live)> {
        self.roll(service, |i| match i {
            Injection::Entry {
                action, percent, ..
            } => Some((*action, *percent)),
            _ => None,
        })
    }

    /// The toxics for a new connection to `replica` of `service`, with the live flag of
    /// the injection they came from (one experiment at a time per service: at most one).
    pub(crate) fn toxics(&self, service: &str, replica: u32) -> Option<(Vec<Toxic>, Live)> {
        if self.is_empty() {
            return None;
        }
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        let mut found: Option<(Vec<Toxic>, Live)> = None;
        for (_, i, live) in list.iter() {
            if let Injection::Toxic {
                service: s,
                replicas,
                toxic,
            } = i
                && s == service
                && replicas.contains(&replica)
            {
                found
                    .get_or_insert_with(|| (Vec::new(), live.subscribe()))
                    .0
                    .push(toxic.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abort(service: &str, replicas: Vec<u32>, percent: f64) -> Injection {
        Injection::Replica {
            service: service.into(),
            replicas,
            action: FaultAction::Abort(503),
            percent,
        }
    }

    #[test]
    fn only_the_targeted_replicas_of_the_service_are_hit_until_removed() {
        let inj = Injected::default();
        assert!(inj.is_empty());
        let id = inj.add(abort("web", vec![1], 100.0));
        let (action, mut live) = inj.on_replica("web", 1).unwrap();
        assert_eq!(action, FaultAction::Abort(503));
        assert!(*live.borrow_and_update());
        assert!(inj.on_replica("web", 0).is_none());
        assert!(inj.on_replica("api", 1).is_none());
        assert!(inj.on_entry("web").is_none());
        inj.remove(id);
        assert!(inj.is_empty());
        assert!(inj.on_replica("web", 1).is_none());
        // What it started learns that it ended.
        assert!(live.has_changed().unwrap_or(true) && !*live.borrow());
    }

    #[test]
    fn percent_is_a_share_of_tries() {
        let inj = Injected::default();
        inj.add(abort("web", vec![0], 30.0));
        let hits = (0..10_000)
            .filter(|_| inj.on_replica("web", 0).is_some())
            .count();
        assert!((2_500..3_500).contains(&hits), "{hits} of 10000 at 30 %");
        inj.clear();
        assert_eq!(inj.len(), 0);
    }
}
