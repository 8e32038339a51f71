//! The remediation engine: triggers in, guarded decisions out.
//!
//! A firing passes, in order: the rule's own guards (max-concurrent, cooldown, rate
//! limit, back-off), what the service allows (a rollout under way: `conflict`; the
//! disruption budget, counting the disruptions already admitted and not yet visible), then,
//! to act, a token of the global action budget. A lasting condition (a firing alert, a
//! metric beyond its bound, a replica's anomaly until the replica is gone) is evaluated
//! again when the guard that held it back says it may pass (or when a replica turns ready,
//! for the budget), never on a poll; an alert that resolves resets the rule's back-off.
//! Rules are known by name, so a reload never sends a decision to another rule.
//!
//! `decide.rs` holds the evaluation, `answer.rs` the approvals and the end of an action.

mod answer;
mod decide;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bus::EventKind;
use policy::remedy::{ActionBudget, RuleGuards, RuleState};
use prometheus_client::registry::Registry;
use spec::{Remediation, RemedyMode, Trigger};
use tokio::sync::Notify;

use crate::trigger::{self, Firing};
use crate::{ActionRecord, AnswerError, Detector, Host, Measures, Records, Shared};

/// The rule of the default pack.
pub(crate) const DEFAULT_RULE: &str = "default:replace-before-oom";

/// The remediation engine. Cheap to clone.
#[derive(Clone)]
pub struct Remedy {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub shared: Arc<Shared>,
    state: Mutex<State>,
    /// A wake-up time was set: the loop computes its sleep again.
    wake: Notify,
}

struct Rule {
    spec: Remediation,
    guards: RuleGuards,
    state: RuleState,
}

/// A lasting condition: rule, service, replica (an anomaly's), alert (its fingerprint).
type Key = (String, String, Option<u32>, Option<String>);

fn key(f: &Firing) -> Key {
    (
        f.rule.clone(),
        f.service.clone(),
        f.replica.filter(|_| f.lasting),
        f.alert.clone(),
    )
}

/// A lasting condition of a rule and a service.
struct Active {
    firing: Firing,
    /// When to evaluate it again; `None` while its action runs or waits.
    wake_at: Option<Instant>,
    /// The guard that held it back last, so a repeat is not recorded again.
    last_guard: Option<String>,
}

struct State {
    enabled: bool,
    rules: Vec<Rule>,
    budget: ActionBudget,
    budget_settings: (f64, u32),
    active: HashMap<Key, Active>,
    /// Since when each metric rule's condition has held, by rule name.
    held_since: HashMap<String, Instant>,
    /// Waiting approvals: the firing and its record.
    pending: HashMap<u64, (Firing, ActionRecord)>,
    /// Disruptions admitted and not yet over, per service (the budget counts them).
    disrupting: HashMap<String, u32>,
    next_id: u64,
}

impl State {
    fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.spec.name == name)
    }

    fn rule_mut(&mut self, name: &str) -> Option<&mut Rule> {
        self.rules.iter_mut().find(|r| r.spec.name == name)
    }
}

impl Remedy {
    /// The engine for `stack`'s rules (and the default pack), reporting on `bus`.
    pub fn new(
        stack: &spec::Stack,
        bus: Arc<bus::Bus>,
        host: Arc<dyn Host>,
        registry: &mut Registry,
    ) -> Remedy {
        let settings = &stack.remediation;
        let state = State {
            enabled: settings.enabled,
            rules: rules(stack).into_iter().map(Rule::new).collect(),
            budget: ActionBudget::new(settings.budget_per_hour, settings.budget_burst),
            budget_settings: (settings.budget_per_hour, settings.budget_burst),
            active: HashMap::new(),
            held_since: HashMap::new(),
            pending: HashMap::new(),
            disrupting: HashMap::new(),
            next_id: 1,
        };
        Remedy {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    bus,
                    host,
                    records: Records::default(),
                    metrics: crate::metrics::Metrics::register(registry),
                }),
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
        }
    }

    /// Every decision of this run, oldest first.
    pub fn actions(&self) -> Vec<ActionRecord> {
        self.inner.shared.records.all()
    }

    /// The actions waiting for approval.
    pub fn pending(&self) -> Vec<ActionRecord> {
        let mut v: Vec<ActionRecord> = self
            .inner
            .lock()
            .pending
            .values()
            .map(|(_, r)| r.clone())
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Approves waiting action `id` (`by`: who, for the record).
    pub fn approve(&self, id: u64, by: &str) -> Result<ActionRecord, AnswerError> {
        self.inner.answer(id, true, &format!("approved by {by}"))
    }

    /// Denies waiting action `id`: nothing is done, and the record says so.
    pub fn deny(&self, id: u64, by: &str) -> Result<ActionRecord, AnswerError> {
        self.inner.answer(id, false, &format!("denied by {by}"))
    }

    /// Takes the rules and settings of a reloaded stack file. A rule kept by name keeps its
    /// guards' history (a reload is no way around a rate limit) and its lasting
    /// conditions; a removed rule's conditions are forgotten.
    pub fn reload(&self, stack: &spec::Stack) {
        let mut st = self.inner.lock();
        let mut old: HashMap<String, Rule> = st
            .rules
            .drain(..)
            .map(|r| (r.spec.name.clone(), r))
            .collect();
        st.rules = rules(stack)
            .into_iter()
            .map(|spec| match old.remove(&spec.name) {
                Some(mut r) => {
                    r.guards = guards(&spec);
                    r.spec = spec;
                    r
                }
                None => Rule::new(spec),
            })
            .collect();
        let names: Vec<String> = st.rules.iter().map(|r| r.spec.name.clone()).collect();
        st.active.retain(|k, _| names.contains(&k.0));
        st.held_since.retain(|k, _| names.contains(k));
        let s = &stack.remediation;
        st.enabled = s.enabled;
        if st.budget_settings != (s.budget_per_hour, s.budget_burst) {
            st.budget = ActionBudget::new(s.budget_per_hour, s.budget_burst);
            st.budget_settings = (s.budget_per_hour, s.budget_burst);
        }
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Runs the engine until the bus closes: events in, decisions out, and the metric
    /// triggers evaluated every second from `measures` and `detector`.
    pub fn spawn(
        &self,
        measures: Arc<Measures>,
        detector: Arc<Detector>,
    ) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        let mut live = inner.shared.bus.follow("remediation");
        tokio::spawn(async move {
            let mut metrics = crate::act::MetricReader::new(measures, detector);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let (next, metric_rules) = inner.loop_state();
                let sleep = tokio::time::sleep_until(
                    next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                        .into(),
                );
                let woken = inner.wake.notified();
                tokio::select! {
                    e = live.next() => match e {
                        Some(e) => inner.on_event(&e.kind),
                        None => return,
                    },
                    () = sleep => inner.wake_due(Instant::now()),
                    () = woken => {}
                    _ = tick.tick(), if metric_rules => inner.metric_tick(&mut metrics),
                }
            }
        })
    }
}

/// The stack's rules, then the default pack unless a rule of the file handles memory
/// leaks itself (or the pack is off).
fn rules(stack: &spec::Stack) -> Vec<Remediation> {
    let mut rules = stack.remediations.clone();
    let own = rules
        .iter()
        .any(|r| r.when == Trigger::Anomaly(spec::AnomalyKind::MemoryLeak));
    if stack.anomaly.enabled && stack.anomaly.replace_before_oom && !own {
        rules.push(Remediation {
            name: DEFAULT_RULE.into(),
            when: Trigger::Anomaly(spec::AnomalyKind::MemoryLeak),
            service: None,
            actions: vec![spec::Action::ReplaceReplica {
                service: None,
                timeout: Duration::from_secs(120),
            }],
            mode: RemedyMode::Auto,
            guards: spec::Guards {
                limit: 10,
                per: Duration::from_secs(3600),
                backoff: Duration::ZERO,
                backoff_max: Duration::ZERO,
                cooldown: Duration::ZERO,
                max_concurrent: 1,
            },
            approve_timeout: Duration::from_secs(900),
            on_timeout: spec::ApproveTimeout::Deny,
        });
    }
    rules
}

fn guards(r: &Remediation) -> RuleGuards {
    RuleGuards {
        limit: r.guards.limit,
        per: r.guards.per,
        backoff: r.guards.backoff,
        backoff_max: r.guards.backoff_max,
        cooldown: r.guards.cooldown,
        max_concurrent: r.guards.max_concurrent,
    }
}

impl Rule {
    fn new(spec: Remediation) -> Rule {
        Rule {
            guards: guards(&spec),
            spec,
            state: RuleState::new(),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next wake-up, and whether metric rules are to be evaluated.
    fn loop_state(&self) -> (Option<Instant>, bool) {
        let st = self.lock();
        let next = st.active.values().filter_map(|a| a.wake_at).min();
        let metric = st.enabled
            && st
                .rules
                .iter()
                .any(|r| matches!(r.spec.when, Trigger::Metric { .. }));
        (next.filter(|_| st.enabled), metric)
    }

    fn on_event(self: &Arc<Self>, e: &EventKind) {
        if matches!(e, EventKind::Remediation { .. }) {
            return;
        }
        let now = Instant::now();
        let mut steps = Vec::new();
        {
            let mut st = self.lock();
            if !st.enabled {
                return;
            }
            if let Some((service, slo, severity)) = trigger::resolved(e) {
                st.clear_alert(&format!("{service}/{slo}/{severity}"));
            }
            if let EventKind::ReplicaReady { .. }
            | EventKind::ReplicaReadmitted { .. }
            | EventKind::RolloutEnded { .. } = e
            {
                st.retry_held(now);
            }
            if let EventKind::ReplicaStopping { service, index, .. }
            | EventKind::ReplicaExited { service, index, .. } = e
            {
                // The replica an anomaly was about is gone: nothing left to act on.
                st.active
                    .retain(|(_, s, r, _), _| !(s == service && *r == Some(*index)));
            }
            let specs: Vec<&Remediation> = st.rules.iter().map(|r| &r.spec).collect();
            let fired = trigger::fired(&specs, e);
            for f in fired {
                if let Some(step) = self.fire(&mut st, f, now) {
                    steps.push(step);
                }
            }
        }
        self.run_steps(steps);
    }

    /// A new firing: a lasting one is kept (unless the same condition already is) and
    /// evaluated; a one-off is evaluated once.
    fn fire(self: &Arc<Self>, st: &mut State, f: Firing, now: Instant) -> Option<decide::Step> {
        if f.lasting {
            let k = key(&f);
            if st.active.contains_key(&k) {
                return None;
            }
            st.active.insert(
                k,
                Active {
                    firing: f.clone(),
                    wake_at: None,
                    last_guard: None,
                },
            );
        }
        self.evaluate(st, &f, now)
    }

    fn wake_due(self: &Arc<Self>, now: Instant) {
        let mut steps = Vec::new();
        {
            let mut st = self.lock();
            let due: Vec<Firing> = st
                .active
                .values_mut()
                .filter(|a| a.wake_at.is_some_and(|t| t <= now))
                .map(|a| {
                    a.wake_at = None;
                    a.firing.clone()
                })
                .collect();
            for f in due {
                if let Some(step) = self.evaluate(&mut st, &f, now) {
                    steps.push(step);
                }
            }
        }
        self.run_steps(steps);
    }

    /// After an action of `f`'s rule ended: its lasting conditions are looked at again now
    /// (the guards say how long they then wait).
    fn schedule_after(&self, st: &mut State, f: &Firing, now: Instant) {
        for (k, a) in st.active.iter_mut() {
            if k.0 == f.rule && a.wake_at.is_none() {
                a.wake_at = Some(now);
            }
        }
        self.wake.notify_one();
    }

    fn metric_tick(self: &Arc<Self>, reader: &mut crate::act::MetricReader) {
        let now = Instant::now();
        reader.begin(now);
        let mut steps = Vec::new();
        {
            let mut st = self.lock();
            let rules: Vec<Remediation> = st
                .rules
                .iter()
                .filter(|r| matches!(r.spec.when, Trigger::Metric { .. }))
                .map(|r| r.spec.clone())
                .collect();
            for rule in rules {
                let (
                    Trigger::Metric {
                        metric,
                        bound,
                        hold,
                    },
                    Some(service),
                ) = (&rule.when, &rule.service)
                else {
                    continue;
                };
                // No measure (no request in the window): unknown, not a change.
                let Some(value) = reader.value(&*self.shared.host, service, *metric) else {
                    continue;
                };
                if !bound.holds(value) {
                    st.held_since.remove(&rule.name);
                    let k = (rule.name.clone(), service.clone(), None, None);
                    if st.active.remove(&k).is_some()
                        && let Some(r) = st.rule_mut(&rule.name)
                    {
                        r.state.cleared();
                    }
                    continue;
                }
                let since = *st.held_since.entry(rule.name.clone()).or_insert(now);
                if now.duration_since(since) >= *hold {
                    let f = trigger::metric(&rule, service, value);
                    if let Some(step) = self.fire(&mut st, f, now) {
                        steps.push(step);
                    }
                }
            }
        }
        self.run_steps(steps);
    }
}

impl State {
    /// An alert resolved: its lasting conditions end and their rules' back-off resets.
    fn clear_alert(&mut self, fingerprint: &str) {
        let gone: Vec<Key> = self
            .active
            .keys()
            .filter(|k| k.3.as_deref() == Some(fingerprint))
            .cloned()
            .collect();
        for k in gone {
            self.active.remove(&k);
            if let Some(r) = self.rule_mut(&k.0) {
                r.state.cleared();
            }
        }
    }

    /// A replica turned ready or came back, or a rollout ended: conditions that the budget
    /// or a rollout held back are looked at again.
    fn retry_held(&mut self, now: Instant) {
        for a in self.active.values_mut() {
            let budget = matches!(
                a.last_guard.as_deref(),
                Some("disruption-budget" | "conflict")
            );
            if budget && a.wake_at.is_none() {
                a.wake_at = Some(now);
            }
        }
    }
}
