//! systemd's notify protocol (sd_notify(3)) spoken by the demo, so a test or a user can
//! watch bulwark's side of it with nothing but the demo in a container's rootfs.
//!
//! With `NOTIFY_SOCKET` set (bulwark sets it for a service with `[services.NAME.notify]`),
//! the demo says `STATUS=starting` at start, then follows its [`NotifyPlan`]: `READY=1`
//! (with `STATUS=ready`) after a delay, `WATCHDOG=1` at an interval, and the pings stop
//! at a given time, as a replica that hangs. `/notify?say=LINE` sends any one line on
//! demand (`STATUS=...`, `STOPPING=1`, `RELOADING=1`, `READY=1`...).
//!
//! A send never blocks: the socket is non-blocking, and a message the receiver's queue
//! has no room for is dropped with a log line (what sd_notify does too).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

/// When the demo speaks, counted from its start. Nothing set: it only says `STATUS=starting`
/// and what `/notify` asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyPlan {
    /// `READY=1` this long after start.
    pub ready_after: Option<Duration>,
    /// `WATCHDOG=1` at this interval, from the start.
    pub watchdog_every: Option<Duration>,
    /// No more `WATCHDOG=1` from this long after start (a hung replica).
    pub stop_watchdog_after: Option<Duration>,
}

/// The demo's end of the notify socket.
pub(crate) struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// A notifier for `socket`: a path, or an abstract name written with a leading `@`.
    pub(crate) fn open(socket: &Path) -> io::Result<Notifier> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        let addr = match socket.as_os_str().as_bytes() {
            [b'@', name @ ..] => SocketAddr::from_abstract_name(name)?,
            _ => SocketAddr::from_pathname(socket)?,
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier { sock, addr })
    }

    /// Sends `msg` (newline-separated assignments) now, or drops it.
    pub(crate) fn send(&self, msg: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
            .inspect_err(|error| tracing::warn!(%error, msg, "cannot send to NOTIFY_SOCKET"))
    }
}

/// Says `STATUS=starting`, then follows `plan` until the process ends.
pub(crate) async fn run(n: Arc<Notifier>, plan: NotifyPlan) {
    let start = Instant::now();
    let _ = n.send("STATUS=starting");
    if let Some(every) = plan.watchdog_every.filter(|e| !e.is_zero()) {
        let stop = plan.stop_watchdog_after.map(|d| start + d);
        tokio::spawn(ping(n.clone(), every, stop));
    }
    if let Some(after) = plan.ready_after {
        sleep_until(start + after).await;
        tracing::info!("sd_notify: READY=1");
        let _ = n.send("READY=1\nSTATUS=ready");
    }
}

/// `WATCHDOG=1` every `every`, until `stop`.
async fn ping(n: Arc<Notifier>, every: Duration, stop: Option<Instant>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if stop.is_some_and(|s| Instant::now() >= s) {
            tracing::warn!("sd_notify: watchdog pings stopped, as planned");
            let _ = n.send("STATUS=watchdog pings stopped");
            return;
        }
        let _ = n.send("WATCHDOG=1");
    }
}

/// The line `/notify?say=LINE` asks for, percent-decoded (`+` is a space), or what is
/// wrong with the query.
pub(crate) fn line_to_say(query: Option<&str>) -> Result<String, String> {
    let raw = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("say="))
        .ok_or("missing query parameter `say`: the line to send, e.g. say=STATUS%3Dbusy")?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in `say` at byte {i}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "`say` is not UTF-8 once decoded".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn say_is_percent_decoded() {
        assert_eq!(
            line_to_say(Some("x=1&say=STATUS%3Dbusy+now%0A")).unwrap(),
            "STATUS=busy now\n"
        );
        assert_eq!(line_to_say(Some("say=STOPPING=1")).unwrap(), "STOPPING=1");
        assert!(line_to_say(None).unwrap_err().contains("missing"));
        assert!(line_to_say(Some("say=%4")).unwrap_err().contains("percent"));
        assert!(line_to_say(Some("say=%ff")).unwrap_err().contains("UTF-8"));
    }
}
