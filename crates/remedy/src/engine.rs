//! The remediation engine: triggers in, guarded decisions out.
//!
//! A firing passes, in order: the rule's own guards (max-concurrent, cooldown, rate
//! limit, back-off), what the service allows (a rollout under way: `conflict`; the
//! disruption budget), then, to act, a token of the global action budget. A lasting
//! condition (a firing alert, a metric beyond its bound) is evaluated again when the guard
//! that held it back says it may pass (or when a replica turns ready, for the budget),
//! never on a poll; one that clears resets the rule's back-off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bus::EventKind;
use policy::remedy::{ActionBudget, RuleGuards, RuleState};
use prometheus_client::registry::Registry;
use spec::{Remediation, RemedyMode, Trigger};
use tokio::sync::Notify;

use crate::trigger::{self, Firing};
use crate::{ActionRecord, AnswerError, Decision, Detector, Host, Measures, Records, Shared};

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
    enabled: bool,
}

struct Rule {
    spec: Remediation,
    guards: RuleGuards,
    state: RuleState,
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
    rules: Vec<Rule>,
    budget: ActionBudget,
    /// Keyed by rule, service and (for an anomaly) replica.
    active: HashMap<Key, Active>,
    /// Since when each metric rule's condition has held.
    held_since: HashMap<usize, Instant>,
    pending: HashMap<u64, Firing>,
    next_id: u64,
}

/// A lasting condition's key: rule, service, replica (an anomaly's; `None` otherwise).
type Key = (usize, String, Option<u32>);

fn key(f: &Firing) -> Key {
    (f.rule, f.service.clone(), f.replica.filter(|_| f.lasting))
}

/// What an evaluation comes to, acted on once the state's lock is released.
enum Step {
    Record(ActionRecord),
    Wait(ActionRecord, Duration),
    Act(ActionRecord, Firing),
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
            rules: rules(stack).into_iter().map(Rule::new).collect(),
            budget: ActionBudget::new(settings.budget_per_hour, settings.budget_burst),
            active: HashMap::new(),
            held_since: HashMap::new(),
            pending: HashMap::new(),
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
                enabled: settings.enabled,
            }),
        }
    }

    /// Every decision of this run, oldest first.
    pub fn actions(&self) -> Vec<ActionRecord> {
        self.inner.shared.records.all()
    }

    /// The actions waiting for approval.
    pub fn pending(&self) -> Vec<ActionRecord> {
        self.actions()
            .into_iter()
            .filter(|r| r.decision == Decision::Waiting)
            .collect()
    }

    /// Approves waiting action `id` (`by`: who, for the record).
    pub fn approve(&self, id: u64, by: &str) -> Result<ActionRecord, AnswerError> {
        self.inner.answer(id, true, &format!("approved by {by}"))
    }

    /// Denies waiting action `id`: nothing is done, and the record says so.
    pub fn deny(&self, id: u64, by: &str) -> Result<ActionRecord, AnswerError> {
        self.inner.answer(id, false, &format!("denied by {by}"))
    }

    /// Takes the rules of a reloaded stack file; a rule kept by name keeps its guards'
    /// history, so a reload is no way around a rate limit.
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
        // Positions changed: forget lasting conditions and metric holds (they come back
        // with the next alert or tick); waiting approvals keep their firing's own copy.
        st.active.clear();
        st.held_since.clear();
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
                let next = inner.next_wake();
                let sleep = tokio::time::sleep_until(
                    next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                        .into(),
                );
                let woken = inner.wake.notified();
                tokio::select! {
                    e = live.next() => match e {
                        Some(e) if inner.enabled => inner.on_event(&e.kind),
                        Some(_) => {}
                        None => return,
                    },
                    () = sleep => inner.wake_due(Instant::now()),
                    () = woken => {}
                    _ = tick.tick(), if inner.enabled && inner.has_metric_rules() => {
                        inner.metric_tick(&mut metrics);
                    }
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

    fn next_wake(&self) -> Option<Instant> {
        self.lock().active.values().filter_map(|a| a.wake_at).min()
    }

    fn has_metric_rules(&self) -> bool {
        self.lock()
            .rules
            .iter()
            .any(|r| matches!(r.spec.when, Trigger::Metric { .. }))
    }

    fn on_event(self: &Arc<Self>, e: &EventKind) {
        if matches!(e, EventKind::Remediation { .. }) {
            return;
        }
        let now = Instant::now();
        let mut steps = Vec::new();
        {
            let mut st = self.lock();
            if let Some((service, slo, severity)) = trigger::resolved(e) {
                st.clear_alert(service, slo, severity);
            }
            if let EventKind::ReplicaReady { service, .. }
            | EventKind::RolloutEnded { service, .. } = e
            {
                st.retry_held(service, now);
            }
            if let EventKind::ReplicaStopping { service, index, .. }
            | EventKind::ReplicaExited { service, index, .. } = e
            {
                // The replica an anomaly was about is gone: nothing left to act on.
                st.active
                    .retain(|(_, s, r), _| !(s == service && *r == Some(*index)));
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

    /// A new firing: a lasting one is kept (unless its rule and service already have one)
    /// and evaluated; a one-off is evaluated once.
    fn fire(self: &Arc<Self>, st: &mut State, f: Firing, now: Instant) -> Option<Step> {
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

    /// The guards, in order, then the mode. Updates the rule's state and, for a lasting
    /// condition, when it is looked at again.
    fn evaluate(self: &Arc<Self>, st: &mut State, f: &Firing, now: Instant) -> Option<Step> {
        let id = st.next_id;
        let rule = &st.rules.get(f.rule)?.spec;
        let mut rec = self.record(id, rule, f);
        let held = match st.rules[f.rule].state.check(&st.rules[f.rule].guards, now) {
            Err(g) => Some((g.name().to_owned(), guard_wait(&g, now), detail(&g, now))),
            Ok(()) => crate::act::allowed(&*self.shared.host, rule, f)
                .err()
                .map(|(guard, why)| (guard.to_owned(), None, why)),
        };
        let held = held.or_else(|| {
            if rule.mode != RemedyMode::Auto {
                return None;
            }
            st.budget
                .try_take(now)
                .err()
                .map(|g| (g.name().to_owned(), guard_wait(&g, now), detail(&g, now)))
        });
        if let Some((guard, wake, why)) = held {
            let active = st.active.get_mut(&key(f));
            let repeat = active
                .as_ref()
                .is_some_and(|a| a.last_guard.as_deref() == Some(&guard));
            if let Some(a) = active {
                a.wake_at = wake;
                a.last_guard = Some(guard.clone());
            }
            if repeat {
                return None;
            }
            st.next_id += 1;
            rec.decision = Decision::Skipped;
            rec.guard = Some(guard);
            rec.detail = why;
            return Some(Step::Record(rec));
        }
        st.next_id += 1;
        if let Some(a) = st.active.get_mut(&key(f)) {
            a.wake_at = None;
            a.last_guard = None;
        }
        let r = &mut st.rules[f.rule];
        r.state.started(&r.guards, now);
        match r.spec.mode {
            RemedyMode::DryRun => {
                r.state.finished(now);
                self.schedule_after(st, f, now);
                rec.decision = Decision::DryRun;
                rec.detail = "dry run: nothing was done".into();
                Some(Step::Record(rec))
            }
            RemedyMode::Approve => {
                let timeout = r.spec.approve_timeout;
                st.pending.insert(id, f.clone());
                rec.decision = Decision::Waiting;
                rec.expires_ms = Some(crate::now_ms() + timeout.as_millis() as u64);
                rec.detail = format!(
                    "waiting for `bulwark approve {id}` or `bulwark deny {id}`; after {} it is {}",
                    humantime::format_duration(timeout),
                    match r.spec.on_timeout {
                        spec::ApproveTimeout::Deny => "denied",
                        spec::ApproveTimeout::Act => "done anyway",
                    }
                );
                Some(Step::Wait(rec, timeout))
            }
            RemedyMode::Auto => {
                rec.decision = Decision::Acted;
                Some(Step::Act(rec, f.clone()))
            }
        }
    }

    fn record(&self, id: u64, rule: &Remediation, f: &Firing) -> ActionRecord {
        let now = crate::now_ms();
        let service = rule
            .actions
            .iter()
            .find_map(spec::Action::service)
            .unwrap_or(&f.service)
            .to_owned();
        ActionRecord {
            id,
            rule: rule.name.clone(),
            replica: f.replica.filter(|_| service == f.service),
            service,
            actions: rule.actions.iter().map(|a| a.name().to_owned()).collect(),
            mode: rule.mode.as_str().into(),
            decision: Decision::Skipped,
            guard: None,
            trigger: f.trigger.clone(),
            detail: String::new(),
            at_ms: now,
            updated_ms: now,
            expires_ms: None,
        }
    }

    /// After an action of `f`'s rule ended: its lasting condition is looked at again now
    /// (the guards say how long it then waits).
    fn schedule_after(&self, st: &mut State, f: &Firing, now: Instant) {
        for ((rule, _, _), a) in st.active.iter_mut() {
            if *rule == f.rule && a.wake_at.is_none() {
                a.wake_at = Some(now);
            }
        }
        self.wake.notify_one();
    }

    fn run_steps(self: &Arc<Self>, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Record(rec) => self.publish(&rec),
                Step::Wait(rec, timeout) => {
                    self.publish(&rec);
                    self.shared.host.approval(&rec, true);
                    let me = self.clone();
                    let id = rec.id;
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        me.expire(id);
                    });
                }
                Step::Act(rec, f) => self.act(rec, f),
            }
        }
        self.wake.notify_one();
    }

    /// Records `rec` (for `bulwark actions`), counts it, and publishes it as an event
    /// (which the journal keeps and the incident timeline shows).
    pub(crate) fn publish(&self, rec: &ActionRecord) {
        let mut rec = rec.clone();
        rec.updated_ms = crate::now_ms();
        self.shared.records.upsert(&rec);
        let m = &self.shared.metrics;
        m.decisions
            .get_or_create(&crate::metrics::DecisionLabels {
                rule: rec.rule.clone(),
                decision: rec.decision.as_str().into(),
                guard: rec.guard.clone().unwrap_or_default(),
            })
            .inc();
        m.pending.set(self.lock().pending.len() as i64);
        tracing::info!(
            id = rec.id, rule = %rec.rule, service = %rec.service, decision = rec.decision.as_str(),
            guard = rec.guard.as_deref().unwrap_or(""), "remediation: {}", rec.detail
        );
        self.shared.bus.publish(EventKind::Remediation {
            id: rec.id,
            rule: rec.rule,
            service: rec.service,
            replica: rec.replica,
            actions: rec.actions,
            decision: rec.decision.as_str().into(),
            guard: rec.guard,
            trigger: rec.trigger,
            detail: rec.detail,
        });
    }

    /// Runs the actions of an admitted firing, then records how they ended and releases
    /// the rule.
    fn act(self: &Arc<Self>, rec: ActionRecord, f: Firing) {
        self.publish(&rec);
        let me = self.clone();
        tokio::spawn(async move {
            let rule = me.lock().rules.get(f.rule).map(|r| r.spec.clone());
            let mut rec = rec;
            let result = match &rule {
                Some(rule) => crate::act::run(&me.shared, rule, &f, rec.id).await,
                None => Err("the rule was removed by a reload".into()),
            };
            (rec.decision, rec.detail) = match result {
                Ok(detail) => (Decision::Done, detail),
                Err(e) => (Decision::Failed, e),
            };
            {
                let mut st = me.lock();
                if let Some(r) = st.rules.get_mut(f.rule) {
                    r.state.finished(Instant::now());
                }
                me.schedule_after(&mut st, &f, Instant::now());
            }
            me.publish(&rec);
        });
    }

    fn answer(
        self: &Arc<Self>,
        id: u64,
        yes: bool,
        why: &str,
    ) -> Result<ActionRecord, AnswerError> {
        let f = self.lock().pending.remove(&id);
        let Some(f) = f else {
            return Err(
                match self.shared.records.all().into_iter().find(|r| r.id == id) {
                    Some(r) => AnswerError::NotWaiting {
                        id,
                        decision: r.decision.as_str(),
                    },
                    None => AnswerError::Unknown(id),
                },
            );
        };
        let mut rec = self
            .shared
            .records
            .all()
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(AnswerError::Unknown(id))?;
        self.shared.host.approval(&rec, false);
        rec.expires_ms = None;
        if !yes {
            rec.decision = Decision::Denied;
            rec.detail = format!("{why}: nothing was done");
            self.release(&f);
            self.publish(&rec);
            return Ok(rec);
        }
        // Approved: what the service allows and the global budget still apply now.
        let held = {
            let mut st = self.lock();
            let rule = st.rules.get(f.rule).map(|r| r.spec.clone());
            match rule {
                None => Some((
                    "conflict".to_owned(),
                    "the rule was removed by a reload".into(),
                )),
                Some(rule) => crate::act::allowed(&*self.shared.host, &rule, &f)
                    .err()
                    .map(|(g, why)| (g.to_owned(), why))
                    .or_else(|| {
                        st.budget
                            .try_take(Instant::now())
                            .err()
                            .map(|g| (g.name().to_owned(), detail(&g, Instant::now())))
                    }),
            }
        };
        if let Some((guard, detail)) = held {
            rec.decision = Decision::Skipped;
            rec.guard = Some(guard);
            rec.detail = format!("{why}, then held back: {detail}");
            self.release(&f);
            self.publish(&rec);
            return Ok(rec);
        }
        rec.decision = Decision::Approved;
        rec.detail = why.to_owned();
        self.publish(&rec);
        let mut acting = rec.clone();
        acting.decision = Decision::Acted;
        acting.detail.clear();
        self.act(acting, f);
        Ok(rec)
    }

    /// An approval nobody answered: `on_timeout` decides.
    fn expire(self: &Arc<Self>, id: u64) {
        let outcome = {
            let st = self.lock();
            let Some(f) = st.pending.get(&id) else {
                return;
            };
            st.rules.get(f.rule).map(|r| r.spec.on_timeout)
        };
        let act = outcome == Some(spec::ApproveTimeout::Act);
        let why = if act {
            "no answer in time; on_timeout = \"act\""
        } else {
            "no answer in time; on_timeout = \"deny\""
        };
        let _ = self.answer(id, act, why);
    }

    /// The rule's action will not run after all.
    fn release(&self, f: &Firing) {
        let mut st = self.lock();
        if let Some(r) = st.rules.get_mut(f.rule) {
            r.state.finished(Instant::now());
        }
        self.schedule_after(&mut st, f, Instant::now());
    }

    fn metric_tick(self: &Arc<Self>, reader: &mut crate::act::MetricReader) {
        let now = Instant::now();
        let mut steps = Vec::new();
        {
            let mut st = self.lock();
            let rules: Vec<(usize, Remediation)> = st
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(r.spec.when, Trigger::Metric { .. }))
                .map(|(i, r)| (i, r.spec.clone()))
                .collect();
            for (i, rule) in rules {
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
                let value = reader.value(&*self.shared.host, service, *metric, now);
                let holds = value.is_some_and(|v| bound.holds(v));
                if !holds {
                    st.held_since.remove(&i);
                    if st.active.remove(&(i, service.clone(), None)).is_some() {
                        st.rules[i].state.cleared();
                    }
                    continue;
                }
                let since = *st.held_since.entry(i).or_insert(now);
                if now.duration_since(since) >= *hold {
                    let f = trigger::metric(i, &rule, service, value.unwrap_or_default());
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
    fn clear_alert(&mut self, service: &str, slo: &str, severity: &str) {
        let gone: Vec<Key> = self
            .active
            .iter()
            .filter(|(_, a)| {
                let c = &a.firing.context;
                a.firing.service == service
                    && c["trigger"] == "alert"
                    && c["slo"] == slo
                    && c["severity"] == severity
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.active.remove(&key);
            if let Some(r) = self.rules.get_mut(key.0) {
                r.state.cleared();
            }
        }
    }

    /// A replica turned ready or a rollout ended: conditions that the budget or a rollout
    /// held back are looked at again.
    fn retry_held(&mut self, service: &str, now: Instant) {
        for a in self.active.values_mut() {
            let budget = matches!(
                a.last_guard.as_deref(),
                Some("disruption-budget" | "conflict")
            );
            if budget && a.firing.service == service && a.wake_at.is_none() {
                a.wake_at = Some(now);
            }
        }
    }
}

/// When a guard may let the firing pass (`None`: on an event, not a time).
fn guard_wait(g: &policy::remedy::Guard, now: Instant) -> Option<Instant> {
    use policy::remedy::Guard as G;
    match g {
        G::Cooldown { until } | G::RateLimit { until } | G::Backoff { until } => Some(*until),
        G::GlobalBudget { retry_in } => Some(now + *retry_in),
        G::MaxConcurrent { .. } => None,
    }
}

fn detail(g: &policy::remedy::Guard, now: Instant) -> String {
    use policy::remedy::Guard as G;
    let wait = |t: &Instant| humantime::format_duration(round(t.saturating_duration_since(now)));
    match g {
        G::MaxConcurrent { running, max } => {
            format!("{running} action(s) of this rule running, max_concurrent = {max}")
        }
        G::Cooldown { until } => format!("in its cooldown for {} more", wait(until)),
        G::RateLimit { until } => format!("rate limit reached; next allowed in {}", wait(until)),
        G::Backoff { until } => format!("backing off; next allowed in {}", wait(until)),
        G::GlobalBudget { retry_in } => format!(
            "the stack's action budget is spent; a token comes back in {}",
            humantime::format_duration(round(*retry_in))
        ),
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}
