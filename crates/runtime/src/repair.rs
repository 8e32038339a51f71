//! What a remediation does to replicas beyond restart and scale: take one out of the
//! proxy's rotation and back, wait for its requests to finish, replace it by a fresh one.

use std::time::Duration;

use crate::supervisor::{ControlError, Supervisor, publish_endpoints};

/// Why a replacement did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The service or replica is unknown, or bulwark is stopping, or a rollout holds it.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The fresh replica was not ready in time; it was stopped and the old one kept.
    #[error(
        "the fresh replica {index} of {service:?} was not ready within {waited:?}; kept the old one"
    )]
    NotReady {
        /// The service.
        service: String,
        /// The fresh replica's index (stopped).
        index: u32,
        /// How long it was given.
        waited: Duration,
    },
}

impl Supervisor {
    /// Takes replica `index` of `service` out of the proxy's rotation (`true`), or puts it
    /// back (`false`). It keeps running, and its probes still decide whether it is ready.
    pub fn hold_out(&self, service: &str, index: u32, out: bool) -> Result<(), ControlError> {
        let mut services = self.shared.lock();
        let entry = services
            .get_mut(service)
            .ok_or_else(|| ControlError::UnknownService(service.into()))?;
        let r = entry
            .replicas
            .get_mut(&index)
            .ok_or_else(|| ControlError::UnknownReplica {
                service: service.into(),
                index,
            })?;
        if r.status.held_out != out {
            r.status.held_out = out;
            publish_endpoints(entry);
            entry.changed.send_modify(|v| *v += 1);
            drop(services);
            if !out {
                self.shared.bus.publish(bus::EventKind::ReplicaReadmitted {
                    service: service.into(),
                    index,
                });
            }
        }
        Ok(())
    }

    /// Whether a rollout holds `service` (scaling and replacing wait for it).
    pub fn rolling_out(&self, service: &str) -> bool {
        self.shared
            .lock()
            .get(service)
            .is_some_and(|e| e.rolling_out)
    }

    /// The in-flight counter of replica `index` of `service` (draining awaits it).
    pub fn load(&self, service: &str, index: u32) -> Option<std::sync::Arc<bus::Load>> {
        self.shared
            .lock()
            .get(service)
            .and_then(|e| e.replicas.get(&index))
            .map(|r| r.load.clone())
    }

    /// Starts a fresh replica of `service`'s stable revision, waits until it is ready,
    /// then drains and stops replica `old` (Kubernetes' surge-first replacement: ready
    /// capacity never drops, so the disruption budget holds). A fresh replica that is not
    /// ready within `timeout` is stopped and `old` kept.
    pub async fn replace(
        &self,
        service: &str,
        old: u32,
        timeout: Duration,
    ) -> Result<u32, ReplaceError> {
        self.check_running()?;
        let revision = {
            let services = self.shared.lock();
            let entry = services
                .get(service)
                .ok_or_else(|| ControlError::UnknownService(service.into()))?;
            if entry.rolling_out {
                return Err(ControlError::RolloutUnderWay(service.into()).into());
            }
            if !entry.replicas.contains_key(&old) {
                return Err(ControlError::UnknownReplica {
                    service: service.into(),
                    index: old,
                }
                .into());
            }
            entry.stable
        };
        let mut changed = self
            .watch(service)
            .ok_or_else(|| ControlError::UnknownService(service.into()))?;
        let Some(&fresh) = self.start_replicas(service, revision, 1).first() else {
            return Err(ControlError::UnknownService(service.into()).into());
        };
        let ready = tokio::time::timeout(timeout, async {
            loop {
                let ready = self
                    .shared
                    .lock()
                    .get(service)
                    .and_then(|e| e.replicas.get(&fresh))
                    .is_some_and(|r| r.status.ready);
                if ready || changed.changed().await.is_err() {
                    return ready;
                }
            }
        })
        .await;
        if ready != Ok(true) {
            self.remove_replicas(service, &[fresh]);
            return Err(ReplaceError::NotReady {
                service: service.into(),
                index: fresh,
                waited: timeout,
            });
        }
        self.remove_replicas(service, &[old]);
        Ok(fresh)
    }
}
