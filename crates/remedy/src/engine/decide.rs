//! One evaluation of a firing: the guards in order, then the mode; and what comes of it
//! (a record, a wait for approval, an action run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::EventKind;
use spec::{Remediation, RemedyMode};

use super::{Inner, State, key};
use crate::trigger::Firing;
use crate::{ActionRecord, Decision};

/// What an evaluation comes to, acted on once the state's lock is released.
pub(super) enum Step {
    Record(ActionRecord),
    Wait(ActionRecord, Duration),
    /// Run the actions; the services whose disruption was reserved.
    Act(ActionRecord, Firing, Vec<String>),
}

impl Inner {
    /// The guards, in order, then the mode. Updates the rule's state and, for a lasting
    /// condition, when it is looked at again.
    pub(super) fn evaluate(
        self: &Arc<Self>,
        st: &mut State,
        f: &Firing,
        now: Instant,
    ) -> Option<Step> {
        let rule = st.rule(&f.rule)?.spec.clone();
        let id = st.next_id;
        let mut rec = self.record(id, &rule, f);
        if let Some((guard, wake, why)) = self.held(st, &rule, f, now) {
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
        let r = st.rule_mut(&f.rule)?;
        r.state.started(&r.guards, now);
        match rule.mode {
            RemedyMode::DryRun => {
                r.state.finished(now);
                self.schedule_after(st, f, now);
                rec.decision = Decision::DryRun;
                rec.detail = "dry run: nothing was done".into();
                Some(Step::Record(rec))
            }
            RemedyMode::Approve => {
                let timeout = rule.approve_timeout;
                rec.decision = Decision::Waiting;
                rec.expires_ms = Some(crate::now_ms().saturating_add(timeout.as_millis() as u64));
                rec.detail = format!(
                    "waiting for `bulwark approve {id}` or `bulwark deny {id}`; after {} it is {}",
                    humantime::format_duration(timeout),
                    match rule.on_timeout {
                        spec::ApproveTimeout::Deny => "denied",
                        spec::ApproveTimeout::Act => "done anyway",
                    }
                );
                st.pending.insert(id, (f.clone(), rec.clone()));
                Some(Step::Wait(rec, timeout))
            }
            RemedyMode::Auto => {
                rec.decision = Decision::Acted;
                let reserved = reserve(st, &rule, f);
                Some(Step::Act(rec, f.clone(), reserved))
            }
        }
    }

    /// The first guard that holds `f` back: its name, when to look again (`None`: on an
    /// event), and why in words.
    fn held(
        &self,
        st: &mut State,
        rule: &Remediation,
        f: &Firing,
        now: Instant,
    ) -> Option<(String, Option<Instant>, String)> {
        let r = st.rule(&f.rule)?;
        if let Err(g) = r.state.check(&r.guards, now) {
            return Some((g.name().to_owned(), guard_wait(&g, now), detail(&g, now)));
        }
        if let Err((guard, why)) = crate::act::allowed(&*self.shared.host, rule, f, &st.disrupting)
        {
            return Some((guard.to_owned(), None, why));
        }
        if rule.mode != RemedyMode::Auto {
            return None;
        }
        st.budget
            .try_take(now)
            .err()
            .map(|g| (g.name().to_owned(), guard_wait(&g, now), detail(&g, now)))
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

    pub(super) fn run_steps(self: &Arc<Self>, steps: Vec<Step>) {
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
                Step::Act(rec, f, reserved) => self.act(rec, f, reserved),
            }
        }
        self.wake.notify_one();
    }

    /// Records `rec` (for `bulwark actions`), counts it, and publishes it as an event
    /// (which the journal keeps and the incident timeline shows).
    pub(super) fn publish(&self, rec: &ActionRecord) {
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
    /// the rule and the reserved disruptions.
    pub(super) fn act(self: &Arc<Self>, rec: ActionRecord, f: Firing, reserved: Vec<String>) {
        self.publish(&rec);
        let me = self.clone();
        tokio::spawn(async move {
            let rule = me.lock().rule(&f.rule).map(|r| r.spec.clone());
            let mut rec = rec;
            let result = match &rule {
                Some(rule) => crate::act::run(&me.shared, rule, &f, rec.id).await,
                None => Err("the rule was removed by a reload".into()),
            };
            let ok = result.is_ok();
            (rec.decision, rec.detail) = match result {
                Ok(detail) => (Decision::Done, detail),
                Err(e) => (Decision::Failed, e),
            };
            // Published before the rule is released, so the incident it resolves (if
            // any) is still open when it learns which rule did it.
            me.publish(&rec);
            me.finish(&f, &reserved, ok);
        });
    }
}

/// Counts the admitted action's disruptions against their services until it ends.
pub(super) fn reserve(st: &mut State, rule: &Remediation, f: &Firing) -> Vec<String> {
    let services: Vec<String> = rule
        .actions
        .iter()
        .filter(|a| a.disrupts())
        .map(|a| a.service().unwrap_or(&f.service).to_owned())
        .collect();
    for s in &services {
        *st.disrupting.entry(s.clone()).or_default() += 1;
    }
    services
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

pub(super) fn detail(g: &policy::remedy::Guard, now: Instant) -> String {
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
