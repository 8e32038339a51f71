//! The result of a run: its JSON shape and its text form.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Result of a run. The JSON form (field names and nesting) is a contract with
/// the benchmark harness and tests: add fields, never rename them.
///
/// Invariants: `sent == ok + failed.total`; `failed.total` is the sum of the
/// per-kind counts; every request ends exactly once (response, error or
/// timeout), so every sent request is in `latency_ms` and `timeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub url: String,
    /// Requested rate, requests per second.
    pub rate: f64,
    pub duration_s: f64,
    pub concurrency: usize,
    pub timeout_s: f64,
    /// Requests scheduled (each one ends in `ok` or `failed`).
    pub sent: u64,
    /// Responses with status 100-399 and a fully read body.
    pub ok: u64,
    pub failed: Failures,
    /// Over all requests, ok and failed, from scheduled time to the end of the
    /// response body, the error, or the timeout (so timeouts count as about
    /// `timeout`). Microsecond resolution.
    pub latency_ms: Latency,
    /// Requests actually handed to the HTTP client (after waiting for a
    /// concurrency permit) per second, over `max(duration, time of the last
    /// hand-over)`. Below `rate` when the target or the concurrency limit could
    /// not keep up, or the generator itself stalled.
    pub achieved_rate: f64,
    /// Response body bytes received, all requests together.
    pub body_bytes: u64,
    /// One entry per second of the run (by scheduled time, `t` = 0, 1, ...),
    /// including seconds in which nothing was scheduled.
    pub timeline: Vec<Second>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failures {
    pub total: u64,
    /// Responses with status >= 400, by code (JSON keys are strings: `"503"`).
    pub status: BTreeMap<u16, u64>,
    /// Could not connect (refused, unreachable, ...).
    pub connect: u64,
    /// No full response within `timeout` of the scheduled time.
    pub timeout: u64,
    /// Anything else: reset, incomplete message, protocol error.
    pub other: u64,
    /// The first few distinct connect/other error messages.
    pub samples: Vec<String>,
}

/// Milliseconds. Invariant: `p50 <= p90 <= p99 <= p999 <= max`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Requests scheduled during second `t` of the run, and how they ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub t: u64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// 99th percentile latency of this second's requests (1% resolution);
    /// 0 when none were scheduled.
    pub p99_ms: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target     {} at {} req/s for {} s (concurrency {}, timeout {} s)",
            self.url, self.rate, self.duration_s, self.concurrency, self.timeout_s
        )?;
        writeln!(
            f,
            "requests   {} sent, {} ok, {} failed; achieved {:.1} req/s; {} body bytes",
            self.sent, self.ok, self.failed.total, self.achieved_rate, self.body_bytes
        )?;
        if self.failed.total > 0 {
            let status: Vec<String> = self
                .failed
                .status
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            writeln!(
                f,
                "failures   status {} ({}), connect {}, timeout {}, other {}",
                self.failed.status.values().sum::<u64>(),
                status.join(", "),
                self.failed.connect,
                self.failed.timeout,
                self.failed.other
            )?;
        }
        let l = &self.latency_ms;
        writeln!(
            f,
            "latency    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, mean {:.3} ms",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        )?;
        for sample in &self.failed.samples {
            writeln!(f, "error      {sample}")?;
        }
        Ok(())
    }
}
