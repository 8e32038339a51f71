//! bulwark's own actions in the audit log: a restart, a stop, an ejection, an automatic
//! rollback, a remediation, a chaos experiment, an autoscaling step. They are events on the
//! bus first; one follower turns each into a record whose `who` is `bulwark` (and whose
//! `by` names the rule or experiment that caused it) and queues it like an API call's.
//!
//! The follower reads the bus's live channel: it never holds up a publisher (a reader that
//! falls behind is told so and skips, and the skip is itself a record), and the audit
//! queue never waits (a full one drops and counts).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bus::{Bus, Event, EventKind};

use super::{Audit, Record};

/// The follower's name on the bus (in a gap marker when it falls behind).
pub const READER: &str = "audit";

/// Who bulwark's own actions are by.
pub const BULWARK: &str = "bulwark";

/// The follower of the bus: turns events into records until the bus is gone.
pub struct Follower {
    /// The sequence number of the last event it has looked at.
    seen: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Follows `bus` from now on into `audit`.
    pub fn start(bus: &Arc<Bus>, audit: Arc<Audit>) -> Follower {
        let mut live = bus.follow(READER);
        let (seen_tx, seen) = tokio::sync::watch::channel(bus.last_seq());
        let task = tokio::spawn(async move {
            while let Some(e) = live.next().await {
                if let Some(r) = record_of(&e) {
                    audit.record(r);
                }
                seen_tx.send_replace(e.seq);
            }
        });
        Follower { seen, task }
    }

    /// Waits (at most `wait`) until every event up to `seq` is looked at, then stops.
    pub async fn finish(mut self, seq: u64, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.seen.wait_for(|s| *s >= seq)).await;
        self.task.abort();
    }
}

/// A record made by bulwark itself.
struct Action<'a> {
    action: &'a str,
    target: String,
    by: Option<String>,
    outcome: &'a str,
    detail: String,
}

fn replica(service: &str, index: u32) -> String {
    format!("{service}/{index}")
}

/// The record of `e`, if it is one of bulwark's own actions.
pub fn record_of(e: &Event) -> Option<Record> {
    let a = action_of(&e.kind)?;
    let at = UNIX_EPOCH + Duration::from_millis(e.at_ms);
    Some(Record {
        id: 0,
        at: humantime::format_rfc3339_millis(at).to_string(),
        who: BULWARK.to_owned(),
        role: None,
        method: String::new(),
        path: String::new(),
        status: 0,
        action: Some(a.action.to_owned()),
        target: Some(a.target),
        by: a.by,
        outcome: a.outcome.to_owned(),
        detail: Some(a.detail).filter(|d| !d.is_empty()),
    })
}

fn action_of(kind: &EventKind) -> Option<Action<'_>> {
    match kind {
        EventKind::RestartScheduled { .. }
        | EventKind::CrashLooping { .. }
        | EventKind::ReplicaStopping { .. }
        | EventKind::ReplicaKilled { .. }
        | EventKind::SpawnFailed { .. }
        | EventKind::ReplicaEjected { .. }
        | EventKind::ReplicaReadmitted { .. } => replica_action(kind),
        EventKind::ExperimentStarted { .. }
        | EventKind::ExperimentRefused { .. }
        | EventKind::ExperimentLeashed { .. }
        | EventKind::ExperimentAborted { .. }
        | EventKind::ExperimentRollback { .. }
        | EventKind::ExperimentEnded { .. } => chaos_action(kind),
        _ => repair_action(kind),
    }
}

/// The supervisor's and the proxy's actions on one replica.
fn replica_action(kind: &EventKind) -> Option<Action<'_>> {
    let a = match kind {
        EventKind::RestartScheduled {
            service,
            index,
            delay_ms,
            restarts,
            reason,
        } => Action {
            action: "restart",
            target: replica(service, *index),
            by: None,
            outcome: "scheduled",
            detail: format!("{reason}; restart {restarts}, in {delay_ms} ms"),
        },
        EventKind::CrashLooping {
            service,
            index,
            restarts,
            last_exit,
            ..
        } => Action {
            action: "restart",
            target: replica(service, *index),
            by: None,
            outcome: "crash-looping",
            detail: format!("{restarts} restarts; the last ended with {last_exit}"),
        },
        EventKind::ReplicaStopping {
            service,
            index,
            reason,
        } => Action {
            action: "stop",
            target: replica(service, *index),
            by: None,
            outcome: "done",
            detail: reason.clone(),
        },
        EventKind::ReplicaKilled {
            service,
            index,
            pid,
        } => Action {
            action: "kill",
            target: replica(service, *index),
            by: None,
            outcome: "done",
            detail: format!("pid {pid} did not stop within its grace; its group was killed"),
        },
        EventKind::SpawnFailed {
            service,
            index,
            error,
        } => Action {
            action: "start",
            target: replica(service, *index),
            by: None,
            outcome: "failed",
            detail: error.clone(),
        },
        EventKind::ReplicaEjected {
            service,
            index,
            reason,
            for_ms,
        } => Action {
            action: "eject",
            target: replica(service, *index),
            by: Some("outlier detection".to_owned()),
            outcome: "done",
            detail: format!("{reason}; for up to {for_ms} ms"),
        },
        EventKind::ReplicaReadmitted { service, index } => Action {
            action: "readmit",
            target: replica(service, *index),
            by: Some("outlier detection".to_owned()),
            outcome: "done",
            detail: String::new(),
        },
        _ => return None,
    };
    Some(a)
}

/// A chaos experiment's steps; `by` is the experiment.
fn chaos_action(kind: &EventKind) -> Option<Action<'_>> {
    let chaos = |service: &str, name: &str, outcome, detail| Action {
        action: "chaos",
        target: service.to_owned(),
        by: Some(format!("experiment {name}")),
        outcome,
        detail,
    };
    let a = match kind {
        EventKind::ExperimentStarted {
            service,
            name,
            fault,
            replicas,
            trigger,
        } => chaos(
            service,
            name,
            "started",
            format!("{fault} (replicas {replicas:?}; trigger {trigger})"),
        ),
        EventKind::ExperimentRefused {
            service,
            name,
            reason,
        } => chaos(service, name, "refused", reason.clone()),
        EventKind::ExperimentLeashed {
            service,
            name,
            fault,
        } => chaos(
            service,
            name,
            "leashed",
            format!("would have done: {fault}"),
        ),
        EventKind::ExperimentAborted {
            service,
            name,
            reason,
        } => chaos(service, name, "aborted", reason.clone()),
        EventKind::ExperimentRollback {
            service,
            name,
            command,
            ok,
            detail,
        } => Action {
            action: "chaos-rollback",
            ..chaos(
                service,
                name,
                if *ok { "done" } else { "failed" },
                format!("{command} {detail}").trim().to_owned(),
            )
        },
        EventKind::ExperimentEnded {
            service,
            name,
            outcome,
            detect_ms,
            recover_ms,
        } => chaos(
            service,
            name,
            "ended",
            format!("{outcome}; detected in {detect_ms:?} ms, recovered in {recover_ms:?} ms"),
        ),
        _ => return None,
    };
    Some(a)
}

/// Rollbacks, remediations, autoscaling, and the follower's own gaps.
fn repair_action(kind: &EventKind) -> Option<Action<'_>> {
    let a = match kind {
        EventKind::RolloutAborted {
            service,
            revision,
            reason,
            automatic: true,
        } => Action {
            action: "rollback",
            target: service.clone(),
            by: Some("rollout analysis".to_owned()),
            outcome: "done",
            detail: format!("revision {revision} given up: {reason}"),
        },
        EventKind::Remediation {
            id,
            rule,
            service,
            replica: r,
            actions,
            decision,
            guard,
            trigger,
            detail,
        } => Action {
            action: "remediation",
            target: r.map_or_else(|| service.clone(), |i| replica(service, i)),
            by: Some(format!("rule {rule}")),
            outcome: decision,
            detail: [
                format!("#{id} {}", actions.join(", ")),
                format!("trigger: {trigger}"),
                guard
                    .as_ref()
                    .map(|g| format!("guard: {g}"))
                    .unwrap_or_default(),
                detail.clone(),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        },
        EventKind::Autoscaled {
            service,
            from,
            to,
            target,
            value,
            goal,
            reason,
        } => Action {
            action: "autoscale",
            target: service.clone(),
            by: Some("autoscaler".to_owned()),
            outcome: "done",
            detail: format!(
                "{from} -> {to} replicas ({reason}): {target} {value:.2} per replica, goal {goal:.2}"
            ),
        },
        EventKind::Gap { reader, missed } if reader == READER => Action {
            action: "audit",
            target: READER.to_owned(),
            by: None,
            outcome: "failed",
            detail: format!("{missed} events were skipped: the audit fell behind the bus"),
        },
        _ => return None,
    };
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            seq: 1,
            at_ms: 1_700_000_000_000,
            origin: None,
            kind,
        }
    }

    #[test]
    fn own_actions_are_by_bulwark_and_name_their_rule() {
        let r = record_of(&event(EventKind::Remediation {
            id: 3,
            rule: "restart-on-leak".into(),
            service: "web".into(),
            replica: Some(1),
            actions: vec!["restart-replica".into()],
            decision: "dry-run".into(),
            guard: None,
            trigger: "memory-leak".into(),
            detail: "rss 90%".into(),
        }))
        .unwrap();
        assert_eq!(r.who, "bulwark");
        assert_eq!(r.action.as_deref(), Some("remediation"));
        assert_eq!(r.target.as_deref(), Some("web/1"));
        assert_eq!(r.by.as_deref(), Some("rule restart-on-leak"));
        assert_eq!(r.outcome, "dry-run");
        assert_eq!(r.at, "2023-11-14T22:13:20.000Z");
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("method").is_none() && json.get("status").is_none());
    }

    #[test]
    fn only_automatic_rollbacks_and_own_gaps_are_actions() {
        let aborted = |automatic| {
            record_of(&event(EventKind::RolloutAborted {
                service: "web".into(),
                revision: 2,
                reason: "errors".into(),
                automatic,
            }))
        };
        assert!(
            aborted(false).is_none(),
            "an operator's abort is an API call"
        );
        assert_eq!(aborted(true).unwrap().action.as_deref(), Some("rollback"));
        let gap = |reader: &str| {
            record_of(&event(EventKind::Gap {
                reader: reader.into(),
                missed: 4,
            }))
        };
        assert!(gap("journal").is_none());
        assert_eq!(gap(READER).unwrap().outcome, "failed");
        assert!(record_of(&event(EventKind::StackUp { services: 1 })).is_none());
    }
}
