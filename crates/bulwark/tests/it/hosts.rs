//! Hosts for the cluster tests: network namespaces made by the test itself (as root), one
//! per host, each with a veth link to a bridge in a namespace of its own, addresses in
//! 10.77.0.0/24 and loopback up. Every name carries the test process's pid, so tests run
//! side by side; the subnet is the same in every test because each test's namespaces see
//! only each other. [`Hosts`]'s drop kills every process group it started and deletes the
//! namespaces (and with them the links), even when the test panics; namespaces a killed
//! test left behind are swept by the next one.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::harness::{die_with_test, eventually, output_text};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A few hosts on one bridge.
pub struct Hosts {
    prefix: String,
    hosts: usize,
    started: Mutex<Vec<Child>>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        output_text(&out)
    );
}

impl Hosts {
    /// `n` hosts, `h0`..: host `i` is 10.77.0.{10+i}.
    pub fn new(n: usize) -> Hosts {
        sweep_leftovers();
        let prefix = format!("{}{}", own_prefix(), NEXT.fetch_add(1, Ordering::Relaxed));
        // Made before anything exists, so a failure below still deletes what was made
        // (deleting a namespace that was not made yet is harmless).
        let hosts = Hosts {
            prefix,
            hosts: n,
            started: Mutex::new(Vec::new()),
        };
        let br = hosts.bridge_ns();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = hosts.ns(i);
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("v{i}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", hosts.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        hosts
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.77.0.{}", 10 + i)
    }

    /// `program args` as a command that runs inside host `i` (only its network namespace:
    /// the file system and everything else are the test's).
    pub fn command(&self, i: usize, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns(i)))
            .arg("--")
            .arg(program)
            .args(args);
        cmd
    }

    /// Starts `cmd` (from [`command`](Self::command)) in a process group of its own, killed
    /// with the hosts. Its output goes to `log`.
    pub fn spawn(&self, mut cmd: Command, log: &std::path::Path) -> u32 {
        let out = std::fs::File::create(log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        die_with_test(&mut cmd);
        let child = cmd.spawn().expect("spawn in a host");
        let pid = child.id();
        self.started.lock().unwrap().push(child);
        pid
    }

    /// Runs `program args` inside host `i` to its end.
    pub fn run(&self, i: usize, program: &str, args: &[&str]) -> Output {
        self.command(i, program, args)
            .output()
            .expect("run in a host")
    }

    /// Cuts host `i` off the others: its port on the bridge goes down (its packets go
    /// nowhere, as when a cable is pulled; nothing is refused).
    pub fn cut(&self, i: usize) {
        self.set_port(i, "down");
    }

    /// Connects host `i` again.
    pub fn heal(&self, i: usize) {
        self.set_port(i, "up");
    }

    /// Sets host `i`'s port on the bridge `up` or `down`.
    fn set_port(&self, i: usize, state: &str) {
        ip(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            &format!("v{i}"),
            state,
        ]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in self.started.get_mut().unwrap().iter_mut() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
        for i in 0..self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge_ns()])
            .status();
    }
}

/// The pid namespace this test process runs in (the inode of `/proc/self/ns/pid`).
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// The start of the names of this test process's namespaces: `bwt-PIDNS-PID-`. A pid means
/// something only in its own pid namespace; test runs in different ones (a CI job in a
/// container beside one on the host) share `/run/netns`.
pub fn own_prefix() -> String {
    format!("bwt-{}-{}-", pid_namespace(), std::process::id())
}

/// Deletes the namespaces of test processes of this pid namespace that are gone (killed at
/// a timeout, where no drop ran); another pid namespace's are never judged by a pid that
/// means another process here.
fn sweep_leftovers() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let ours = format!("bwt-{}-", pid_namespace());
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&ours).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok_and(|p| !crate::harness::alive(p)) {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// A 3.4 etcd cluster, one member per host, data in `dir`.
pub struct EtcdCluster {
    /// The member processes, by host.
    pub pids: Vec<u32>,
    /// The client URLs, comma-separated.
    pub urls: String,
}

impl EtcdCluster {
    /// Starts a member on each host and waits until every one is healthy.
    pub fn start(hosts: &Hosts, n: usize, dir: &std::path::Path) -> EtcdCluster {
        let pids = (0..n).map(|i| spawn_member(hosts, n, i, dir)).collect();
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://{}:2379", hosts.addr(i)))
            .collect();
        let cluster = EtcdCluster {
            pids,
            urls: urls.join(","),
        };
        for (i, url) in urls.iter().enumerate() {
            eventually(
                &format!("etcd member {i} healthy"),
                Duration::from_secs(60),
                || {
                    let out = hosts.run(i, "etcdctl", &["--endpoints", url, "endpoint", "health"]);
                    out.status.success().then_some(())
                },
            );
        }
        cluster
    }

    /// Starts member `i` again (after a kill) on its data in `dir`, without waiting.
    pub fn restart(&mut self, hosts: &Hosts, i: usize, dir: &std::path::Path) {
        self.pids[i] = spawn_member(hosts, self.pids.len(), i, dir);
    }

    /// Every client message the members received so far (unary calls and stream
    /// messages: keepalives, watch requests), from their own `/metrics`.
    pub fn messages_received(&self, hosts: &Hosts) -> f64 {
        self.metric_per_member(hosts, "grpc_server_msg_received_total{")
            .iter()
            .sum()
    }

    /// Raft entries committed so far (every write: puts, deletes, transactions, lease
    /// grants and revokes), as the member furthest ahead counts them.
    pub fn raft_writes(&self, hosts: &Hosts) -> f64 {
        self.metric_per_member(hosts, "etcd_server_proposals_committed_total ")
            .into_iter()
            .fold(0.0, f64::max)
    }

    /// For each member, the sum of its samples whose line starts with `prefix` (a metric's
    /// name and `{` or a space), from its own `/metrics`.
    fn metric_per_member(&self, hosts: &Hosts, prefix: &str) -> Vec<f64> {
        self.urls
            .split(',')
            .enumerate()
            .map(|(i, url)| {
                let out = hosts.run(i, "curl", &["-sf", &format!("{url}/metrics")]);
                assert!(
                    out.status.success(),
                    "metrics of member {i}: {}",
                    output_text(&out)
                );
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .collect()
    }
}

/// Member `i` of `n` on host `i`, its data in `dir`: its pid.
fn spawn_member(hosts: &Hosts, n: usize, i: usize, dir: &std::path::Path) -> u32 {
    let peers: Vec<String> = (0..n)
        .map(|i| format!("m{i}=http://{}:2380", hosts.addr(i)))
        .collect();
    let a = hosts.addr(i);
    let data = dir.join(format!("etcd{i}"));
    let args = [
        "--name".to_owned(),
        format!("m{i}"),
        "--data-dir".to_owned(),
        data.display().to_string(),
        "--listen-peer-urls".to_owned(),
        format!("http://{a}:2380"),
        "--initial-advertise-peer-urls".to_owned(),
        format!("http://{a}:2380"),
        "--listen-client-urls".to_owned(),
        format!("http://{a}:2379"),
        "--advertise-client-urls".to_owned(),
        format!("http://{a}:2379"),
        "--initial-cluster".to_owned(),
        peers.join(","),
        "--initial-cluster-state".to_owned(),
        "new".to_owned(),
        "--initial-cluster-token".to_owned(),
        hosts.prefix.clone(),
        // A member cut off keeps raising its term; without pre-vote (off by default in
        // 3.4, on from 3.5) its return deposes the leader and the cluster has none for an
        // election's time. What a production cluster should run too.
        "--pre-vote=true".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A restarted member logs to a file of its own.
    let mut log = dir.join(format!("etcd{i}.log"));
    while log.exists() {
        log.set_extension("again.log");
    }
    hosts.spawn(hosts.command(i, "etcd", &args), &log)
}
