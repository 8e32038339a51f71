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

fn sink(raw: &SinkTable, p: &mut Problems) -> Option<AlertSink> {
    if super::written_of(&raw.written, &["log", "webhook", "exec"]).len() != 1 {
        return p.fail(
            raw.span.clone(),
            format!(
                "{} needs exactly one of `log = true`, `webhook = \"http://HOST:PORT/PATH\"` \
                 or `exec = [\"cmd\", \"arg\"]`",
                raw.label
            ),
        );
    }
    if let Some(log) = raw.log.given() {
        if !*log.get_ref() {
            return p.fail(
                log.span(),
                "`log = false` is not a sink; remove the entry to have no log sink",
            );
        }
        return Some(AlertSink::Log);
    }
    if raw.webhook.is_present() {
        return Some(AlertSink::Webhook {
            url: raw.webhook.get()?,
            timeout: raw.timeout.get()?,
            attempts: raw.attempts.get()?,
        });
    }
    Some(AlertSink::Exec {
        command: raw.exec.get()?,
        timeout: raw.timeout.get()?,
    })
}

impl Default for Alerts {
    fn default() -> Self {
        super::defaults("alerts", alerts)
    }
}
