//! Warm restarts (`[services.NAME.warm]`): a ready replica is checkpointed once with CRIU
//! while it keeps running, and a restart of its slot restores that image instead of a
//! cold start (`policy::warm` decides which).
//!
//! How a restored process stays one of bulwark's replicas: `criu restore` runs detached
//! with `--restore-sibling`, so the restored process is cloned with `CLONE_PARENT` and is
//! bulwark's own child (its parent is the launcher thread, so its restored
//! `PR_SET_PDEATHSIG` still means "bulwark died"). It keeps its pid, and so leads its own
//! process group again: stop, kill and exit watching are the process driver's. Its pid
//! is [`launch::claim`]ed before CRIU runs, so the orphan reaper leaves its exit status to
//! the replica task. Its stdout and stderr were pipes to bulwark; the restore gets new
//! pipes in their place (`--inherit-fd`, by the old pipes' inodes), read by the log pumps
//! as a started replica's. CRIU runs in the incarnation's cgroups (`--manage-cgroups
//! ignore`), so the restored process is in them too. TCP connections (the proxy's
//! keep-alive pool) are dumped and restored closed (`--tcp-close`): the peers of a
//! checkpoint's connections are long gone when it is restored.
//!
//! Where: `<state>/warm/SERVICE-INDEX/`, CRIU's image files and `bulwark-image` (what the
//! restore needs: pid, port, the pipes' inodes, the [`Stamp`]), written last, so a
//! directory without it is no checkpoint. Emptied when the supervisor starts.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use launch::cgroup::ReplicaCgroup;

use policy::warm::Stamp;
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::handle::Handle;

mod checkpoint;
pub(crate) use checkpoint::Checkpoint;

/// Where `scripts/criu/install` puts the CRIU it builds.
pub const INSTALLED: &str = "/usr/local/lib/bulwark/criu/criu";

/// How long a dump or a restore may take before CRIU is killed.
const CRIU_LIMIT: Duration = Duration::from_secs(30);

/// The file that makes a directory a checkpoint.
const META: &str = "bulwark-image";

/// CRIU: `$BULWARK_CRIU`, else [`INSTALLED`], else `criu` on `PATH`. Reads directories.
pub fn find_criu() -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = std::env::var_os("BULWARK_CRIU") {
        let p = PathBuf::from(p);
        return if runnable(&p) {
            Ok(p)
        } else {
            Err(format!(
                "BULWARK_CRIU names {}, which is not an executable file",
                p.display()
            ))
        };
    }
    let installed = PathBuf::from(INSTALLED);
    if runnable(&installed) {
        return Ok(installed);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("criu"))
                .find(|p| runnable(p))
        })
        .ok_or_else(|| {
            format!(
                "CRIU was not found (BULWARK_CRIU is unset, {INSTALLED} is missing and no `criu` \
                 is on PATH): build it with scripts/criu/install (CRIU 4.1.1 with a patch for \
                 Linux >= 6.16), or set BULWARK_CRIU"
            )
        })
}

/// The CRIU bulwark would use and its version, or what is wrong with it: missing, or
/// failing `criu check` (Debian 12's 3.17.1 cannot read newer kernels' vDSO).
pub async fn criu_check() -> Result<(PathBuf, String), String> {
    let criu = tokio::task::spawn_blocking(find_criu)
        .await
        .map_err(|e| e.to_string())??;
    let run = |arg: &'static str| {
        let mut cmd = Command::new(&criu);
        cmd.arg(arg);
        launch::run_exec(cmd, None, CRIU_LIMIT, 64 * 1024)
    };
    let version = run("--version")
        .await
        .map_err(|e| format!("{}: {e}", criu.display()))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap_or("unknown")
        .to_owned();
    let checked = run("check")
        .await
        .map_err(|e| format!("{}: {e}", criu.display()))?;
    if let Err(e) = checked.passed(CRIU_LIMIT) {
        return Err(format!(
            "`{} check` (CRIU {version}) fails on this machine: {e}; warm restarts need CRIU 4 \
             (scripts/criu/install builds it) and root",
            criu.display()
        ));
    }
    Ok((criu, version))
}

/// What a start of `svc` would run, to compare with a checkpoint's: its process settings
/// and its program's file. Reads the file's metadata: call it on the blocking pool.
pub(crate) fn stamp(svc: &spec::Service, program: &str) -> Stamp {
    let mut spec = format!(
        "{:?}",
        (
            &svc.run,
            &svc.env,
            &svc.cwd,
            &svc.startup,
            &svc.liveness,
            &svc.readiness,
            &svc.warm,
            &svc.resources
        )
    );
    for (k, v) in &svc.secrets {
        spec.push_str(&format!("\0{k}={}", v.expose()));
    }
    Stamp {
        spec: policy::hash_bytes(spec.as_bytes()),
        binary: policy::hash_bytes(file_identity(svc, program).as_bytes()),
    }
}

/// Device, inode, size and modification time of the program `run` names (searched on
/// `PATH` like exec does, relative to `cwd` when it has a slash); empty when not found.
fn file_identity(svc: &spec::Service, program: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let path = Path::new(program);
    let found = if program.contains('/') {
        Some(match &svc.cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_path_buf(),
        })
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    found
        .and_then(|p| p.metadata().ok())
        .map(|m| {
            format!(
                "{} {} {} {} {}",
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            )
        })
        .unwrap_or_default()
}

/// What a restore needs besides CRIU's own images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    pub pid: u32,
    pub port: u16,
    /// `pipe:[INODE]` of the checkpointed process's stdout and stderr.
    pub stdout: String,
    pub stderr: String,
    pub stamp: Stamp,
}

impl Image {
    fn to_text(&self) -> String {
        format!(
            "pid {}\nport {}\nstdout {}\nstderr {}\nspec {}\nbinary {}\n",
            self.pid, self.port, self.stdout, self.stderr, self.stamp.spec, self.stamp.binary
        )
    }

    fn parse(text: &str) -> Option<Image> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .map(str::to_owned)
        };
        Some(Image {
            pid: field("pid")?.parse().ok()?,
            port: field("port")?.parse().ok()?,
            stdout: field("stdout")?,
            stderr: field("stderr")?,
            stamp: Stamp {
                spec: field("spec")?.parse().ok()?,
                binary: field("binary")?.parse().ok()?,
            },
        })
    }
}

/// One replica slot's checkpoint directory.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub dir: PathBuf,
}

/// A finished dump.
pub(crate) struct Dumped {
    pub pid: u32,
    pub dump_ms: u64,
    pub bytes: u64,
}

impl Slot {
    pub fn new(warm_dir: &Path, service: &str, index: u32) -> Slot {
        Slot {
            dir: warm_dir.join(format!("{service}-{index}")),
        }
    }

    /// The checkpoint, if the directory holds a whole one. Blocking file I/O.
    pub fn read(&self) -> Option<Image> {
        Image::parse(&std::fs::read_to_string(self.dir.join(META)).ok()?)
    }

    /// Forgets the checkpoint. Blocking file I/O.
    pub fn clear(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// `criu dump --leave-running` of `pid` (listening on `port`, started under `stamp`):
    /// into a fresh directory, renamed over the slot's once whole. Connections not yet
    /// accepted (a probe's, a client's) stay with the running process and out of the
    /// image (`--skip-in-flight`); accepted ones are restored closed (`--tcp-close`).
    pub async fn dump(self, pid: u32, port: u16, stamp: Stamp) -> Result<Dumped, String> {
        let criu = tokio::task::spawn_blocking(find_criu)
            .await
            .map_err(|e| e.to_string())??;
        let tmp = self.dir.with_extension("new");
        let prepared = {
            let tmp = tmp.clone();
            tokio::task::spawn_blocking(move || -> io::Result<(String, String)> {
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp)?;
                let link = |fd: u32| {
                    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                        .map(|l| l.to_string_lossy().into_owned())
                };
                Ok((link(1)?, link(2)?))
            })
        };
        let (stdout, stderr) = prepared
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot prepare the checkpoint of pid {pid}: {e}"))?;
        let mut cmd = Command::new(&criu);
        cmd.args(["dump", "-t", &pid.to_string(), "-D"])
            .arg(&tmp)
            .args([
                "--leave-running",
                "--shell-job",
                "--tcp-close",
                "--skip-in-flight",
            ])
            .args(["-o", "dump.log"]);
        let started = Instant::now();
        let ran = launch::run_exec(cmd, None, CRIU_LIMIT, 64 * 1024).await;
        let dump_ms = started.elapsed().as_millis() as u64;
        let log = tmp.join("dump.log");
        match ran {
            Ok(out) if out.passed(CRIU_LIMIT).is_ok() => {}
            Ok(out) => {
                let why = out.passed(CRIU_LIMIT).unwrap_err();
                return Err(format!("criu dump: {why}{}", log_errors(&log).await));
            }
            Err(e) => return Err(format!("cannot run {}: {e}", criu.display())),
        }
        let meta = Image {
            pid,
            port,
            stdout,
            stderr,
            stamp,
        };
        let dir = self.dir.clone();
        let bytes = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            std::fs::write(tmp.join(META), meta.to_text())?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)?;
            Ok(std::fs::read_dir(&dir)?
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot keep the checkpoint: {e}"))?;
        Ok(Dumped {
            pid,
            dump_ms,
            bytes,
        })
    }

    /// Starts `dump` on a task of its own: CRIU is never killed halfway because the
    /// incarnation ended or the replica task moved on (a dump interrupted while the
    /// process is seized could leave it stopped).
    pub fn dump_detached(
        self,
        pid: u32,
        port: u16,
        stamp: Stamp,
    ) -> JoinHandle<Result<Dumped, String>> {
        tokio::spawn(self.dump(pid, port, stamp))
    }

    /// `criu restore` of the slot's checkpoint as a child of bulwark, in `placement`'s
    /// cgroups. Fails when CRIU does (the pid is taken, the image is damaged...).
    pub async fn restore(
        &self,
        image: &Image,
        mut placement: launch::Placement,
    ) -> Result<Restored, String> {
        let criu = tokio::task::spawn_blocking(find_criu)
            .await
            .map_err(|e| e.to_string())??;
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string());
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // The numbers CRIU finds them at: any two that are not the pipes' own.
        let mut free = (3..).filter(|n| *n != out_w.as_raw_fd() && *n != err_w.as_raw_fd());
        let (out_n, err_n) = (free.next().unwrap_or(3), free.next().unwrap_or(4));
        placement.inherit = vec![(out_w.as_raw_fd(), out_n), (err_w.as_raw_fd(), err_n)];
        let mut cmd = Command::new(&criu);
        cmd.args(["restore", "-D"])
            .arg(&self.dir)
            .args(["--restore-detached", "--restore-sibling", "--shell-job"])
            .args(["--tcp-close", "--manage-cgroups=ignore"])
            .arg("--inherit-fd")
            .arg(format!("fd[{out_n}]:{}", image.stdout))
            .arg("--inherit-fd")
            .arg(format!("fd[{err_n}]:{}", image.stderr))
            .args(["-o", "restore.log"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        // Before CRIU can make it: the restored process is ours to reap, not the reaper's.
        let claim = launch::claim(image.pid);
        let started = Instant::now();
        let mut child = launch::spawn_placed(cmd, placement)
            .await
            .map_err(|e| format!("cannot run {}: {e}", criu.display()))?;
        // Only the restored process may hold the write ends now: its exit is their EOF.
        drop((out_w, err_w));
        let status = tokio::time::timeout(CRIU_LIMIT, child.wait()).await;
        let restore_ms = started.elapsed().as_millis() as u64;
        let log = self.dir.join("restore.log");
        match status {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => return Err(format!("criu restore: {s}{}", log_errors(&log).await)),
            Ok(Err(e)) => return Err(format!("criu restore: {e}")),
            Err(_) => return Err(format!("criu restore: still running after {CRIU_LIMIT:?}")),
        }
        let ours = tokio::task::spawn_blocking({
            let pid = image.pid;
            move || parent_of(pid) == Some(std::process::id())
        })
        .await
        .unwrap_or(false);
        if !ours {
            return Err(format!(
                "criu restore: pid {} is not bulwark's child",
                image.pid
            ));
        }
        let receiver = |fd: OwnedFd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok();
        Ok(Restored {
            pid: image.pid,
            claim: Some(claim),
            stdout: receiver(out_r),
            stderr: receiver(err_r),
            restore_ms,
        })
    }
}

/// A restored incarnation: its process, the port it listens on, its cgroups.
pub(crate) type RestoredStart = (Restored, u16, Option<Arc<ReplicaCgroup>>);

/// For a replica of a `[warm]` service about to start: its slot and stamp, and the
/// restored incarnation when `policy::warm` says restore and CRIU manages it. A restore
/// that fails is a `replica_restore_failed` event and a cold start (the checkpoint is
/// dropped; the cold replica is checkpointed anew). `None` without `[warm]`.
pub(crate) async fn start(
    h: &Handle,
    svc: &Arc<spec::Service>,
    restart: bool,
) -> Option<(Slot, Stamp, Option<RestoredStart>)> {
    svc.warm?;
    let shared = h.shared().clone();
    let slot = Slot::new(&shared.warm_dir, &svc.name, h.index());
    let id = crate::Identity {
        service: &svc.name,
        index: h.index(),
        addr: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        bulwark: &shared.bulwark,
    };
    let program = svc
        .run
        .first()
        .map(|p| id.substitute(p))
        .unwrap_or_default();
    let (spec, read) = (svc.clone(), slot.clone());
    let (stamp, image) = tokio::task::spawn_blocking(move || (stamp(&spec, &program), read.read()))
        .await
        .ok()?;
    let cold = |reason: Option<String>| {
        if let Some(reason) = reason {
            let (service, index) = (&svc.name, h.index());
            tracing::warn!(service, index, %reason, "no warm restore; starting cold");
            h.restore_failed(reason);
        }
        let clear = slot.clone();
        async move {
            let _ = tokio::task::spawn_blocking(move || clear.clear()).await;
        }
    };
    let decision = policy::warm::start(image.as_ref().map(|i| i.stamp), stamp, restart);
    let (policy::warm::Start::Restore, Some(image)) = (decision, image) else {
        if let policy::warm::Start::Cold(Some(why)) = decision {
            let said = (why != policy::warm::Cold::FirstStart).then(|| why.to_string());
            cold(said).await;
        }
        return Some((slot, stamp, None));
    };
    let (cgroup, placement) = match crate::resources::prepare(&shared.cgroups, svc, h.index()).await
    {
        Ok(prepared) => prepared,
        Err(e) => {
            cold(Some(e)).await;
            return Some((slot, stamp, None));
        }
    };
    match slot.restore(&image, placement).await {
        Ok(restored) => {
            h.restored(restored.pid, restored.restore_ms);
            Some((slot, stamp, Some((restored, image.port, cgroup))))
        }
        Err(e) => {
            if let Some(cgroup) = cgroup {
                crate::resources::finish(cgroup).await;
            }
            cold(Some(e)).await;
            Some((slot, stamp, None))
        }
    }
}

/// The parent of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CRIU's `Error` lines from its log, for the event that says why.
async fn log_errors(log: &Path) -> String {
    let log = log.to_path_buf();
    let text =
        tokio::task::spawn_blocking(move || std::fs::read_to_string(log).unwrap_or_default())
            .await
            .unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .take(3)
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

/// A restored incarnation's process: bulwark's child, but not tokio's.
pub(crate) struct Restored {
    pub pid: u32,
    /// Held until the process is reaped.
    claim: Option<launch::Claim>,
    pub stdout: Option<tokio::net::unix::pipe::Receiver>,
    pub stderr: Option<tokio::net::unix::pipe::Receiver>,
    pub restore_ms: u64,
}

impl Restored {
    /// Reaps the process (call it once it has exited, as `launch::exited` says).
    pub async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        let claim = self
            .claim
            .take()
            .ok_or_else(|| io::Error::other("already reaped"))?;
        launch::reap_claimed(&claim).await
    }
}

impl Drop for Restored {
    /// Never left running: an incarnation given up before it was reaped is killed (its pid
    /// is still ours, unreaped), and the orphan reaper takes it once the claim is gone.
    fn drop(&mut self) {
        if self.claim.is_some() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_description_reads_back() {
        let i = Image {
            pid: 42,
            port: 8080,
            stdout: "pipe:[1]".into(),
            stderr: "pipe:[2]".into(),
            stamp: Stamp {
                spec: 7,
                binary: u64::MAX,
            },
        };
        assert_eq!(Image::parse(&i.to_text()), Some(i));
        assert_eq!(Image::parse("pid 1\n"), None);
    }
}
