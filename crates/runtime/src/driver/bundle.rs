//! The OCI bundle's `config.json` for one replica incarnation, written by bulwark itself
//! (runtime-spec 1.0.2, what Debian's runc 1.1 reads).

use serde_json::{Value, json};

use super::init::InitFiles;

/// `PATH` inside the container unless the service's `env` sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths of /proc and /sys that leak the host or allow harm; the set runc's own
/// `runc spec` writes.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the bundle describes, already substituted for the replica.
pub(crate) struct Bundle<'a> {
    pub container: &'a spec::Container,
    pub rootfs: &'a std::path::Path,
    pub args: Vec<String>,
    /// `NAME=value`, in the order a process replica gets them (later wins).
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub hostname: String,
    /// The soft and hard `RLIMIT_NOFILE` of the container's process.
    pub nofile: (u64, u64),
    /// `linux.cgroupsPath`, relative to runc's own cgroup: inside the replica's cgroup,
    /// whose limits bulwark wrote. `None`: runc's default (the container id, under its own).
    pub cgroup: Option<String>,
    /// bulwark's init, PID 1 with `args` as its child (`init = true`).
    pub init: Option<&'a InitFiles>,
    /// The incarnation's notify socket on the host, bind-mounted (the file alone) at
    /// [`crate::notify::IN_CONTAINER`].
    pub notify: Option<&'a std::path::Path>,
    /// The network namespace runc joins (`network = "private"`, made by [`super::netns`]).
    pub netns: Option<&'a std::path::Path>,
}

impl Bundle<'_> {
    /// The `config.json` document.
    pub fn config(&self) -> Value {
        let c = self.container;
        let (uid, gid) = c.user.unwrap_or((0, 0));
        let caps = &c.capabilities;
        let mut env: Vec<String> = Vec::new();
        if !self.env.iter().any(|(k, _)| k == "PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": { "uid": uid, "gid": gid },
                "args": self.argv(),
                "env": env,
                "cwd": self.cwd,
                // Kept capabilities are in every set, so a non-root user keeps them across
                // exec (ambient); everything else is dropped from the bounding set too.
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps,
                    "inheritable": caps, "ambient": caps,
                },
                "rlimits": [{
                    "type": "RLIMIT_NOFILE", "soft": self.nofile.0, "hard": self.nofile.1,
                }],
                "noNewPrivileges": true,
            },
            "root": { "path": self.rootfs, "readonly": c.read_only },
            "hostname": self.hostname,
            "mounts": self.mounts(),
            "linux": {
                "namespaces": namespaces(self.netns),
                "maskedPaths": MASKED,
                "readonlyPaths": READ_ONLY,
            },
        });
        if let Some(path) = &self.cgroup {
            config["linux"]["cgroupsPath"] = json!(path);
        }
        config
    }

    /// `args`, after bulwark's init when the container has one.
    fn argv(&self) -> Vec<String> {
        match self.init {
            Some(init) => init.argv(self.args.clone()),
            None => self.args.clone(),
        }
    }

    fn mounts(&self) -> Vec<Value> {
        let mut m = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                   "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", "ro"]}),
        ];
        m.extend(self.container.mounts.iter().map(|b| {
            let mut options = vec!["rbind", "rprivate"];
            if b.read_only {
                options.push("ro");
            }
            json!({"destination": b.target, "type": "bind", "source": b.source,
                   "options": options})
        }));
        // runc makes the mount points (`/.bulwark/…`, empty) in the rootfs, as it does `/proc`.
        m.extend(
            self.init
                .iter()
                .flat_map(|i| i.mounts())
                .map(|(host, inside)| {
                    json!({"destination": inside, "type": "bind", "source": host,
                   "options": ["bind", "ro", "nosuid", "nodev"]})
                }),
        );
        // Under /dev, runc's tmpfs: the mount point is made there, not in the rootfs.
        if let Some(socket) = self.notify {
            m.push(
                json!({"destination": crate::notify::IN_CONTAINER, "type": "bind",
                "source": socket, "options": ["bind", "nosuid", "noexec", "nodev"]}),
            );
        }
        m
    }
}

fn namespaces(netns: Option<&std::path::Path>) -> Vec<Value> {
    let mut spaces: Vec<Value> = ["pid", "ipc", "uts", "mount"]
        .iter()
        .map(|t| json!({ "type": t }))
        .collect();
    // Without one (`host` network), the replica binds bulwark's loopback.
    if let Some(path) = netns {
        spaces.push(json!({ "type": "network", "path": path }));
    }
    spaces
}
