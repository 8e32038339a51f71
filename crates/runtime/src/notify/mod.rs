//! systemd's notify protocol (sd_notify(3)) for replicas: one datagram socket per replica
//! incarnation, named in its `NOTIFY_SOCKET`, read by a task of that incarnation.
//!
//! One socket per incarnation rather than one per stack: its lifetime is the incarnation's
//! (no map from pids to replicas to keep in step with spawns and exits, nothing left to
//! read from a previous process), and a flood on one replica's socket costs nothing to
//! the others. It is not what tells senders apart, though: any process of bulwark's user
//! can find the path (in the replica's environment) and send to it. So the socket has
//! `SO_PASSCRED` and a datagram counts only when the kernel says its sender is the
//! replica's: in its process group, or for a container in its cgroup ([`senders`];
//! systemd's `NotifyAccess=all`, with the group or the container as the unit); anything
//! else is dropped and counted.
//!
//! A container sees its socket bind-mounted at [`IN_CONTAINER`] (the oci driver mounts
//! the socket's file alone: no other replica's socket is in view there).
//!
//! Hostile input stays cheap: a datagram is read into a fixed buffer (a longer one is
//! dropped whole, before its sender is looked at), at most [`MAX_LINES`] lines of it are
//! looked at, `STATUS=` is cut to [`MAX_STATUS`] bytes of printable text, and the kernel
//! bounds the socket's queue, so a flood costs one `recvmsg` and one sender check (a
//! `getpgid`, or for a container a read of `/proc/PID/cgroup` on the blocking pool) per
//! datagram on a non-blocking socket, one datagram at a time. The control buffer holds
//! exactly one `SCM_CREDENTIALS`, so a file descriptor passed along (`FDSTORE=1`) is never
//! installed: the kernel drops it.
//!
//! What is read: `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=`, `WATCHDOG=1` and
//! `WATCHDOG=trigger`. Ignored, with the reason: `MAINPID=` (bulwark watches and signals
//! the process group it started, whose leader it reaps; a daemon that forks away should
//! be run in the foreground instead), `EXTEND_TIMEOUT_USEC=` (bulwark has no start
//! timeout to extend, and `stop_grace` is the operator's bound, not the replica's),
//! `WATCHDOG_USEC=` (the stack file sets the watchdog), `FDSTORE=` and the rest.

mod senders;

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bus::ProbeKind;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};
use policy::Watchdog;
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::probe::Report;
use senders::Admission;
pub(crate) use senders::Senders;

/// Where a container replica finds its notify socket (`NOTIFY_SOCKET` inside it): under
/// `/dev`, the tmpfs runc makes for every container, so the mount point is made there and
/// never in the rootfs (which may be read-only, or lack `/run`).
pub const IN_CONTAINER: &str = "/dev/bulwark/notify.sock";

/// The longest datagram read; a longer one is dropped whole (systemd reads up to 4 KiB
/// of text too, fds aside).
pub(crate) const MAX_DATAGRAM: usize = 4096;
/// Lines of one datagram looked at.
pub(crate) const MAX_LINES: usize = 16;
/// Bytes of `STATUS=` kept.
pub(crate) const MAX_STATUS: usize = 256;

/// What a replica said that the replica task acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// `READY=1`.
    Ready,
    /// `RELOADING=1`: unready until the next `READY=1`.
    Reloading,
    /// `STOPPING=1`: out of the balancer until it exits.
    Stopping,
    /// `STATUS=...`, cleaned and bounded.
    Status(String),
}

/// One message of the protocol that bulwark reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Notice(Notice),
    Watchdog,
    WatchdogTrigger,
}

/// The messages of one datagram, in order; unknown and ignored assignments are left out.
pub(crate) fn parse(datagram: &[u8]) -> Vec<Message> {
    datagram
        .split(|&b| b == b'\n')
        .take(MAX_LINES)
        .filter_map(|line| {
            let (key, value) = split_once(line, b'=')?;
            Some(match (key, value) {
                (b"READY", b"1") => Message::Notice(Notice::Ready),
                (b"RELOADING", b"1") => Message::Notice(Notice::Reloading),
                (b"STOPPING", b"1") => Message::Notice(Notice::Stopping),
                (b"WATCHDOG", b"1") => Message::Watchdog,
                (b"WATCHDOG", b"trigger") => Message::WatchdogTrigger,
                (b"STATUS", text) => Message::Notice(Notice::Status(clean_status(text))),
                _ => return None,
            })
        })
        .collect()
}

fn split_once(line: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = line.iter().position(|&b| b == sep)?;
    Some((&line[..at], &line[at + 1..]))
}

/// `STATUS=` as it may be shown in a terminal: valid UTF-8 (lossy), control characters
/// (escape sequences included) replaced by spaces, at most [`MAX_STATUS`] bytes, cut on a
/// character boundary.
fn clean_status(raw: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(&raw[..raw.len().min(MAX_STATUS * 4)]).chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_STATUS {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// The owner-only directory of every notify socket of one supervisor: `notify` in the
/// state directory, emptied first (what a killed `up` left there is stale, and the state
/// directory's lock allows one `up`), or a fresh one under `$TMPDIR`, removed when the
/// supervisor goes, when there is no state directory or its path is too long for a
/// socket's (108 bytes).
pub(crate) struct Sockets {
    dir: Result<Dir, String>,
    next: AtomicU64,
}

enum Dir {
    State(PathBuf),
    Temp(tempfile::TempDir),
}

/// Longest directory for `N.sock` paths within `sun_path`'s 108 bytes.
const MAX_DIR: usize = 80;

impl Sockets {
    pub fn new(state: Option<&Path>) -> Self {
        let dir = match state {
            Some(d) if d.as_os_str().len() <= MAX_DIR => fresh(d).map(|()| Dir::State(d.into())),
            _ => tempfile::Builder::new()
                .prefix("bulwark-notify-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map(Dir::Temp),
        };
        Sockets {
            dir: dir.map_err(|e| format!("cannot create a directory for notify sockets: {e}")),
            next: AtomicU64::new(0),
        }
    }

    /// A new socket for one incarnation.
    pub fn bind(&self) -> Result<NotifySocket, String> {
        let dir = match self.dir.as_ref().map_err(Clone::clone)? {
            Dir::State(d) => d.as_path(),
            Dir::Temp(t) => t.path(),
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{n}.sock"));
        let sock = UnixDatagram::bind(&path)
            .map_err(|e| format!("cannot bind the notify socket {}: {e}", path.display()))?;
        let sock = NotifySocket { sock, path };
        setsockopt(&sock.sock, sockopt::PassCred, &true)
            .map_err(|e| format!("cannot set SO_PASSCRED on the notify socket: {e}"))?;
        Ok(sock)
    }
}

/// `dir`, empty and owner-only (no other user may reach a socket in it, whatever the
/// umask).
fn fresh(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A replica incarnation's notify socket; its file is removed when it is dropped.
pub(crate) struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One datagram as received.
struct Datagram {
    len: usize,
    /// The sender, as the kernel says.
    pid: Option<i32>,
    /// Longer than the buffer: dropped.
    truncated: bool,
}

impl NotifySocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram.
    ///
    /// # Cancel safety
    /// Cancel safe: a datagram is either returned or left in the socket.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        loop {
            self.sock.readable().await?;
            match self
                .sock
                .try_io(Interest::READABLE, || recv_with_sender(&self.sock, buf))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

fn recv_with_sender(sock: &UnixDatagram, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = [IoSliceMut::new(buf)];
    // Room for one SCM_CREDENTIALS and nothing else (see the module's doc on fds).
    let mut cmsg = nix::cmsg_space!(UnixCredentials);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let pid = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
            _ => None,
        })
    });
    Ok(Datagram {
        len: msg.bytes,
        pid,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
    })
}

/// One incarnation's reader: what it dropped (for its log lines), its watchdog, the
/// last status it passed on.
struct Reader {
    service: Arc<str>,
    index: u32,
    ready_gates: bool,
    dog: Watchdog,
    last_status: Option<String>,
    /// What a refused sender's log line says.
    outside: &'static str,
    foreign: u64,
    oversized: u64,
    errors: u64,
}

impl Reader {
    /// Whether a datagram counts: whole (looked at first: it costs nothing), and from the
    /// replica.
    async fn admit(&mut self, d: &Datagram, senders: &Admission) -> bool {
        let (service, index) = (&self.service, self.index);
        if d.truncated {
            self.oversized += 1;
            if self.oversized.is_power_of_two() {
                tracing::warn!(%service, index, dropped = self.oversized,
                    "notify datagram over {MAX_DATAGRAM} bytes dropped");
            }
            return false;
        }
        if !senders.admits(d.pid).await {
            self.foreign += 1;
            if self.foreign.is_power_of_two() {
                tracing::warn!(%service, index, sender = ?d.pid, dropped = self.foreign,
                    "{}", self.outside);
            }
            return false;
        }
        true
    }

    /// Applies a datagram's watchdog messages; returns the notices for the replica task
    /// (a status only when it changed).
    fn read(&mut self, datagram: &[u8]) -> Vec<Notice> {
        let mut notices = Vec::new();
        for m in parse(datagram) {
            let now = Instant::now().into_std();
            match m {
                Message::Watchdog => self.dog.kick(now),
                Message::WatchdogTrigger => self.dog.trigger(now),
                Message::Notice(Notice::Status(s)) => {
                    if self.last_status.as_ref() != Some(&s) {
                        self.last_status = Some(s.clone());
                        notices.push(Notice::Status(s));
                    }
                }
                Message::Notice(n) => {
                    if n == Notice::Ready && self.ready_gates {
                        self.dog.arm(now);
                    }
                    notices.push(n);
                }
            }
        }
        // One datagram is one change (`READY=1\nSTATUS=ready`): its status goes first, so
        // that nobody sees the replica ready with the status it had while starting.
        notices.sort_by_key(|n| !matches!(n, Notice::Status(_)));
        notices
    }
}

/// Reads one incarnation's socket until aborted (with the incarnation) or until its
/// watchdog expires, which it reports as a failed `watchdog` probe and ends.
pub(crate) async fn run(
    sock: NotifySocket,
    senders: Senders,
    cfg: spec::Notify,
    tx: mpsc::Sender<Report>,
    service: Arc<str>,
    index: u32,
) {
    let mut r = Reader {
        service,
        index,
        ready_gates: cfg.ready,
        dog: Watchdog::new(cfg.watchdog),
        last_status: None,
        outside: senders.outside(),
        foreign: 0,
        oversized: 0,
        errors: 0,
    };
    let senders = Admission::new(senders).await;
    if !cfg.ready {
        r.dog.arm(Instant::now().into_std());
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = r.dog.deadline().map(Instant::from_std);
        let got = tokio::select! {
            got = sock.recv(&mut buf) => got,
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if r.dog.expired(Instant::now().into_std()) {
                    let reason = format!(
                        "watchdog timeout: no WATCHDOG=1 within {:?}", r.dog.timeout()
                    );
                    let _ = tx.send(Report::Failed { probe: ProbeKind::Watchdog, reason }).await;
                    return;
                }
                continue;
            }
        };
        let d = match got {
            Ok(d) => d,
            Err(error) => {
                // Nothing a sender does makes recvmsg fail on a bound datagram socket (too
                // long is MSG_TRUNC, not an error); should it fail, say so once and try
                // again a little later, the watchdog still running.
                r.errors += 1;
                if r.errors == 1 {
                    tracing::error!(service = %r.service, index, %error, "cannot read the notify socket");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !r.admit(&d, &senders).await {
            continue;
        }
        for notice in r.read(&buf[..d.len]) {
            if tx.send(Report::Notified(notice)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI once saw a container replica ready while its status still said `starting`: the
    /// datagram's READY=1 was applied, and shown, before its STATUS=ready.
    #[test]
    fn a_datagram_s_status_is_applied_before_its_ready() {
        let mut r = Reader {
            service: "web".into(),
            index: 0,
            ready_gates: true,
            dog: Watchdog::new(std::time::Duration::from_secs(1)),
            last_status: Some("starting".into()),
            outside: "",
            foreign: 0,
            oversized: 0,
            errors: 0,
        };
        assert_eq!(
            r.read(b"READY=1\nSTATUS=ready\nSTOPPING=1"),
            [
                Notice::Status("ready".into()),
                Notice::Ready,
                Notice::Stopping
            ]
        );
    }

    #[test]
    fn messages_are_read_in_order_and_the_rest_is_ignored() {
        let got = parse(b"READY=1\nSTATUS=serving 3 clients\nMAINPID=1\nWATCHDOG=1\nWATCHDOG=trigger\nREADY=0\nRELOADING=1\nSTOPPING=1\n=\ngarbage\n");
        assert_eq!(
            got,
            vec![
                Message::Notice(Notice::Ready),
                Message::Notice(Notice::Status("serving 3 clients".into())),
                Message::Watchdog,
                Message::WatchdogTrigger,
                Message::Notice(Notice::Reloading),
                Message::Notice(Notice::Stopping),
            ]
        );
    }

    #[test]
    fn status_is_bounded_printable_and_cut_on_a_character() {
        let long = "é".repeat(1000);
        let Message::Notice(Notice::Status(s)) = &parse(format!("STATUS={long}").as_bytes())[0]
        else {
            panic!("a status")
        };
        assert!(
            s.len() <= MAX_STATUS && s.len() >= MAX_STATUS - 1,
            "{}",
            s.len()
        );
        assert!(s.chars().all(|c| c == 'é'));
        let got = parse(b"STATUS=a\x1b[2Jb\x07c\xff\r");
        assert_eq!(
            got,
            vec![Message::Notice(Notice::Status("a [2Jb c\u{fffd}".into()))]
        );
    }

    #[test]
    fn only_the_first_lines_of_a_datagram_are_looked_at() {
        let many = "WATCHDOG=1\n".repeat(1000);
        assert_eq!(parse(many.as_bytes()).len(), MAX_LINES);
        assert!(parse(&[0xff; MAX_DATAGRAM]).is_empty());
    }
}
