//! A node's capacity, as `bulwark agent` declares it when it registers: what the machine
//! has (its CPUs and memory, within this process's cgroup limits), or `--capacity
//! cpu=2,memory=4GiB`; and how tables print capacities and requests.

use std::path::{Path, PathBuf};

use anyhow::bail;
use cluster::Capacity;

/// What this machine offers: the CPUs this process may run on, lowered by a cgroup v2
/// `cpu.max` quota, and `MemTotal` lowered by a cgroup v2 `memory.max` (the tightest of
/// this process's cgroup and its ancestors). Blocking file I/O (a few small reads).
pub fn detect() -> Capacity {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let cores = u64::try_from(cpus).unwrap_or(u64::MAX).saturating_mul(1000);
    let memtotal = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_total(&t))
        .unwrap_or(u64::MAX);
    let cgroup = own_cgroup();
    let quota = cgroup
        .as_deref()
        .and_then(|c| tightest(c, "cpu.max", cpu_max));
    let limit = cgroup
        .as_deref()
        .and_then(|c| tightest(c, "memory.max", memory_max));
    Capacity {
        cpu_millis: quota.map_or(cores, |q| q.min(cores)),
        memory: limit.map_or(memtotal, |l| l.min(memtotal)),
    }
}

/// `--capacity`'s `cpu=CORES` and `memory=SIZE` pairs over what was `detected`: a key
/// left out keeps the machine's value.
pub fn parse(given: &[String], detected: Capacity) -> anyhow::Result<Capacity> {
    let mut out = detected;
    let (mut cpu, mut memory) = (false, false);
    for pair in given.iter().filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--capacity: `{pair}` is not KEY=VALUE (e.g. cpu=2,memory=4GiB)");
        };
        let seen = match key.trim() {
            "cpu" => {
                out.cpu_millis = cores(value.trim())?;
                &mut cpu
            }
            "memory" => {
                out.memory = spec::parse_size(value.trim()).map_err(|why| {
                    anyhow::anyhow!(
                        "--capacity: memory `{value}` is not a size such as 512MiB or 4GiB{why}"
                    )
                })?;
                &mut memory
            }
            other => bail!("--capacity: unknown key `{other}` (cpu or memory)"),
        };
        if std::mem::replace(seen, true) {
            bail!("--capacity: `{}` is given twice", key.trim());
        }
    }
    Ok(out)
}

/// `2`, `1.5`, `0.25` cores, in millicores (at least 1).
fn cores(value: &str) -> anyhow::Result<u64> {
    let bad = || {
        anyhow::anyhow!(
            "--capacity: cpu `{value}` is not a number of cores above 0 (e.g. 2 or 1.5)"
        )
    };
    let n: f64 = value.parse().map_err(|_| bad())?;
    if !n.is_finite() || n <= 0.0 || n > 1e9 {
        return Err(bad());
    }
    Ok(((n * 1000.0).round() as u64).max(1))
}

/// `MemTotal:  16316412 kB` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// This process's cgroup v2 directory (`0::/path` in `/proc/self/cgroup`).
fn own_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup").join(path.trim().trim_start_matches('/')))
}

/// The smallest limit in `file` of `dir` and its ancestors up to the cgroup root.
fn tightest(dir: &Path, file: &str, parse: fn(&str) -> Option<u64>) -> Option<u64> {
    dir.ancestors()
        .take_while(|d| d.starts_with("/sys/fs/cgroup"))
        .filter_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .filter_map(|t| parse(&t))
        .min()
}

/// `cpu.max`: `QUOTA PERIOD` in millicores, `max ...` is none.
fn cpu_max(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next()?.parse().ok().filter(|&p| p > 0)?;
    Some((quota.saturating_mul(1000) / period).max(1))
}

/// `memory.max`: bytes, `max` is none.
fn memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Millicores as cores: `2`, `1.5`, `0.25`.
pub fn cpu(millis: u64) -> String {
    let s = format!("{}.{:03}", millis / 1000, millis % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Bytes in the largest binary unit they reach: `512MiB`, `4GiB`, `1.5GiB`.
pub fn memory(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size {
            return match bytes % size {
                0 => format!("{}{unit}", bytes / size),
                _ => format!("{:.1}{unit}", bytes as f64 / size as f64),
            };
        }
    }
    format!("{bytes}B")
}

/// `CPU 1.5/2  MEM 512MiB/4GiB`: what is requested on a node of its capacity (`-`:
/// unlimited, a node that declared none).
pub fn usage(requested: policy::placement::Resources, capacity: Option<Capacity>) -> String {
    let (cpu_cap, mem_cap) = match capacity {
        Some(c) => (cpu(c.cpu_millis), memory(c.memory)),
        None => ("-".to_owned(), "-".to_owned()),
    };
    format!(
        "CPU {}/{cpu_cap}  MEM {}/{mem_cap}",
        cpu(requested.cpu_millis),
        memory(requested.memory)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: Capacity = Capacity {
        cpu_millis: 8000,
        memory: 16 << 30,
    };

    fn given(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn capacity_flags_override_the_machine_key_by_key() {
        let both = parse(&given("cpu=1.5,memory=4GiB"), MACHINE).unwrap();
        assert_eq!((both.cpu_millis, both.memory), (1500, 4 << 30));
        let cpu_only = parse(&given("cpu=2"), MACHINE).unwrap();
        assert_eq!((cpu_only.cpu_millis, cpu_only.memory), (2000, 16 << 30));
        assert_eq!(parse(&[], MACHINE).unwrap(), MACHINE);
    }

    #[test]
    fn bad_capacity_values_are_refused_naming_the_flag() {
        for (bad, says) in [
            ("cpu=0", "cpu `0` is not a number of cores"),
            ("cpu=lots", "cpu `lots` is not a number of cores"),
            ("memory=4Gb", "memory `4Gb` is not a size"),
            ("memory=", "memory `` is not a size"),
            ("disk=1GiB", "unknown key `disk`"),
            ("cpu", "`cpu` is not KEY=VALUE"),
            ("cpu=1,cpu=2", "`cpu` is given twice"),
        ] {
            let e = parse(&given(bad), MACHINE).unwrap_err().to_string();
            assert!(
                e.starts_with("--capacity: ") && e.contains(says),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_machines_figures_are_read_from_meminfo_and_cgroup_files() {
        assert_eq!(
            mem_total("MemTotal:       2048 kB\nMemFree: 1 kB\n"),
            Some(2 << 20)
        );
        assert_eq!(cpu_max("150000 100000\n"), Some(1500));
        assert_eq!(cpu_max("max 100000\n"), None);
        assert_eq!(memory_max("max\n"), None);
        assert_eq!(memory_max("1073741824\n"), Some(1 << 30));
        let here = detect();
        assert!(here.cpu_millis >= 1 && here.memory > 0, "{here:?}");
    }

    #[test]
    fn capacities_print_as_cores_and_binary_units() {
        let requested = policy::placement::Resources {
            cpu_millis: 1500,
            memory: 512 << 20,
        };
        let capacity = Capacity {
            cpu_millis: 2000,
            memory: 4 << 30,
        };
        assert_eq!(
            usage(requested, Some(capacity)),
            "CPU 1.5/2  MEM 512MiB/4GiB"
        );
        assert_eq!(
            usage(policy::placement::Resources::default(), None),
            "CPU 0/-  MEM 0B/-"
        );
        assert_eq!(cpu(250), "0.25");
        assert_eq!(memory(3 << 29), "1.5GiB");
    }
}
