//! Starts a supervisor on a stack given as TOML and follows what it publishes.

use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, Event, EventKind};
use prometheus_client::registry::Registry;
use runtime::{Options, ServiceStatus, Supervisor};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// How long any one test may run before its process is ended, with what it saw so far.
const LIMIT: Duration = Duration::from_secs(10);

pub fn stack(toml: &str) -> spec::Stack {
    spec::parse(toml, std::path::Path::new("stack.toml")).expect("a valid stack")
}

/// A running supervisor and a reader of its events.
///
/// Waiting never uses a tokio timer, so it works on a paused clock (where a pending
/// timeout would be advanced to while a real child runs); a watchdog thread bounds the
/// test in real time instead.
pub struct Rt {
    pub sup: Supervisor,
    pub bus: Arc<Bus>,
    live: broadcast::Receiver<Arc<Event>>,
    /// Every event read so far, with the (tokio, maybe paused) time it was read.
    pub seen: Vec<(Instant, Arc<Event>)>,
    log: Arc<Mutex<Vec<String>>>,
    _watchdog: Watchdog,
}

impl Rt {
    /// Starts every service of `toml` (in dependency order).
    pub fn start(toml: &str) -> Rt {
        let bus = Arc::new(Bus::new(100_000));
        let live = bus.subscribe(0).live;
        let sup = Supervisor::new(
            &stack(toml),
            bus.clone(),
            &mut Registry::default(),
            Options {
                bulwark: "/bin/false".into(),
                echo_logs: false,
                log_lines: 1000,
                oci: runtime::oci::OciDirs::new(
                    &std::env::temp_dir().join("bulwark-runtime-tests"),
                ),
                cgroups: Err("not used by these tests".into()),
                notify_dir: None,
                leader_dir: None,
                warm_dir: None,
                election: None,
            },
        );
        sup.start();
        let log = Arc::new(Mutex::new(Vec::new()));
        Rt {
            sup,
            bus,
            live,
            seen: Vec::new(),
            _watchdog: watchdog(log.clone()),
            log,
        }
    }

    /// Reads the next event.
    pub async fn next(&mut self) -> Arc<Event> {
        let e = self.live.recv().await.expect("the bus lives and keeps up");
        let line = format!("{:?}", e.kind);
        self.log.lock().unwrap().push(line);
        self.seen.push((Instant::now(), e.clone()));
        e
    }

    /// Reads events until one matches `pred`; returns it with the time it was read.
    pub async fn expect(&mut self, pred: impl Fn(&EventKind) -> bool) -> (Instant, EventKind) {
        loop {
            let e = self.next().await;
            if pred(&e.kind) {
                return (Instant::now(), e.kind.clone());
            }
        }
    }

    /// Reads events until the status of `service` satisfies `pred`, and returns it. Every
    /// status change is followed by an event, so the status is checked after each one.
    pub async fn until(
        &mut self,
        service: &str,
        pred: impl Fn(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
        loop {
            if let Some(s) = self.status(service)
                && pred(&s)
            {
                return s;
            }
            self.next().await;
        }
    }

    pub fn status(&self, service: &str) -> Option<ServiceStatus> {
        self.sup.status().into_iter().find(|s| s.name == service)
    }

    /// The events read so far that match `pred`, with the time each was read.
    pub fn seen(&self, pred: impl Fn(&EventKind) -> bool) -> Vec<(Instant, EventKind)> {
        self.seen
            .iter()
            .filter(|(_, e)| pred(&e.kind))
            .map(|(at, e)| (*at, e.kind.clone()))
            .collect()
    }

    /// Waits until a replica of `service` has printed `text` (a whole line).
    pub async fn line(&self, service: &str, replica: u32, text: &str) {
        let logs = self.sup.logs(service).expect("a known service");
        let (backlog, mut live) = logs.subscribe(Some(replica));
        if backlog.iter().any(|l| l.text == text) {
            return;
        }
        loop {
            let l = live.recv().await.expect("logs keep up");
            if l.replica == replica && l.text == text {
                return;
            }
        }
    }
}

/// All replicas listed are ready.
pub fn all_ready(s: &ServiceStatus, n: usize) -> bool {
    s.replicas.len() == n && s.replicas.iter().all(|r| r.ready)
}

/// Whether `pid` is still a child of this process (a reaped child is not).
pub fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after.split_whitespace().nth(1) == Some(&std::process::id().to_string())
}

/// A fresh path in the temp dir for a test's flag file.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bulwark-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// Ends the process (with the events seen so far) if the test runs past [`LIMIT`].
struct Watchdog {
    _done: Sender<()>,
}

fn watchdog(log: Arc<Mutex<Vec<String>>>) -> Watchdog {
    let (tx, rx) = channel::<()>();
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(LIMIT) {
            eprintln!("test still running after {LIMIT:?}; events so far:");
            for line in log.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                eprintln!("  {line}");
            }
            std::process::exit(101);
        }
    });
    Watchdog { _done: tx }
}
