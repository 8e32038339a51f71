//! The recorder task: owns every histogram and counter, and turns them into the [`Report`].

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::Config;
use crate::report::{Failures, Latency, Report, Second};
use crate::request::{Kind, Outcome};

/// Distinct error messages kept in [`Failures::samples`].
const MAX_SAMPLES: usize = 10;

/// Owned by the recorder task only, so none of it needs synchronisation.
pub(crate) struct Recorder {
    /// Microseconds, 3 significant digits, grows as needed.
    latency: Histogram<u64>,
    seconds: Vec<SecondAcc>,
    ok: u64,
    failed: Failures,
    issued: u64,
    last_issued: Duration,
    body_bytes: u64,
}

struct SecondAcc {
    sent: u64,
    ok: u64,
    failed: u64,
    /// Microseconds at 2 significant digits with u32 counts: a timeline
    /// histogram per second of a long run has to stay small.
    latency: Option<Histogram<u32>>,
}

pub(crate) async fn record(mut rx: mpsc::UnboundedReceiver<Outcome>, seconds: u64) -> Recorder {
    let mut rec = Recorder {
        latency: new_histogram(3),
        seconds: (0..seconds)
            .map(|_| SecondAcc {
                sent: 0,
                ok: 0,
                failed: 0,
                latency: None,
            })
            .collect(),
        ok: 0,
        failed: Failures::default(),
        issued: 0,
        last_issued: Duration::ZERO,
        body_bytes: 0,
    };
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        for outcome in batch.drain(..) {
            rec.add(outcome);
        }
    }
    rec
}

/// Auto-resizing histograms only fail to build for sigfig > 5.
fn new_histogram<T: hdrhistogram::Counter>(sigfig: u8) -> Histogram<T> {
    match Histogram::new(sigfig) {
        Ok(h) => h,
        Err(e) => unreachable!("histogram with {sigfig} significant digits: {e:?}"),
    }
}

/// Records with auto-resize. (`saturating_record` would not resize: it
/// clamps to the current, tiny, initial range.) Only values beyond
/// `i64::MAX / 2` µs fail, and those are clamped.
fn record_us<T: hdrhistogram::Counter>(h: &mut Histogram<T>, us: u64) {
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds to milliseconds; `as f64` is exact below 2^53 µs (285 years).
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Recorder {
    fn add(&mut self, o: Outcome) {
        let us = micros(o.latency);
        record_us(&mut self.latency, us);
        self.body_bytes += o.body_bytes;
        if let Some(at) = o.issued {
            self.issued += 1;
            self.last_issued = self.last_issued.max(at);
        }
        let ok = matches!(o.kind, Kind::Ok);
        let f = &mut self.failed;
        match o.kind {
            Kind::Ok => self.ok += 1,
            Kind::Status(code) => *f.status.entry(code).or_default() += 1,
            Kind::Timeout => f.timeout += 1,
            Kind::Connect(msg) => {
                f.connect += 1;
                keep_sample(&mut f.samples, msg);
            }
            Kind::Other(msg) => {
                f.other += 1;
                keep_sample(&mut f.samples, msg);
            }
        }
        if !ok {
            f.total += 1;
        }
        // offset < duration, so the index is in range; clamp anyway rather
        // than trust float rounding near the last second.
        let idx = usize::try_from(o.offset.as_secs()).unwrap_or(usize::MAX);
        let last = self.seconds.len().saturating_sub(1);
        if let Some(sec) = self.seconds.get_mut(idx.min(last)) {
            sec.sent += 1;
            if ok {
                sec.ok += 1;
            } else {
                sec.failed += 1;
            }
            record_us(sec.latency.get_or_insert_with(|| new_histogram(2)), us);
        }
    }

    pub(crate) fn report(self, cfg: &Config, sent: u64) -> Report {
        let h = &self.latency;
        let latency_ms = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: ms(h.value_at_quantile(0.5)),
                p90: ms(h.value_at_quantile(0.9)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
                mean: round3(h.mean() / 1000.0),
            }
        };
        let span = cfg.duration.max(self.last_issued).as_secs_f64();
        let timeline = self
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| Second {
                t: t as u64,
                sent: s.sent,
                ok: s.ok,
                failed: s.failed,
                p99_ms: s
                    .latency
                    .as_ref()
                    .map_or(0.0, |h| ms(h.value_at_quantile(0.99))),
            })
            .collect();
        debug_assert_eq!(sent, self.ok + self.failed.total);
        Report {
            url: cfg.url.to_string(),
            rate: cfg.rate,
            duration_s: cfg.duration.as_secs_f64(),
            concurrency: cfg.concurrency,
            timeout_s: cfg.timeout.as_secs_f64(),
            sent,
            ok: self.ok,
            failed: self.failed,
            latency_ms,
            achieved_rate: round3(self.issued as f64 / span),
            body_bytes: self.body_bytes,
            timeline,
        }
    }
}

fn keep_sample(samples: &mut Vec<String>, msg: Option<String>) {
    if let Some(msg) = msg
        && samples.len() < MAX_SAMPLES
        && !samples.contains(&msg)
    {
        samples.push(msg);
    }
}
