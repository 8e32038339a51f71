//! Faults injected at run time (by chaos experiments), on top of the stack file's.
//!
//! Invariant: with nothing injected, the request path pays one relaxed atomic load. Every
//! injection is subject to the global kill switch like the stack file's faults: the
//! callers look here only while faults are on.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spec::{FaultAction, Toxic};

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

/// The faults injected at run time, shared by every listener.
#[derive(Debug, Default)]
pub struct Injected {
    any: AtomicBool,
    next: AtomicU64,
    list: RwLock<Vec<(u64, Injection)>>,
}

impl Injected {
    /// Adds `injection`; the id removes it.
    pub fn add(&self, injection: Injection) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.push((id, injection));
        self.any.store(true, Ordering::Release);
        id
    }

    /// Removes the injection `id` (nothing if it is gone).
    pub fn remove(&self, id: u64) {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.retain(|(i, _)| *i != id);
        self.any.store(!list.is_empty(), Ordering::Release);
    }

    /// Removes every injection.
    pub fn clear(&self) {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.clear();
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

    /// The first injection of `service` that `select` accepts and whose roll hits.
    fn roll<T>(&self, service: &str, select: impl Fn(&Injection) -> Option<(T, f64)>) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .filter(|(_, i)| i.service() == service)
            .filter_map(|(_, i)| select(i))
            .find(|(_, percent)| rand::random::<f64>() * 100.0 < *percent)
            .map(|(t, _)| t)
    }

    /// What happens to a try sent to `replica` of `service`, if anything.
    pub(crate) fn on_replica(&self, service: &str, replica: u32) -> Option<FaultAction> {
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
    pub(crate) fn on_entry(&self, service: &str) -> Option<FaultAction> {
        self.roll(service, |i| match i {
            Injection::Entry {
                action, percent, ..
            } => Some((*action, *percent)),
            _ => None,
        })
    }

    /// The toxics for a new connection to `replica` of `service`.
    pub(crate) fn toxics(&self, service: &str, replica: u32) -> Vec<Toxic> {
        if self.is_empty() {
            return Vec::new();
        }
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .filter_map(|(_, i)| match i {
                Injection::Toxic {
                    service: s,
                    replicas,
                    toxic,
                } if s == service && replicas.contains(&replica) => Some(toxic.clone()),
                _ => None,
            })
            .collect()
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
        assert_eq!(inj.on_replica("web", 1), Some(FaultAction::Abort(503)));
        assert_eq!(inj.on_replica("web", 0), None);
        assert_eq!(inj.on_replica("api", 1), None);
        assert_eq!(inj.on_entry("web"), None);
        inj.remove(id);
        assert!(inj.is_empty());
        assert_eq!(inj.on_replica("web", 1), None);
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
