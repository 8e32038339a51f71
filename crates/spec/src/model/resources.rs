//! Resources and QoS of a service's replicas, after validation.

/// `[services.NAME.resources]`: limits of each replica, `None` for none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    /// Bytes of memory (≥ 4 MiB).
    pub memory: Option<u64>,
    /// Cores (> 0), as a CFS quota over [`Resources::CPU_PERIOD_US`].
    pub cpu: Option<f64>,
    /// Processes and threads at once (≥ 1).
    pub pids: Option<u32>,
}

impl Resources {
    /// The CFS period a `cpu` quota is a share of, in microseconds (100 ms).
    pub const CPU_PERIOD_US: u64 = 100_000;

    /// No limit at all: the replicas run without cgroups of their own.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu.is_none() && self.pids.is_none()
    }

    /// The CFS quota per period for `cpu`, in microseconds (at least the kernel's 1 ms).
    pub fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu
            .map(|c| ((c * Self::CPU_PERIOD_US as f64).round() as u64).max(1_000))
    }
}

crate::spelled! {
    /// What follows when the kernel's OOM killer kills a replica.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum OnOom {
        /// Restart it as the restart policy and rules say.
        Restart = "restart",
        /// Leave it stopped (state `oom-killed`) until a restart is asked for.
        Stop = "stop",
    }
}

crate::spelled! {
    /// Which replicas the kernel kills first when the machine runs out of memory.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Priority {
        /// Killed last of the replicas (`oom_score_adj` -500).
        Critical = "critical",
        /// `oom_score_adj` -250.
        High = "high",
        /// `oom_score_adj` 0, the kernel's default.
        Normal = "normal",
        /// Killed first (`oom_score_adj` 500).
        Low = "low",
    }
}

impl Priority {
    /// The replica's `/proc/PID/oom_score_adj` (-1000 never killed … 1000 killed first).
    /// All above bulwark's own -900, so the supervisor outlives every replica.
    pub fn oom_score_adj(self) -> i32 {
        match self {
            Priority::Critical => -500,
            Priority::High => -250,
            Priority::Normal => 0,
            Priority::Low => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_to_oom_score_adj_in_order_and_above_bulwarks_own() {
        let adj = [
            Priority::Critical,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ]
        .map(Priority::oom_score_adj);
        assert_eq!(adj, [-500, -250, 0, 500]);
        assert!(adj.iter().all(|&a| a > -900 && a <= 1000));
    }

    #[test]
    fn cpu_cores_become_a_quota_over_100ms() {
        let r = |cpu| Resources {
            cpu: Some(cpu),
            ..Resources::default()
        };
        assert_eq!(r(0.2).cpu_quota_us(), Some(20_000));
        assert_eq!(r(1.5).cpu_quota_us(), Some(150_000));
        assert_eq!(r(0.001).cpu_quota_us(), Some(1_000), "the kernel's minimum");
        assert_eq!(Resources::default().cpu_quota_us(), None);
        assert!(Resources::default().is_empty());
    }
}
