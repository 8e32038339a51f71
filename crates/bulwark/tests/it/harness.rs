//! One harness for every integration test: start the real `bulwark up` on a generated stack
//! file with ephemeral ports, talk to it over real sockets, and kill everything it started
//! when the test ends, pass or fail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BULWARK: &str = env!("CARGO_BIN_EXE_bulwark");

/// A port that was free a moment ago.
/// A command's stdout then stderr, as one text (what a user sees in a terminal).
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port nothing listens on, picked below the kernel's ephemeral range: a port that
/// `bind(0)` hands out is one any outgoing connection on the machine may take before the
/// test's `up` binds it (a rehearsal saw "Address already in use" so).
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 12_000 {
        let span = u64::from(low.min(32768) - 10_000);
        for _ in 0..1000 {
            let port = 10_000 + (rand_suffix() % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `[services.<name>]` table running `bulwark demo` (each replica on its own `{port}`),
/// built up table by table into the text of a stack file.
pub struct Demo {
    name: String,
    toml: String,
}

impl Demo {
    /// `[services.<name>]` running `bulwark demo --port {port}`.
    pub fn new(name: &str) -> Demo {
        Demo::with_args(name, &[])
    }

    /// [`Demo::new`], with `args` after the port (e.g. `["--tcp"]`).
    pub fn with_args(name: &str, args: &[&str]) -> Demo {
        let args: String = args.iter().map(|a| format!(", \"{a}\"")).collect();
        Demo {
            name: name.to_owned(),
            toml: format!(
                "\n[services.{name}]\nrun = [\"{{bulwark}}\", \"demo\", \"--port\", \"{{port}}\"{args}]\n"
            ),
        }
    }

    /// Appends `text` as it is: keys of the table last begun, or whole tables.
    pub fn with(mut self, text: &str) -> Demo {
        self.toml.push_str(text.trim_start_matches('\n'));
        if !self.toml.ends_with('\n') {
            self.toml.push('\n');
        }
        self
    }

    /// `replicas = n`.
    pub fn replicas(self, n: u32) -> Demo {
        self.with(&format!("replicas = {n}"))
    }

    /// A `/ready` readiness probe every `period`.
    pub fn ready_every(self, period: &str) -> Demo {
        let name = self.name.clone();
        self.with(&format!(
            "[services.{name}.readiness]\nhttp = \"/ready\"\nperiod = \"{period}\""
        ))
    }

    /// An availability SLO named `availability`: 99 % over 1 h (a table: call it after the
    /// service's own keys).
    pub fn availability_slo(self) -> Demo {
        let name = self.name.clone();
        self.with(&format!(
            "[[services.{name}.slo]]\nname = \"availability\"\nkind = \"availability\"\nobjective = 99.0\nperiod = \"1h\""
        ))
    }

    /// The quickstart's (`examples/quickstart.toml`) stop grace, backoff and probes, faster.
    pub fn quickstart_probes(self) -> Demo {
        let name = self.name.clone();
        self.with(&format!(
            r#"stop_grace = "2s"
[services.{name}.backoff]
initial = "100ms"
max = "2s""#
        ))
        .startup_probe()
        .with(&format!(
            r#"[services.{name}.liveness]
http = "/healthz"
period = "500ms"
timeout = "500ms"
failure_threshold = 3"#
        ))
        .ready_every("200ms")
    }

    /// A `/healthz` startup probe every 100 ms that allows 100 failures.
    pub fn startup_probe(self) -> Demo {
        let name = self.name.clone();
        self.with(&format!(
            "[services.{name}.startup]\nhttp = \"/healthz\"\nperiod = \"100ms\"\nfailure_threshold = 100"
        ))
    }

    /// `[services.<name>.expose]` listening on `port`.
    pub fn expose(self, port: u16) -> Demo {
        let name = self.name.clone();
        self.with(&format!(
            "[services.{name}.expose]\nlisten = \"127.0.0.1:{port}\""
        ))
    }

    /// The stack file text built so far.
    pub fn build(self) -> String {
        self.toml
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub api: SocketAddr,
    pub token: String,
    marker: String,
    /// Arguments of `up` after `-f FILE`.
    extra: Vec<String>,
    /// Environment variables of `up` beyond the harness's own.
    envs: Vec<(String, String)>,
    /// `up` runs in the stack file's directory and is given `-f stack.toml`, a relative
    /// path, as a user typing it would.
    pub relative: bool,
    /// Our end of the socket `up` is started with at [`STRAY_FD`].
    stray: Option<std::os::unix::net::UnixStream>,
}

/// Where `up` finds a socket it was never meant to have: it inherits it without
/// close-on-exec, its peer held by the test, as from a careless parent (CI's agent left one
/// to every process; `criu dump` refused replicas holding it). Replicas must not get it.
pub const STRAY_FD: i32 = 9;

impl Stack {
    /// Starts `bulwark up` on `toml` (an `[api]` table on an ephemeral port is added) and
    /// waits until its API answers.
    pub fn start(toml: &str) -> Stack {
        let mut stack = Stack::prepare(toml);
        stack.launch();
        stack
    }

    /// Writes the stack file and picks the marker, without starting `up` (for tests that
    /// arrange the host first, then call [`Stack::launch`] or
    /// [`Stack::launch_expecting_failure`]).
    pub fn prepare(toml: &str) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stack.toml");
        let toml = if toml.contains("[api]") {
            toml.to_owned()
        } else {
            format!("{toml}\n[api]\nlisten = \"127.0.0.1:0\"\n")
        };
        std::fs::write(&file, toml).unwrap();
        let marker = format!("{}-{}", std::process::id(), rand_suffix());
        Stack {
            dir,
            child: None,
            api: "127.0.0.1:1".parse().unwrap(),
            token: String::new(),
            marker,
            extra: Vec::new(),
            envs: Vec::new(),
            relative: false,
            stray: None,
        }
    }

    /// Starts `up` again on the same stack file and state directory (after it died).
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.state_dir().join("api.addr"));
        self.launch();
    }

    /// Runs `up` and returns its exit status if it ends within `timeout` (for start-up
    /// failures), or `None` if it keeps running.
    pub fn launch_expecting_failure(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.launch_via_expecting_failure(&[], timeout)
    }

    /// [`Stack::launch_expecting_failure`], through a wrapper command (see `spawn_up_via`).
    pub fn launch_via_expecting_failure(
        &mut self,
        prefix: &[&str],
        timeout: Duration,
    ) -> Option<ExitStatus> {
        self.spawn_up_via(prefix, None);
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Starts `up` with `args` after `-f FILE` (e.g. `--workers 3`) and waits until its
    /// API answers.
    pub fn launch_with(&mut self, args: &[&str]) {
        self.extra = args.iter().map(|a| (*a).to_owned()).collect();
        self.launch();
    }

    /// Runs `up` as the last argument of `prefix` (e.g. `["sh", "-c", "ulimit -n 256; exec
    /// \"$0\" \"$@\""]`), its stdout going to `stdout` instead of the usual file.
    fn spawn_up_via(&mut self, prefix: &[&str], stdout: Option<Stdio>) {
        let dir = self.dir.path();
        let file = if self.relative {
            PathBuf::from("stack.toml")
        } else {
            dir.join("stack.toml")
        };
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BULWARK);
                c
            }
            None => Command::new(BULWARK),
        };
        let stdout = stdout.unwrap_or_else(|| append(&dir.join("up.stdout")).into());
        // `up` dies with the test even when the test cannot clean up (killed at its
        // timeout, so `Drop` never runs); its replicas die with it. Stacks are started
        // from the test's own thread, which the signal is tied to.
        die_with_test(&mut cmd);
        self.stray = Some(give_stray_socket(&mut cmd));
        if self.relative {
            cmd.current_dir(dir);
        }
        let child = cmd
            .args(["up", "-f"])
            .arg(&file)
            .args(&self.extra)
            .env("BULWARK_STATE_DIR", dir.join("state"))
            .env("BULWARK_TEST_MARKER", &self.marker)
            .env("BULWARK_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(append(&dir.join("up.stderr")))
            .process_group(0)
            .spawn()
            .expect("start bulwark up");
        self.child = Some(child);
    }

    /// Sets `key` in the environment `up` is started with (before a launch).
    pub fn env(&mut self, key: &str, value: &str) {
        self.envs.push((key.to_owned(), value.to_owned()));
    }

    /// Starts `up` and waits until its API answers.
    pub fn launch(&mut self) {
        self.launch_via(&[], None);
    }

    /// [`Stack::launch`], through a wrapper command and with another stdout (see
    /// `spawn_up_via`).
    pub fn launch_via(&mut self, prefix: &[&str], stdout: Option<Stdio>) {
        self.spawn_up_via(prefix, stdout);
        let stack = self;
        let state = stack.state_dir();
        let api = eventually(
            "bulwark up to write its API address",
            Duration::from_secs(30),
            || {
                if let Some(status) = stack.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("bulwark up exited early ({status}):\n{}", stack.stderr());
                }
                std::fs::read_to_string(state.join("api.addr"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            },
        );
        stack.api = api;
        stack.token = std::fs::read_to_string(state.join("token")).unwrap();
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.stderr")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// A request to the API. `token` adds the bearer token.
    pub fn call(&self, method: &str, path: &str, host: &str, token: bool) -> (u16, String) {
        let auth = if token {
            format!("Authorization: Bearer {}\r\n", self.token)
        } else {
            String::new()
        };
        http(
            self.api,
            &format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}"),
        )
    }

    pub fn status(&self) -> Value {
        let (code, body) = self.call("GET", "/v1/status", "127.0.0.1", true);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn service(&self, name: &str) -> Value {
        self.status()["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    pub fn events(&self) -> Vec<Value> {
        let (code, body) = self.call("GET", "/v1/events?sync=true", "127.0.0.1", true);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `pred` holds for the service's status, and returns that status.
    pub fn wait_service(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(&format!("{name}: {what}"), timeout, || {
            let s = self.service(name);
            pred(&s).then_some(s)
        })
    }

    pub fn wait_ready(&self, name: &str, n: usize) -> Value {
        self.wait_service(
            name,
            &format!("{n} ready replicas"),
            Duration::from_secs(60),
            |s| replicas_in(s).iter().filter(|r| r["ready"] == true).count() == n,
        )
    }

    /// The service's first replica; `null` in the moment after `up` starts when it has
    /// none yet.
    pub fn first_replica(&self, service: &str) -> Value {
        replicas_in(&self.service(service))
            .first()
            .cloned()
            .unwrap_or_default()
    }

    /// The service's first replica once its sd_notify `STATUS=` reads `status`.
    pub fn wait_notify_status(&self, service: &str, status: &str) -> Value {
        eventually(
            &format!("{service}: the replica's STATUS={status}"),
            Duration::from_secs(30),
            || {
                let r = self.first_replica(service);
                (r["notify_status"] == status).then_some(r)
            },
        )
    }

    /// Runs a CLI command against this stack.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BULWARK)
            .args(args)
            .env("BULWARK_STATE_DIR", self.state_dir())
            .output()
            .unwrap()
    }

    /// The audit log as `bulwark audit --json` prints it, one record per line.
    pub fn audit(&self) -> Vec<Value> {
        let out = self.cli(&["audit", "--json", "--limit", "10000"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Sends SIGTERM to `up` and waits (bounded) for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        let child = self.child.as_mut().unwrap();
        eventually("bulwark up to exit", timeout, || child.try_wait().unwrap())
    }

    /// Every live process started under this stack (found by the marker in its environment).
    pub fn descendants(&self) -> Vec<u32> {
        processes_with_env(&format!("BULWARK_TEST_MARKER={}", self.marker))
            .into_iter()
            .filter(|&p| Some(p) != self.child.as_ref().map(|c| c.id()))
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_killpg(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
        // Replicas lead their own process groups; PDEATHSIG should have taken them, but a
        // failing test must not leak anything, so sweep by marker too.
        for _ in 0..50 {
            let left = self.descendants();
            if left.is_empty() {
                break;
            }
            for p in left {
                unsafe_killpg(p, libc::SIGKILL);
                signal(p, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

pub fn signal(pid: u32, sig: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::try_from(sig).unwrap(),
    );
}

fn unsafe_killpg(pid: u32, sig: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::try_from(sig).unwrap(),
    );
}

/// Whether `pid` is alive (a zombie waiting to be reaped counts as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}

pub fn processes_with_env(needle: &str) -> Vec<u32> {
    let mut found = vec![];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes())
            && alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// A minimal HTTP/1.1 exchange with `Connection: close`; `head` is the request line and
/// headers without the final blank line.
pub fn http(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{head}Connection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (code, body) = parse_response(&raw);
    let code =
        code.unwrap_or_else(|| panic!("no status line in {:?}", String::from_utf8_lossy(&raw)));
    (code, body)
}

/// The status code (`None` without a status line) and the body of a raw HTTP response
/// (decoded if chunked: a body of unknown length is chunked to an HTTP/1.1 client, also
/// when the replica answered in HTTP/1.0).
pub fn parse_response(raw: &[u8]) -> (Option<u16>, String) {
    let text = String::from_utf8_lossy(raw);
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok());
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (code, String::new());
    };
    let chunked = head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked");
    let body = match chunked.then(|| dechunk(body)).flatten() {
        Some(decoded) => decoded,
        None => body.to_owned(),
    };
    (code, body)
}

/// A chunked body's data; `None` if it is not well formed.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = size.split(';').next()?.trim();
        let n = usize::from_str_radix(size, 16).ok()?;
        if n == 0 {
            return Some(body);
        }
        body.push_str(after.get(..n)?);
        rest = after.get(n..)?.strip_prefix("\r\n")?;
    }
}

/// GET through a proxy or straight to a replica.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n"))
}

/// Starts `bulwark load` in the background; `finish` returns its JSON report.
pub struct Load(Child);

impl Load {
    pub fn start(url: &str, rate: u32, duration: &str) -> Load {
        let child = Command::new(BULWARK)
            .args([
                "load",
                url,
                "--rate",
                &rate.to_string(),
                "--duration",
                duration,
                "--json",
                "--timeout",
                "5s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Load(child)
    }

    pub fn finish(mut self) -> Value {
        let mut out = String::new();
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "bulwark load failed: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad load report {out:?}: {e}"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The replicas in a service's status.
pub fn replicas_in(service: &Value) -> &[Value] {
    service["replicas"].as_array().unwrap()
}

pub fn replica_pids(service: &Value) -> Vec<u32> {
    replicas_in(service)
        .iter()
        .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// A real HTTP server that records the bodies of POSTs it receives (a webhook receiver).
pub struct Receiver {
    pub url: String,
    bodies: std::sync::mpsc::Receiver<String>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let (tx, bodies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                let body = loop {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break Some(body.to_owned());
                        }
                    }
                };
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                if let Some(b) = body
                    && tx.send(b).is_err()
                {
                    return;
                }
            }
        });
        Receiver { url, bodies }
    }

    /// The next POST body within `timeout`, parsed as JSON.
    pub fn next(&self, timeout: Duration) -> Option<Value> {
        self.bodies
            .recv_timeout(timeout)
            .ok()
            .map(|b| serde_json::from_str(&b).unwrap())
    }
}

/// Gives the child a socket at [`STRAY_FD`], without close-on-exec; returns its peer.
fn give_stray_socket(cmd: &mut Command) -> std::os::unix::net::UnixStream {
    use std::os::fd::AsRawFd;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    // SAFETY: dup2 is async-signal-safe; `theirs` lives in the closure, open until the
    // command is dropped.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs.as_raw_fd(), STRAY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ours
}

/// The inode of the stray socket `up` was given (`socket:[INODE]` in `/proc/PID/fd`).
pub fn stray_socket_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{STRAY_FD}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The child gets SIGKILL when the test's thread ends, even when the test is killed at
/// its timeout and no `Drop` runs.
pub fn die_with_test(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The CPU time (user and system) `pid` has used so far; zero once it is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name's `)`: state is field 0, utime 11, stime 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let n = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis((n(11) + n(12)) * 1000 / hz)
}

/// The value of the line `name` (`"CapEff:"`) of a `/proc/PID/status` text, trimmed; empty
/// if there is none.
pub fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map_or("", str::trim)
}
