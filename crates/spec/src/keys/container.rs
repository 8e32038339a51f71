//! `[services.NAME.container]`: the replica runs in an OCI container through runc (the
//! `oci` driver) instead of as a plain process. Declared here, apart from the other
//! service keys, with its domain types.

use std::path::{Path, PathBuf};

use crate::schema::Omitted::{Optional, Required};
use crate::schema::{boolean, choice, list, tables, text};
use crate::section;

section! {
    /// Run each replica in an OCI container through runc (which must be on `PATH`):
    /// bulwark writes the bundle's `config.json` (pid, ipc, uts and mount namespaces, a
    /// network namespace with `network = "private"`, `/proc`, `/dev`, `/sys`, no new
    /// privileges) per incarnation under its state
    /// directory. `run`, `env`, `secrets` and `cwd` (a path inside the container) apply
    /// as for a process; `PORT` and the other replica variables are set too. The stop
    /// signal goes to the container's PID 1: bulwark's init (see `init`), which passes it
    /// on to the program.
    pub(crate) struct ContainerTable {
        /// The root file system: a directory, or a `.tar`, `.tar.gz` or `.tgz` file that
        /// is unpacked once into the state directory (again when the file changes).
        /// Relative to the stack file's directory. With a directory, `run`'s program must
        /// be in it (an absolute path, or a name found in the rootfs's `/usr/local/bin`,
        /// `/usr/bin` or `/bin`).
        rootfs: String = text("a directory or tarball path", path), Required(r#"rootfs = "./rootfs""#);
        /// Mount the root file system read-only (writes fail with EROFS); give writable
        /// places through `mounts`.
        read_only: bool = boolean(), "true";
        /// Host paths bind-mounted into the container: `{ source = "./data", target =
        /// "/data", read_only = false }`.
        mounts: Vec<MountTable> = tables::<MountTable>(), Optional("");
        /// The user the program runs as inside the container, `"UID"` or `"UID:GID"`
        /// (numbers: the rootfs need not have `/etc/passwd`).
        user: String = text("\"UID\" or \"UID:GID\" (numbers)", user), Optional("0:0 (root in the container, with no capabilities)");
        /// Capabilities kept, such as `"CAP_NET_BIND_SERVICE"` (`NET_BIND_SERVICE` works
        /// too); every other one is dropped.
        capabilities: Vec<String> = list(text("a capability name such as \"CAP_NET_BIND_SERVICE\"", capability)), Optional("none");
        /// The container's network. `host` shares bulwark's network namespace: the
        /// replica listens on `127.0.0.1:PORT`. `private` gives each replica a network
        /// namespace of its own (needs root) with a loopback and one veth link to the
        /// host, addressed from a /30 of 10.213.0.0/16: the replica listens on
        /// `0.0.0.0:PORT` inside, and the proxy and the probes reach it at its own
        /// address (`addr` in `bulwark status`). It cannot reach the host's loopback, and
        /// nothing routes it further than the host's end of its link.
        network: Network = choice(Network::CHOICES), r#""host""#;
        /// Run bulwark's own init as the container's PID 1 (as `docker run --init` runs
        /// tini): bulwark's binary, mounted read-only at `/.bulwark/init` with the
        /// libraries it needs, starts `run` as its child, passes every signal on to the
        /// child's process group, reaps orphaned zombies and exits with the child's
        /// status. `false` runs the program itself as PID 1, where the kernel drops every
        /// signal it has no handler for: a program without a SIGTERM handler then ignores
        /// the stop signal and is killed once `stop_grace` is over, and nothing reaps
        /// the orphans it leaves.
        init: bool = boolean(), "true";
    }
}

section! {
    /// One bind mount into the container.
    pub(crate) struct MountTable {
        /// The host path (relative to the stack file's directory); it must exist.
        source: String = text("a path", path), Required(r#"source = "./data""#);
        /// Where it appears in the container: an absolute path.
        target: String = text("an absolute path such as \"/data\"", absolute), Required(r#"target = "/data""#);
        /// Mount it read-only.
        read_only: bool = boolean(), "true";
    }
}

crate::spelled! {
    /// A container's network namespace.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Network {
        /// bulwark's own (the host's) network namespace.
        Host = "host",
        /// A namespace per replica, linked to the host by a veth pair.
        Private = "private",
    }
}

/// `[services.NAME.container]`, validated: paths resolved against the stack file's
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// A directory, or a tarball unpacked into the state directory before use.
    pub rootfs: PathBuf,
    /// The root file system is mounted read-only.
    pub read_only: bool,
    /// Bind mounts, in file order.
    pub mounts: Vec<Mount>,
    /// `(uid, gid)`; `None` is 0:0.
    pub user: Option<(u32, u32)>,
    /// Capability names as the kernel spells them (`CAP_...`), upper case.
    pub capabilities: Vec<String>,
    /// The network namespace.
    pub network: Network,
    /// bulwark's init runs as PID 1, the program as its child.
    pub init: bool,
}

impl Container {
    /// Whether `rootfs` names a tarball rather than a directory.
    pub fn rootfs_is_tarball(&self) -> bool {
        is_tarball(&self.rootfs.to_string_lossy())
    }
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The host path, resolved against the stack file's directory.
    pub source: PathBuf,
    /// Absolute, inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

pub(crate) fn is_tarball(path: &str) -> bool {
    [".tar", ".tar.gz", ".tgz"]
        .iter()
        .any(|e| path.ends_with(e))
}

fn path(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('\0') {
        Err("; give a non-empty path".into())
    } else {
        Ok(s.to_owned())
    }
}

fn absolute(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains('\0') && !s.split('/').any(|c| c == "..") {
        Ok(s.to_owned())
    } else {
        Err("; a target is an absolute path inside the container, without `..`".into())
    }
}

fn user(s: &str) -> Result<String, String> {
    let mut parts = s.splitn(2, ':');
    let ok = parts.all(|n| n.parse::<u32>().is_ok());
    if ok {
        Ok(s.to_owned())
    } else {
        Err("; names are not looked up: write the numeric ids, e.g. \"1000:1000\"".into())
    }
}

/// `user` as `(uid, gid)`; the gid defaults to the uid.
pub(crate) fn parse_user(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// The capabilities Linux has (capabilities(7)), without their `CAP_` prefix.
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn capability(s: &str) -> Result<String, String> {
    let upper = s.trim().to_ascii_uppercase();
    let bare = upper.trim_start_matches("CAP_");
    if CAPABILITIES.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        Err(crate::problem::suggest(bare, CAPABILITIES.iter().copied())
            .map(|s| format!("; did you mean \"CAP_{s}\"?"))
            .unwrap_or_default())
    }
}

/// Where a program named without a slash is looked for inside a rootfs (the `PATH` the
/// container gets unless `env` sets one).
pub const ROOTFS_PATH: &[&str] = &[
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
];

/// Where `program` is inside `rootfs` (a path with a slash is taken as is, relative to
/// `/`; a bare name is looked up in [`ROOTFS_PATH`]).
pub fn program_in(rootfs: &Path, program: &str) -> Option<PathBuf> {
    let inside = |p: &str| rootfs.join(p.trim_start_matches('/'));
    if program.contains('/') {
        let p = inside(program);
        return p.is_file().then_some(p);
    }
    ROOTFS_PATH
        .iter()
        .map(|dir| inside(&format!("{dir}/{program}")))
        .find(|p| p.is_file())
}
