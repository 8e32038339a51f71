//! bulwark under systemd: its own side of the notify protocol (`Type=notify` with a
//! watchdog) while `up` runs, and `bulwark systemd-unit`, which prints a unit for a stack.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::outln;

/// bulwark's notify socket, when its manager gave one (`NOTIFY_SOCKET`).
///
/// A few lines over a non-blocking datagram socket rather than a crate: a send must never
/// block the runtime (a manager that stops reading would fill the socket's queue), so a
/// message that does not fit is dropped and logged, as a watchdog ping that cannot be
/// delivered is worth nothing later.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// Half of `WATCHDOG_USEC`, when the watchdog is ours (systemd's advice).
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    /// From bulwark's environment; `None` when no manager asked for notifications, or
    /// when its address cannot be used (logged: a manager bulwark cannot tell it is ready
    /// will say so itself, and bulwark's stack is better running than not).
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET").filter(|n| !n.is_empty())?;
        Self::open(&name)
            .inspect_err(|e| tracing::error!("cannot notify the service manager: {e:#}"))
            .ok()
    }

    fn open(name: &std::ffi::OsStr) -> anyhow::Result<Notifier> {
        let addr = address(Path::new(name))
            .with_context(|| format!("NOTIFY_SOCKET={name:?} is not a socket address"))?;
        let sock = UnixDatagram::unbound().context("cannot open a socket for NOTIFY_SOCKET")?;
        sock.set_nonblocking(true)?;
        Ok(Notifier {
            sock,
            addr,
            watchdog_every: watchdog_every(
                std::env::var("WATCHDOG_USEC").ok().as_deref(),
                std::env::var("WATCHDOG_PID").ok().as_deref(),
                std::process::id(),
            ),
        })
    }

    /// Sends `msg` (newline-separated assignments) now, or drops it.
    pub fn send(&self, msg: &str) {
        if let Err(error) = self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::warn!(%error, msg, "cannot notify the service manager");
        }
    }
}

/// A path, or an abstract name written with a leading `@` (systemd's convention).
fn address(name: &Path) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    match name.as_os_str().as_bytes() {
        [b'@', abstract_name @ ..] => SocketAddr::from_abstract_name(abstract_name),
        _ => SocketAddr::from_pathname(name),
    }
}

/// Half of `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another process (the variables
/// were inherited, and the watchdog is someone else's).
fn watchdog_every(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

/// `STATUS=` for the manager: how many replicas are ready.
pub fn summary(services: &[runtime::ServiceStatus]) -> String {
    let ready: usize = services
        .iter()
        .map(|s| s.replicas.iter().filter(|r| r.ready).count())
        .sum();
    let desired: u32 = services.iter().map(|s| s.desired).sum();
    let n = services.len();
    format!(
        "{ready}/{desired} replicas ready in {n} service{}",
        if n == 1 { "" } else { "s" }
    )
}

/// The runtime's proof of life: every `every`, take the supervisor's status (its lock
/// taken, so a deadlock there stops the pings too) and send `WATCHDOG=1` with the
/// summary. Without a watchdog, the summary alone every 5 s.
pub fn spawn_watchdog(
    notifier: std::sync::Arc<Notifier>,
    supervisor: runtime::Supervisor,
) -> tokio::task::JoinHandle<()> {
    let every = notifier.watchdog_every;
    let period = every
        .unwrap_or(Duration::from_secs(5))
        .max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = String::new();
        loop {
            tick.tick().await;
            let status = summary(&supervisor.status());
            let mut msg = if every.is_some() {
                "WATCHDOG=1".to_owned()
            } else {
                String::new()
            };
            if status != last {
                if !msg.is_empty() {
                    msg.push('\n');
                }
                msg.push_str("STATUS=");
                msg.push_str(&status);
                last = status;
            }
            if !msg.is_empty() {
                notifier.send(&msg);
            }
        }
    })
}

/// `bulwark systemd-unit -f FILE`: a unit for running the stack under systemd.
pub fn unit_command(file: &Path) -> ExitCode {
    let stack = match spec::load_with_warnings(file) {
        Ok(loaded) => loaded.stack,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let paths = std::env::current_exe().and_then(|exe| Ok((exe, std::path::absolute(file)?)));
    match paths {
        Ok((exe, file)) => {
            outln!("{}", unit(&stack, &exe, &file));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulwark: cannot resolve the paths for the unit: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long systemd waits for `up` to stop before it kills what is left: services stop in
/// reverse dependency order, one after another, each within its `stop_grace`; chaos
/// rollbacks (30 s) and a backup under way (60 s) come first when there are any; then 15 s
/// for the journal, the audit log and the API.
pub fn stop_timeout(stack: &spec::Stack) -> Duration {
    let graces: Duration = stack.services.iter().map(|s| s.stop_grace).sum();
    let chaos = if stack.experiments.is_empty() { 0 } else { 30 };
    let backups = if stack.backups.is_empty() { 0 } else { 60 };
    graces + Duration::from_secs(chaos + backups + 15)
}

/// The watchdog systemd holds `up` to: generous, as a busy machine may delay a ping; `up`
/// pings at half of it.
const WATCHDOG_SEC: u64 = 30;

/// The unit's text. Hardening kept to what cannot break a stack: replicas run anything,
/// read and write where the stack says (backups, disk-fill experiments, state), use
/// cgroups and namespaces (containers) and may JIT, so no `ProtectSystem`, `ProtectHome`,
/// `PrivateTmp` (a replica's files in /tmp may be meant for other programs),
/// `ProtectControlGroups`, `RestrictNamespaces` or `MemoryDenyWriteExecute`.
pub fn unit(stack: &spec::Stack, exe: &Path, file: &Path) -> String {
    let services: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    let stop = stop_timeout(stack).as_secs();
    let exe = quoted(exe);
    let shown = file.display().to_string().replace('%', "%%");
    let file = quoted(file);
    format!(
        "\
# Written by `bulwark systemd-unit -f {shown}`.
# Install: save as /etc/systemd/system/bulwark-NAME.service, then
#   systemctl daemon-reload && systemctl enable --now bulwark-NAME
[Unit]
Description=bulwark stack {shown} ({services})
Wants=network-online.target
After=network-online.target

[Service]
# bulwark says READY=1 once its API and listeners are bound and every replica is
# started, STATUS= how many replicas are ready, WATCHDOG=1 at half of WatchdogSec from
# its runtime, STOPPING=1 when it stops, RELOADING=1 and READY=1 around a reload.
Type=notify
NotifyAccess=main
ExecStart={exe} up -f {file}
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec={WATCHDOG_SEC}s
# bulwark stops its replicas itself (drain, stop signal, grace): SIGTERM goes to bulwark
# alone, and SIGKILL to whatever is left once TimeoutStopSec is over.
KillMode=mixed
# The services' stop_grace in a row, plus rollbacks, a backup under way and the journal.
TimeoutStopSec={stop}s
Restart=on-failure
RestartSec=1s
# Connections and replicas' pipes.
LimitNOFILE=65536
# Hardening that leaves replicas, backups, experiments and containers working.
NoNewPrivileges=yes
ProtectClock=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectHostname=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=multi-user.target
",
        services = services.join(", ")
    )
}

/// A path as one word of a unit's command line: in double quotes, with `\` and `"`
/// escaped, and `%` doubled (systemd's specifiers).
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_half_of_watchdog_usec_and_only_ours() {
        let me = 42;
        assert_eq!(
            watchdog_every(Some("4000000"), None, me),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watchdog_every(Some("4000000"), Some("42"), me),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_every(Some("4000000"), Some("7"), me), None);
        assert_eq!(watchdog_every(None, None, me), None);
        assert_eq!(watchdog_every(Some("0"), None, me), None);
        assert_eq!(watchdog_every(Some("soon"), None, me), None);
    }

    #[test]
    fn paths_are_quoted_for_a_unit() {
        assert_eq!(
            quoted(Path::new("/srv/my stack/a%b\"c.toml")),
            r#""/srv/my stack/a%%b\"c.toml""#
        );
    }

    #[test]
    fn abstract_names_start_with_an_at_sign() {
        use std::os::linux::net::SocketAddrExt;
        let a = address(Path::new("@bulwark/test")).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"bulwark/test"[..]));
        let p = address(Path::new("/run/systemd/notify")).unwrap();
        assert_eq!(p.as_pathname(), Some(Path::new("/run/systemd/notify")));
    }
}
