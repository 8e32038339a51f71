//! Issue 14, the `oci` driver: replicas in containers through runc (acceptance 1), their
//! isolation, nothing left behind, and broken inputs.
//!
//! The image is built here, with no registry: a rootfs directory holding this bulwark
//! binary (the demo) at its own absolute path, so `{bulwark}` names it inside the
//! container too, and the shared libraries `ldd` names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    BULWARK, Demo, Load, Stack, eventually, field, free_port, get, output_text, signal,
};

/// A rootfs under `dir` for `bulwark demo`: the binary at its host path, the libraries
/// and loader `ldd` names, and the mount points runc needs on a read-only root.
pub fn demo_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    copy_with_libraries(&root, Path::new(BULWARK));
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    root
}

/// Copies `program` into `root` at its host path, with the libraries and loader `ldd`
/// names for it.
pub fn copy_with_libraries(root: &Path, program: &Path) {
    let ldd = Command::new("ldd").arg(program).output().expect("run ldd");
    assert!(
        ldd.status.success(),
        "ldd {}: {}",
        program.display(),
        output_text(&ldd)
    );
    // Lines are `name => /path (addr)`, `/lib64/ld-linux-x86-64.so.2 (addr)` or, for the
    // vDSO, a name alone.
    let stdout = String::from_utf8_lossy(&ldd.stdout);
    let libs = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')));
    for file in libs.map(Path::new).chain([program]) {
        let inside = root.join(file.strip_prefix("/").unwrap_or(file));
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::copy(file, &inside).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    }
}

/// `runc --root <the stack's runc root> list --quiet`: the containers bulwark has.
pub(crate) fn containers(state_dir: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(state_dir.join("oci/runc"))
        .args(["list", "--quiet"])
        .output()
        .expect("run runc list");
    assert!(out.status.success(), "runc list: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A stack whose containers are gone before its directory is: `up` is killed, then the
/// janitor's work is awaited (and finished by hand if it failed, so a failing test leaks
/// no container).
pub(crate) struct OciStack(pub(crate) Stack);

impl Drop for OciStack {
    fn drop(&mut self) {
        if let Some(child) = self.0.child.as_mut() {
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
        let state = self.0.state_dir();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !containers(&state).is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        for id in containers(&state) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(state.join("oci/runc"))
                .args(["delete", "--force", &id])
                .output();
        }
    }
}

impl std::ops::Deref for OciStack {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

impl std::ops::DerefMut for OciStack {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.0
    }
}

/// The quickstart's demo (probes as in `quickstart_probes`), 3 replicas in containers
/// made from `rootfs`, behind `port`.
fn quickstart(rootfs: &str, port: u16, container_extra: &str) -> String {
    Demo::new("web")
        .replicas(3)
        .quickstart_probes()
        .with(&format!(
            "[services.web.container]\nrootfs = \"{rootfs}\"\n{container_extra}"
        ))
        .expose(port)
        .build()
}

/// Starts `toml` in a stack whose directory holds a demo rootfs at `rootfs/`.
fn start(toml_of: impl FnOnce(&Path) -> String) -> OciStack {
    start_in(toml_of, false)
}

/// [`start`], with `up -f stack.toml` run in the stack file's directory when `relative`.
fn start_in(toml_of: impl FnOnce(&Path) -> String, relative: bool) -> OciStack {
    let mut stack = OciStack(Stack::prepare(""));
    stack.0.relative = relative;
    let rootfs = demo_rootfs(stack.dir.path());
    std::fs::create_dir(stack.dir.path().join("data")).unwrap();
    let toml = format!("{}\n[api]\nlisten = \"127.0.0.1:0\"\n", toml_of(&rootfs));
    std::fs::write(stack.dir.path().join("stack.toml"), toml).unwrap();
    stack.launch();
    stack
}

/// The pid of a running container's own process (PID 1 in it), from `runc state`.
pub(crate) fn container_pid(state_dir: &Path, id: &str) -> Option<u32> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(state_dir.join("oci/runc"))
        .args(["state", id])
        .output()
        .unwrap();
    let state: Value = serde_json::from_slice(&out.stdout).ok()?;
    (state["status"] == "running")
        .then(|| state["pid"].as_u64())?
        .map(|p| p as u32)
}

/// A ready replica of `service`: its container id (`SERVICE-INDEX-N`) and process.
fn a_ready_container(stack: &Stack, service: &str) -> (String, u32) {
    eventually(
        &format!("a ready replica of {service} with a running container"),
        Duration::from_secs(30),
        || ready_container(stack, service),
    )
}

fn ready_container(stack: &Stack, service: &str) -> Option<(String, u32)> {
    let state = stack.state_dir();
    let ready: Vec<u64> = stack.service(service)["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ready"] == true)
        .filter_map(|r| r["index"].as_u64())
        .collect();
    let id = containers(&state).into_iter().find(|id| {
        ready
            .iter()
            .any(|i| id.starts_with(&format!("{service}-{i}-")))
    })?;
    let pid = container_pid(&state, &id)?;
    Some((id, pid))
}

fn status_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// Acceptance 1: the quickstart's demo in containers loses no request while a container's
/// process is killed with SIGKILL every 2 s at 200 req/s, and no container outlives a
/// SIGTERM of `up`.
#[test]
fn oci_quickstart_loses_nothing_under_kill_9_of_its_containers() {
    let port = free_port();
    let mut stack = start(|rootfs| quickstart(&rootfs.display().to_string(), port, ""));
    stack.wait_ready("web", 3);
    assert_eq!(containers(&stack.state_dir()).len(), 3);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 200, "10s");
    let mut killed = Vec::new();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(2));
        let (id, pid) = a_ready_container(&stack, "web");
        signal(pid, libc::SIGKILL);
        killed.push(id);
    }
    let report = load.finish();
    let sent = report["sent"].as_u64().unwrap();
    let failed = report["failed"]["total"].as_u64().unwrap();
    assert!(sent >= 1_900, "{report}");
    assert_eq!(failed, 0, "lost requests with the oci driver: {report}");
    // Each kill was a replica's death, seen as such, and it came back in a new container.
    let web = stack.wait_ready("web", 3);
    let restarts: u64 = web["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["restarts"].as_u64().unwrap_or(0))
        .sum();
    assert!(restarts >= 4, "{web}");
    let now = containers(&stack.state_dir());
    assert!(
        killed.iter().all(|k| !now.contains(k)),
        "killed {killed:?}, now {now:?}"
    );
    let died = stack
        .events()
        .into_iter()
        .filter(|e| e["type"] == "replica_exited" && e["exit"]["signal"] == 9)
        .count();
    assert!(died >= 4, "the kills are reported as SIGKILL deaths");
    eprintln!("oci kill -9 every 2 s: sent {sent}, failed {failed}, restarts {restarts}");
    let status = stack.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    assert_eq!(containers(&stack.state_dir()), Vec::<String>::new());
}

/// Inside its container a replica's PID 1 (bulwark's init) is in its own pid namespace,
/// has no capability (unless kept), cannot gain any, and cannot write its read-only root; a
/// service with `read_only = false` and a kept capability gets exactly that.
#[test]
fn oci_replicas_are_isolated() {
    let (ro_port, rw_port) = (free_port(), free_port());
    // Relative paths all the way, as a user types them: `up -f stack.toml`, `rootfs =
    // "rootfs"`, a mount's `source = "data"` (runc once read them against its bundle).
    let stack = start_in(
        |_| {
            let rootfs = "rootfs";
            let ro = Demo::new("web")
                .startup_probe()
                .with(&format!(
                    "[services.web.container]\nrootfs = \"{rootfs}\"\n\
                 mounts = [{{ source = \"data\", target = \"/data\", read_only = false }}]"
                ))
                .expose(ro_port);
            let rw = Demo::new("rw")
                .startup_probe()
                .with(&format!(
                    "[services.rw.container]\nrootfs = \"{rootfs}\"\nread_only = false\n\
                 capabilities = [\"NET_BIND_SERVICE\"]"
                ))
                .expose(rw_port);
            format!("{}{}", ro.build(), rw.build())
        },
        true,
    );
    stack.wait_ready("web", 1);
    stack.wait_ready("rw", 1);
    assert_eq!(
        get(format!("127.0.0.1:{ro_port}").parse().unwrap(), "/").0,
        200
    );
    let state = stack.state_dir();
    let (web, pid) = a_ready_container(&stack, "web");
    let status = status_of(pid);
    // NSpid lists the pid in each namespace from ours down: 1 is its own.
    assert!(field(&status, "NSpid:").ends_with("\t1"), "{status}");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"));
    assert_eq!(field(&status, "CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field(&status, "CapBnd:"), "0000000000000000", "{status}");
    assert_eq!(field(&status, "NoNewPrivs:"), "1", "{status}");
    // `bulwark man --out DIR` writes files: run inside the container, it tries its root.
    let write = |id: &str, dir: &str| {
        Command::new("runc")
            .arg("--root")
            .arg(state.join("oci/runc"))
            .args(["exec", id, BULWARK, "man", "--out", dir])
            .output()
            .unwrap()
    };
    let out = write(&web, "/written");
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("Read-only file system"),
        "{}",
        output_text(&out)
    );
    // A writable mount is the way out, onto the host's directory.
    let out = write(&web, "/data/man");
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(stack.dir.path().join("data/man/bulwark.1").is_file());

    let (rw, rw_pid) = a_ready_container(&stack, "rw");
    let status = status_of(rw_pid);
    // CAP_NET_BIND_SERVICE is bit 10.
    assert_eq!(field(&status, "CapBnd:"), "0000000000000400", "{status}");
    assert_eq!(field(&status, "CapEff:"), "0000000000000400", "{status}");
    let out = write(&rw, "/written");
    assert!(out.status.success(), "{}", output_text(&out));
}

/// No container outlives a kill -9 of `up` (its janitor deletes them), and when the janitor
/// is gone too, the next `up` deletes what the dead one left. The rootfs is a tarball,
/// unpacked into the state directory.
#[test]
fn oci_containers_never_outlive_a_killed_bulwark() {
    let port = free_port();
    let mut stack = start(|rootfs| {
        let tar = Command::new("tar")
            .arg("-czf")
            .arg(rootfs.with_file_name("rootfs.tar.gz"))
            .arg("-C")
            .arg(rootfs)
            .arg(".")
            .output()
            .unwrap();
        assert!(tar.status.success(), "{}", output_text(&tar));
        quickstart("rootfs.tar.gz", port, "")
    });
    stack.wait_ready("web", 3);
    assert_eq!(
        get(format!("127.0.0.1:{port}").parse().unwrap(), "/").0,
        200
    );
    let state = stack.state_dir();
    let first: Vec<u32> = containers(&state)
        .iter()
        .filter_map(|id| container_pid(&state, id))
        .collect();
    assert_eq!(first.len(), 3);
    signal(stack.pid(), libc::SIGKILL);
    eventually(
        "the janitor to delete the containers",
        Duration::from_secs(30),
        || containers(&state).is_empty().then_some(()),
    );
    eventually("the janitor to exit", Duration::from_secs(10), || {
        janitor_of(&state).is_none().then_some(())
    });
    eventually(
        "the containers' processes to be gone",
        Duration::from_secs(10),
        || first.iter().all(|&p| !alive_not_zombie(p)).then_some(()),
    );

    // Again, with the janitor killed first: the next `up` cleans up at start.
    stack.restart();
    stack.wait_ready("web", 3);
    let pids = |state: &Path| -> Vec<u32> {
        containers(state)
            .iter()
            .filter_map(|id| container_pid(state, id))
            .collect()
    };
    let left = pids(&state);
    assert_eq!(left.len(), 3);
    let janitor = janitor_of(&state).expect("a janitor runs beside up");
    signal(janitor, libc::SIGKILL);
    signal(stack.pid(), libc::SIGKILL);
    let _ = stack.child.as_mut().unwrap().wait();
    assert_eq!(pids(&state), left, "nobody cleaned up this time");
    stack.restart();
    stack.wait_ready("web", 3);
    let now = containers(&state);
    assert_eq!(
        now.len(),
        3,
        "{now:?}\n{}\n{}",
        stack.stderr(),
        stack.stdout()
    );
    assert!(
        left.iter().all(|&p| !alive_not_zombie(p)),
        "left {left:?} still run"
    );
    assert!(
        stack.stderr().contains("deleted containers left behind"),
        "{}",
        stack.stderr()
    );
}

fn alive_not_zombie(pid: u32) -> bool {
    let state = field(&status_of(pid), "State:").to_owned();
    !state.is_empty() && !state.starts_with('Z')
}

/// The janitor of the stack whose runc root is under `state`.
pub(crate) fn janitor_of(state: &Path) -> Option<u32> {
    let root = state.join("oci/runc").display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        (args.get(1) == Some(&&b"oci-janitor"[..]) && args.get(2) == Some(&root.as_bytes()))
            .then_some(pid)
    })
}

/// Broken stack files get an error from `check` (so `up` refuses them too) that names the
/// key and what to do: a missing rootfs, a rootfs without the program, a relative `cwd`,
/// and keys the oci driver does not carry yet.
#[test]
fn oci_broken_stack_files_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let check = |rootfs: &str, run: &str, extra: &str| {
        let file = dir.path().join("stack.toml");
        let toml = format!(
            "[services.web]\nrun = [\"{run}\"]\n{extra}[services.web.container]\nrootfs = \"{rootfs}\"\n"
        );
        std::fs::write(&file, toml).unwrap();
        let out = Command::new(BULWARK)
            .args(["check", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = check("nowhere", "/srv/app", "");
    assert!(
        missing.contains("container rootfs") && missing.contains("no such directory"),
        "{missing}"
    );
    assert!(
        missing.contains("stack.toml:4:"),
        "points at the key's line: {missing}"
    );
    let empty = check("empty", "/srv/app", "");
    assert!(
        empty.contains("has no program \"/srv/app\"") && empty.contains("copy it"),
        "{empty}"
    );
    let bare = check("empty", "server", "");
    assert!(
        bare.contains("/usr/bin"),
        "says where a bare name is looked for: {bare}"
    );
    std::fs::create_dir_all(dir.path().join("empty/srv")).unwrap();
    std::fs::write(dir.path().join("empty/srv/app"), "").unwrap();
    let cwd = check("empty", "/srv/app", "cwd = \"srv\"\n");
    assert!(
        cwd.contains("stack.toml:3:") && cwd.contains("a path inside the container"),
        "{cwd}"
    );
}

/// runc missing from `PATH` stops `up` at once, saying what to install; a tarball without
/// the program fails the replica's start with the reason as its event, instead of a
/// silent crash loop.
#[test]
fn oci_missing_runc_or_program_say_what_to_do() {
    let mut stack = OciStack(Stack::prepare(&quickstart("empty", free_port(), "")));
    std::fs::create_dir(stack.dir.path().join("empty")).unwrap();
    // `{bulwark}` cannot be checked before start; `up` stops at runc first.
    let path = std::env::var("PATH").unwrap();
    let without_runc: Vec<&str> = path
        .split(':')
        .filter(|d| !Path::new(d).join("runc").exists())
        .collect();
    let status = stack.launch_via_expecting_failure(
        &["env", &format!("PATH={}", without_runc.join(":"))],
        Duration::from_secs(30),
    );
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        stack.stderr().contains("runc is not on PATH"),
        "{}",
        stack.stderr()
    );
    assert!(
        stack.stderr().contains("apt-get install runc"),
        "{}",
        stack.stderr()
    );

    // A tarball without the program: the start fails with the reason, as an event.
    let tar_dir = stack.dir.path().join("empty");
    std::fs::write(tar_dir.join("README"), "no program here").unwrap();
    let tar = Command::new("tar")
        .arg("-cf")
        .arg(stack.dir.path().join("empty.tar"))
        .arg("-C")
        .arg(&tar_dir)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", output_text(&tar));
    std::fs::write(
        stack.dir.path().join("stack.toml"),
        format!(
            "{}\n[api]\nlisten = \"127.0.0.1:0\"\n",
            quickstart("empty.tar", free_port(), "")
        ),
    )
    .unwrap();
    stack.launch();
    let event = eventually("a spawn_failed event", Duration::from_secs(30), || {
        stack
            .events()
            .into_iter()
            .find(|e| e["type"] == "spawn_failed")
    });
    let error = event["error"].as_str().unwrap();
    assert!(
        error.contains("has no program") && error.contains("copy it"),
        "{event}"
    );
}
