//! Saturation signals: CPU and resident memory of every replica (and of bulwark itself),
//! sampled from /proc. Replica pids are learned from the event bus, so this module does not
//! depend on the supervisor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

/// Registers the resource metrics and samples them every `every`.
pub fn spawn(
    bus: &Arc<Bus>,
    registry: &mut Registry,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let cpu = Family::<ReplicaLabels, Counter<f64>>::default();
    let rss = Family::<ReplicaLabels, Gauge>::default();
    let own_cpu = Counter::<f64>::default();
    let own_rss: Gauge = Gauge::default();
    registry.register(
        "bulwark_replica_cpu_seconds",
        "CPU time used by a replica's process",
        cpu.clone(),
    );
    registry.register(
        "bulwark_replica_resident_memory_bytes",
        "Resident memory of a replica's process",
        rss.clone(),
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
    let mut pids: BTreeMap<(String, u32), (u32, f64)> = BTreeMap::new();
    for e in bus.history() {
        track(&mut pids, &e.kind);
    }
    let me = std::process::id();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut own_last = 0.0;
        loop {
            tokio::select! {
                e = live.next() => match e {
                    Some(e) => {
                        if let EventKind::ReplicaExited { service, index, .. } = &e.kind {
                            rss.remove(&ReplicaLabels { service: service.clone(), replica: index.to_string() });
                        }
                        track(&mut pids, &e.kind);
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    for ((service, index), (pid, last)) in pids.iter_mut() {
                        let Some((secs, bytes)) = sample(*pid) else { continue };
                        let labels = ReplicaLabels { service: service.clone(), replica: index.to_string() };
                        // A counter only goes up: add what was used since the last sample.
                        cpu.get_or_create(&labels).inc_by((secs - *last).max(0.0));
                        *last = secs;
                        rss.get_or_create(&labels).set(bytes as i64);
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

fn track(pids: &mut BTreeMap<(String, u32), (u32, f64)>, kind: &EventKind) {
    match kind {
        EventKind::ReplicaStarted {
            service,
            index,
            pid,
            ..
        } => {
            pids.insert((service.clone(), *index), (*pid, 0.0));
        }
        EventKind::ReplicaExited { service, index, .. } => {
            pids.remove(&(service.clone(), *index));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let (cpu, rss) = sample(std::process::id()).expect("own /proc entry");
        assert!(cpu >= 0.0);
        assert!(rss > 1 << 20, "a test process uses more than 1 MiB: {rss}");
        assert!(sample(u32::MAX).is_none());
    }
}
