//! Signals to a replica from outside its task (chaos faults): to every process of it, as
//! its driver made them ([`Processes`]), and only while it is the incarnation meant.

use nix::sys::signal::Signal;

use crate::driver::Processes;
use crate::supervisor::{ControlError, Supervisor};

impl Supervisor {
    /// Sends `sig` to every process of replica `index` of `service` (a plain replica's
    /// process group; every process of a container's cgroup) if it still runs as `pid`
    /// (its status `pid`: a replica restarted meanwhile is left alone). Returns whether it
    /// did. Reads procfs and cgroupfs for a container: call it on the blocking pool.
    pub fn signal(
        &self,
        service: &str,
        index: u32,
        pid: u32,
        sig: Signal,
    ) -> Result<bool, ControlError> {
        let procs = {
            let services = self.shared.lock();
            let entry = services
                .get(service)
                .ok_or_else(|| ControlError::UnknownService(service.into()))?;
            let r = entry
                .replicas
                .get(&index)
                .ok_or_else(|| ControlError::UnknownReplica {
                    service: service.into(),
                    index,
                })?;
            if r.status.pid != Some(pid) {
                return Ok(false);
            }
            Processes::of_status(pid, r.status.runtime_pid)
        };
        // Outside the lock. The replica task reaps its leader a moment before it clears the
        // status: a pid reused in between could be hit, as by any reader of the status.
        procs.signal(sig);
        Ok(true)
    }
}
