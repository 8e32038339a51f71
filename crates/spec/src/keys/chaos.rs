//! `[[experiments]]`: chaos experiments, declared once like every other key.

use std::time::Duration;

use super::{MANY, ToxicTable, directory, schedule, signal, slo_name, webhook_url};
use crate::model::{ChaosFaultKind, Schedule, Signal, SteadyKind, TargetMode};
use crate::schema::Omitted::{self, Optional, Required};
use crate::schema::{
    boolean, choice, command, duration, int, list, number, string, table, tables, text,
};
use crate::section;

section! {
    /// A file of experiments kept apart from the stack file (`bulwark chaos run -f`).
    pub(crate) struct ExperimentsFile {
        /// The experiments, checked against the running stack's services.
        experiments: Vec<ExperimentTable> = tables::<ExperimentTable>(), Required("[[experiments]]");
    }
}

section! {
    /// A chaos experiment: a fault on some replicas of a service for a while, with a
    /// steady-state hypothesis checked before, during and after, an automatic abort, and
    /// rollbacks that always run.
    pub(crate) struct ExperimentTable {
        /// Unique among experiments; used by `bulwark chaos run NAME`, events and metrics.
        name: String = text("a name of lowercase ASCII letters, digits, `-` and `_`", slo_name),
            Required(r#"name = "kill-one-web""#);
        /// Which replicas of which service the fault hits.
        target: TargetTable = table::<TargetTable>(), Required(r#"target = { service = "web" }"#);
        /// What is broken.
        fault: ChaosFaultTable = table::<ChaosFaultTable>(), Required(r#"fault = { type = "kill" }"#);
        /// How long the fault lasts (a kill or restart happens once, then the experiment
        /// watches this long).
        duration: Duration = duration().positive(), r#""30s""#;
        /// The steady-state hypothesis: probes that must pass before the fault (the
        /// pre-flight gate), all through it, and after it.
        steady_state: Vec<SteadyTable> = tables::<SteadyTable>(), Optional("no probe: the gate alone");
        /// When the experiment stops early.
        abort_when: AbortTable = table::<AbortTable>(), Omitted::Table;
        /// Commands run after the fault ends, aborted or not, in order; one failing does
        /// not stop the others.
        rollbacks: Vec<Vec<String>> = list(command()), Optional("");
        /// When it runs by itself; without it, only `bulwark chaos run NAME` starts it.
        schedule: ChaosScheduleTable = table::<ChaosScheduleTable>(), Optional("on demand");
    }
}

section! {
    /// Which replicas an experiment hits.
    pub(crate) struct TargetTable {
        /// The service.
        service: String = string().non_empty(), Required(r#"service = "web""#);
        /// `one` replica at random, `all`, a `fixed` number (`value`), or a `percent` of
        /// them (`value`, rounded up).
        mode: TargetMode = choice(TargetMode::CHOICES), r#""one""#;
        /// The count for `fixed`, the percentage for `percent`.
        value: f64 = number(0.0, 1000.0), Optional("needed by `fixed` and `percent`");
    }
}

section! {
    /// A fault: `type` and the keys of that type.
    pub(crate) struct ChaosFaultTable {
        /// `kill` (a signal), `stop` (SIGSTOP for the duration), each to every process of
        /// the target replicas (their process groups; every process in a container);
        /// `restart` (a graceful restart); `http-delay`, `http-abort`, `http-reset` (the proxy, on requests sent to
        /// the target replicas); `tcp` (a toxic, `protocol = "tcp"`); `cpu`, `memory` (a
        /// stressor process bulwark always stops); `dependency` (requests to service `to`
        /// through its listener delayed or failed); `disk-fill` (a file in `path`).
        kind as "type": ChaosFaultKind = choice(ChaosFaultKind::CHOICES), Required(r#"type = "kill""#);
        /// `kill`: the signal sent to the replica's process group.
        signal: Signal = text("a signal name such as \"SIGTERM\", \"INT\" or \"QUIT\"", signal),
            r#""SIGKILL""#;
        /// `http-delay`, `dependency`: how long each request waits.
        delay: Duration = duration(), Optional("needed by `http-delay`");
        /// `http-abort`, `dependency`: the status answered instead.
        status: u16 = int(200, 599), Optional("503 for `http-abort`");
        /// `http-*`, `dependency`: the share of requests affected.
        percent: f64 = number(0.0, 100.0).above_min().unit("percent"), "100";
        /// `tcp`: the toxic, with the keys of `expose.toxics`.
        toxic: ToxicTable = table::<ToxicTable>(), Optional("needed by `tcp`");
        /// `cpu`: busy threads of the stressor.
        workers: u32 = int(1, 256), "1";
        /// `memory`: what the stressor allocates and touches.
        mib: u64 = int(1, 1 << 20).unit("MiB"), "256";
        /// `dependency`: the service whose listener the target's requests go through.
        to: String = string().non_empty(), Optional("needed by `dependency`");
        /// `disk-fill`: the directory to fill (relative to the stack file's directory),
        /// say the journal's disk in a test location.
        path: String = text("a directory path", directory), Optional("needed by `disk-fill`");
        /// `disk-fill`: free space left on the file system.
        leave: u64 = int(0, i64::MAX).unit("bytes"), "0";
    }
}

section! {
    /// A steady-state probe: `type` and the keys of that type.
    pub(crate) struct SteadyTable {
        /// `http` (a URL answers `status`), `error-ratio` and `latency` (from bulwark's own
        /// outcomes for the service), `burn-rate` (an SLO's), `ready` (ready replicas),
        /// `command` (exits 0).
        kind as "type": SteadyKind = choice(SteadyKind::CHOICES), Required(r#"type = "error-ratio""#);
        /// The service the probe is about.
        service: String = string().non_empty(), Optional("the target's");
        /// `http`: the URL to GET.
        url: http::Uri = text("an http:// URL such as \"http://127.0.0.1:8080/health\"", webhook_url),
            Optional("needed by `http`");
        /// `http`: the status expected.
        status: u16 = int(100, 599), "200";
        /// `error-ratio`: the largest share of 5xx and failed requests (0 to 1);
        /// `burn-rate`: the largest burn rate.
        max: f64 = number(0.0, 1e6), Optional("needed by `error-ratio` and `burn-rate`");
        /// `latency`: the bound for the percentile.
        latency: Duration = duration().positive(), Optional("needed by `latency`");
        /// `latency`: which percentile.
        percentile: f64 = number(0.0, 100.0).above_min().unit("percent"), "99";
        /// `error-ratio`, `latency`: the sliding window of outcomes judged.
        window: Duration = duration().positive(), r#""10s""#;
        /// `burn-rate`: the SLO's name.
        slo: String = text("an SLO name", slo_name), Optional("needed by `burn-rate`");
        /// `ready`: the fewest ready replicas.
        min: u32 = int(0, 1000), Optional("the service's `replicas`");
        /// `command`: the command; passes on exit 0.
        run: Vec<String> = command(), Optional("needed by `command`");
        /// `http`, `command`: how long one check may take.
        timeout: Duration = duration().positive(), r#""5s""#;
        /// `error-ratio`, `latency`: no verdict (a pass) until the window holds this many
        /// requests.
        min_requests: u64 = int(0, MANY), "20";
    }
}

section! {
    /// When an experiment stops early: a steady-state probe failing this many checks in a
    /// row, checked this often during the fault.
    pub(crate) struct AbortTable => #[derive(Debug, Clone, Copy, PartialEq, Eq)] pub struct AbortWhen: Default {
        /// Consecutive failed checks of one probe that abort the experiment.
        failure_threshold: u32 = int(1, 1000), "3";
        /// How often the probes are checked during the fault.
        interval: Duration = duration().positive(), r#""1s""#;
    }
}

section! {
    /// An experiment's own schedule: `cron`, or the monkey mode (`mean_interval` with a
    /// window of days and hours).
    pub(crate) struct ChaosScheduleTable {
        /// When to run, in cron syntax (as `[[backups]]`).
        cron: Schedule = text("a cron schedule such as \"0 3 * * *\"", schedule), Optional("");
        /// Monkey mode: the mean time between faults (drawn at random, exponentially).
        mean_interval: Duration = duration().long().positive(), Optional("");
        /// Monkey mode: the shortest time between two faults.
        min_gap: Duration = duration().long(), r#""10m""#;
        /// Monkey mode: the days it may act on.
        days: Vec<jiff::civil::Weekday> = list(choice(&[
            ("mon", jiff::civil::Weekday::Monday),
            ("tue", jiff::civil::Weekday::Tuesday),
            ("wed", jiff::civil::Weekday::Wednesday),
            ("thu", jiff::civil::Weekday::Thursday),
            ("fri", jiff::civil::Weekday::Friday),
            ("sat", jiff::civil::Weekday::Saturday),
            ("sun", jiff::civil::Weekday::Sunday),
        ])), r#"["mon", "tue", "wed", "thu", "fri"]"#;
        /// Monkey mode: the hours it may act in, local time, `"HH:MM-HH:MM"`.
        hours: (u16, u16) = text("a window such as \"09:00-17:00\"", hours), r#""09:00-17:00""#;
        /// Monkey mode: only log what it would break (Chaos Monkey's leash).
        leashed: bool = boolean(), "true";
    }
}

/// `"09:00-17:00"` → minutes of the day, start before end.
fn hours(s: &str) -> Result<(u16, u16), String> {
    let minute = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    match s.split_once('-').map(|(a, b)| (minute(a), minute(b))) {
        Some((Some(a), Some(b))) if a < b => Ok((a, b)),
        Some((Some(_), Some(_))) => Err(" (the window must end after it starts)".into()),
        _ => Err(String::new()),
    }
}
