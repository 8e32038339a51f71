//! `[services.NAME.resources]`, `on_oom` and `priority`. Whether the machine's cgroups can
//! enforce them is bulwark up's question (it needs the running kernel), not the file's.

use crate::keys::resources::ResourcesTable;
use crate::model::{Resources, ServiceAnomaly};
use crate::schema::Field;

pub(super) fn resources(raw: &Field<ResourcesTable>) -> Resources {
    raw.value()
        .map(|r| Resources {
            memory: r.memory.get(),
            cpu: r.cpu.get(),
            pids: r.pids.get(),
        })
        .unwrap_or_default()
}

/// The anomaly detector's memory forecast aims at the cgroup limit when no other limit is
/// given: that is where the OOM killer will strike.
pub(super) fn anomaly_with_limit(mut a: ServiceAnomaly, r: &Resources) -> ServiceAnomaly {
    if a.memory_limit.is_none() {
        a.memory_limit = r.memory;
    }
    a
}

#[cfg(test)]
mod tests {
    use crate::{OnOom, Priority};

    fn load(extra: &str) -> Result<crate::Service, String> {
        let toml = format!("[services.s]\nrun = [\"sleep\", \"60\"]\n{extra}");
        crate::parse(&toml, std::path::Path::new("stack.toml"))
            .map(|mut s| s.services.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_cores_and_counts_are_read_with_their_units() {
        let s = load("on_oom = \"stop\"\npriority = \"low\"\n[services.s.resources]\nmemory = \"64MiB\"\ncpu = 0.2\npids = 32\n")
            .expect("valid");
        assert_eq!(s.resources.memory, Some(64 << 20));
        assert_eq!(s.resources.cpu, Some(0.2));
        assert_eq!(s.resources.pids, Some(32));
        assert_eq!((s.on_oom, s.priority), (OnOom::Stop, Priority::Low));
        assert_eq!(
            s.anomaly.memory_limit,
            Some(64 << 20),
            "the forecast aims at the limit"
        );
        for (text, bytes) in [
            ("\"1GiB\"", 1u64 << 30),
            ("\"5MB\"", 5_000_000),
            ("\"4194304\"", 4 << 20),
        ] {
            let s = load(&format!("[services.s.resources]\nmemory = {text}\n")).expect(text);
            assert_eq!(s.resources.memory, Some(bytes), "{text}");
        }
        let plain = load("").expect("valid");
        assert!(plain.resources.is_empty());
        assert_eq!(
            (plain.on_oom, plain.priority),
            (OnOom::Restart, Priority::Normal)
        );
    }

    #[test]
    fn bad_limits_are_located_errors_naming_the_key() {
        for (extra, want) in [
            ("memory = \"3MiB\"", "at least \"4MiB\""),
            ("memory = \"64MB\"", ""),
            ("memory = \"64 mebibytes\"", "units: B, KiB"),
            ("memory = 64", "memory"),
            ("cpu = 0", "cpu"),
            ("cpu = -1.0", "cpu"),
            ("pids = 0", "pids"),
            ("swap = \"1GiB\"", "swap"),
        ] {
            let got = load(&format!("[services.s.resources]\n{extra}\n"));
            if want.is_empty() {
                assert!(got.is_ok(), "{extra}: {got:?}");
                continue;
            }
            let err = got.expect_err(extra);
            assert!(err.contains("stack.toml:4"), "{extra}: {err}");
            assert!(err.contains(want), "{extra}: {err}");
        }
        let err = load("priority = \"urgent\"\n").expect_err("bad priority");
        assert!(
            err.contains("critical") && err.contains("priority"),
            "{err}"
        );
        let err = load("on_oom = \"ignore\"\n").expect_err("bad on_oom");
        assert!(err.contains("restart") && err.contains("on_oom"), "{err}");
    }
}
