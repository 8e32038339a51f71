//! Issue 14, `network = "private"`: each container replica in a network namespace of its
//! own, linked to the host by a veth pair, reached by the proxy and the probes at its own
//! address; isolated from the host's loopback; no veth or namespace outlives its
//! replica, its `up`, or a kill -9 of `up`; and without root, a clear refusal.
//!
//! Links are compared by name *and* index: tests run in parallel, and a slot one test
//! freed may be claimed at once by another test's replica under the same name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Demo, Stack, eventually, free_port, get, output_text, signal};
use crate::oci::{OciStack, containers, demo_rootfs, janitor_of};

/// An [`OciStack`] whose private networks are gone before its directory is: `up` is
/// killed, the janitor's work is awaited, and what it left is removed by hand (the veth
/// pair from inside the namespace, then the file's mount).
struct NetStack(OciStack);

impl Drop for NetStack {
    fn drop(&mut self) {
        if let Some(child) = self.0.0.child.as_mut() {
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
        let dir = netns_dir(&self.0.state_dir());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !namespaces(&dir).is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        for file in namespaces(&dir) {
            let _ = Command::new("nsenter")
                .arg(format!("--net={}", file.display()))
                .args(["ip", "link", "del", "eth0"])
                .output();
            let _ = Command::new("umount").arg("-l").arg(&file).output();
            let _ = std::fs::remove_file(&file);
        }
    }
}

impl std::ops::Deref for NetStack {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

impl std::ops::DerefMut for NetStack {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.0
    }
}

fn netns_dir(state: &Path) -> PathBuf {
    state.join("oci/netns")
}

/// The files holding the stack's namespaces.
fn namespaces(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The stack's namespace files that are still bind mounts (nsfs), from mountinfo.
fn mounted_namespaces(state: &Path) -> Vec<String> {
    let dir = netns_dir(state).display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir) && l.contains("nsfs"))
        .map(str::to_owned)
        .collect()
}

/// `n` demo replicas listening on every address, in containers with a private network.
fn start(n: u32, port: u16) -> NetStack {
    start_on(n, port, "0.0.0.0", "")
}

/// [`start`], the demo listening on `host`, with `extra` among the service's tables.
fn start_on(n: u32, port: u16, host: &str, extra: &str) -> NetStack {
    let mut stack = NetStack(OciStack(Stack::prepare("")));
    let rootfs = demo_rootfs(stack.dir.path());
    let toml = Demo::with_args("web", &["--host", host])
        .replicas(n)
        .with("stop_grace = \"2s\"\n[services.web.backoff]\ninitial = \"100ms\"\nmax = \"1s\"")
        .ready_every("200ms")
        .with(extra)
        .with(&format!(
            "[services.web.container]\nrootfs = \"{}\"\nnetwork = \"private\"",
            rootfs.display()
        ))
        .expose(port)
        .build();
    let toml = format!("{toml}\n[api]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(stack.dir.path().join("stack.toml"), toml).unwrap();
    stack.launch();
    stack
}

/// A running replica as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Replica {
    index: u64,
    pid: u32,
    addr: SocketAddr,
    ready: bool,
}

fn replicas(stack: &Stack) -> Vec<Replica> {
    stack.service("web")["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let ip: IpAddr = r["addr"].as_str()?.parse().ok()?;
            Some(Replica {
                index: r["index"].as_u64()?,
                pid: r["pid"].as_u64()? as u32,
                addr: SocketAddr::new(ip, r["port"].as_u64()? as u16),
                ready: r["ready"] == true,
            })
        })
        .collect()
}

/// The host's end of a replica's veth pair, by its name (`bwnet<slot>`, the slot being
/// the replica's /30 of 10.213.0.0/16) and interface index.
fn host_link(addr: IpAddr) -> (String, u32) {
    let IpAddr::V4(v4) = addr else {
        panic!("{addr} is not IPv4")
    };
    let slot = (u32::from(v4) - u32::from(Ipv4Addr::new(10, 213, 0, 0))) / 4;
    let name = format!("bwnet{slot}");
    let index = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .unwrap_or_else(|e| panic!("{name} (of {addr}): {e}"));
    (name, index.trim().parse().unwrap())
}

/// The host's links, by name and index (`ip -o link`).
fn host_links() -> Vec<(String, u32)> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(": ");
            let index = parts.next()?.trim().parse().ok()?;
            let name = parts.next()?.split('@').next()?.to_owned();
            Some((name, index))
        })
        .collect()
}

/// Which of `links` the host still has.
fn still_there(links: &[(String, u32)]) -> Vec<(String, u32)> {
    let now = host_links();
    links.iter().filter(|l| now.contains(l)).cloned().collect()
}

/// Waits until none of `links` is left, nor any namespace of the stack.
fn nothing_left(stack: &Stack, links: &[(String, u32)], after: &str) {
    let state = stack.state_dir();
    eventually(
        &format!("no veth pair or namespace left after {after}"),
        Duration::from_secs(30),
        || {
            (still_there(links).is_empty()
                && namespaces(&netns_dir(&state)).is_empty()
                && mounted_namespaces(&state).is_empty())
            .then_some(())
        },
    );
}

/// `cmd` run by bash in the network namespace of process `pid`.
fn in_netns_of(pid: u32, cmd: &str) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["bash", "-c", cmd])
        .output()
        .unwrap()
}

/// (1) Two replicas, each at its own address (in `status`, JSON and text), both serve
/// through bulwark's proxy, and each answers at its address from the host. `{addr}` is
/// that address in `run` (the demo listens on it alone) and in an exec probe (the startup
/// probe, run on the host, connects to it).
#[test]
fn oci_private_network_replicas_serve_through_the_proxy_each_at_its_own_address() {
    let port = free_port();
    let startup = "[services.web.startup]\n\
                   exec = [\"bash\", \"-c\", \"exec 3<>/dev/tcp/{addr}/{port}\"]\n\
                   period = \"100ms\"\nfailure_threshold = 100";
    let stack = start_on(2, port, "{addr}", startup);
    stack.wait_ready("web", 2);
    let rs = replicas(&stack);
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_ne!(rs[0].addr.ip(), rs[1].addr.ip(), "{rs:?}");
    for r in &rs {
        let IpAddr::V4(v4) = r.addr.ip() else {
            panic!("{r:?}")
        };
        assert_eq!(v4.octets()[..2], [10, 213], "{r:?}");
        // The container's end of its /30: .2 of four.
        assert_eq!(v4.octets()[3] % 4, 2, "{r:?}");
        let (code, body) = get(r.addr, "/");
        assert_eq!(code, 200, "{r:?}: {body}");
        assert!(body.contains(&format!("web/{}", r.index)), "{r:?}: {body}");
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (code, body) = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
        assert_eq!(code, 200, "{body}");
        seen.insert(body.trim().to_owned());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["hello from web/0", "hello from web/1"],
        "requests reach both replicas"
    );
    let text = stack.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    for r in &rs {
        assert!(text.contains(&format!("address: {}", r.addr)), "{text}");
    }
}

/// (2) Inside, a replica has only its loopback and its veth link, listens on its own
/// loopback, and cannot reach a port bound on the host's loopback.
#[test]
fn oci_private_network_cannot_reach_the_hosts_loopback() {
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let host_port = host.local_addr().unwrap().port();
    let stack = start(1, free_port());
    stack.wait_ready("web", 1);
    let r = replicas(&stack)[0];
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_ne!(ns(&r.pid.to_string()), ns("self"));
    let links = in_netns_of(r.pid, "ip -o link | cut -d: -f2 | cut -d@ -f1");
    assert!(links.status.success(), "{}", output_text(&links));
    let names: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, ["lo", "eth0"]);
    // Control: the replica's own loopback answers on its port, inside.
    let own = in_netns_of(
        r.pid,
        &format!("exec 3<>/dev/tcp/127.0.0.1/{}", r.addr.port()),
    );
    assert!(own.status.success(), "{}", output_text(&own));
    let out = in_netns_of(r.pid, &format!("exec 3<>/dev/tcp/127.0.0.1/{host_port}"));
    assert!(!out.status.success(), "reached the host's loopback");
    assert!(
        output_text(&out).contains("Connection refused"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        host.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the host's listener saw a connection"
    );
}

/// (3) A killed replica's veth pair and namespace go with it; none is left after `up`
/// stops (SIGTERM), after a kill -9 of `up` (its janitor), nor, when the janitor is
/// killed too, once a new `up` has started on the same state directory.
#[test]
fn oci_private_networks_never_outlive_their_replica_or_bulwark() {
    let mut stack = start(2, free_port());
    stack.wait_ready("web", 2);
    let state = stack.state_dir();
    let first = replicas(&stack);
    let links = |rs: &[Replica]| -> Vec<(String, u32)> {
        rs.iter().map(|r| host_link(r.addr.ip())).collect()
    };
    let old = links(&first);
    assert_eq!(still_there(&old), old);
    assert_eq!(namespaces(&netns_dir(&state)).len(), 2);

    // A replica killed: its network goes, its next incarnation has a new one.
    signal(first[0].pid, libc::SIGKILL);
    let next = eventually("the killed replica back", Duration::from_secs(30), || {
        replicas(&stack)
            .into_iter()
            .find(|r| r.index == first[0].index && r.pid != first[0].pid && r.ready)
    });
    eventually(
        "the killed replica's link gone",
        Duration::from_secs(30),
        || still_there(&old[..1]).is_empty().then_some(()),
    );
    let mut all = old.clone();
    all.push(host_link(next.addr.ip()));
    assert_eq!(namespaces(&netns_dir(&state)).len(), 2);
    let status = stack.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    nothing_left(&stack, &all, "SIGTERM");

    // kill -9 of `up`: its janitor removes them.
    stack.restart();
    stack.wait_ready("web", 2);
    let killed = links(&replicas(&stack));
    signal(stack.pid(), libc::SIGKILL);
    nothing_left(&stack, &killed, "kill -9 of up");

    // The janitor killed too: the next `up` removes them at start.
    stack.restart();
    stack.wait_ready("web", 2);
    let left = links(&replicas(&stack));
    let janitor = janitor_of(&state).expect("a janitor runs beside up");
    signal(janitor, libc::SIGKILL);
    signal(stack.pid(), libc::SIGKILL);
    let _ = stack.child.as_mut().unwrap().wait();
    assert_eq!(still_there(&left), left, "nobody cleaned up this time");
    stack.restart();
    stack.wait_ready("web", 2);
    eventually("the dead up's links gone", Duration::from_secs(30), || {
        still_there(&left).is_empty().then_some(())
    });
    assert!(
        stack
            .stderr()
            .contains("removed private networks left behind"),
        "{}",
        stack.stderr()
    );
    let now = links(&replicas(&stack));
    assert_eq!(namespaces(&netns_dir(&state)).len(), 2);
    let status = stack.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    nothing_left(&stack, &now, "SIGTERM after a restart");
    assert!(containers(&state).is_empty());
}

/// Without root, `up` refuses a private network at start, naming the service and the key.
#[test]
fn oci_private_network_without_root_is_refused_naming_the_key() {
    let mut stack = NetStack(OciStack(Stack::prepare(
        &Demo::new("web")
            .with("[services.web.container]\nrootfs = \"rootfs\"\nnetwork = \"private\"")
            .build(),
    )));
    let dir = stack.dir.path().to_owned();
    std::fs::create_dir(dir.join("rootfs")).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(chown.status.success(), "{}", output_text(&chown));
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let status = stack.launch_via_expecting_failure(&nobody, Duration::from_secs(30));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let said = stack.stderr();
    assert!(
        said.contains("service web: [services.web.container] network = \"private\" needs root")
            && said.contains("network = \"host\""),
        "{said}"
    );
    assert!(namespaces(&netns_dir(&stack.state_dir())).is_empty());
}
