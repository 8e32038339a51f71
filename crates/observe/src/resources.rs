//! Saturation signals: CPU, resident memory, open descriptors and threads of every replica
//! (and CPU and memory of bulwark itself), sampled from /proc. Replica pids are learned from
//! the event bus, so this module does not depend on the supervisor. Each round of replica
//! samples also goes to a [`SampleSink`] (the anomaly detector and the autoscaler).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Bus, EventKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    service: String,
    replica: String,
}

/// One replica's resources at one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub service: String,
    pub index: u32,
    pub pid: u32,
    /// Cumulative CPU (user + system) of the process, in seconds; for a replica in a cgroup
    /// of its own (`resources`, or a container), the cgroup's, children included.
    pub cpu_seconds: f64,
    /// Resident memory of the process; for a replica with its own memory cgroup, the
    /// cgroup's usage (its processes, page cache included), which its limit is against.
    pub rss_bytes: u64,
    /// Open descriptors: the entries of `/proc/PID/fd`.
    pub fds: Option<u64>,
    /// The soft "Max open files" of `/proc/PID/limits` (`None` if unlimited or unreadable).
    pub fd_limit: Option<u64>,
    /// "Threads:" of `/proc/PID/status`.
    pub threads: Option<u64>,
    /// The soft "Max processes" of `/proc/PID/limits`, capped by
    /// `/proc/sys/kernel/threads-max` (`None` if unreadable). The kernel counts it over
    /// every thread of the process's user, so it is a ceiling, not a per-process quota.
    pub thread_limit: Option<u64>,
}

/// Where the sampler sends each round of samples.
pub trait SampleSink: Send + Sync + 'static {
    /// One round: every replica that could be sampled at `at` (possibly none). Called from
    /// the sampler task: it must not block.
    fn samples(&self, at: Instant, samples: &[Sample]);
}

/// Sends each round to two sinks, in order.
pub struct Both(pub Arc<dyn SampleSink>, pub Arc<dyn SampleSink>);

impl SampleSink for Both {
    fn samples(&self, at: Instant, samples: &[Sample]) {
        self.0.samples(at, samples);
        self.1.samples(at, samples);
    }
}

/// The limits a [`Sample`] reports. They change rarely: read once per process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// See [`Sample::fd_limit`].
    pub fd_limit: Option<u64>,
    /// See [`Sample::thread_limit`].
    pub thread_limit: Option<u64>,
}

/// CPU seconds and RSS bytes of one process, from `/proc/PID/stat` (utime + stime, fields
/// 14 and 15 after the command name) and `/proc/PID/statm` (resident pages).
pub fn sample(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks as f64 / clock_ticks(), pages * page_size()))
}

/// A replica's [`Sample`], with its `limits` read earlier ([`limits`]); `None` if its
/// process is gone.
pub fn replica_sample(service: &str, index: u32, pid: u32, limits: Limits) -> Option<Sample> {
    let (cpu, rss) = sample(pid)?;
    // A replica in a cgroup of its own (`resources`, or a container, whose PID 1 `pid` is)
    // is measured as its limit is: the whole replica or container, children included.
    let whole = launch::cgroup::own_usage_of(pid);
    let rss_bytes = whole.memory_bytes.unwrap_or(rss);
    let cpu_seconds = whole.cpu_seconds.unwrap_or(cpu);
    Some(Sample {
        service: service.to_owned(),
        index,
        pid,
        cpu_seconds,
        rss_bytes,
        fds: open_fds(pid),
        fd_limit: limits.fd_limit,
        threads: threads(pid),
        thread_limit: limits.thread_limit,
    })
}

/// Open descriptors of a process: the entries of `/proc/PID/fd`, counted as they are read.
pub fn open_fds(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(dir.filter(Result::is_ok).count() as u64)
}

/// Threads of a process: the "Threads:" line of `/proc/PID/status`.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// A process's limits, from `/proc/PID/limits` and `/proc/sys/kernel/threads-max`; both
/// `None` if its limits cannot be read.
pub fn limits(pid: u32) -> Limits {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/limits")) else {
        return Limits::default();
    };
    let threads_max = std::fs::read_to_string("/proc/sys/kernel/threads-max")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    parse_limits(&text, threads_max)
}

/// The limits in the text of `/proc/PID/limits`: the soft "Max open files" (`None` if
/// unlimited or absent) and the soft "Max processes" capped by `threads_max` (just
/// `threads_max` if unlimited or absent).
pub fn parse_limits(text: &str, threads_max: Option<u64>) -> Limits {
    // "Max open files            1024                 1048576              files"
    let soft = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let processes = soft("Max processes");
    Limits {
        fd_limit: soft("Max open files"),
        thread_limit: match (processes, threads_max) {
            (Some(p), Some(t)) => Some(p.min(t)),
            (p, t) => p.or(t),
        },
    }
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

/// A replica's process as the sampler follows it.
struct Tracked {
    pid: u32,
    /// CPU seconds at the last sample (the counter is fed the difference).
    last_cpu: f64,
    /// Read at the first sample of this pid.
    limits: Option<Limits>,
}

/// The per-replica gauges, removed when a replica exits.
#[derive(Clone, Default)]
struct Gauges {
    rss: Family<ReplicaLabels, Gauge>,
    fds: Family<ReplicaLabels, Gauge>,
    threads: Family<ReplicaLabels, Gauge>,
}

impl Gauges {
    fn remove(&self, labels: &ReplicaLabels) {
        self.rss.remove(labels);
        self.fds.remove(labels);
        self.threads.remove(labels);
    }

    fn set(&self, labels: &ReplicaLabels, s: &Sample) {
        self.rss.get_or_create(labels).set(s.rss_bytes as i64);
        if let Some(n) = s.fds {
            self.fds.get_or_create(labels).set(n as i64);
        }
        if let Some(n) = s.threads {
            self.threads.get_or_create(labels).set(n as i64);
        }
    }
}

/// Registers the resource metrics and samples them every `every`; each round of replica
/// samples also goes to `sink`.
pub fn spawn(
    bus: &Arc<Bus>,
    registry: &mut Registry,
    every: Duration,
    sink: Option<Arc<dyn SampleSink>>,
) -> tokio::task::JoinHandle<()> {
    let cpu = Family::<ReplicaLabels, Counter<f64>>::default();
    let gauges = Gauges::default();
    let own_cpu = Counter::<f64>::default();
    let own_rss: Gauge = Gauge::default();
    registry.register(
        "bulwark_replica_cpu_seconds",
        "CPU time used by a replica's process (its cgroup's: a container, or resources)",
        cpu.clone(),
    );
    registry.register(
        "bulwark_replica_resident_memory_bytes",
        "Resident memory of a replica's process (its cgroup's: a container, or resources)",
        gauges.rss.clone(),
    );
    registry.register(
        "bulwark_replica_open_fds",
        "Open file descriptors of a replica's process",
        gauges.fds.clone(),
    );
    registry.register(
        "bulwark_replica_threads",
        "Threads of a replica's process",
        gauges.threads.clone(),
    );
    registry.register(
        "process_cpu_seconds",
        "CPU time used by bulwark itself",
        own_cpu.clone(),
    );
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory of bulwark itself",
        own_rss.clone(),
    );
    let mut live = bus.follow("resource sampler");
    // Replicas running now, learned from events before this task started.
    let mut pids: BTreeMap<(String, u32), Tracked> = BTreeMap::new();
    for e in bus.history() {
        track(&mut pids, &e.kind);
    }
    let me = std::process::id();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut own_last = 0.0;
        let mut round = Vec::new();
        loop {
            tokio::select! {
                e = live.next() => match e {
                    Some(e) => {
                        if let EventKind::ReplicaExited { service, index, .. } = &e.kind {
                            gauges.remove(&labels(service, *index));
                        }
                        track(&mut pids, &e.kind);
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    round.clear();
                    for ((service, index), t) in pids.iter_mut() {
                        let pid = t.pid;
                        let known = *t.limits.get_or_insert_with(|| limits(pid));
                        let Some(s) = replica_sample(service, *index, pid, known) else { continue };
                        let labels = labels(service, *index);
                        // A counter only goes up: add what was used since the last sample.
                        cpu.get_or_create(&labels).inc_by((s.cpu_seconds - t.last_cpu).max(0.0));
                        t.last_cpu = s.cpu_seconds;
                        gauges.set(&labels, &s);
                        round.push(s);
                    }
                    if let Some(sink) = &sink {
                        sink.samples(Instant::now(), &round);
                    }
                    if let Some((secs, bytes)) = sample(me) {
                        own_cpu.inc_by((secs - own_last).max(0.0));
                        own_last = secs;
                        own_rss.set(bytes as i64);
                    }
                }
            }
        }
    })
}

fn labels(service: &str, index: u32) -> ReplicaLabels {
    ReplicaLabels {
        service: service.to_owned(),
        replica: index.to_string(),
    }
}

fn track(pids: &mut BTreeMap<(String, u32), Tracked>, kind: &EventKind) {
    match kind {
        EventKind::ReplicaStarted {
            service,
            index,
            pid,
            ..
        } => {
            pids.insert(
                (service.clone(), *index),
                Tracked {
                    pid: *pid,
                    last_cpu: 0.0,
                    limits: None,
                },
            );
        }
        EventKind::ReplicaExited { service, index, .. } => {
            pids.remove(&(service.clone(), *index));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
