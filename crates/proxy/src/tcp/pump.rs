//! One direction of a proxied connection: read a chunk, apply the direction's toxics,
//! write it on, until end of stream.

use std::io;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::plan::Flow;

/// Bytes read at once per direction; the buffer is allocated once per direction and
/// reused for every chunk.
pub(crate) const BUF_SIZE: usize = 16 * 1024;

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
/// Invariants: at most [`BUF_SIZE`] bytes are held; every byte written to `dst` is counted
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
    /// Bytes passed on so far (for `limit_data`).
    passed: u64,
    /// Bandwidth pacing: when the bytes sent so far have been paid for at `rate`.
    paid_until: Instant,
}

impl<'a> Pump<'a> {
    pub fn new(flow: Flow, faults: watch::Receiver<bool>, bytes: &'a Counter) -> Self {
        Pump {
            flow,
            faults,
            bytes,
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
        mut src: impl AsyncRead + Unpin,
        mut dst: impl AsyncWrite + Unpin,
    ) -> Result<(), Stop> {
        let mut buf = vec![0u8; BUF_SIZE];
        let toxic = self.flow.any();
        loop {
            let n = src.read(&mut buf).await.map_err(Stop::Io)?;
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
            if !toxic {
                dst.write_all(&buf[..n]).await.map_err(Stop::Io)?;
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
        self.paid_until = self.paid_until.max(Instant::now()) + cost;
        self.wait_until(self.paid_until).await;
    }

    /// Whether toxics act right now (the global kill switch).
    fn on(&self) -> bool {
        *self.faults.borrow()
    }

    async fn wait(&mut self, d: Duration) {
        self.wait_until(Instant::now() + d).await;
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
