//! The process driver: spawns a replica in its own process group, signals the group.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use bus::Exit;
use tokio::process::{Child, Command};

/// What a replica is told about itself, substituted into `run` and set in its environment.
/// Also used for commands run in a replica's context (backup hooks, restore drills).
pub struct Identity<'a> {
    pub service: &'a str,
    pub index: u32,
    pub port: u16,
    pub bulwark: &'a Path,
}

impl Identity<'_> {
    /// `template` with `{bulwark}`, `{port}`, `{index}` and `{service}` substituted.
    pub fn substitute(&self, template: &str) -> String {
        if !template.contains('{') {
            return template.to_owned();
        }
        template
            .replace("{bulwark}", &self.bulwark.to_string_lossy())
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
        cmd.envs(svc.env.iter().map(|(k, v)| (k, self.substitute(v))));
        cmd.envs(svc.secrets.iter().map(|(k, v)| (k, v.expose())));
        cmd.env("PORT", self.port.to_string())
            .env("BULWARK_SERVICE", self.service)
            .env("BULWARK_INDEX", self.index.to_string())
            .env(
                "BULWARK_REPLICA",
                format!("{}/{}", self.service, self.index),
            );
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Spawns one replica incarnation.
///
/// The child leads a new process group (so stop and kill reach everything it started) and
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
    if let (Some(path), Some(n)) = (notify, &svc.notify) {
        cmd.env("NOTIFY_SOCKET", path);
        if !n.watchdog.is_zero() {
            cmd.env("WATCHDOG_USEC", n.watchdog.as_micros().to_string());
        }
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
