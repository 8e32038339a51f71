//! The fault matrix (issue 8): the real binary, the quickstart's three demo replicas under
//! open-loop load, and one fault a production host sees per test. Each test measures the
//! same things and asserts its row's bounds:
//!
//! - requests lost: failed requests of the well-behaved load (0 wherever a retry can
//!   save them);
//! - replicas orphaned: after the row, bulwark is killed with kill -9; every replica must
//!   die with it;
//! - journal records lost: every event the API showed before that kill must be there
//!   after `up` starts again on the same state directory;
//! - bulwark's peak RSS, against a bound;
//! - what a hostile client got: a status code (408, 431, 429, 503) or a close, never a hang.
//!
//! `scripts/faults` runs these tests alone and prints the rows as one table; each test
//! also prints its own row, and appends it as JSON to `$BULWARK_FAULT_MATRIX` when set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    Demo, Load, Stack, alive, cpu_time, eventually, free_port, get, replica_pids, signal,
};

/// The quickstart (`examples/quickstart.toml`) with faster probes, so a row takes seconds,
/// and `extra` appended to `[services.web.expose]` (or after it, for whole tables).
fn quickstart(port: u16, extra: &str) -> String {
    Demo::new("web")
        .replicas(3)
        .with(r#"env = { GREETING = "hello" }"#)
        .quickstart_probes()
        .expose(port)
        .with(extra)
        .build()
}

/// Short client timeouts, so hostile rows finish in seconds. (Defaults: header_read 10s,
/// idle 60s, request 15s.)
const SHORT_TIMEOUTS: &str = r#"
[services.web.expose.timeouts]
header_read = "2s"
idle = "4s"
request = "4s"
"#;

/// One row of the matrix.
struct Row {
    fault: &'static str,
    sent: u64,
    lost: u64,
    lost_bound: u64,
    orphans: usize,
    journal_lost: usize,
    rss_mib: f64,
    rss_bound_mib: f64,
    hostile: String,
}

impl Row {
    fn print_and_check(&self) {
        let line = json!({
            "fault": self.fault,
            "sent": self.sent,
            "lost": self.lost,
            "lost_bound": self.lost_bound,
            "orphans": self.orphans,
            "journal_lost": self.journal_lost,
            "rss_mib": (self.rss_mib * 10.0).round() / 10.0,
            "rss_bound_mib": self.rss_bound_mib,
            "hostile": self.hostile,
        });
        println!("fault matrix row: {line}");
        if let Ok(path) = std::env::var("BULWARK_FAULT_MATRIX")
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
        assert!(
            self.lost <= self.lost_bound,
            "{}: {} requests lost, bound {}",
            self.fault,
            self.lost,
            self.lost_bound
        );
        assert_eq!(self.orphans, 0, "{}: replicas orphaned", self.fault);
        assert_eq!(self.journal_lost, 0, "{}: journal records lost", self.fault);
        assert!(
            self.rss_mib <= self.rss_bound_mib,
            "{}: bulwark's peak RSS {:.1} MiB over the bound {} MiB",
            self.fault,
            self.rss_mib,
            self.rss_bound_mib
        );
    }
}

/// Peak resident memory of `pid`, in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn replica_addr(stack: &Stack, index: usize) -> SocketAddr {
    let port = stack.service("web")["replicas"][index]["port"]
        .as_u64()
        .expect("replica has a port");
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// The end of every row: kill -9 bulwark, count replicas that outlive it, start `up`
/// again on the same state directory and count events the API had shown that are gone.
fn kill_and_recount(stack: &mut Stack) -> (usize, usize) {
    let seen: Vec<u64> = stack
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(!seen.is_empty(), "the API showed events");
    let pids = replica_pids(&stack.service("web"));
    signal(stack.pid(), libc::SIGKILL);
    let _ = stack.child.as_mut().unwrap().wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let orphans = pids.iter().filter(|&&p| alive(p)).count();
    stack.restart();
    let after: std::collections::HashSet<u64> = stack
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let lost = seen.iter().filter(|s| !after.contains(s)).count();
    (orphans, lost)
}

/// Runs one row: the stack under `rate` req/s for `secs`, `act` one second in. `act`
/// returns what a hostile client got ("-" when there is none).
#[allow(clippy::too_many_arguments)]
fn row(
    fault: &'static str,
    stack: &mut Stack,
    port: u16,
    rate: u32,
    secs: u32,
    lost_bound: u64,
    rss_bound_mib: f64,
    act: impl FnOnce(&Stack, SocketAddr) -> String,
) {
    stack.wait_ready("web", 3);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let load = Load::start(&format!("http://{proxy}/"), rate, &format!("{secs}s"));
    std::thread::sleep(Duration::from_secs(1));
    let hostile = act(stack, proxy);
    let report = load.finish();
    let rss_mib = peak_rss_mib(stack.pid());
    let (orphans, journal_lost) = kill_and_recount(stack);
    Row {
        fault,
        sent: report["sent"].as_u64().unwrap_or(0),
        lost: report["failed"]["total"].as_u64().unwrap_or(u64::MAX),
        lost_bound,
        orphans,
        journal_lost,
        rss_mib,
        rss_bound_mib,
        hostile,
    }
    .print_and_check();
}

/// The ordinary row: the quickstart, `act` on replica 0.
fn replica_fault(fault: &'static str, extra: &str, act: impl FnOnce(&Stack, SocketAddr)) {
    let port = free_port();
    let mut stack = Stack::start(&quickstart(port, extra));
    row(fault, &mut stack, port, 200, 6, 0, 64.0, |s, _| {
        act(s, replica_addr(s, 0));
        "-".into()
    });
}

#[test]
fn fault_replica_crash() {
    replica_fault("replica crash (kill -9)", "", |s, _| {
        let pid = replica_pids(&s.service("web"))[0];
        signal(pid, libc::SIGKILL);
        std::thread::sleep(Duration::from_secs(2));
    });
}

#[test]
fn fault_replica_hang() {
    replica_fault("replica hang (SIGSTOP)", "", |s, _| {
        let pid = replica_pids(&s.service("web"))[0];
        signal(pid, libc::SIGSTOP);
        s.wait_service(
            "web",
            "the stopped replica replaced",
            Duration::from_secs(15),
            |svc| !replica_pids(svc).contains(&pid),
        );
    });
}

#[test]
fn fault_replica_slow() {
    replica_fault("replica slow (300 ms)", "", |_, replica| {
        assert_eq!(get(replica, "/fault/slow?ms=300").0, 200);
    });
}

#[test]
fn fault_replica_5xx() {
    // 502, 503 and 504 of idempotent requests are retried on another replica by default:
    // none is lost.
    replica_fault("replica answers 503", "", |_, replica| {
        assert_eq!(get(replica, "/fault/status?code=503").0, 200);
        std::thread::sleep(Duration::from_secs(2));
    });
}

#[test]
fn fault_replica_resets_connections() {
    replica_fault("replica resets connections", "", |_, replica| {
        assert_eq!(get(replica, "/fault/rst").0, 200);
        std::thread::sleep(Duration::from_secs(2));
    });
}

#[test]
fn fault_replica_listener_closed() {
    replica_fault("replica listener closed (refused)", "", |_, replica| {
        assert_eq!(get(replica, "/fault/close").0, 200);
        std::thread::sleep(Duration::from_secs(2));
    });
}

/// A memory cgroup (v1) made for one test under this process's own, removed on drop.
struct MemoryCgroup(PathBuf);

impl MemoryCgroup {
    fn new(limit_bytes: u64) -> MemoryCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()))
            .expect("a cgroup v1 memory controller (Debian 12 machines have one)");
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/memory{}/bulwark-test-{}-{}",
            own.trim_end_matches('/'),
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        std::fs::write(dir.join("memory.limit_in_bytes"), limit_bytes.to_string()).unwrap();
        MemoryCgroup(dir)
    }

    fn adopt(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once its processes died; the harness kills them at the latest.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn fault_replica_fills_its_memory() {
    // The replica is put in a memory cgroup of 128 MiB and then fills it: the kernel's OOM
    // killer ends it, and bulwark replaces it (outside the cgroup).
    let cgroup = MemoryCgroup::new(128 << 20);
    let port = free_port();
    let mut stack = Stack::start(&quickstart(port, ""));
    row(
        "replica fills its memory (cgroup OOM kill)",
        &mut stack,
        port,
        200,
        6,
        0,
        64.0,
        |s, _| {
            let before = replica_pids(&s.service("web"))[0];
            cgroup.adopt(before);
            let replica = replica_addr(s, 0);
            // The request that fills the cgroup gets no answer: its process is killed.
            let _ = std::panic::catch_unwind(|| get(replica, "/fault/leak?mb=512"));
            let svc = s.wait_service(
                "web",
                "the replica replaced",
                Duration::from_secs(15),
                |svc| !replica_pids(svc).contains(&before),
            );
            let exit = &svc["replicas"][0]["last_exit"];
            format!("replica OOM-killed ({exit}), replaced")
        },
    );
}

#[test]
fn fault_port_taken_at_start() {
    // The proxy's address is held by someone else: `up` must fail at once, name the
    // address, and leave nothing running.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let mut stack = Stack::prepare(&quickstart(port, ""));
    let status = stack
        .launch_expecting_failure(Duration::from_secs(20))
        .expect("up exits when its listen address is taken");
    assert!(!status.success());
    let stderr = stack.stderr();
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "the error names the address: {stderr}"
    );
    let left = stack.descendants();
    Row {
        fault: "proxy port taken at start",
        sent: 0,
        lost: 0,
        lost_bound: 0,
        orphans: left.len(),
        journal_lost: 0,
        rss_mib: 0.0,
        rss_bound_mib: 64.0,
        hostile: format!("exit {}", status.code().unwrap_or(-1)),
    }
    .print_and_check();
}

#[test]
fn fault_bulwark_kill_nine_and_restart() {
    // While bulwark is down nothing listens, so requests in that gap fail; the bound is
    // the load's rate times the gap (with a second of slack).
    let port = free_port();
    let mut stack = Stack::start(&quickstart(port, ""));
    stack.wait_ready("web", 3);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let load = Load::start(&format!("http://{proxy}/"), 100, "8s");
    std::thread::sleep(Duration::from_secs(1));
    let (orphans, journal_lost) = kill_and_recount(&mut stack);
    let down = Instant::now();
    stack.wait_ready("web", 3);
    let gap = down.elapsed();
    let report = load.finish();
    let rss_mib = peak_rss_mib(stack.pid());
    let (orphans2, journal_lost2) = kill_and_recount(&mut stack);
    Row {
        fault: "bulwark kill -9 and restart",
        sent: report["sent"].as_u64().unwrap_or(0),
        lost: report["failed"]["total"].as_u64().unwrap_or(u64::MAX),
        lost_bound: (100.0 * (gap.as_secs_f64() + 1.0)) as u64,
        orphans: orphans + orphans2,
        journal_lost: journal_lost + journal_lost2,
        rss_mib,
        rss_bound_mib: 64.0,
        hostile: format!("back in {:.2} s", gap.as_secs_f64()),
    }
    .print_and_check();
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!(
            "bulwark-tmpfs-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }

    /// Writes zeroes into `name` until the file system is full.
    fn fill(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn metric(stack: &Stack, name: &str) -> f64 {
    let (_, text) = stack.call("GET", "/metrics", "127.0.0.1", false);
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn fault_journal_disk_full() {
    let disk = Tmpfs::mount("8m");
    let port = free_port();
    let mut stack = Stack::prepare(&quickstart(port, ""));
    std::os::unix::fs::symlink(&disk.0, stack.state_dir()).unwrap();
    stack.launch();
    row(
        "journal disk full (tmpfs)",
        &mut stack,
        port,
        200,
        8,
        0,
        64.0,
        |s, _| {
            let filler = disk.fill("filler");
            // Events keep coming while the disk is full: a replica dies and comes back.
            let pid = replica_pids(&s.service("web"))[0];
            signal(pid, libc::SIGKILL);
            let refused = eventually("a silence refused", Duration::from_secs(10), || {
                let out = s.cli(&["silence", "add", "web", "--for", "1m"]);
                (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
            });
            assert!(refused.contains("503"), "{refused}");
            assert!(metric(s, "bulwark_journal_write_errors_total") >= 1.0);
            std::fs::remove_file(filler).unwrap();
            eventually("writes accepted again", Duration::from_secs(15), || {
                s.cli(&["silence", "add", "web", "--for", "1m"])
                    .status
                    .success()
                    .then_some(())
            });
            "silence add: 503 while full, 201 after".into()
        },
    );
}

/// Sets a running process's soft open-file limit (below its hard limit, which needs no
/// privilege) and returns the previous soft limit.
fn set_nofile(pid: u32, n: u64) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let before = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .expect("the soft limit in /proc/PID/limits");
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
        .output()
        .expect("run prlimit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    before
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

#[test]
fn fault_file_descriptor_exhaustion() {
    let port = free_port();
    let mut stack = Stack::start(&quickstart(port, SHORT_TIMEOUTS));
    stack.wait_ready("web", 3);
    let pid = stack.pid();
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let limit = open_fds(pid) + 48;
    let soft = set_nofile(pid, limit);
    // Hold more connections than bulwark has descriptors left.
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(proxy).ok())
        .collect();
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_time(pid) - before;
    // Out of descriptors, accept fails again and again; it must back off, not spin
    // (2 s of a busy core would be about 2 s).
    assert!(
        spent < Duration::from_secs(1),
        "bulwark spun on accept: {spent:?} of CPU in 2 s"
    );
    assert!(alive(pid), "bulwark survives running out of descriptors");
    drop(flood);
    let _ = set_nofile(pid, soft);
    // Once descriptors are back, it serves again, and fully.
    eventually("serving again", Duration::from_secs(15), || {
        (get(proxy, "/").0 == 200).then_some(())
    });
    row(
        "file-descriptor exhaustion (then recovery)",
        &mut stack,
        port,
        200,
        4,
        0,
        64.0,
        |_, _| format!("accept backed off: {spent:?} of CPU in 2 s"),
    );
}

/// Reads until the peer closes or `limit` passes; returns the status line's code if the
/// peer answered before closing, or "closed" / "open".
fn outcome(s: &mut TcpStream, limit: Duration) -> String {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => "closed".into(),
        Ok(n) => String::from_utf8_lossy(&buf[..n])
            .split(' ')
            .nth(1)
            .unwrap_or("?")
            .to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => "open".into(),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "open".into(),
        Err(_) => "reset".into(),
    }
}

/// Tallies outcomes such as `{"408": 1100}` into "408 ×1100".
fn tally(outcomes: &[String]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for o in outcomes {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The hostile rows: the quickstart with short timeouts, `open` the hostile connections,
/// then each must end (not stay open) within `limit`.
fn hostile(
    fault: &'static str,
    rss_bound_mib: f64,
    expected: &[&str],
    open: impl Fn(SocketAddr) -> Vec<TcpStream>,
    limit: Duration,
) {
    let port = free_port();
    let mut stack = Stack::start(&quickstart(port, SHORT_TIMEOUTS));
    row(
        fault,
        &mut stack,
        port,
        200,
        8,
        0,
        rss_bound_mib,
        |_, proxy| {
            let mut conns = open(proxy);
            assert!(!conns.is_empty());
            let began = Instant::now();
            let outcomes: Vec<String> = conns
                .iter_mut()
                .map(|c| {
                    outcome(
                        c,
                        limit
                            .saturating_sub(began.elapsed())
                            .max(Duration::from_millis(10)),
                    )
                })
                .collect();
            let summary = tally(&outcomes);
            for o in &outcomes {
                assert!(
                    expected.contains(&o.as_str()),
                    "{fault}: a hostile connection got {o:?} (all: {summary}); expected one of {expected:?}"
                );
            }
            summary
        },
    );
}

fn connect_many(proxy: SocketAddr, n: usize, first: &[u8]) -> Vec<TcpStream> {
    raise_nofile();
    (0..n)
        .map(|_| {
            let mut s = crowd_member(proxy);
            if !first.is_empty() {
                s.write_all(first).unwrap();
            }
            s
        })
        .collect()
}

/// A connection of a hostile crowd, reset rather than closed when dropped: thousands of
/// closes would leave as many of this process's sockets in TIME_WAIT for a minute, holding
/// ephemeral ports (28 000 in all) that the next tests' connections need.
fn crowd_member(proxy: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(proxy).unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a struct of the size we pass.
    #[allow(unsafe_code)]
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    s
}

/// Lets this test process hold thousands of sockets.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct we own.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn fault_zero_byte_connections() {
    hostile(
        "500 zero-byte connections",
        64.0,
        &["closed", "408"],
        |proxy| connect_many(proxy, 500, b""),
        Duration::from_secs(6),
    );
}

#[test]
fn fault_slowloris() {
    hostile(
        "slowloris (headers 1 byte/s)",
        64.0,
        &["closed", "408"],
        |proxy| {
            let conns = connect_many(proxy, 50, b"GET / HTTP/1.1\r\nHost: x\r\n");
            // A drip of header bytes that never ends the head.
            let mut writers: Vec<TcpStream> =
                conns.iter().map(|c| c.try_clone().unwrap()).collect();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    for w in &mut writers {
                        let _ = w.write_all(b"X");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
            conns
        },
        Duration::from_secs(6),
    );
}

#[test]
fn fault_slow_request_bodies() {
    hostile(
        "1100 slow request bodies",
        96.0,
        &["408", "closed"],
        |proxy| {
            connect_many(
                proxy,
                1100,
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
            )
        },
        Duration::from_secs(8),
    );
}

#[test]
fn fault_ten_thousand_idle_connections() {
    hostile(
        "10 000 idle connections",
        256.0,
        &["closed", "408"],
        |proxy| connect_many(proxy, 10_000, b""),
        Duration::from_secs(10),
    );
}

#[test]
fn fault_oversized_headers() {
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    hostile(
        "oversized header (100 KB)",
        64.0,
        &["431"],
        move |proxy| {
            let mut s = TcpStream::connect(proxy).unwrap();
            let _ = s.write_all(big.as_bytes());
            vec![s]
        },
        Duration::from_secs(5),
    );
}

#[test]
fn fault_header_flood() {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..500 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    hostile(
        "header flood (500 headers)",
        64.0,
        &["431"],
        move |proxy| {
            let mut s = TcpStream::connect(proxy).unwrap();
            let _ = s.write_all(head.as_bytes());
            vec![s]
        },
        Duration::from_secs(5),
    );
}

/// HTTP/2 rapid reset (CVE-2023-44487): open a stream and cancel it at once, thousands of
/// times on one connection. bulwark must stay up and bounded, and keep serving others.
#[test]
fn fault_http2_rapid_reset() {
    let port = free_port();
    let mut stack = Stack::start(&quickstart(port, SHORT_TIMEOUTS));
    row(
        "HTTP/2 rapid reset",
        &mut stack,
        port,
        200,
        6,
        0,
        96.0,
        |_, proxy| rapid_reset(proxy, 20_000),
    );
}

fn rapid_reset(proxy: SocketAddr, streams: usize) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(conn);
        let mut client = client;
        let mut sent = 0usize;
        for _ in 0..streams {
            let Ok(ready) = client.ready().await else {
                break;
            };
            client = ready;
            let req = http::Request::get(format!("http://{proxy}/"))
                .body(())
                .unwrap();
            let Ok((_resp, mut stream)) = client.send_request(req, false) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            sent += 1;
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
        match ended {
            Ok(Ok(Err(e))) => format!(
                "{sent} resets, then: {}",
                e.reason()
                    .map_or_else(|| e.to_string(), |r| format!("GOAWAY {r:?}"))
            ),
            Ok(_) => format!("{sent} resets, connection closed"),
            Err(_) => format!("{sent} resets, connection still open"),
        }
    })
}

/// Issue 8, acceptance 4: under 10 000 idle connections, 1 100 slow bodies and 500
/// zero-byte connections, a well-behaved client at 200 req/s sees no failure and a p99
/// under 50 ms, and bulwark's memory stays under the README's bound.
#[test]
fn hostile_crowd_costs_a_well_behaved_client_nothing() {
    let port = free_port();
    // The crowd holds 11 600 connections: more than the default cap of 10 000.
    let mut stack = Stack::start(&quickstart(
        port,
        "[services.web.expose.limits]\nmax_connections = 16000\n",
    ));
    stack.wait_ready("web", 3);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    raise_nofile();
    let mut crowd = Vec::with_capacity(11_600);
    // Idle keep-alive connections: one request answered, then silence.
    for _ in 0..10_000 {
        let mut s = crowd_member(proxy);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        crowd.push(s);
    }
    for s in &mut crowd {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "every idle connection got its answer first");
    }
    crowd.extend(connect_many(
        proxy,
        1_100,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
    ));
    crowd.extend(connect_many(proxy, 500, b""));
    // The client is measured under the crowd, not during its arrival: connect() returns
    // once the kernel queued a connection, and bulwark accepting 1 600 of them at once and
    // forwarding 1 100 request heads was, in CI, the first second's p99 of 116 ms (the
    // seconds after: 17, 13, 10, 4 ms). The slow bodies in flight say it has them all.
    eventually(
        "the crowd's 1 100 slow bodies in flight",
        Duration::from_secs(60),
        || (metric(&stack, "bulwark_proxy_inflight_requests") >= 1_100.0).then_some(()),
    );
    let load = Load::start(&format!("http://{proxy}/"), 200, "6s");
    let report = load.finish();
    let rss = peak_rss_mib(stack.pid());
    let held = crowd.len();
    drop(crowd);
    let p99 = report["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 < 50.0, "p99 {p99} ms under the crowd: {report}");
    let (orphans, journal_lost) = kill_and_recount(&mut stack);
    Row {
        fault: "all at once: 10 000 idle + 1 100 slow bodies + 500 zero-byte",
        sent: report["sent"].as_u64().unwrap_or(0),
        lost: report["failed"]["total"].as_u64().unwrap_or(u64::MAX),
        lost_bound: 0,
        orphans,
        journal_lost,
        rss_mib: rss,
        rss_bound_mib: CROWD_RSS_BOUND_MIB,
        hostile: format!("{held} connections held; well-behaved p99 {p99:.1} ms"),
    }
    .print_and_check();
}

/// The README's stated bound for bulwark's memory under the hostile crowd.
const CROWD_RSS_BOUND_MIB: f64 = 512.0;
