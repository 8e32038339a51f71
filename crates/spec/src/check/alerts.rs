//! `[alerts]` and its sinks: exactly one of `log`, `webhook`, `exec` each.

use crate::keys::{AlertsTable, SinkTable};
use crate::model::{AlertSink, Alerts};
use crate::problem::Problems;

pub(super) fn alerts(raw: &AlertsTable, p: &mut Problems) -> Option<Alerts> {
    let sinks = if raw.sinks.is_present() {
        super::each(&raw.sinks, |s| sink(s, p))
    } else {
        Some(vec![AlertSink::Log])
    };
    Some(Alerts {
        group_wait: raw.group_wait.get()?,
        repeat_interval: raw.repeat_interval.get()?,
        sinks: sinks?,
    })
}

/// What a sink does: exactly one of these keys, each as messages show it.
const SINKS: [(&str, &str); 3] = [
    ("log", "`log = true`"),
    ("webhook", "`webhook = \"http://HOST:PORT/PATH\"`"),
    ("exec", "`exec = [\"cmd\", \"arg\"]`"),
];

fn sink(raw: &SinkTable, p: &mut Problems) -> Option<AlertSink> {
    Some(match super::rules::one_of(raw.place(), &SINKS, false, p)? {
        "log" => raw.log.get().map(|_| AlertSink::Log)?,
        "webhook" => AlertSink::Webhook {
            url: raw.webhook.get()?,
            timeout: raw.timeout.get()?,
            attempts: raw.attempts.get()?,
        },
        _ => AlertSink::Exec {
            command: raw.exec.get()?,
            timeout: raw.timeout.get()?,
        },
    })
}

impl Default for Alerts {
    fn default() -> Self {
        super::defaults("alerts", alerts)
    }
}
