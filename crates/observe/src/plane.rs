//! The observability plane at run time: feeds request outcomes to the SLO engine, evaluates
//! it, turns alert transitions into alerts, incidents and notifications, follows the event
//! bus for incidents, and writes everything through to the journal.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bus::now_ms;
use bus::{Bus, EventKind, LocalReason, OutcomeSink, RequestOutcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::alert::{Alert, AlertBook, Notice, Severity, Silence};
use crate::incident::{Incident, IncidentChange, Incidents, Reliability};
use crate::journal::{Journal, Restored};
use crate::notify::{self, Routing};
use crate::slo::{SloEngine, SloReport, Tier, TierChange};

/// Errors this far apart start a new "onset" (the best guess of when a fault began).
const ONSET_GAP: Duration = Duration::from_secs(60);
/// Resolved alerts kept in memory (all are in the journal).
const ALERT_HISTORY: usize = 1000;

pub struct PlaneConfig {
    pub routing: Routing,
    pub repeat_interval: Duration,
    /// How often SLOs are evaluated. Detection can be no faster than this.
    pub eval_every: Duration,
}

/// Cheap to clone; every clone is the same plane.
#[derive(Clone)]
pub struct Plane {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<SloEngine>,
    state: Mutex<State>,
    journal: Option<Arc<Journal>>,
    notices: mpsc::UnboundedSender<Notice>,
    bus: Arc<Bus>,
    onsets: Mutex<HashMap<String, Onset>>,
    /// `bulwark_alerts_firing{service,severity}`, as of the last evaluation.
    firing: Family<FiringLabels, Gauge>,
    /// Every label set of `firing` so far (a Family cannot be iterated).
    firing_seen: Mutex<std::collections::HashSet<FiringLabels>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FiringLabels {
    service: String,
    severity: &'static str,
}

struct State {
    alerts: AlertBook,
    history: VecDeque<Alert>,
    incidents: Incidents,
}

#[derive(Clone, Copy)]
struct Onset {
    first: u64,
    last: u64,
}

impl Plane {
    /// Starts the plane's tasks. `restored` is what the journal kept from earlier runs.
    pub fn start(
        bus: Arc<Bus>,
        engine: Arc<SloEngine>,
        journal: Option<(Arc<Journal>, Restored)>,
        config: PlaneConfig,
    ) -> Plane {
        let (tx, rx) = mpsc::unbounded_channel();
        notify::spawn(config.routing, rx);
        let mut state = State {
            alerts: AlertBook::new(config.repeat_interval.as_millis() as u64),
            history: VecDeque::new(),
            incidents: Incidents::on_node(bus.origin()),
        };
        let journal = journal.map(|(j, restored)| {
            let now = now_ms();
            for change in state.incidents.restore(restored.incidents, now) {
                j.put_incident(change.incident());
            }
            for mut a in restored.alerts {
                // Alerts left firing by an earlier run: what made them fire is gone with
                // that run's SLO windows.
                if a.state == crate::alert::AlertState::Firing {
                    a.state = crate::alert::AlertState::Resolved;
                    a.resolved_at_ms = Some(now);
                    j.put_alert(&a);
                }
                state.history.push_back(a);
            }
            state
                .history
                .make_contiguous()
                .sort_by_key(|a| a.started_at_ms);
            while state.history.len() > ALERT_HISTORY {
                state.history.pop_front();
            }
            for s in restored.silences {
                if s.ends_at_ms > now {
                    state.alerts.add_silence(s);
                }
            }
            j
        });
        let plane = Plane {
            inner: Arc::new(Inner {
                engine,
                state: Mutex::new(state),
                journal,
                notices: tx,
                bus: bus.clone(),
                onsets: Mutex::new(HashMap::new()),
                firing: Family::default(),
                firing_seen: Mutex::default(),
            }),
        };
        plane.spawn_event_follower(bus);
        plane.spawn_evaluator(config.eval_every);
        plane
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `bulwark_alerts_firing{service,severity}`: the alerts firing in the
    /// book (burn rates, no data, and those raised by backups, rollouts...), counted at
    /// each evaluation. Every service with an SLO has its series from the start (at 0), so
    /// a dashboard reads "none firing" rather than "no data".
    pub fn register(&self, registry: &mut Registry) {
        let zeros = self
            .inner
            .engine
            .services()
            .flat_map(|s| {
                [Severity::Page, Severity::Ticket].map(|sev| FiringLabels {
                    service: s.to_owned(),
                    severity: sev.as_str(),
                })
            })
            .map(|l| (l, 0))
            .collect();
        self.count_firing(zeros);
        registry.register(
            "bulwark_alerts_firing",
            "Alerts firing, by service and severity (page, ticket), as of the last evaluation",
            self.inner.firing.clone(),
        );
    }

    /// What the proxy reports request outcomes to.
    pub fn outcome_sink(&self) -> Arc<dyn OutcomeSink> {
        Arc::new(self.clone())
    }

    fn spawn_event_follower(&self, bus: Arc<Bus>) {
        let plane = self.clone();
        let mut live = bus.follow("incident tracker");
        tokio::spawn(async move {
            while let Some(e) = live.next().await {
                let change = plane.state().incidents.on_event(&e);
                if let Some(c) = change {
                    plane.incident_changed(c);
                }
            }
        });
    }

    fn spawn_evaluator(&self, every: Duration) {
        let plane = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                plane.evaluate();
            }
        });
    }

    /// One evaluation: SLO transitions become alerts and incidents; due reminders go out.
    pub fn evaluate(&self) {
        let (now, now_wall) = (Instant::now(), now_ms());
        let wall = |at: Instant| {
            now_wall.saturating_sub(now.saturating_duration_since(at).as_millis() as u64)
        };
        let reports = self.inner.engine.evaluate(now);
        for r in &reports {
            for t in &r.transitions {
                let (name, severity) = match t.tier {
                    Tier::Page => (t.slo.clone(), Severity::Page),
                    Tier::Ticket => (t.slo.clone(), Severity::Ticket),
                    Tier::NoData => (format!("{}:no_data", t.slo), Severity::Ticket),
                };
                match t.change {
                    TierChange::Fired => {
                        let summary = summary(r, t.tier);
                        self.fire(&t.service, &name, severity, summary, wall(t.at));
                    }
                    TierChange::Resolved { .. } => {
                        self.resolve(&t.service, &name, severity, wall(t.at))
                    }
                }
            }
        }
        let mut st = self.state();
        let (notices, changed) = st.alerts.due(now_wall);
        let (_, expired) = st.alerts.silences(now_wall);
        let mut firing: HashMap<FiringLabels, i64> = HashMap::new();
        for a in st.alerts.firing() {
            let labels = FiringLabels {
                service: a.service.clone(),
                severity: a.severity.as_str(),
            };
            *firing.entry(labels).or_default() += 1;
        }
        drop(st);
        self.count_firing(firing);
        for a in &changed {
            self.put_alert(a);
        }
        for id in expired {
            if let Some(j) = &self.inner.journal {
                j.delete_silence(&id);
            }
        }
        for n in notices {
            let _ = self.inner.notices.send(n);
        }
    }

    /// Sets the firing gauges: a series that counted alerts before and none now reads 0,
    /// so a sum over it falls back rather than keeps its last value.
    fn count_firing(&self, firing: HashMap<FiringLabels, i64>) {
        let mut seen = self
            .inner
            .firing_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for labels in seen.iter().filter(|l| !firing.contains_key(*l)) {
            self.inner.firing.get_or_create(labels).set(0);
        }
        for (labels, n) in firing {
            self.inner.firing.get_or_create(&labels).set(n);
            seen.insert(labels);
        }
    }

    /// Raises an alert from outside the SLO engine (backups): the same book, incidents
    /// (for pages), notifications and journal as burn-rate alerts. Raising a firing alert
    /// again changes nothing.
    pub fn raise(&self, service: &str, name: &str, severity: Severity, summary: String) {
        self.fire(service, name, severity, summary, now_ms());
    }

    /// Resolves an alert raised with [`Plane::raise`]; nothing happens if it is not firing.
    pub fn clear(&self, service: &str, name: &str, severity: Severity) {
        self.resolve(service, name, severity, now_ms());
    }

    fn fire(&self, service: &str, name: &str, severity: Severity, summary: String, at_ms: u64) {
        let mut st = self.state();
        let Some((alert, notice)) = st
            .alerts
            .fire(service, name, severity, summary.clone(), at_ms)
        else {
            return;
        };
        let incident = (severity == Severity::Page).then(|| {
            let hint = self
                .onset(service)
                .map(|o| (o.first, "first failed request seen by the proxy".to_owned()));
            st.incidents
                .trigger(service, &alert.fingerprint, summary.clone(), hint, at_ms)
        });
        drop(st);
        self.put_alert(&alert);
        self.inner.bus.publish(EventKind::AlertFiring {
            service: service.into(),
            name: name.into(),
            severity: severity.as_str().into(),
            summary,
            silenced: notice.is_none(),
        });
        if let Some(n) = notice {
            let _ = self.inner.notices.send(n);
        }
        if let Some(c) = incident {
            self.incident_changed(c);
        }
    }

    fn resolve(&self, service: &str, name: &str, severity: Severity, at_ms: u64) {
        let mut st = self.state();
        let Some((alert, notice)) = st.alerts.resolve(service, name, severity, at_ms) else {
            return;
        };
        st.history.push_back(alert.clone());
        if st.history.len() > ALERT_HISTORY {
            st.history.pop_front();
        }
        let incident = st.incidents.clear(service, &alert.fingerprint, at_ms);
        drop(st);
        self.put_alert(&alert);
        self.inner.bus.publish(EventKind::AlertResolved {
            service: service.into(),
            name: name.into(),
            severity: severity.as_str().into(),
            firing_ms: at_ms.saturating_sub(alert.started_at_ms),
        });
        if let Some(n) = notice {
            let _ = self.inner.notices.send(n);
        }
        if let Some(c) = incident {
            self.incident_changed(c);
        }
    }

    fn incident_changed(&self, c: IncidentChange) {
        if let Some(j) = &self.inner.journal {
            j.put_incident(c.incident());
        }
        match c {
            IncidentChange::Opened(i) => {
                tracing::warn!(service = %i.service, id = i.id, title = %i.title, "incident opened");
                self.inner.bus.publish(EventKind::IncidentOpened {
                    service: i.service,
                    id: i.id,
                    title: i.title,
                });
            }
            IncidentChange::Resolved(i) => {
                let ttr_ms = i.ttr_ms().unwrap_or(0);
                tracing::info!(service = %i.service, id = i.id, ttr_ms, "incident resolved");
                self.inner.bus.publish(EventKind::IncidentResolved {
                    service: i.service,
                    id: i.id,
                    ttr_ms,
                });
            }
            IncidentChange::Updated(_) => {}
        }
    }

    fn put_alert(&self, a: &Alert) {
        if let Some(j) = &self.inner.journal {
            j.put_alert(a);
        }
    }

    fn onset(&self, service: &str) -> Option<Onset> {
        self.inner
            .onsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .copied()
    }

    pub fn slo_reports(&self) -> Vec<SloReport> {
        self.inner.engine.peek(Instant::now())
    }

    /// Firing alerts, then resolved ones, newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        let st = self.state();
        let mut all: Vec<Alert> = st.alerts.firing().cloned().collect();
        all.extend(st.history.iter().rev().cloned());
        all
    }

    pub fn incidents(&self) -> Vec<Incident> {
        self.state().incidents.list()
    }

    pub fn reliability(&self) -> Vec<Reliability> {
        self.state().incidents.reliability(now_ms())
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.state().alerts.silences(now_ms()).0
    }

    /// Adds a silence once it is stored; an error means the journal could not store it
    /// and nothing changed.
    pub async fn silence(&self, s: Silence) -> Result<(), crate::journal::JournalError> {
        if let Some(j) = &self.inner.journal {
            j.put_silence(&s).await?;
        }
        self.state().alerts.add_silence(s);
        Ok(())
    }

    /// Removes a silence (whether it existed); an error means the journal could not store
    /// the removal and nothing changed.
    pub async fn unsilence(&self, id: &str) -> Result<bool, crate::journal::JournalError> {
        let known = self.silences().iter().any(|s| s.id == id);
        if !known {
            return Ok(false);
        }
        if let Some(j) = &self.inner.journal {
            j.remove_silence(id).await?;
        }
        Ok(self.state().alerts.remove_silence(id))
    }

    /// Whether the journal writes (always healthy without one).
    pub fn journal_health(&self) -> tokio::sync::watch::Receiver<crate::journal::Health> {
        match &self.inner.journal {
            Some(j) => j.health(),
            None => tokio::sync::watch::channel(crate::journal::Health::default()).1,
        }
    }
}

impl OutcomeSink for Plane {
    fn record(&self, outcome: &RequestOutcome<'_>) {
        self.inner.engine.record(outcome, Instant::now());
        let failed = outcome.status >= 500
            || matches!(
                outcome.local,
                Some(
                    LocalReason::UpstreamFailed
                        | LocalReason::Timeout
                        | LocalReason::NoReplica
                        | LocalReason::Shed
                )
            );
        if !failed {
            return;
        }
        // Only failures take this lock, and only briefly.
        let now = now_ms();
        let mut onsets = self.inner.onsets.lock().unwrap_or_else(|e| e.into_inner());
        match onsets.get_mut(outcome.service) {
            Some(o) if now.saturating_sub(o.last) < ONSET_GAP.as_millis() as u64 => o.last = now,
            _ => {
                onsets.insert(
                    outcome.service.to_owned(),
                    Onset {
                        first: now,
                        last: now,
                    },
                );
            }
        }
    }
}

fn summary(r: &SloReport, tier: Tier) -> String {
    match tier {
        Tier::NoData => format!("{} {}: no requests", r.service, r.slo),
        _ => format!(
            "{} {}: error budget burning fast ({:.1}% remaining, objective {}%)",
            r.service,
            r.slo,
            r.error_budget_remaining * 100.0,
            r.objective * 100.0
        ),
    }
}
