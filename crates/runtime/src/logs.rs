//! Bounded buffers of replica output, with live followers.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, LazyLock, Mutex};

pub(crate) use bus::now_ms;
use prometheus_client::metrics::counter::Counter;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;

use crate::Redactor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub at_ms: u64,
    pub replica: u32,
    pub stream: Stream,
    pub text: String,
}

/// The recent output of one service's replicas.
///
/// Invariant: at most `capacity` lines are kept, each at most [`MAX_LINE`] bytes, so memory
/// is bounded whatever a replica prints.
pub struct Logs {
    service: String,
    lines: Mutex<VecDeque<Arc<LogLine>>>,
    capacity: usize,
    tx: broadcast::Sender<Arc<LogLine>>,
    echo: bool,
}

/// Longer lines are cut (and marked) so one runaway line cannot hold memory.
pub const MAX_LINE: usize = 8 * 1024;

impl Logs {
    pub(crate) fn new(service: &str, capacity: usize, echo: bool) -> Self {
        Logs {
            service: service.to_owned(),
            lines: Mutex::new(VecDeque::new()),
            capacity,
            tx: broadcast::channel(1024).0,
            echo,
        }
    }

    fn push(&self, line: LogLine) {
        if self.echo {
            echo(format!(
                "{}/{} | {}\n",
                self.service, line.replica, line.text
            ));
        }
        let line = Arc::new(line);
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line.clone());
        let _ = self.tx.send(line);
    }

    /// The buffered lines (of one replica, or all) and a receiver for new ones.
    pub fn subscribe(
        &self,
        replica: Option<u32>,
    ) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let backlog = lines
            .iter()
            .filter(|l| replica.is_none_or(|r| l.replica == r))
            .cloned()
            .collect();
        (backlog, self.tx.subscribe())
    }

    /// The last `n` stderr lines of a replica, oldest first.
    pub fn stderr_tail(&self, replica: u32, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut tail: Vec<String> = lines
            .iter()
            .rev()
            .filter(|l| l.replica == replica && l.stream == Stream::Stderr)
            .take(n)
            .map(|l| l.text.clone())
            .collect();
        tail.reverse();
        tail
    }

    /// Copies `reader` into the buffer line by line until EOF, each line redacted by
    /// `redactor` once it is whole (however many reads it took) and before anyone sees it.
    pub(crate) async fn pump(
        self: Arc<Self>,
        replica: u32,
        stream: Stream,
        reader: impl AsyncRead + Unpin,
        redactor: Arc<Redactor>,
    ) {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            let (consumed, complete) = {
                let Ok(buf) = reader.fill_buf().await else {
                    break;
                };
                if buf.is_empty() {
                    break;
                }
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        take_bounded(&mut line, &buf[..i]);
                        (i + 1, true)
                    }
                    None => {
                        take_bounded(&mut line, buf);
                        (buf.len(), false)
                    }
                }
            };
            reader.consume(consumed);
            if complete {
                self.emit(replica, stream, &mut line, &redactor);
            }
        }
        if !line.is_empty() {
            self.emit(replica, stream, &mut line, &redactor);
        }
    }

    fn emit(&self, replica: u32, stream: Stream, line: &mut Vec<u8>, redactor: &Redactor) {
        let cut = line.len() >= MAX_LINE;
        let mut text = String::from_utf8_lossy(&redactor.line(line, cut)).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        if cut {
            text.push_str(" [line truncated]");
        }
        line.clear();
        self.push(LogLine {
            at_ms: now_ms(),
            replica,
            stream,
            text,
        });
    }
}

/// Lines waiting for the echo writer; beyond this, lines are dropped (and counted).
const ECHO_QUEUE: usize = 4096;

/// Echoed lines dropped because bulwark's stdout could not keep up (blocked, or gone).
pub(crate) static ECHO_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The one writer of bulwark's stdout: a thread fed by a bounded queue.
///
/// A replica's output pump must never wait on our stdout: a paused terminal or a full pipe
/// would stall the runtime's workers and, through them, the replica's own pipe. So pumps
/// `try_send` and drop the line when the queue is full. A stdout that is gone
/// (`bulwark up | head`) gives EPIPE (bulwark ignores SIGPIPE, as Rust programs do): the
/// line is counted as dropped, nothing panics, and the pumps keep draining the replicas.
static ECHO: LazyLock<Option<SyncSender<String>>> = LazyLock::new(|| {
    let (tx, rx) = sync_channel::<String>(ECHO_QUEUE);
    std::thread::Builder::new()
        .name("bulwark-stdout".into())
        .spawn(move || {
            let mut out = std::io::stdout();
            for line in rx {
                if out.write_all(line.as_bytes()).is_err() {
                    ECHO_DROPPED.inc();
                }
            }
        })
        .ok()
        .map(|_| tx)
});

/// Queues `line` for stdout, or drops and counts it; never blocks, never panics.
fn echo(line: String) {
    match &*ECHO {
        Some(tx) => match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                ECHO_DROPPED.inc();
            }
        },
        None => {
            ECHO_DROPPED.inc();
        }
    }
}

fn take_bounded(line: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_LINE.saturating_sub(line.len());
    line.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_bounded_lines_and_tails_stderr() {
        let logs = Arc::new(Logs::new("web", 3, false));
        let long = "x".repeat(MAX_LINE * 2);
        let input = format!("a\nb\r\n{long}\nlast-no-newline");
        logs.clone()
            .pump(0, Stream::Stderr, input.as_bytes(), Default::default())
            .await;
        let (lines, _) = logs.subscribe(Some(0));
        assert_eq!(lines.len(), 3, "capacity 3 keeps the newest three");
        assert_eq!(lines[0].text, "b");
        assert!(lines[1].text.ends_with("[line truncated]"));
        assert!(lines[1].text.len() < MAX_LINE + 32);
        assert_eq!(lines[2].text, "last-no-newline");
        assert_eq!(logs.stderr_tail(0, 1), vec!["last-no-newline".to_string()]);
        assert!(logs.stderr_tail(1, 5).is_empty());
    }
}
