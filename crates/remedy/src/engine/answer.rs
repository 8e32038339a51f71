//! Approvals (`bulwark approve`, `deny`, an unanswered one's timeout) and the end of an
//! action: the rule and the reserved disruptions released, its conditions looked at again.

use std::sync::Arc;
use std::time::Instant;

use super::decide::{Step, reserve};
use super::{Inner, key};
use crate::trigger::Firing;
use crate::{ActionRecord, AnswerError, Decision};

impl Inner {
    pub(super) fn answer(
        self: &Arc<Self>,
        id: u64,
        yes: bool,
        why: &str,
    ) -> Result<ActionRecord, AnswerError> {
        let taken = self.lock().pending.remove(&id);
        let Some((f, mut rec)) = taken else {
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
        self.shared.host.approval(&rec, false);
        rec.expires_ms = None;
        if !yes {
            rec.decision = Decision::Denied;
            rec.detail = format!("{why}: nothing was done");
            self.publish(&rec);
            self.finish(&f, &[], false);
            return Ok(rec);
        }
        // Approved: what the service allows and the global budget still apply now.
        let admitted = {
            let mut st = self.lock();
            let now = Instant::now();
            match st.rule(&f.rule).map(|r| r.spec.clone()) {
                None => Err((
                    "conflict".to_owned(),
                    "the rule was removed by a reload".into(),
                )),
                Some(rule) => crate::act::allowed(&*self.shared.host, &rule, &f, &st.disrupting)
                    .map_err(|(g, why)| (g.to_owned(), why))
                    .and_then(|()| {
                        st.budget
                            .try_take(now)
                            .map_err(|g| (g.name().to_owned(), super::decide::detail(&g, now)))
                    })
                    .map(|()| reserve(&mut st, &rule, &f)),
            }
        };
        let reserved = match admitted {
            Ok(reserved) => reserved,
            Err((guard, detail)) => {
                rec.decision = Decision::Skipped;
                rec.guard = Some(guard);
                rec.detail = format!("{why}, then held back: {detail}");
                self.publish(&rec);
                self.finish(&f, &[], false);
                return Ok(rec);
            }
        };
        rec.decision = Decision::Approved;
        rec.detail = why.to_owned();
        self.publish(&rec);
        let mut acting = rec.clone();
        acting.decision = Decision::Acted;
        acting.detail.clear();
        self.run_steps(vec![Step::Act(acting, f, reserved)]);
        Ok(rec)
    }

    /// An approval nobody answered: `on_timeout` decides (a rule removed meanwhile: deny).
    pub(super) fn expire(self: &Arc<Self>, id: u64) {
        let act = {
            let st = self.lock();
            let Some((f, _)) = st.pending.get(&id) else {
                return;
            };
            st.rule(&f.rule)
                .is_some_and(|r| r.spec.on_timeout == spec::ApproveTimeout::Act)
        };
        let why = if act {
            "no answer in time; on_timeout = \"act\""
        } else {
            "no answer in time; on_timeout = \"deny\""
        };
        let _ = self.answer(id, act, why);
    }

    /// An action of `f`'s rule is over (done, failed, denied): the rule and the reserved
    /// disruptions are released. A replica's condition acted on successfully is over too
    /// (the replica was replaced or restarted); any other is looked at again.
    pub(super) fn finish(&self, f: &Firing, reserved: &[String], succeeded: bool) {
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(r) = st.rule_mut(&f.rule) {
            r.state.finished(now);
        }
        for s in reserved {
            if let Some(n) = st.disrupting.get_mut(s) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.disrupting.remove(s);
                }
            }
        }
        if succeeded && f.lasting && f.replica.is_some() {
            st.active.remove(&key(f));
        }
        self.schedule_after(&mut st, f, now);
    }
}
