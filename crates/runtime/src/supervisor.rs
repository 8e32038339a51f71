use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bus::{Bus, Endpoint, Endpoints, EventKind, Exit, Load, Split};
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::ReplicaState;
use crate::logs::Logs;
use crate::metrics::Metrics;
use crate::replica::{self, Control};

pub struct Options {
    /// Substituted for `{bulwark}` in commands.
    pub bulwark: PathBuf,
    /// Print replica output to bulwark's stdout, prefixed `service/index | `.
    pub echo_logs: bool,
    /// Lines of output kept per service.
    pub log_lines: usize,
    /// Where the oci driver keeps bundles, unpacked rootfs tarballs and runc's state.
    pub oci: crate::oci::OciDirs,
    /// Where replicas' cgroups go, or why there are none (a service with `resources`
    /// then fails to start, saying so).
    pub cgroups: crate::CgroupSupport,
    /// Where replicas' notify sockets are bound (emptied when the first is; one
    /// supervisor per directory). `None`: a fresh directory under `$TMPDIR`.
    pub notify_dir: Option<PathBuf>,
    /// Where the token files of `[leader]` services go by default (made when the first
    /// is written). `None`: a directory under `$TMPDIR` named after bulwark's pid.
    pub leader_dir: Option<PathBuf>,
    /// Where warm services' checkpoints go (emptied at start: a checkpoint is restored
    /// only into the run of bulwark that took it). `None`: a directory under `$TMPDIR`
    /// named after bulwark's pid.
    pub warm_dir: Option<PathBuf>,
    /// Grants leaderships and fencing tokens to `[leader]` services; `None`: such
    /// services run with standbys only (for tests of the rest of the runtime).
    pub election: Option<Arc<dyn store::Election>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no service named {0:?} in the stack file")]
    UnknownService(String),
    #[error("service {service:?} has no replica {index}")]
    UnknownReplica { service: String, index: u32 },
    #[error("bulwark is shutting down")]
    ShuttingDown,
    #[error(
        "service {service:?}: {action} would leave fewer than min_available = {min} replicas \
         ready; lower min_available or choose fewer"
    )]
    Budget {
        service: String,
        action: String,
        min: u32,
    },
    #[error(
        "service {0:?} is being rolled out; wait for the rollout to end, or `bulwark rollout \
         abort {0}` first"
    )]
    RolloutUnderWay(String),
}

#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    pub index: u32,
    /// The running incarnation's process: a container's PID 1 (as the host numbers it).
    pub pid: Option<u32>,
    /// A container's runtime process (runc), the one bulwark spawned and watches.
    pub runtime_pid: Option<u32>,
    /// Where the running incarnation is reached: 127.0.0.1, or its container's own
    /// address (`network = "private"`).
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub state: ReplicaState,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Set while crash-looping: the last lines the replica wrote to stderr.
    pub stderr_tail: Vec<String>,
    pub started_at_ms: Option<u64>,
    /// The revision of the service it runs.
    pub revision: u32,
    /// Taken out of the proxy's rotation by a remediation (`eject`, `drain`), though it
    /// may be ready.
    pub held_out: bool,
    /// The kernel's OOM killer ended the last incarnation (`last_exit` is its signal 9).
    pub oom_killed: bool,
    /// The running incarnation's cgroups, when its service sets `resources`.
    pub cgroup: Option<Arc<launch::cgroup::ReplicaCgroup>>,
    /// The last `STATUS=` the replica sent on its notify socket (this incarnation).
    pub notify_status: Option<String>,
    /// Its role, when its service has `[leader]` (`None` otherwise).
    pub role: Option<Role>,
    /// The fencing token it holds, as the leader.
    pub token: Option<u64>,
}

/// A replica's role in a service with `[leader]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its running incarnation was promoted and holds the current token.
    Leader,
    /// Anything else: not promoted yet, or deposed, or a new incarnation of a former
    /// leader.
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

impl ReplicaStatus {
    fn new(index: u32, revision: u32) -> Self {
        ReplicaStatus {
            index,
            revision,
            pid: None,
            runtime_pid: None,
            addr: None,
            port: None,
            state: ReplicaState::Pending,
            ready: false,
            restarts: 0,
            last_exit: None,
            stderr_tail: Vec::new(),
            started_at_ms: None,
            held_out: false,
            oom_killed: false,
            cgroup: None,
            notify_status: None,
            role: None,
            token: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub name: String,
    pub desired: u32,
    pub expose: Option<SocketAddr>,
    pub replicas: Vec<ReplicaStatus>,
    /// The revision the service runs (a rollout's new one runs beside it).
    pub revision: u32,
}

/// Supervises every service of a stack. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub bus: Arc<Bus>,
    pub metrics: Metrics,
    pub bulwark: Arc<Path>,
    pub oci: crate::oci::OciDirs,
    /// Bounds replicas that are restarting at once (spawned, startup not yet passed).
    pub restart_permits: Arc<Semaphore>,
    services: Mutex<BTreeMap<String, ServiceEntry>>,
    pub log_lines: usize,
    pub echo_logs: bool,
    /// Names in dependency order (replaced by a reload).
    order: Mutex<Vec<String>>,
    pub shutting_down: watch::Sender<bool>,
    pub cgroups: crate::CgroupSupport,
    /// Where replicas' notify sockets are bound; made when the first one is.
    notify_sockets: OnceLock<crate::notify::Sockets>,
    notify_dir: Option<PathBuf>,
    pub leader_dir: PathBuf,
    pub warm_dir: PathBuf,
    pub election: Option<Arc<dyn store::Election>>,
    /// Services whose election task runs.
    pub elections: Mutex<std::collections::BTreeSet<String>>,
    /// Notified whenever an election task ends (its leader deposed).
    pub elections_ended: tokio::sync::Notify,
}

/// Invariant: `endpoints` holds exactly the replicas whose status is `ready` with a port,
/// and is republished (with a higher version) whenever that set changes.
pub(crate) struct ServiceEntry {
    /// The stable revision's spec: what replicas run outside a rollout.
    pub spec: Arc<spec::Service>,
    /// The stable revision.
    pub stable: u32,
    /// The spec of every revision a replica runs or may be started with (the stable one
    /// and, during a rollout, the new one).
    pub revisions: BTreeMap<u32, Arc<spec::Service>>,
    /// The last revision handed out.
    pub last_revision: u32,
    /// How requests divide between revisions, during a canary or blue-green rollout.
    pub split: Option<Split>,
    /// A rollout holds the service (scaling waits for it).
    pub rolling_out: bool,
    /// The current leader of a service with `[leader]`, set by its election task only.
    pub leader: Option<crate::leader::Term>,
    pub desired: u32,
    pub replicas: BTreeMap<u32, ReplicaEntry>,
    pub(crate) endpoints: watch::Sender<Arc<Endpoints>>,
    /// Bumped on every status change of any replica, for waiters.
    pub(crate) changed: watch::Sender<u64>,
    logs: Arc<Logs>,
}

impl ServiceEntry {
    pub fn new(svc: &spec::Service, log_lines: usize, echo_logs: bool) -> Self {
        let spec = Arc::new(svc.clone());
        let entry = ServiceEntry {
            revisions: BTreeMap::from([(1, spec.clone())]),
            spec,
            stable: 1,
            last_revision: 1,
            split: None,
            rolling_out: false,
            leader: None,
            desired: svc.replicas,
            replicas: BTreeMap::new(),
            endpoints: watch::channel(Arc::new(Endpoints::default())).0,
            changed: watch::channel(0).0,
            logs: Arc::new(Logs::new(&svc.name, log_lines, echo_logs)),
        };
        // A `[leader]` service's snapshots carry its leader routing from the first one: a
        // cluster node with none of its replicas publishes no other, and its proxy must
        // still send leader traffic to the leader elsewhere, never balance it over all.
        entry.endpoints.send_replace(Arc::new(Endpoints {
            leader: crate::leader::routing(&entry),
            ..Endpoints::default()
        }));
        entry
    }
}

pub(crate) struct ReplicaEntry {
    pub status: ReplicaStatus,
    /// The revision it runs (also in `status`).
    pub revision: u32,
    /// Asked to go away by a rollout: out of the endpoints and of revision views at once,
    /// while its task drains and stops it.
    pub removing: bool,
    /// Set when the replica turns ready; part of the endpoint it is published as.
    pub(crate) ready_since: std::time::Instant,
    pub(crate) load: Arc<Load>,
    pub control: mpsc::UnboundedSender<Control>,
    task: Option<JoinHandle<()>>,
}

impl Supervisor {
    pub fn new(stack: &spec::Stack, bus: Arc<Bus>, registry: &mut Registry, opts: Options) -> Self {
        let metrics = Metrics::register(registry);
        let services = stack
            .services
            .iter()
            .map(|s| {
                let entry = ServiceEntry::new(s, opts.log_lines, opts.echo_logs);
                (s.name.clone(), entry)
            })
            .collect();
        Supervisor {
            shared: Arc::new(Shared {
                bus,
                metrics,
                bulwark: opts.bulwark.into(),
                oci: opts.oci,
                restart_permits: Arc::new(Semaphore::new(
                    stack.supervisor.max_concurrent_restarts as usize,
                )),
                services: Mutex::new(services),
                order: Mutex::new(stack.services.iter().map(|s| s.name.clone()).collect()),
                shutting_down: watch::channel(false).0,
                log_lines: opts.log_lines,
                cgroups: opts.cgroups,
                echo_logs: opts.echo_logs,
                notify_sockets: OnceLock::new(),
                notify_dir: opts.notify_dir,
                leader_dir: opts.leader_dir.unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("bulwark-leader-{}", std::process::id()))
                }),
                warm_dir: {
                    let dir = opts.warm_dir.unwrap_or_else(|| {
                        std::env::temp_dir().join(format!("bulwark-warm-{}", std::process::id()))
                    });
                    let _ = std::fs::remove_dir_all(&dir);
                    dir
                },
                election: opts.election,
                elections: Mutex::new(std::collections::BTreeSet::new()),
                elections_ended: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Ready replicas of `service`, as a stream of snapshots.
    pub fn endpoints(&self, service: &str) -> Option<watch::Receiver<Arc<Endpoints>>> {
        self.shared
            .lock()
            .get(service)
            .map(|e| e.endpoints.subscribe())
    }

    /// The current settings of a service (a reload may have replaced them).
    pub fn service_spec(&self, service: &str) -> Option<Arc<spec::Service>> {
        self.shared.spec(service)
    }

    /// Whether `service` is in the stack (a reload may have removed it).
    pub fn in_stack(&self, service: &str) -> bool {
        self.shared.order().iter().any(|n| n == service)
    }

    pub fn logs(&self, service: &str) -> Option<Arc<Logs>> {
        self.shared.lock().get(service).map(|e| e.logs.clone())
    }

    /// Starts every service in dependency order: a service's replicas are spawned once
    /// each service it depends on has at least one ready replica.
    pub fn start(&self) -> JoinHandle<()> {
        let sup = self.clone();
        tokio::spawn(async move {
            let order = sup.shared.order();
            crate::leader::ensure_tasks(&sup.shared);
            if sup.start_in_order(&order).await {
                let services = order.len();
                sup.shared.bus.publish(EventKind::StackUp { services });
            }
        })
    }

    /// Spawns the replicas of each service in `names` that has none yet (in that order,
    /// which is the dependency order), once each service it depends on has at least one
    /// ready replica. Returns `false` if the stack began shutting down first.
    pub(crate) async fn start_in_order(&self, names: &[String]) -> bool {
        let mut stop = self.shared.shutting_down.subscribe();
        for name in names {
            let deps = match self.shared.lock().get(name.as_str()) {
                Some(e) if e.replicas.is_empty() => e.spec.depends_on.clone(),
                _ => continue,
            };
            for dep in &deps {
                tokio::select! {
                    () = self.wait_ready(dep) => {}
                    _ = stop.wait_for(|s| *s) => return false,
                }
            }
            if *stop.borrow() {
                return false;
            }
            let mut services = self.shared.lock();
            if let Some(entry) = services.get_mut(name.as_str())
                && entry.replicas.is_empty()
            {
                for index in 0..entry.desired {
                    self.add_replica(entry, index);
                }
            }
        }
        true
    }

    /// Resolves when `service` has at least one ready replica (or wants none).
    async fn wait_ready(&self, service: &str) {
        let Some(mut changed) = self
            .shared
            .lock()
            .get(service)
            .map(|e| e.changed.subscribe())
        else {
            return;
        };
        loop {
            {
                let services = self.shared.lock();
                let Some(e) = services.get(service) else {
                    return;
                };
                if e.desired == 0 || e.replicas.values().any(|r| r.status.ready) {
                    return;
                }
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    fn add_replica(&self, entry: &mut ServiceEntry, index: u32) {
        self.add_replica_of(entry, index, entry.stable);
    }

    /// Starts replica `index` running `revision` (which must be in `entry.revisions`).
    pub(crate) fn add_replica_of(&self, entry: &mut ServiceEntry, index: u32, revision: u32) {
        let spec = entry
            .revisions
            .get(&revision)
            .cloned()
            .unwrap_or_else(|| entry.spec.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        // The entry is in the table before the task can look its revision up.
        entry.replicas.insert(
            index,
            ReplicaEntry {
                revision,
                removing: false,
                status: ReplicaStatus::new(index, revision),
                ready_since: std::time::Instant::now(),
                load: Arc::new(Load::default()),
                control: tx,
                task: None,
            },
        );
        let task = tokio::spawn(replica::run(
            self.shared.clone(),
            spec,
            entry.logs.clone(),
            index,
            rx,
        ));
        if let Some(r) = entry.replicas.get_mut(&index) {
            r.task = Some(task);
        }
        self.shared
            .metrics
            .set_state(&entry.spec.name, index, ReplicaState::Pending, false);
    }

    pub fn status(&self) -> Vec<ServiceStatus> {
        let services = self.shared.lock();
        self.shared
            .order()
            .iter()
            .filter_map(|name| services.get(name.as_str()))
            .map(service_status)
            .collect()
    }

    /// One service's status (`None`: no such service), without the others'.
    pub fn service_status(&self, service: &str) -> Option<ServiceStatus> {
        self.shared.lock().get(service).map(service_status)
    }

    /// Restarts one replica, or every replica of the service one after another, each
    /// waiting for the previous one to be ready again (so capacity drops by one at most).
    pub fn restart(&self, service: &str, index: Option<u32>) -> Result<(), ControlError> {
        self.check_running()?;
        let indices: Vec<u32> = {
            let services = self.shared.lock();
            let entry = services
                .get(service)
                .ok_or_else(|| ControlError::UnknownService(service.into()))?;
            // A budget that no restart can ever meet is refused, not waited on.
            let min = entry.spec.min_available.of(entry.desired);
            if entry.desired > 0 && min >= entry.desired {
                return Err(ControlError::Budget {
                    service: service.into(),
                    action: "restarting a replica".into(),
                    min,
                });
            }
            match index {
                Some(i) if entry.replicas.contains_key(&i) => vec![i],
                Some(i) => {
                    return Err(ControlError::UnknownReplica {
                        service: service.into(),
                        index: i,
                    });
                }
                None => entry.replicas.keys().copied().collect(),
            }
        };
        let sup = self.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            for i in indices {
                sup.within_budget(&service, i, "restart").await;
                let Some((before, mut changed)) = sup.send(&service, i, Control::Restart) else {
                    continue;
                };
                // Wait until this replica has restarted and is ready (or is gone).
                loop {
                    let done = sup
                        .shared
                        .lock()
                        .get(service.as_str())
                        .and_then(|e| e.replicas.get(&i))
                        .is_none_or(|r| r.status.ready && r.status.restarts > before);
                    if done || changed.changed().await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(())
    }

    /// Waits until taking replica `index` of `service` out leaves at least `min_available`
    /// ready replicas (at once if it is not ready itself), saying so on the bus once if
    /// it has to wait.
    pub(crate) async fn within_budget(&self, service: &str, index: u32, what: &str) {
        let mut said = false;
        let Some(mut changed) = self.watch(service) else {
            return;
        };
        loop {
            let wait = {
                let services = self.shared.lock();
                let Some(e) = services.get(service) else {
                    return;
                };
                let ready = e
                    .replicas
                    .values()
                    .filter(|r| r.status.ready && !r.status.held_out)
                    .count() as u32;
                let min = e.spec.min_available.of(e.desired);
                let this_ready = e.replicas.get(&index).is_some_and(|r| r.status.ready);
                (this_ready && ready <= min).then_some((ready, min))
            };
            let Some((ready, min_available)) = wait else {
                return;
            };
            if !said {
                said = true;
                tracing::warn!(%service, index, ready, min_available, "{what} waits for the disruption budget");
                self.shared.bus.publish(EventKind::BudgetWait {
                    service: service.into(),
                    action: format!("{what} of {service}/{index}"),
                    ready,
                    min_available,
                });
            }
            if changed.changed().await.is_err() || self.check_running().is_err() {
                return;
            }
        }
    }

    fn send(&self, service: &str, index: u32, c: Control) -> Option<(u32, watch::Receiver<u64>)> {
        let services = self.shared.lock();
        let entry = services.get(service)?;
        let r = entry.replicas.get(&index)?;
        r.control.send(c).ok()?;
        Some((r.status.restarts, entry.changed.subscribe()))
    }

    /// Sets the number of replicas. New replicas take the lowest free indices; scaling
    /// down drains and stops the highest ones.
    pub fn scale(&self, service: &str, replicas: u32) -> Result<u32, ControlError> {
        self.check_running()?;
        let mut services = self.shared.lock();
        let entry = services
            .get_mut(service)
            .ok_or_else(|| ControlError::UnknownService(service.into()))?;
        if entry.rolling_out {
            return Err(ControlError::RolloutUnderWay(service.into()));
        }
        let min = entry.spec.min_available.of(replicas);
        if replicas < min && replicas < entry.desired {
            return Err(ControlError::Budget {
                service: service.into(),
                action: format!("scaling to {replicas}"),
                min,
            });
        }
        let from = entry.desired;
        entry.desired = replicas;
        let live: Vec<u32> = entry
            .replicas
            .iter()
            .filter(|(_, r)| r.status.state != ReplicaState::Stopping)
            .map(|(i, _)| *i)
            .collect();
        if live.len() as u32 > replicas {
            for i in &live[replicas as usize..] {
                if let Some(r) = entry.replicas.get(i) {
                    let _ = r.control.send(Control::Remove);
                }
            }
        } else {
            let mut index = 0;
            for _ in live.len() as u32..replicas {
                while entry.replicas.contains_key(&index) {
                    index += 1;
                }
                self.add_replica(entry, index);
            }
        }
        drop(services);
        self.shared.bus.publish(EventKind::Scaled {
            service: service.into(),
            from,
            to: replicas,
        });
        Ok(from)
    }

    pub(crate) fn check_running(&self) -> Result<(), ControlError> {
        if *self.shared.shutting_down.borrow() {
            Err(ControlError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// The first step of stopping, for a cluster agent before it leaves: every leader is
    /// deposed (out of routing, term resigned, token file `standby`, `demote` run) while
    /// the node's lease still holds its terms, so no other node's replica is elected
    /// while one here still acts as leader. Nothing starts from now on. Returns when every
    /// election task ended, or after `within` (false).
    pub async fn step_down(&self, within: std::time::Duration) -> bool {
        self.shared.shutting_down.send_replace(true);
        let all_ended = async {
            loop {
                let ended = self.shared.elections_ended.notified();
                if self
                    .shared
                    .elections
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
                {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(within, all_ended).await.is_ok()
    }

    /// Drains and stops every replica, services in reverse dependency order. Returns
    /// when no replica process remains.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.send_replace(true);
        self.shared.bus.publish(EventKind::StackStopping);
        for name in self.shared.order().iter().rev() {
            let tasks: Vec<JoinHandle<()>> = {
                let mut services = self.shared.lock();
                let Some(entry) = services.get_mut(name.as_str()) else {
                    continue;
                };
                entry
                    .replicas
                    .values_mut()
                    .filter_map(|r| {
                        let _ = r.control.send(Control::Stop);
                        r.task.take()
                    })
                    .collect()
            };
            for t in tasks {
                let _ = t.await;
            }
        }
        self.shared.bus.publish(EventKind::StackStopped);
    }
}

impl Shared {
    pub fn notify_sockets(&self) -> &crate::notify::Sockets {
        self.notify_sockets
            .get_or_init(|| crate::notify::Sockets::new(self.notify_dir.as_deref()))
    }

    pub fn order(&self) -> Vec<String> {
        self.order.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_order(&self, names: Vec<String>) {
        *self.order.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// The spec replica `index` of `service` runs now: its revision's (a reload may have
    /// replaced it).
    pub fn replica_spec(&self, service: &str, index: u32) -> Option<Arc<spec::Service>> {
        let services = self.lock();
        let e = services.get(service)?;
        let rev = e.replicas.get(&index).map_or(e.stable, |r| r.revision);
        Some(e.revisions.get(&rev).unwrap_or(&e.spec).clone())
    }

    /// The stable spec of a service.
    pub fn spec(&self, service: &str) -> Option<Arc<spec::Service>> {
        self.lock().get(service).map(|e| e.spec.clone())
    }

    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ServiceEntry>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to one replica's status, then republishes endpoints if readiness or
    /// address changed, updates metrics and wakes waiters.
    pub fn update(&self, service: &str, index: u32, f: impl FnOnce(&mut ReplicaStatus)) {
        let mut services = self.lock();
        let Some(entry) = services.get_mut(service) else {
            return;
        };
        let Some(r) = entry.replicas.get_mut(&index) else {
            return;
        };
        let before = (r.status.ready, r.status.addr, r.status.port);
        f(&mut r.status);
        if r.status.ready && !before.0 {
            r.ready_since = std::time::Instant::now();
        }
        self.metrics
            .set_state(service, index, r.status.state, r.status.ready);
        if before != (r.status.ready, r.status.addr, r.status.port) {
            publish_endpoints(entry);
        }
        entry.changed.send_modify(|v| *v += 1);
    }

    /// A new incarnation's in-flight counter, which endpoints hand to the proxy.
    pub fn set_load(&self, service: &str, index: u32, load: Arc<Load>) {
        if let Some(r) = self
            .lock()
            .get_mut(service)
            .and_then(|e| e.replicas.get_mut(&index))
        {
            r.load = load;
        }
    }

    /// The replica's task has ended for good (scaled away): forget it.
    pub fn remove(&self, service: &str, index: u32) {
        let mut services = self.lock();
        if let Some(entry) = services.get_mut(service)
            && entry.replicas.remove(&index).is_some()
        {
            self.metrics.forget(service, index);
            publish_endpoints(entry);
            entry.changed.send_modify(|v| *v += 1);
        }
    }
}

fn service_status(e: &ServiceEntry) -> ServiceStatus {
    ServiceStatus {
        name: e.spec.name.clone(),
        desired: e.desired,
        expose: e.spec.expose.as_ref().map(|x| x.listen),
        replicas: e
            .replicas
            .values()
            .map(|r| {
                let mut status = r.status.clone();
                crate::leader::fill_role(e, &mut status);
                status
            })
            .collect(),
        revision: e.stable,
    }
}

pub(crate) fn publish_endpoints(entry: &ServiceEntry) {
    let ready = entry
        .replicas
        .values()
        .filter(|r| r.status.ready && !r.removing && !r.status.held_out)
        .filter_map(|r| {
            Some(Endpoint {
                replica: r.status.index,
                addr: SocketAddr::new(r.status.addr?, r.status.port?),
                revision: r.revision,
                ready_since: r.ready_since,
                load: r.load.clone(),
            })
        })
        .collect();
    entry.endpoints.send_modify(|e| {
        *e = Arc::new(Endpoints {
            version: e.version + 1,
            ready,
            split: entry.split.clone(),
            mixed: entry.replicas.values().any(|r| r.revision != entry.stable),
            leader: crate::leader::routing(entry),
        })
    });
}
