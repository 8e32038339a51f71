//! One direction of a proxied connection: read a chunk, apply the direction's toxics,
//! write it on, until end of stream.

use std::io;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::ReadHalf;
use tokio::sync::watch;
use tokio::time::Instant;

use super::plan::Flow;
use crate::conn::{Activity, after};

/// Most bytes read at once per direction.
pub(crate) const BUF_SIZE: usize = 16 * 1024;
/// The first buffer of a direction; it doubles (up to [`BUF_SIZE`]) while reads fill it.
const MIN_BUF: usize = 4 * 1024;

/// Why a direction stopped the whole connection (a direction that reaches end of stream
/// returns `Ok` instead and lets the other direction go on: half-close).
#[derive(Debug)]
pub(crate) enum Stop {
    /// Reading or writing failed.
    Io(io::Error),
    /// `limit_data` reached: exactly the limit was passed on.
    Limit,
}

/// Copies one direction.
///
/// Invariants: at most [`BUF_SIZE`] bytes are held, and none until the source first has
/// something to read: the buffer is allocated (never zeroed) when the socket first turns
/// readable and then kept for the direction's life (request/response traffic allocates
/// nothing per message), growing while reads fill it; every read and write touches
/// `activity`; every byte written to `dst` is counted
/// in `bytes`; a toxic acts only while `faults` reads `true` (checked per chunk, and every
/// toxic wait ends early when it turns `false`).
///
/// The next chunk is read only once the previous one is written, so under a sustained
/// stream a latency toxic also caps throughput at [`BUF_SIZE`] per delay, as a
/// window-limited link would (Toxiproxy instead queues chunks; this keeps memory bounded).
pub(crate) struct Pump<'a> {
    pub flow: Flow,
    pub faults: watch::Receiver<bool>,
    pub bytes: &'a Counter,
    activity: &'a Activity,
    /// Bytes passed on so far (for `limit_data`).
    passed: u64,
    /// Bandwidth pacing: when the bytes sent so far have been paid for at `rate`.
    paid_until: Instant,
}

impl<'a> Pump<'a> {
    pub fn new(
        flow: Flow,
        faults: watch::Receiver<bool>,
        bytes: &'a Counter,
        activity: &'a Activity,
    ) -> Self {
        Pump {
            flow,
            faults,
            bytes,
            activity,
            passed: 0,
            paid_until: Instant::now(),
        }
    }

    /// Copies `src` to `dst` until `src` ends, then shuts down writing on `dst` (after the
    /// `slow_close` delay), so a half-close travels through the proxy.
    ///
    /// # Cancel safety
    /// Not cancel safe: bytes read but not yet written are lost. The connection drops it
    /// only to close both sockets.
    pub async fn run(
        mut self,
        mut src: impl Source,
        mut dst: impl AsyncWrite + Unpin,
    ) -> Result<(), Stop> {
        let mut buf: Vec<u8> = Vec::new();
        let mut size = MIN_BUF;
        // Whether any byte was read yet: until then a spurious wake-up gives the buffer
        // back, so an idle connection that never sent data holds none.
        let mut had_data = false;
        let toxic = self.flow.any();
        loop {
            let n = src
                .read_chunk(&mut buf, size, had_data)
                .await
                .map_err(Stop::Io)?;
            had_data = true;
            if n == buf.capacity() {
                size = (size * 2).min(BUF_SIZE);
            }
            if n == 0 {
                if let Some(delay) = self.flow.slow_close
                    && self.on()
                {
                    self.wait(delay).await;
                }
                // The peer may already be gone; the direction is over either way.
                let _ = dst.shutdown().await;
                return Ok(());
            }
            self.activity.touch();
            if !toxic {
                dst.write_all(&buf[..n]).await.map_err(Stop::Io)?;
                self.activity.touch();
                self.bytes.inc_by(n as u64);
                continue;
            }
            if self.on() {
                if self.flow.stall {
                    continue; // `timeout`: the data is dropped on the ground.
                }
                if let Some(latency) = self.flow.latency {
                    self.wait(latency.sample()).await;
                }
            }
            let mut len = n;
            let mut limited = false;
            if let Some(limit) = self.flow.limit
                && self.on()
            {
                let left = limit.saturating_sub(self.passed);
                if n as u64 >= left {
                    // `left <= n`, so it fits in usize.
                    len = usize::try_from(left).unwrap_or(n);
                    limited = true;
                }
            }
            self.emit(&mut dst, &buf[..len]).await?;
            if limited {
                return Err(Stop::Limit);
            }
        }
    }

    /// Writes one chunk, sliced and paced as the toxics say.
    async fn emit(
        &mut self,
        dst: &mut (impl AsyncWrite + Unpin),
        mut data: &[u8],
    ) -> Result<(), Stop> {
        let mut first = true;
        while !data.is_empty() {
            let mut n = data.len();
            if let Some(slicer) = self.flow.slicer
                && self.on()
            {
                if !first && !slicer.delay.is_zero() {
                    self.wait(slicer.delay).await;
                }
                n = n.min(slicer.size());
            }
            if let Some(rate) = self.flow.rate
                && self.on()
            {
                // Pieces of 50 ms worth keep the pacing smooth at low rates.
                let piece = usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1);
                n = n.min(piece);
                self.pay(rate, n).await;
            }
            first = false;
            dst.write_all(&data[..n]).await.map_err(Stop::Io)?;
            self.activity.touch();
            self.bytes.inc_by(n as u64);
            self.passed = self.passed.saturating_add(n as u64);
            data = &data[n..];
        }
        Ok(())
    }

    /// Token bucket without burst: `n` bytes cost `n / rate` seconds, paid before sending.
    /// Idle time earns no credit.
    async fn pay(&mut self, rate: u64, n: usize) {
        let cost = Duration::from_secs_f64(n as f64 / rate as f64);
        self.paid_until = after(self.paid_until.max(Instant::now()), cost);
        self.wait_until(self.paid_until).await;
    }

    /// Whether toxics act right now (the global kill switch).
    fn on(&self) -> bool {
        *self.faults.borrow()
    }

    async fn wait(&mut self, d: Duration) {
        self.wait_until(after(Instant::now(), d)).await;
    }

    /// Sleeps until `deadline`, or until the kill switch turns toxics off.
    ///
    /// # Cancel safety
    /// Cancel safe.
    async fn wait_until(&mut self, deadline: Instant) {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = faults_off(&mut self.faults) => {}
        }
    }
}

/// Where a direction reads from.
pub(crate) trait Source: Send {
    /// Reads the next chunk into `buf` (cleared first, given `size` bytes of room when it
    /// has less); 0 at end of stream. Before `had_data`, a source that can wait for data
    /// without a buffer gives the buffer back on a spurious wake-up.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing read is lost when the future is dropped before it resolves.
    fn read_chunk(
        &mut self,
        buf: &mut Vec<u8>,
        size: usize,
        had_data: bool,
    ) -> impl std::future::Future<Output = io::Result<usize>> + Send;
}

/// A TCP socket: waits for readiness with no buffer, so an idle connection holds none.
impl Source for ReadHalf<'_> {
    async fn read_chunk(
        &mut self,
        buf: &mut Vec<u8>,
        size: usize,
        had_data: bool,
    ) -> io::Result<usize> {
        loop {
            if buf.capacity() == 0 {
                self.readable().await?;
            }
            if buf.capacity() < size {
                // First data, or grown: a fresh allocation (nothing in `buf` to keep).
                *buf = Vec::with_capacity(size);
            }
            buf.clear();
            if had_data {
                // Through `AsyncRead`: a short read tells tokio the socket is drained, so
                // the next chunk waits for epoll instead of making a read that fails with
                // EAGAIN (`try_read` kept the readiness: two reads per message, the
                // second empty; TCP mode made 4 reads per proxied request, HAProxy 2).
                return self.read_buf(buf).await;
            }
            match self.try_read_buf(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A spurious wake-up before any data: wait again, without the buffer.
                    *buf = Vec::new();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A stream with a layer of its own (TLS ended by the proxy): its plaintext may already
/// be buffered when the socket has nothing to read, so it is read with a buffer held
/// (the TLS layer holds its own buffers anyway).
impl<T: AsyncRead + Send> Source for tokio::io::ReadHalf<T> {
    async fn read_chunk(
        &mut self,
        buf: &mut Vec<u8>,
        size: usize,
        _had_data: bool,
    ) -> io::Result<usize> {
        if buf.capacity() < size {
            *buf = Vec::with_capacity(size);
        }
        buf.clear();
        self.read_buf(buf).await
    }
}

/// Resolves once the kill switch reads `false`. If the switch's sender is gone while it
/// reads `true`, never resolves (the last word stays in force).
///
/// # Cancel safety
/// Cancel safe (`watch::Receiver::wait_for` is).
pub(crate) async fn faults_off(faults: &mut watch::Receiver<bool>) {
    if faults.wait_for(|on| !on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once the kill switch reads `true`; never if the sender is gone while `false`.
///
/// # Cancel safety
/// Cancel safe.
pub(crate) async fn faults_on(faults: &mut watch::Receiver<bool>) {
    if faults.wait_for(|on| *on).await.is_err() {
        std::future::pending::<()>().await;
    }
}
