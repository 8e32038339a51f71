//! Alert bookkeeping: the firing/resolved lifecycle, deduplication, silences (which also
//! serve as maintenance windows: a silence may start in the future) and repeat reminders.
//! Pure: every method takes `now_ms` (wall clock, milliseconds since the Unix epoch).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One firing of one alert, from start to resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique per firing: `{fingerprint}@{started_at_ms}`.
    pub id: String,
    /// The same for every firing of the same alert: `{service}/{name}/{severity}`.
    pub fingerprint: String,
    pub service: String,
    /// The SLO's name, or `no_data`.
    pub name: String,
    pub severity: Severity,
    pub summary: String,
    pub state: AlertState,
    pub started_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
    /// Whether a sink was told it fired. A silenced alert is recorded but not notified.
    pub notified: bool,
}

/// Mutes notifications of matching alerts between `starts_at_ms` and `ends_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub service: String,
    /// Only this SLO (or `no_data`); every alert of the service when absent.
    pub name: Option<String>,
    pub severity: Option<Severity>,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    pub comment: String,
}

impl Silence {
    pub fn active(&self, now_ms: u64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    pub fn matches(&self, a: &Alert, now_ms: u64) -> bool {
        self.active(now_ms)
            && self.service == a.service
            && self.name.as_ref().is_none_or(|n| *n == a.name)
            && self.severity.is_none_or(|s| s == a.severity)
    }
}

/// What a sink should be told.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Firing(Alert),
    Resolved(Alert),
}

/// The alerts that fire now, and the silences.
///
/// Invariants: at most one firing alert per fingerprint (a second `fire` is deduplicated);
/// a resolution is notified only if the firing was; a firing alert whose silence ends is
/// notified then (like Alertmanager).
#[derive(Debug, Default)]
pub struct AlertBook {
    firing: BTreeMap<String, Alert>,
    last_notified_ms: BTreeMap<String, u64>,
    silences: Vec<Silence>,
    repeat_interval_ms: u64,
}

impl AlertBook {
    pub fn new(repeat_interval_ms: u64) -> Self {
        AlertBook {
            repeat_interval_ms,
            ..Default::default()
        }
    }

    fn silenced(&self, a: &Alert, now_ms: u64) -> bool {
        self.silences.iter().any(|s| s.matches(a, now_ms))
    }

    /// Starts an alert. Returns the new alert and, unless silenced, the notice to send;
    /// `None` if it is already firing.
    pub fn fire(
        &mut self,
        service: &str,
        name: &str,
        severity: Severity,
        summary: String,
        now_ms: u64,
    ) -> Option<(Alert, Option<Notice>)> {
        let fingerprint = format!("{service}/{name}/{}", severity.as_str());
        if self.firing.contains_key(&fingerprint) {
            return None;
        }
        let mut alert = Alert {
            id: format!("{fingerprint}@{now_ms}"),
            fingerprint: fingerprint.clone(),
            service: service.into(),
            name: name.into(),
            severity,
            summary,
            state: AlertState::Firing,
            started_at_ms: now_ms,
            resolved_at_ms: None,
            notified: false,
        };
        let notice = if self.silenced(&alert, now_ms) {
            None
        } else {
            alert.notified = true;
            self.last_notified_ms.insert(fingerprint.clone(), now_ms);
            Some(Notice::Firing(alert.clone()))
        };
        self.firing.insert(fingerprint, alert.clone());
        Some((alert, notice))
    }

    /// Ends an alert; `None` if it was not firing.
    pub fn resolve(
        &mut self,
        service: &str,
        name: &str,
        severity: Severity,
        now_ms: u64,
    ) -> Option<(Alert, Option<Notice>)> {
        let fingerprint = format!("{service}/{name}/{}", severity.as_str());
        let mut alert = self.firing.remove(&fingerprint)?;
        self.last_notified_ms.remove(&fingerprint);
        alert.state = AlertState::Resolved;
        alert.resolved_at_ms = Some(now_ms);
        let notice = alert.notified.then(|| Notice::Resolved(alert.clone()));
        Some((alert, notice))
    }

    /// Reminders for alerts still firing after `repeat_interval`, and first notices for
    /// alerts whose silence has ended. Returns the alerts whose record changed too.
    pub fn due(&mut self, now_ms: u64) -> (Vec<Notice>, Vec<Alert>) {
        let mut notices = vec![];
        let mut changed = vec![];
        let silenced: Vec<bool> = self
            .firing
            .values()
            .map(|a| self.silenced(a, now_ms))
            .collect();
        for (a, silenced) in self.firing.values_mut().zip(silenced) {
            if silenced {
                continue;
            }
            let last = self.last_notified_ms.get(&a.fingerprint).copied();
            let due = match last {
                None => true,
                Some(t) => self.repeat_interval_ms > 0 && now_ms >= t + self.repeat_interval_ms,
            };
            if due {
                if !a.notified {
                    a.notified = true;
                    changed.push(a.clone());
                }
                self.last_notified_ms.insert(a.fingerprint.clone(), now_ms);
                notices.push(Notice::Firing(a.clone()));
            }
        }
        (notices, changed)
    }

    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.firing.values()
    }

    pub fn is_firing(&self, service: &str, name: &str, severity: Severity) -> bool {
        self.firing
            .contains_key(&format!("{service}/{name}/{}", severity.as_str()))
    }

    pub fn add_silence(&mut self, s: Silence) {
        self.silences.retain(|x| x.id != s.id);
        self.silences.push(s);
    }

    pub fn remove_silence(&mut self, id: &str) -> bool {
        let before = self.silences.len();
        self.silences.retain(|s| s.id != id);
        before != self.silences.len()
    }

    /// Silences not yet over, and the ids of those that are (to forget them).
    pub fn silences(&mut self, now_ms: u64) -> (Vec<Silence>, Vec<String>) {
        let (live, over): (Vec<Silence>, Vec<Silence>) =
            self.silences.drain(..).partition(|s| now_ms < s.ends_at_ms);
        self.silences = live.clone();
        (live, over.into_iter().map(|s| s.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(name: Option<&str>, from: u64, to: u64) -> Silence {
        Silence {
            id: "s1".into(),
            service: "web".into(),
            name: name.map(Into::into),
            severity: None,
            starts_at_ms: from,
            ends_at_ms: to,
            comment: "deploy".into(),
        }
    }

    #[test]
    fn fire_dedupes_and_resolve_notifies_once() {
        let mut b = AlertBook::new(0);
        let (a, n) = b
            .fire("web", "avail", Severity::Page, "burning".into(), 1000)
            .unwrap();
        assert_eq!(a.fingerprint, "web/avail/page");
        assert!(matches!(n, Some(Notice::Firing(_))));
        assert!(
            b.fire("web", "avail", Severity::Page, "again".into(), 2000)
                .is_none()
        );
        assert!(
            b.fire("web", "avail", Severity::Ticket, "t".into(), 2000)
                .is_some()
        );
        let (r, n) = b.resolve("web", "avail", Severity::Page, 5000).unwrap();
        assert_eq!(r.state, AlertState::Resolved);
        assert_eq!(r.resolved_at_ms, Some(5000));
        assert!(matches!(n, Some(Notice::Resolved(_))));
        assert!(b.resolve("web", "avail", Severity::Page, 6000).is_none());
        // a new firing is a new alert
        let (a2, _) = b
            .fire("web", "avail", Severity::Page, "x".into(), 7000)
            .unwrap();
        assert_ne!(a2.id, a.id);
    }

    #[test]
    fn silence_suppresses_notification_not_the_record() {
        let mut b = AlertBook::new(0);
        b.add_silence(silence(Some("avail"), 0, 10_000));
        let (a, n) = b
            .fire("web", "avail", Severity::Page, "x".into(), 1000)
            .unwrap();
        assert!(n.is_none());
        assert!(!a.notified);
        assert_eq!(b.firing().count(), 1, "still recorded");
        // other SLOs of the service are not silenced
        assert!(
            b.fire("web", "latency", Severity::Page, "y".into(), 1000)
                .unwrap()
                .1
                .is_some()
        );
        // resolving a silenced alert tells nobody
        let (_, n) = b.resolve("web", "avail", Severity::Page, 2000).unwrap();
        assert!(n.is_none());
    }

    #[test]
    fn maintenance_window_in_the_future_then_notice_when_it_ends() {
        let mut b = AlertBook::new(0);
        b.add_silence(silence(None, 5_000, 8_000));
        assert!(
            b.fire("web", "a", Severity::Page, "x".into(), 1000)
                .unwrap()
                .1
                .is_some()
        );
        assert!(
            b.fire("web", "b", Severity::Page, "x".into(), 6000)
                .unwrap()
                .1
                .is_none()
        );
        let (n, _) = b.due(7000);
        assert!(n.is_empty(), "window still on");
        let (n, changed) = b.due(8000);
        assert_eq!(n.len(), 1, "b is notified once its window ends: {n:?}");
        assert_eq!(changed[0].name, "b");
        assert!(
            b.due(9000).0.is_empty(),
            "no repeat when repeat_interval is 0"
        );
        let (live, over) = b.silences(8000);
        assert!(live.is_empty());
        assert_eq!(over, vec!["s1".to_string()]);
    }

    #[test]
    fn repeat_interval_reminds() {
        let mut b = AlertBook::new(1000);
        b.fire("web", "a", Severity::Ticket, "x".into(), 0).unwrap();
        assert!(b.due(999).0.is_empty());
        assert_eq!(b.due(1000).0.len(), 1);
        assert!(b.due(1500).0.is_empty());
        assert_eq!(b.due(2000).0.len(), 1);
    }
}
