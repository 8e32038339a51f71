//! The `oci` driver: a replica runs in a container through runc.
//!
//! `runc run` runs in the foreground as the replica's process (spawned like any replica:
//! its own process group, parent-death signal), so everything built on a replica's
//! process carries over unchanged: its stdout and stderr are the container's (runc hands
//! its own descriptors to the container), its exit status is the container's (runc exits
//! with the program's code, or 128 + the signal that killed it), and the stop signal sent
//! to its group is forwarded by runc to the container's PID 1 (bulwark's init, which
//! passes it on to the program). What runc cannot forward
//! is SIGKILL: a killed runc leaves its container running. So once the replica's process
//! has ended, however it ended, the container is deleted (`runc delete --force`, which
//! kills what is left), and when bulwark itself is killed the janitor (`bulwark up`
//! starts one, see ARCHITECTURE.md) deletes every container under bulwark's runc root.
//!
//! Why `run` and not `create` + `start`: after `create` runc exits and the container's
//! PID 1 is no child of bulwark's, so its exit could only be learnt by polling `runc
//! state`, and its output would need FIFOs of its own. `run` keeps the replica a child of
//! bulwark, its exit watched without polling (SIGCHLD) like a process replica's.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bus::Exit;
use tokio::process::{Child, Command};

use super::Identity;
use super::bundle::Bundle;
use super::init::InitFiles;
use super::netns::NetNs;

/// What to do when runc is missing, in the words every error about it uses.
pub const RUNC_MISSING: &str = "runc is not on PATH: install it (Debian and Ubuntu: \
    `apt-get install runc`) or add its directory to PATH; services with a [container] \
    table run through it";

/// How long a `runc delete` or `runc list` may take, or `runc run` to start a container.
const RUNC_LIMIT: Duration = Duration::from_secs(30);

/// Numbers containers, so an id is never reused while an older container may linger.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Only one tarball is unpacked at a time (replicas of a service start together).
static UNPACKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the oci driver keeps its files: `<state dir>/oci`.
#[derive(Debug, Clone)]
pub struct OciDirs {
    base: PathBuf,
}

impl OciDirs {
    pub fn new(state_dir: &Path) -> Self {
        OciDirs {
            base: state_dir.join("oci"),
        }
    }

    /// runc's state directory (`runc --root`): only bulwark's containers are in it.
    pub fn runc_root(&self) -> PathBuf {
        self.base.join("runc")
    }

    /// The files that hold replicas' network namespaces (`network = "private"`).
    pub fn netns(&self) -> PathBuf {
        self.base.join("netns")
    }

    fn bundles(&self) -> PathBuf {
        self.base.join("bundles")
    }

    fn images(&self) -> PathBuf {
        self.base.join("images")
    }
}

/// A container the driver started, to be deleted once its runc has exited.
pub(crate) struct Container {
    id: String,
    bundle: PathBuf,
    root: PathBuf,
    /// Watches the bundle for runc's pid file, until [`Container::init_pid`] has read it.
    pid_watch: Option<PidWatch>,
    /// Its cgroup, relative to bulwark's (what runc was given as `cgroupsPath`).
    cgroup: String,
    /// Its own network namespace (`network = "private"`), removed after the container.
    netns: Option<NetNs>,
}

/// runc's `--pid-file`, in the bundle: the container's PID 1, written once it runs.
const PID_FILE: &str = "pid";

/// An inotify watch on a bundle directory (runc writes its pid file beside, then renames
/// it into place), read through the runtime's reactor.
struct PidWatch(tokio::io::unix::AsyncFd<Inotify>);

/// nix's inotify handle, as the reactor takes it.
struct Inotify(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for Inotify {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl PidWatch {
    /// Watches `dir` for files written or moved into it. Call it before runc starts.
    fn new(dir: &Path) -> io::Result<PidWatch> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags};
        let inotify =
            nix::sys::inotify::Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )?;
        let fd = Inotify(inotify);
        // SAFETY: `Inotify` owns its descriptor for its whole life and always returns it.
        #[allow(unsafe_code)]
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        Ok(PidWatch(registered.map_err(io::Error::from)?))
    }

    /// Resolves at the next change in the directory.
    ///
    /// # Cancel safety
    /// Cancel-safe: an event not read stays queued in the inotify descriptor.
    async fn changed(&self) -> io::Result<()> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(read) => return read.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

/// runc, found on `PATH`.
fn find_runc() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("runc"))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// [`find_runc`], off the async workers (it reads directories), or the error that says
/// what to do.
pub async fn runc() -> io::Result<PathBuf> {
    tokio::task::spawn_blocking(find_runc)
        .await
        .map_err(io::Error::other)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, RUNC_MISSING))
}

/// Writes the bundle and starts `runc run` for one incarnation of `svc`. The container's
/// cgroup is `cgroup` (relative to runc's, which is bulwark's), or one named after the
/// container: always one bulwark named, so its notify socket knows its senders.
/// `notify`, the incarnation's notify socket, is bind-mounted at
/// [`crate::notify::IN_CONTAINER`]. With `network = "private"` its network namespace is
/// made first ([`super::netns`]), and removed again if the start fails.
pub(crate) async fn start(
    svc: &spec::Service,
    c: &spec::Container,
    id: &Identity<'_>,
    dirs: &OciDirs,
    (placement, cgroup): (launch::Placement, Option<String>),
    notify: Option<&Path>,
) -> io::Result<(Child, Container)> {
    let runc = runc().await?;
    let rootfs = rootfs(c, dirs).await?;
    let init = if c.init {
        Some(init_files(id.bulwark).await?)
    } else {
        None
    };
    let name = format!(
        "{}-{}{}-{}",
        id.service,
        id.index,
        owner_tag(std::process::id()),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let cgroup = cgroup.unwrap_or_else(|| name.clone());
    let netns = private_network(c, dirs, id.service, &name).await?;
    // `{addr}` is the container's own address once it has one.
    let id = &Identity {
        addr: netns.as_ref().map_or(id.addr, |n| n.addr().into()),
        ..*id
    };
    let mut env = id.env_pairs(svc);
    if notify.is_some() {
        env.extend(super::notify_env(svc, crate::notify::IN_CONTAINER));
    }
    let bundle = Bundle {
        container: c,
        rootfs: &rootfs,
        args: svc.run.iter().map(|a| id.substitute(a)).collect(),
        env,
        cwd: svc
            .cwd
            .as_ref()
            .map_or_else(|| "/".to_owned(), |p| p.to_string_lossy().into_owned()),
        hostname: format!("{}-{}", id.service, id.index),
        nofile: nofile(),
        cgroup: Some(cgroup.clone()),
        init,
        notify,
        netns: netns.as_ref().map(NetNs::path),
    };
    let dir = dirs.bundles().join(&name);
    let root = dirs.runc_root();
    let socket = notify.map(|n| (n.to_owned(), c.user));
    match spawn_runc(runc, &bundle, (&dir, &root, &name), placement, socket).await {
        Ok((child, pid_watch)) => Ok((
            child,
            Container {
                id: name,
                bundle: dir,
                root,
                pid_watch: Some(pid_watch),
                cgroup,
                netns,
            },
        )),
        Err(e) => {
            if let Some(n) = netns {
                n.remove().await;
            }
            Err(e)
        }
    }
}

/// The replica's own network namespace when `c` asks for one (`network = "private"`),
/// made under `dirs` for container `name`.
async fn private_network(
    c: &spec::Container,
    dirs: &OciDirs,
    service: &str,
    name: &str,
) -> io::Result<Option<NetNs>> {
    match c.network {
        spec::Network::Host => Ok(None),
        spec::Network::Private if !nix::unistd::geteuid().is_root() => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            needs_root(service),
        )),
        spec::Network::Private => NetNs::create(&dirs.netns(), name).await.map(Some),
    }
}

/// Why a service with a private network cannot start without root, and what to do.
pub fn needs_root(service: &str) -> String {
    format!(
        "service {service}: [services.{service}.container] network = \"private\" needs root \
         (bulwark makes the replica's network namespace and veth pair): run bulwark as root, \
         or set network = \"host\""
    )
}

/// Writes `bundle` into `dir` (after checking its rootfs) and spawns `runc --root root
/// run` for container `name`, watching `dir` for runc's pid file.
async fn spawn_runc(
    runc: PathBuf,
    bundle: &Bundle<'_>,
    (dir, root, name): (&Path, &Path, &str),
    placement: launch::Placement,
    socket: Option<(PathBuf, Option<(u32, u32)>)>,
) -> io::Result<(Child, PidWatch)> {
    let config = bundle.config();
    let program = bundle.args.first().cloned().unwrap_or_default();
    let (dir2, rootfs2) = (dir.to_owned(), bundle.rootfs.to_owned());
    tokio::task::spawn_blocking(move || write_bundle(&dir2, &rootfs2, &program, &config, socket))
        .await
        .map_err(io::Error::other)??;
    let pid_watch = PidWatch::new(dir)?;
    let mut cmd = Command::new(runc);
    // With NOTIFY_SOCKET (bulwark's own, from systemd) runc would proxy the container's
    // READY=1 to bulwark's manager, naming the container's process as the unit's main pid.
    for inherited in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        cmd.env_remove(inherited);
    }
    cmd.arg("--root")
        .arg(root)
        .arg("run")
        .arg("--bundle")
        .arg(dir)
        .arg("--pid-file")
        .arg(dir.join(PID_FILE))
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = launch::spawn_placed(cmd, placement).await?;
    Ok((child, pid_watch))
}

/// The files bulwark's init runs from, found once (they are this process's own).
async fn init_files(bulwark: &Path) -> io::Result<&'static InitFiles> {
    static FILES: std::sync::OnceLock<InitFiles> = std::sync::OnceLock::new();
    if let Some(f) = FILES.get() {
        return Ok(f);
    }
    let binary = bulwark.to_owned();
    let found = tokio::task::spawn_blocking(move || InitFiles::of_this_process(&binary))
        .await
        .map_err(io::Error::other)?;
    Ok(FILES.get_or_init(|| found))
}

/// The container's `RLIMIT_NOFILE`: the usual soft 1024 under bulwark's own hard limit,
/// which it cannot raise (runc sets it after dropping the capability to).
fn nofile() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit};
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard);
    (hard.min(1024), hard)
}

/// Checks that the rootfs holds `program`, gives the notify socket (if any) to the
/// container's user (if any), then writes `config.json` into `dir`.
fn write_bundle(
    dir: &Path,
    rootfs: &Path,
    program: &str,
    config: &serde_json::Value,
    socket: Option<(PathBuf, Option<(u32, u32)>)>,
) -> io::Result<()> {
    if !rootfs.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "container rootfs {} is not a directory: make a root file system there \
                 (README, \"Containers and resources\")",
                rootfs.display()
            ),
        ));
    }
    if spec::program_in(rootfs, program).is_none() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the container rootfs {} has no program {program:?}: copy it (and the \
                 libraries `ldd` names) into the rootfs",
                rootfs.display()
            ),
        ));
    }
    if let Some((path, Some((uid, gid)))) = socket {
        // Another user than bulwark's must be able to write to the socket; it is the only
        // file of bulwark's owner-only directory the container sees.
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_vec_pretty(config).map_err(io::Error::other)?;
    std::fs::write(dir.join("config.json"), text)
}

/// The rootfs directory: the configured one, or the tarball's unpacked copy (unpacked
/// once per content: its size and modification time name the copy).
async fn rootfs(c: &spec::Container, dirs: &OciDirs) -> io::Result<PathBuf> {
    if !c.rootfs_is_tarball() {
        return Ok(c.rootfs.clone());
    }
    let _one = UNPACKING.lock().await;
    let (file, images) = (c.rootfs.clone(), dirs.images());
    let (dest, fresh) = tokio::task::spawn_blocking(move || unpack_target(&file, &images))
        .await
        .map_err(io::Error::other)??;
    if !fresh {
        return Ok(dest);
    }
    let partial = dest.with_extension("partial");
    let _ = tokio::fs::remove_dir_all(&partial).await;
    tokio::fs::create_dir_all(&partial).await?;
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(&c.rootfs).arg("-C").arg(&partial);
    let out = launch::run_exec(tar, None, Duration::from_secs(600), 4096).await?;
    out.passed(Duration::from_secs(600))
        .map_err(|e| io::Error::other(format!("cannot unpack {}: tar: {e}", c.rootfs.display())))?;
    tokio::fs::rename(&partial, &dest).await?;
    Ok(dest)
}

/// Where `file` is unpacked, and whether it still has to be.
fn unpack_target(file: &Path, images: &Path) -> io::Result<(PathBuf, bool)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(file).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("container rootfs {}: {e}", file.display()),
        )
    })?;
    let stem = file.file_name().map_or_else(
        || "rootfs".into(),
        |n| n.to_string_lossy().replace('.', "_"),
    );
    let dest = images.join(format!("{stem}-{}-{}", m.size(), m.mtime()));
    std::fs::create_dir_all(images)?;
    let fresh = !dest.is_dir();
    Ok((dest, fresh))
}

impl Container {
    /// The container's PID 1 as the host numbers it, once runc has started it (runc writes
    /// its pid file then); `None` when runc (`leader`) exits first, or takes longer than
    /// [`RUNC_LIMIT`] (the replica then shows and is measured as runc).
    pub(crate) async fn init_pid(&mut self, leader: u32) -> Option<u32> {
        let watch = self.pid_watch.take()?;
        let file = self.bundle.join(PID_FILE);
        let written = async {
            loop {
                if let Ok(text) = tokio::fs::read_to_string(&file).await
                    && let Ok(pid) = text.trim().parse::<u32>()
                {
                    return Some(pid);
                }
                watch.changed().await.ok()?;
            }
        };
        tokio::select! {
            pid = written => pid,
            _ = launch::exited(leader) => None,
            () = tokio::time::sleep(RUNC_LIMIT) => {
                tracing::warn!(container = self.id, "runc did not start the container in time");
                None
            }
        }
    }

    /// Its own address, with a private network: where the replica is reached.
    pub(crate) fn addr(&self) -> Option<std::net::Ipv4Addr> {
        self.netns.as_ref().map(NetNs::addr)
    }

    /// Who may speak on its notify socket: the processes in its cgroup.
    pub(crate) fn notify_senders(&self) -> crate::notify::Senders {
        crate::notify::Senders::Cgroup(self.cgroup.clone())
    }

    /// Deletes the container (killing whatever is left in it) and its bundle, once its
    /// runc has exited, and turns runc's `128 + N` exit code back into death by signal N.
    pub(crate) async fn remove(self, exit: Exit) -> Exit {
        delete(&self.root, &self.id).await;
        let _ = tokio::fs::remove_dir_all(&self.bundle).await;
        if let Some(netns) = self.netns {
            netns.remove().await;
        }
        match exit.code {
            Some(code) if (129..=128 + 64).contains(&code) => Exit {
                code: None,
                signal: Some(code - 128),
            },
            _ => exit,
        }
    }
}

/// `runc delete --force ID`; a container that is gone already is fine.
async fn delete(root: &Path, id: &str) {
    let Ok(runc) = runc().await else { return };
    let mut cmd = Command::new(runc);
    cmd.arg("--root").arg(root).args(["delete", "--force", id]);
    match launch::run_exec(cmd, None, RUNC_LIMIT, 4096).await {
        Ok(out) if out.status.is_some_and(|s| s.success()) => {}
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stderr);
            if !said.contains("does not exist") {
                tracing::warn!(container = id, said = %said.trim(), "runc delete failed");
            }
        }
        Err(error) => tracing::warn!(container = id, %error, "cannot run runc delete"),
    }
}

/// The part of a container id that names the bulwark process that made it:
/// `SERVICE-INDEX-bPID-N`.
fn owner_tag(pid: u32) -> String {
    format!("-b{pid}")
}

/// Whether container `id` was made by bulwark process `pid`.
pub(crate) fn made_by(id: &str, pid: u32) -> bool {
    id.rsplit_once('-')
        .is_some_and(|(rest, n)| n.parse::<u64>().is_ok() && rest.ends_with(&owner_tag(pid)))
}

/// Deletes the containers under runc's `root`: every one, or with `owner`, those the
/// bulwark process `owner` made (a janitor must spare the containers of the bulwark
/// started after its own died). Returns their ids.
pub async fn remove_all(root: &Path, owner: Option<u32>) -> io::Result<Vec<String>> {
    if !tokio::fs::try_exists(root).await.unwrap_or(false) {
        return Ok(Vec::new());
    }
    let mut cmd = Command::new(runc().await?);
    cmd.arg("--root").arg(root).args(["list", "--quiet"]);
    let out = launch::run_exec(cmd, None, RUNC_LIMIT, 1 << 20).await?;
    out.passed(RUNC_LIMIT)
        .map_err(|e| io::Error::other(format!("runc list: {e}")))?;
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && owner.is_none_or(|pid| made_by(l, pid)))
        .map(str::to_owned)
        .collect();
    for id in &ids {
        delete(root, id).await;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_id_names_the_bulwark_that_made_it() {
        assert!(made_by("web-0-b42-7", 42));
        assert!(made_by("my-web-12-b42-0", 42));
        assert!(!made_by("web-0-b421-7", 42));
        assert!(!made_by("web-0-b42-x", 42));
        assert!(!made_by("web-b42", 42));
    }
}
