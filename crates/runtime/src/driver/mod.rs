//! The drivers: how a replica incarnation is started and cleaned up after.
//!
//! The seam is [`start`] and [`ended`]: a service without `[container]` runs as
//! a plain process ([`spawn`], the process driver); one with it runs in an OCI container
//! through runc ([`oci`]). Both give the supervisor a child process that leads its own
//! process group, so the stop signal, kill, exit watching and log capture are the same
//! code for both; what differs is which processes are the replica's ([`Processes`]: a
//! container's run in a session of their own, behind its PID 1, bulwark's [`init`]) and
//! what happens after the exit (a container is deleted).
//! An enum over two known drivers rather than a trait object: nothing outside this
//! crate adds drivers, and each call site stays one `match` away from both.

mod bundle;
pub mod init;
pub mod netns;
pub mod oci;

use std::io;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use bus::Exit;
use tokio::process::{Child, Command};

/// What a replica is told about itself, substituted into `run` and set in its environment.
/// Also used for commands run in a replica's context (backup hooks, restore drills).
#[derive(Clone, Copy)]
pub struct Identity<'a> {
    pub service: &'a str,
    pub index: u32,
    /// Where the replica is reached: 127.0.0.1, or its container's own address
    /// (`network = "private"`).
    pub addr: IpAddr,
    pub port: u16,
    pub bulwark: &'a Path,
}

impl Identity<'_> {
    /// `template` with `{bulwark}`, `{addr}`, `{port}`, `{index}` and `{service}`
    /// substituted.
    pub fn substitute(&self, template: &str) -> String {
        if !template.contains('{') {
            return template.to_owned();
        }
        template
            .replace("{bulwark}", &self.bulwark.to_string_lossy())
            .replace("{addr}", &self.addr.to_string())
            .replace("{port}", &self.port.to_string())
            .replace("{index}", &self.index.to_string())
            .replace("{service}", self.service)
    }

    /// The service's `env`, with the same substitutions as `run` in each value (so
    /// `LISTEN = "0.0.0.0:{port}"` is per replica), its `secrets` as they are, then
    /// bulwark's own variables.
    pub fn apply_env(&self, cmd: &mut Command, svc: &spec::Service) {
        // bulwark's own systemd notify socket (and watchdog) are not the replica's: a
        // replica that speaks the protocol gets a socket of its own (`crate::notify`).
        for inherited in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            cmd.env_remove(inherited);
        }
        cmd.envs(self.env_pairs(svc));
    }

    /// The variables [`Identity::apply_env`] sets, in the order it sets them (a later
    /// one wins over an earlier one of the same name).
    pub fn env_pairs(&self, svc: &spec::Service) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = svc
            .env
            .iter()
            .map(|(k, v)| (k.clone(), self.substitute(v)))
            .collect();
        vars.extend(
            svc.secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned())),
        );
        vars.extend([
            ("PORT".to_owned(), self.port.to_string()),
            ("BULWARK_SERVICE".to_owned(), self.service.to_owned()),
            ("BULWARK_INDEX".to_owned(), self.index.to_string()),
            (
                "BULWARK_REPLICA".to_owned(),
                format!("{}/{}", self.service, self.index),
            ),
        ]);
        vars
    }
}

/// The processes of one running incarnation, as its driver made them: which one `status`
/// shows and the sampler measures, and which ones a signal of chaos reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processes {
    /// What bulwark spawned and watches: it leads its own process group and its exit ends
    /// the incarnation (the program; runc for a container).
    pub leader: u32,
    /// A container's PID 1 as the host numbers it, once runc has started it. It is in a
    /// session of its own: the leader's group does not hold the container's processes.
    pub container: Option<u32>,
}

impl Processes {
    /// From a replica's status: its `pid`, and `runtime_pid` for a container.
    pub fn of_status(pid: u32, runtime_pid: Option<u32>) -> Processes {
        match runtime_pid {
            Some(runc) => Processes {
                leader: runc,
                container: Some(pid),
            },
            None => Processes {
                leader: pid,
                container: None,
            },
        }
    }

    /// The replica's own process: the container's PID 1, else the leader.
    pub fn pid(&self) -> u32 {
        self.container.unwrap_or(self.leader)
    }

    /// The container runtime's process (runc), when the container's PID 1 is known.
    pub fn runtime_pid(&self) -> Option<u32> {
        self.container.map(|_| self.leader)
    }

    /// Sends `sig` to every process of the incarnation: the leader's process group (the
    /// process driver, or runc before its container runs), or every process of the
    /// container's cgroup (runc itself is left alone: it would pass the signal on to PID 1
    /// a second time, and SIGSTOP of runc freezes nothing of the container). Reads procfs
    /// and cgroupfs: call it on the blocking pool. As with `launch::signal_group`, call it
    /// only while the leader is unreaped, so no pid in it names someone else.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let Some(init) = self.container else {
            launch::signal_group(self.leader, sig);
            return;
        };
        for pid in launch::cgroup::procs_with(init) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts one incarnation of `svc` with the driver its spec names: the process the
/// supervisor watches and signals, its [`Processes`] (for a container, once runc has
/// started it, or has given up) and, for a container, what [`ended`] must delete.
/// `placement` and `notify` as for [`spawn`]; a container gets its notify socket
/// bind-mounted ([`oci`]). Its runc is not placed in the replica's cgroups (only the
/// placement's `oom_score_adj` applies to it): runc makes the container's cgroup at
/// `cgroup` (relative to its own, bulwark's), a child of the replica's, whose limits hold
/// the child, and runc's own memory and threads are not charged to the replica.
pub(crate) async fn start(
    svc: &spec::Service,
    id: &Identity<'_>,
    oci_dirs: &oci::OciDirs,
    (placement, cgroup): (launch::Placement, Option<String>),
    notify: Option<&Path>,
) -> io::Result<(Child, Processes, Option<oci::Container>)> {
    let Some(c) = &svc.container else {
        let child = spawn(svc, id, placement, notify).await?;
        let leader = child.id().unwrap_or(0);
        let procs = Processes {
            leader,
            container: None,
        };
        return Ok((child, procs, None));
    };
    let placement = launch::Placement {
        cgroup_procs: Vec::new(),
        ..placement
    };
    match oci::start(svc, c, id, oci_dirs, (placement, cgroup), notify).await {
        Ok((child, mut container)) => {
            let leader = child.id().unwrap_or(0);
            let procs = Processes {
                leader,
                container: container.init_pid(leader).await,
            };
            Ok((child, procs, Some(container)))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot start a container for service {}: {e}", id.service),
        )),
    }
}

/// Call once the incarnation's process has been reaped: deletes its container (and
/// whatever is left in it) and returns the exit as the replica's program saw it.
pub(crate) async fn ended(container: Option<oci::Container>, exit: Exit) -> Exit {
    match container {
        Some(c) => c.remove(exit).await,
        None => exit,
    }
}

/// Spawns one replica incarnation.
///
/// The child leads a new session, and so a new process group (stop and kill reach everything
/// it started; CRIU can checkpoint it in a pid namespace whose session leader is outside), and
/// gets `PR_SET_PDEATHSIG = SIGKILL`, so a kill -9 of bulwark takes it down too. The spawn
/// itself runs on the launcher's dedicated thread (`launch::spawn`): the death signal is
/// tied to the spawning *thread*, and tokio retires its threads (after `block_in_place`,
/// or 10 s idle in the blocking pool), which used to SIGKILL healthy replicas.
///
/// `placement` puts the child in its cgroups and sets its `oom_score_adj` before exec; a
/// cgroup it cannot join fails the start. `notify` is the incarnation's notify socket:
/// named in `NOTIFY_SOCKET`, with the service's watchdog in `WATCHDOG_USEC` (as systemd
/// sets them).
pub(crate) async fn spawn(
    svc: &spec::Service,
    id: &Identity<'_>,
    placement: launch::Placement,
    notify: Option<&Path>,
) -> io::Result<Child> {
    let mut cmd = command(svc, &svc.run, id)?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(path) = notify {
        cmd.envs(notify_env(svc, &path.to_string_lossy()));
    }
    let in_cgroups = !placement.cgroup_procs.is_empty();
    launch::spawn_placed(cmd, placement).await.map_err(|e| {
        let step = if in_cgroups {
            " (joining its cgroups, or exec)"
        } else {
            ""
        };
        io::Error::new(
            e.kind(),
            format!(
                "cannot start {:?} for service {}{step}: {e}",
                id.substitute(&svc.run[0]),
                id.service
            ),
        )
    })
}

/// What a replica of `svc` with a notify socket at `path` (as it sees it) is told, as
/// systemd tells it: `NOTIFY_SOCKET`, and the watchdog in `WATCHDOG_USEC` if there is one.
fn notify_env(svc: &spec::Service, path: &str) -> Vec<(String, String)> {
    let mut vars = vec![("NOTIFY_SOCKET".to_owned(), path.to_owned())];
    if let Some(n) = svc.notify.filter(|n| !n.watchdog.is_zero()) {
        vars.push((
            "WATCHDOG_USEC".to_owned(),
            n.watchdog.as_micros().to_string(),
        ));
    }
    vars
}

/// `argv` as a command in `svc`'s context: substitutions, environment and working
/// directory as for a replica, stdin from /dev/null, killed when dropped. Spawn it with
/// `launch::spawn`.
pub fn command(svc: &spec::Service, argv: &[String], id: &Identity<'_>) -> io::Result<Command> {
    let argv: Vec<String> = argv.iter().map(|a| id.substitute(a)).collect();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    id.apply_env(&mut cmd, svc);
    if let Some(cwd) = &svc.cwd {
        cmd.current_dir(cwd);
    }
    Ok(cmd)
}

pub(crate) fn exit_of(status: ExitStatus) -> Exit {
    Exit {
        code: status.code(),
        signal: status.signal(),
    }
}

/// The process an incarnation's replica task watches and reaps: one the driver spawned
/// (tokio's child), or one CRIU restored as bulwark's child ([`crate::warm`]).
pub(crate) enum Leader {
    Spawned(Child),
    Restored(crate::warm::Restored),
}

/// A replica's stdout or stderr, whichever kind of pipe it is.
pub(crate) type Output = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

impl Leader {
    pub fn take_output(&mut self) -> (Option<Output>, Option<Output>) {
        match self {
            Leader::Spawned(c) => (
                c.stdout.take().map(|o| Box::new(o) as Output),
                c.stderr.take().map(|o| Box::new(o) as Output),
            ),
            Leader::Restored(r) => (
                r.stdout.take().map(|o| Box::new(o) as Output),
                r.stderr.take().map(|o| Box::new(o) as Output),
            ),
        }
    }

    /// Reaps it (waits for its exit).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Leader::Spawned(c) => c.wait().await,
            Leader::Restored(r) => r.wait().await,
        }
    }
}
