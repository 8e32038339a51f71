//! What remediation sees of, and does to, the running stack: the supervisor's replicas,
//! the rollouts, the switchboard and the observability plane.

use std::sync::Arc;
use std::time::Duration;

use observe::alert::{Severity, Silence};
use observe::incident::IncidentState;
use observe::plane::Plane;
use remedy::{ActionRecord, BoxFuture, Replica, Size};
use runtime::Supervisor;

pub struct RemedyHost {
    pub supervisor: Supervisor,
    pub rollouts: rollout::Rollouts,
    pub switches: Arc<proxy::Switchboard>,
    pub plane: Plane,
}

/// The ticket alert that tells the sinks an action waits for approval.
fn approval_alert(id: u64) -> String {
    format!("approval:{id}")
}

impl remedy::Host for RemedyHost {
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
                    held_out: r.held_out,
                    started_at_ms: r.started_at_ms,
                })
                .collect(),
        )
    }

    fn size(&self, service: &str) -> Option<Size> {
        let desired = self.supervisor.service_status(service)?.desired;
        Some(Size {
            desired,
            min_available: self.supervisor.service_spec(service)?.min_available,
            rolling_out: self.supervisor.rolling_out(service),
        })
    }

    fn restart(&self, service: &str, index: Option<u32>) -> Result<(), String> {
        self.supervisor
            .restart(service, index)
            .map_err(|e| e.to_string())
    }

    fn replace(
        &self,
        service: &str,
        index: u32,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<u32, String>> {
        let service = service.to_owned();
        Box::pin(async move {
            self.supervisor
                .replace(&service, index, timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn scale(&self, service: &str, to: u32) -> Result<u32, String> {
        self.supervisor
            .scale(service, to)
            .map_err(|e| e.to_string())
    }

    fn hold_out(&self, service: &str, index: u32, out: bool) -> Result<(), String> {
        self.supervisor
            .hold_out(service, index, out)
            .map_err(|e| e.to_string())
    }

    fn load(&self, service: &str, index: u32) -> Option<Arc<bus::Load>> {
        self.supervisor.load(service, index)
    }

    fn rollback(&self, service: &str) -> Result<(), String> {
        self.rollouts
            .command(service, rollout::Command::Abort)
            .map_err(|e| e.to_string())
    }

    fn set_switch(
        &self,
        name: &str,
        value: spec::SwitchValue,
        by: &str,
    ) -> BoxFuture<'_, Result<(), String>> {
        let (switches, name, by) = (self.switches.clone(), name.to_owned(), by.to_owned());
        // Setting a switch writes the journal: off the runtime's workers.
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                switches
                    .set(&name, value, &by)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }

    fn silence(
        &self,
        service: &str,
        slo: Option<&str>,
        hold: Duration,
        comment: String,
    ) -> BoxFuture<'_, Result<String, String>> {
        let now = bus::now_ms();
        let id = format!("remedy-{now:x}");
        let silence = Silence {
            id: id.clone(),
            service: service.to_owned(),
            name: slo.map(str::to_owned),
            severity: None,
            starts_at_ms: now,
            ends_at_ms: now.saturating_add(hold.as_millis() as u64),
            comment,
        };
        Box::pin(async move {
            self.plane
                .silence(silence)
                .await
                .map(|()| id)
                .map_err(|e| e.to_string())
        })
    }

    fn incident(&self, service: &str) -> Option<u64> {
        self.plane
            .incidents()
            .into_iter()
            .find(|i| i.service == service && i.state == IncidentState::Open)
            .map(|i| i.id)
    }

    fn approval(&self, record: &ActionRecord, waiting: bool) {
        let name = approval_alert(record.id);
        if waiting {
            self.plane.raise(
                &record.service,
                &name,
                Severity::Ticket,
                format!(
                    "remediation {} #{} ({}) waits for `bulwark approve {}`: {}",
                    record.rule,
                    record.id,
                    record.actions.join(", "),
                    record.id,
                    record.trigger
                ),
            );
        } else {
            self.plane.clear(&record.service, &name, Severity::Ticket);
        }
    }
}
