//! The experiments of one `up`: the pre-flight gate, one experiment at a time per service,
//! halting, and what is running now.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, EventKind};
use proxy::Injected;
use serde::Serialize;
use spec::Experiment;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Host, Outcomes, Refusal, Replica, Report, Trigger, now_ms, probe};

/// Finished experiments kept for `bulwark chaos status` (they are all in the journal).
const RECENT: usize = 50;

/// The experiments of a running stack.
#[derive(Clone)]
pub struct Chaos {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub host: Arc<dyn Host>,
    pub bus: Arc<Bus>,
    pub injected: Arc<Injected>,
    pub outcomes: Arc<Outcomes>,
    pub experiments: Vec<Experiment>,
    /// The global kill switch: off halts every experiment and refuses new ones.
    pub faults: watch::Receiver<bool>,
    state: Mutex<State>,
    /// `state.running.len()`, published for `halt` to wait for 0.
    running: watch::Sender<usize>,
    /// `up` is stopping: nothing starts any more.
    closing: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    running: BTreeMap<String, Running>,
    recent: VecDeque<Report>,
    next_id: u64,
}

struct Running {
    view: RunningView,
    halt: watch::Sender<bool>,
}

/// An experiment under way.
#[derive(Debug, Clone, Serialize)]
pub struct RunningView {
    /// Its run id.
    pub id: u64,
    /// The experiment's name.
    pub name: String,
    /// The target service.
    pub service: String,
    /// What started it.
    pub trigger: Trigger,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// The replicas hit (empty until the gate has passed).
    pub replicas: Vec<u32>,
}

/// What `bulwark chaos status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Whether experiments may run (the kill switch).
    pub faults_on: bool,
    /// Running now.
    pub running: Vec<RunningView>,
    /// The latest finished runs, newest first.
    pub recent: Vec<Report>,
}

impl Chaos {
    /// The experiments of `experiments`, idle until started.
    pub fn new(
        experiments: Vec<Experiment>,
        host: Arc<dyn Host>,
        bus: Arc<Bus>,
        injected: Arc<Injected>,
        outcomes: Arc<Outcomes>,
        faults: watch::Receiver<bool>,
    ) -> Chaos {
        outcomes.arm_for(&experiments);
        Chaos {
            inner: Arc::new(Inner {
                host,
                bus,
                injected,
                outcomes,
                experiments,
                faults,
                state: Mutex::new(State::default()),
                running: watch::channel(0).0,
                closing: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The declared experiments.
    pub fn experiments(&self) -> &[Experiment] {
        &self.inner.experiments
    }

    /// The declared experiment `name`.
    pub fn experiment(&self, name: &str) -> Result<&Experiment, Refusal> {
        self.inner
            .experiments
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| Refusal::Unknown(name.to_owned()))
    }

    /// Running and recent experiments.
    pub fn status(&self) -> Status {
        let st = self.inner.lock();
        Status {
            faults_on: *self.inner.faults.borrow(),
            running: st.running.values().map(|r| r.view.clone()).collect(),
            recent: st.recent.iter().cloned().collect(),
        }
    }

    /// Passes the pre-flight gate and starts `exp`; the handle resolves to its report.
    /// Refused (and nothing broken) when faults are off, another experiment runs on the
    /// service, an SLO of the service pages, an incident of it is open, it is below its
    /// disruption budget (or the fault would take it there), or the steady state does not
    /// hold.
    pub async fn start(
        &self,
        exp: Experiment,
        trigger: Trigger,
    ) -> Result<(u64, JoinHandle<Option<Report>>), Refusal> {
        let (id, halt) = self.reserve(&exp, trigger)?;
        self.inner.outcomes.arm_for(std::slice::from_ref(&exp));
        // The gate and the run are one task of their own: a caller that goes away (an API
        // client that disconnects) neither leaves the slot taken nor cuts a fault short.
        let (gated_tx, gated_rx) = tokio::sync::oneshot::channel();
        let chaos = self.clone();
        let task = tokio::spawn(async move {
            let slot = Slot {
                inner: chaos.inner.clone(),
                service: exp.target.service.clone(),
            };
            match chaos.gate(&exp).await {
                Ok(targets) => {
                    chaos
                        .inner
                        .lock()
                        .running
                        .entry(slot.service.clone())
                        .and_modify(|r| {
                            r.view.replicas = targets.iter().map(|t| t.index).collect();
                        });
                    let _ = gated_tx.send(Ok(()));
                    let report =
                        crate::run::lifecycle(chaos.inner.clone(), exp, id, trigger, targets, halt)
                            .await;
                    slot.release(Some(report.clone()));
                    Some(report)
                }
                Err(why) => {
                    slot.release(None);
                    chaos.inner.bus.publish(EventKind::ExperimentRefused {
                        service: exp.target.service.clone(),
                        name: exp.name.clone(),
                        reason: why.clone(),
                    });
                    let _ = gated_tx.send(Err(why));
                    None
                }
            }
        });
        match gated_rx.await {
            Ok(Ok(())) => Ok((id, task)),
            Ok(Err(why)) => Err(Refusal::Gate(why)),
            Err(_) => Err(Refusal::Gate(
                "the experiment's task ended before its gate".into(),
            )),
        }
    }

    /// Takes the service's slot, or says who holds it.
    fn reserve(
        &self,
        exp: &Experiment,
        trigger: Trigger,
    ) -> Result<(u64, watch::Receiver<bool>), Refusal> {
        let refuse = |why: String| {
            self.inner.bus.publish(EventKind::ExperimentRefused {
                service: exp.target.service.clone(),
                name: exp.name.clone(),
                reason: why.clone(),
            });
            Err(Refusal::Gate(why))
        };
        if self
            .inner
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return refuse("bulwark is stopping".into());
        }
        if !*self.inner.faults.borrow() {
            return refuse("faults are off; `bulwark faults on` lets experiments run again".into());
        }
        let mut st = self.inner.lock();
        if let Some(other) = st.running.get(&exp.target.service) {
            let why = format!(
                "experiment {} is already running on {} (one at a time per service)",
                other.view.name, exp.target.service
            );
            drop(st);
            return refuse(why);
        }
        st.next_id += 1;
        let id = st.next_id;
        let (halt, halted) = watch::channel(false);
        let view = RunningView {
            id,
            name: exp.name.clone(),
            service: exp.target.service.clone(),
            trigger,
            started_ms: now_ms(),
            replicas: Vec::new(),
        };
        st.running
            .insert(exp.target.service.clone(), Running { view, halt });
        self.inner.running.send_replace(st.running.len());
        Ok((id, halted))
    }

    /// The guards, then the targets.
    async fn gate(&self, exp: &Experiment) -> Result<Vec<Replica>, String> {
        let host = &*self.inner.host;
        let service = exp.target.service.as_str();
        if let Some(alert) = host.paging(service) {
            return Err(format!(
                "{service} is paging ({alert}); experiments wait for calm"
            ));
        }
        if let Some(incident) = host.incident(service) {
            return Err(format!("{incident} of {service} is open"));
        }
        // A dependency fault hits every client of the dependency: it must be calm too.
        if let spec::ChaosFault::Dependency { to, .. } = &exp.fault {
            if let Some(alert) = host.paging(to) {
                return Err(format!("{to}, the dependency, is paging ({alert})"));
            }
            if let Some(incident) = host.incident(to) {
                return Err(format!("{incident} of {to}, the dependency, is open"));
            }
        }
        let replicas = host
            .replicas(service)
            .ok_or_else(|| format!("{service} is not in the running stack"))?;
        let (desired, budget) = host.budget(service).unwrap_or((0, spec::Amount::Count(0)));
        let ready: Vec<u32> = replicas
            .iter()
            .filter(|r| r.ready)
            .map(|r| r.index)
            .collect();
        let min = budget.of(desired);
        if (ready.len() as u32) < min {
            return Err(format!(
                "{service} has {} of {desired} replicas ready, below its disruption budget (min_available = {min})",
                ready.len()
            ));
        }
        let count = target_count(exp.target.pick, ready.len());
        if count == 0 {
            return Err(format!("{service} has no ready replica to break"));
        }
        if exp.fault.disrupts_replicas() && (ready.len() - count) < min as usize {
            return Err(format!(
                "breaking {count} of the {} ready replicas of {service} would leave fewer than min_available = {min}",
                ready.len()
            ));
        }
        for p in &exp.steady_state {
            probe::check(p, host, &self.inner.outcomes)
                .await
                .map_err(|e| format!("the steady state does not hold before the fault: {e}"))?;
        }
        let picked = policy::chaos::pick_targets(&ready, count, |n| rand::random_range(0..n));
        Ok(replicas
            .into_iter()
            .filter(|r| picked.contains(&r.index))
            .collect())
    }

    /// Stops every running experiment (their faults are undone and rollbacks run) and
    /// waits up to `grace` for them to end; how many were running.
    pub async fn halt(&self, grace: Duration) -> usize {
        let n = self.stop_all();
        self.settled(grace).await;
        n
    }

    /// Tells every running experiment to stop, without waiting; how many were running.
    pub fn stop_all(&self) -> usize {
        let st = self.inner.lock();
        for r in st.running.values() {
            r.halt.send_replace(true);
        }
        st.running.len()
    }

    /// Waits up to `grace` for every running experiment to end.
    pub async fn settled(&self, grace: Duration) {
        let mut running = self.inner.running.subscribe();
        let _ = tokio::time::timeout(grace, running.wait_for(|n| *n == 0)).await;
    }

    /// For `up`'s stop: refuses every new experiment, then halts the running ones and waits
    /// up to `grace` for their faults to be undone and their rollbacks run.
    pub async fn close(&self, grace: Duration) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.halt(grace).await;
    }

    /// Halts every experiment when the kill switch turns off; stops with the bus.
    pub fn spawn_kill_switch(&self) -> JoinHandle<()> {
        let chaos = self.clone();
        let mut faults = self.inner.faults.clone();
        tokio::spawn(async move {
            while faults.changed().await.is_ok() {
                if !*faults.borrow_and_update() {
                    let n = chaos.halt(Duration::from_secs(30)).await;
                    if n > 0 {
                        tracing::warn!(experiments = n, "faults off: every experiment halted");
                    }
                }
            }
        })
    }
}

/// Removes disk-fill files left by a bulwark that died during the fault (the fault is undone
/// by the bulwark that made it; one killed with SIGKILL cannot). File-system work: call it
/// off the async workers, before [`Chaos::new`].
pub fn remove_leftover_fills(experiments: &[Experiment]) {
    for e in experiments {
        if let spec::ChaosFault::DiskFill { path, .. } = &e.fault {
            let file = crate::fault::fill_file(path, &e.name);
            if std::fs::remove_file(&file).is_ok() {
                tracing::warn!(file = %file.display(), "removed a disk-fill file an earlier bulwark left");
            }
        }
    }
}

/// How many replicas a pick takes of `ready`.
fn target_count(pick: spec::Pick, ready: usize) -> usize {
    match pick {
        spec::Pick::One => 1.min(ready),
        spec::Pick::All => ready,
        spec::Pick::Fixed(n) => (n as usize).min(ready),
        spec::Pick::Percent(p) => ((ready as f64 * p / 100.0).ceil() as usize).min(ready),
    }
}

/// A service's slot while its experiment is gated or runs: freed on release, or when the
/// task ends any other way (a panic), so the service is never blocked for good.
struct Slot {
    inner: Arc<Inner>,
    service: String,
}

impl Slot {
    fn release(self, report: Option<Report>) {
        self.inner.finish(&self.service, report);
        std::mem::forget(self);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.finish(&self.service, None);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frees the service's slot, keeping `report`.
    pub(crate) fn finish(&self, service: &str, report: Option<Report>) {
        let mut st = self.lock();
        st.running.remove(service);
        self.running.send_replace(st.running.len());
        if let Some(r) = report {
            st.recent.push_front(r);
            st.recent.truncate(RECENT);
        }
    }
}
