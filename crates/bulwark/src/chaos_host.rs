//! What chaos experiments see of the running stack: the supervisor's replicas, the
//! observability plane's alerts, incidents and SLOs.

use std::path::PathBuf;

use chaos::Replica;
use observe::alert::{AlertState, Severity};
use observe::incident::IncidentState;
use observe::plane::Plane;
use observe::slo::Window;
use runtime::Supervisor;

pub struct ChaosHost {
    pub supervisor: Supervisor,
    pub plane: Plane,
    pub bulwark: PathBuf,
}

/// The first page alert firing for `service` that `which` accepts.
pub fn paging(
    plane: &Plane,
    service: &str,
    which: impl Fn(&observe::alert::Alert) -> bool,
) -> Option<observe::alert::Alert> {
    plane.alerts().into_iter().find(|a| {
        a.service == service
            && a.severity == Severity::Page
            && a.state == AlertState::Firing
            && which(a)
    })
}

impl chaos::Host for ChaosHost {
    fn replicas(&self, service: &str) -> Option<Vec<Replica>> {
        Some(
            self.supervisor
                .service_status(service)?
                .replicas
                .into_iter()
                .map(|r| Replica {
                    index: r.index,
                    pid: r.pid,
                    ready: r.ready,
                })
                .collect(),
        )
    }

    fn signal(&self, service: &str, index: u32, pid: u32, sig: nix::sys::signal::Signal) -> bool {
        self.supervisor
            .signal(service, index, pid, sig)
            .unwrap_or(false)
    }

    fn budget(&self, service: &str) -> Option<(u32, spec::Amount)> {
        let desired = self.supervisor.service_status(service)?.desired;
        let spec = self.supervisor.service_spec(service)?;
        Some((desired, spec.min_available))
    }

    fn restart(&self, service: &str, index: u32) -> Result<(), String> {
        self.supervisor
            .restart(service, Some(index))
            .map_err(|e| e.to_string())
    }

    fn paging(&self, service: &str) -> Option<String> {
        paging(&self.plane, service, |_| true).map(|a| format!("page alert {}", a.name))
    }

    fn incident(&self, service: &str) -> Option<String> {
        self.plane
            .incidents()
            .into_iter()
            .find(|i| i.service == service && i.state == IncidentState::Open)
            .map(|i| format!("incident #{} ({})", i.id, i.title))
    }

    fn burn_rate(&self, service: &str, slo: &str) -> Option<f64> {
        self.plane
            .slo_reports()
            .into_iter()
            .find(|r| r.service == service && r.slo == slo)
            .map(|r| r.burn_rate(Window::M5))
    }

    fn bulwark(&self) -> PathBuf {
        self.bulwark.clone()
    }
}
