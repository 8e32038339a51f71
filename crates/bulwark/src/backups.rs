//! What backups see of the running stack: the supervisor's services, the journal's store,
//! the observability plane's alerts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backup::Urgency;
use observe::alert::Severity;
use observe::plane::Plane;
use runtime::Supervisor;

pub struct BackupHost {
    pub supervisor: Supervisor,
    pub plane: Plane,
    pub store: Arc<dyn store::Store>,
    pub bulwark: PathBuf,
    /// Backup name → the service its alerts are filed under (`bulwark` for the journal).
    pub owners: BTreeMap<String, String>,
}

impl BackupHost {
    pub fn new(
        stack: &spec::Stack,
        supervisor: Supervisor,
        plane: Plane,
        store: Arc<dyn store::Store>,
        bulwark: PathBuf,
    ) -> BackupHost {
        let owners = stack
            .backups
            .iter()
            .map(|b| {
                let owner = b.source.service().unwrap_or("bulwark");
                (b.name.clone(), owner.to_owned())
            })
            .collect();
        BackupHost {
            supervisor,
            plane,
            store,
            bulwark,
            owners,
        }
    }
}

impl backup::Host for BackupHost {
    fn service(&self, name: &str) -> Option<(Arc<spec::Service>, Option<SocketAddr>)> {
        let svc = self.supervisor.service_spec(name)?;
        let replica = self.supervisor.service_status(name).and_then(|s| {
            let mut running: Vec<_> = s
                .replicas
                .into_iter()
                .filter_map(|r| Some((r.ready, r.index, SocketAddr::new(r.addr?, r.port?))))
                .collect();
            // A ready replica first: a hook talks to the service as a client would.
            running.sort_by_key(|&(ready, index, _)| (!ready, index));
            running.first().map(|&(_, _, addr)| addr)
        });
        Some((svc, replica))
    }

    fn export_state(&self, dest: &Path) -> Result<(), String> {
        self.store.export(dest).map_err(|e| e.to_string())
    }

    fn alert(&self, backup: &str, alert: &str, urgency: Urgency, summary: Option<String>) {
        let service = self.owners.get(backup).map_or("bulwark", String::as_str);
        let name = format!("{alert}:{backup}");
        let severity = match urgency {
            Urgency::Page => Severity::Page,
            Urgency::Ticket => Severity::Ticket,
        };
        match summary {
            Some(s) => self.plane.raise(service, &name, severity, s),
            None => self.plane.clear(service, &name, severity),
        }
    }

    fn bulwark(&self) -> PathBuf {
        self.bulwark.clone()
    }
}
