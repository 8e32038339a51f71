//! Alert windows scaled to an SLO's period, and the ring buffers of time buckets that
//! count requests over them.

use std::time::Duration;

/// The SRE Workbook's reference period, which the windows below are defined for.
pub const WORKBOOK_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// Fine buckets per period: 30 s for a 30-day period, a tenth of the shortest window.
pub(crate) const FINE_PER_PERIOD: u64 = 86_400;
/// Coarse buckets per period: 1 h for a 30-day period.
pub(crate) const COARSE_PER_PERIOD: u64 = 720;
/// Fine buckets kept: the longest fine window (6 h) plus the one it partly overlaps.
pub(crate) const FINE_LEN: usize = 721;
/// Coarse buckets kept: the whole period plus the one it partly overlaps.
pub(crate) const COARSE_LEN: usize = 721;

/// A window the engine measures over. The names are the SRE Workbook's for a 30-day
/// period; for another period each is scaled by `period / 30d` (for a 1-hour SLO,
/// [`Window::H1`] is 5 s long), so the alerts spend the same share of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    /// 5 m: short window of the fast page pair.
    M5,
    /// 30 m: short window of the slow page pair.
    M30,
    /// 1 h: long window of the fast page pair; also drives the exhaustion forecast.
    H1,
    /// 6 h: long window of the slow page pair, short window of the ticket pair.
    H6,
    /// 3 d: long window of the ticket pair.
    D3,
    /// The SLO's whole period (30 d in the Workbook): the SLI and the error budget.
    Period,
}

/// Which ring a window is read from, and over how many of its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    Fine(u64),
    Coarse(u64),
}

impl Window {
    pub const ALL: [Window; 6] = [
        Window::M5,
        Window::M30,
        Window::H1,
        Window::H6,
        Window::D3,
        Window::Period,
    ];

    /// The Workbook's name for the window: `"5m"`, `"30m"`, `"1h"`, `"6h"`, `"3d"`,
    /// `"period"`.
    pub fn name(self) -> &'static str {
        match self {
            Window::M5 => "5m",
            Window::M30 => "30m",
            Window::H1 => "1h",
            Window::H6 => "6h",
            Window::D3 => "3d",
            Window::Period => "period",
        }
    }

    pub(crate) fn resolution(self) -> Resolution {
        match self {
            Window::M5 => Resolution::Fine(10),
            Window::M30 => Resolution::Fine(60),
            Window::H1 => Resolution::Fine(120),
            Window::H6 => Resolution::Fine(720),
            Window::D3 => Resolution::Coarse(72),
            Window::Period => Resolution::Coarse(720),
        }
    }

    /// The window's length for an SLO of `period`: `period × workbook length / 30 d`,
    /// rounded to the nanosecond (the engine itself counts in exact fractions of the
    /// period).
    pub fn length(self, period: Duration) -> Duration {
        let (per_period, n) = match self.resolution() {
            Resolution::Fine(n) => (FINE_PER_PERIOD, n),
            Resolution::Coarse(n) => (COARSE_PER_PERIOD, n),
        };
        let per = u128::from(per_period);
        let nanos = (period.as_nanos() * u128::from(n) + per / 2) / per;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The window's length in whole milliseconds, as exported to Prometheus (which has
    /// millisecond resolution): `period × workbook length / 30 d`, rounded.
    pub fn length_ms(self, period: Duration) -> u64 {
        let (per_period, n) = match self.resolution() {
            Resolution::Fine(n) => (FINE_PER_PERIOD, n),
            Resolution::Coarse(n) => (COARSE_PER_PERIOD, n),
        };
        let ms = period.as_millis() * u128::from(n);
        let per = u128::from(per_period);
        u64::try_from((ms + per / 2) / per)
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Request counts of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub total: u64,
    pub bad: u64,
}

/// A ring of time buckets over the engine's clock (nanoseconds since its origin).
///
/// Buckets are `width = span / per_span` wide, kept as that exact fraction (a 1-hour
/// period's fine buckets are 41.666.. ms, and its 1h window exactly 5 s), so edges fall
/// where the period's arithmetic says.
/// Bucket `k` holds the requests of times in `((k - 1) × width, k × width]`, so a window
/// `(t - n × width, t]` ending on a bucket edge is exactly buckets `k - n + 1 ..= k`:
/// open at the start like Prometheus 3's range selectors, and exact whenever `t` is on an
/// edge. Between edges the oldest overlapped bucket is counted by the share of it that
/// lies inside the window (requests assumed spread evenly within a bucket), so a
/// window's count slides smoothly instead of jumping a whole bucket at a time.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    /// Nanoseconds spanned by `per_span` buckets.
    span: u128,
    per_span: u128,
    /// Index of the newest bucket that may hold data; older ones are `head - len + 1 ..`.
    head: u64,
    buckets: Box<[Counts]>,
}

impl Ring {
    /// `per_span` buckets to every `span` (`len` kept).
    pub fn new(span: Duration, per_span: u64, len: usize) -> Ring {
        Ring {
            span: span.as_nanos().max(1),
            per_span: u128::from(per_span.max(1)),
            head: 0,
            buckets: vec![Counts::default(); len.max(1)].into_boxed_slice(),
        }
    }

    /// The bucket of time `t`: `ceil(t / width)`.
    fn index(&self, t: u64) -> u64 {
        let k = (u128::from(t) * self.per_span).div_ceil(self.span);
        u64::try_from(k).unwrap_or(u64::MAX)
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn slot(&self, index: u64) -> usize {
        // The remainder is below `len`, which is a `usize`.
        (index % self.len()) as usize
    }

    /// Counts one request at time `t`. Moving forward clears the buckets it passes (at
    /// most the whole ring), so the cost is O(1) amortised. A request older than the ring
    /// (a caller's clock read long before it got the lock) is dropped.
    pub fn add(&mut self, t: u64, bad: bool) {
        let k = self.index(t);
        if k > self.head {
            let steps = (k - self.head).min(self.len());
            for i in 1..=steps {
                let slot = self.slot(self.head + i);
                self.buckets[slot] = Counts::default();
            }
            self.head = k;
        } else if self.head - k >= self.len() {
            return;
        }
        let slot = self.slot(k);
        let b = &mut self.buckets[slot];
        b.total += 1;
        b.bad += u64::from(bad);
    }

    fn get(&self, index: u64) -> Counts {
        if index > self.head || self.head - index >= self.len() {
            Counts::default()
        } else {
            self.buckets[self.slot(index)]
        }
    }

    /// `(total, bad)` over the window `(t - n × width, t]`. `n` must be below the ring's
    /// length, or the oldest part of the window reads as empty.
    pub fn sum(&self, t: u64, n: u64) -> (f64, f64) {
        let c = self.index(t);
        let mut total = 0u64;
        let mut bad = 0u64;
        for i in (c + 1).saturating_sub(n)..=c {
            let b = self.get(i);
            total += b.total;
            bad += b.bad;
        }
        let (mut total, mut bad) = (total as f64, bad as f64);
        if c >= n {
            // The window starts inside bucket c - n; the share of it inside the window is
            // the share of bucket c not yet elapsed.
            // (c × width - t) / width, in whole numbers until the division.
            let ahead = u128::from(c) * self.span - u128::from(t) * self.per_span;
            let share = ahead as f64 / self.span as f64;
            let b = self.get(c - n);
            total += share * b.total as f64;
            bad += share * b.bad as f64;
        }
        (total, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workbook_windows_at_30_days() {
        let p = WORKBOOK_PERIOD;
        let mins = |w: Window| w.length(p).as_secs() / 60;
        assert_eq!(mins(Window::M5), 5);
        assert_eq!(mins(Window::M30), 30);
        assert_eq!(mins(Window::H1), 60);
        assert_eq!(mins(Window::H6), 360);
        assert_eq!(mins(Window::D3), 3 * 24 * 60);
        assert_eq!(mins(Window::Period), 30 * 24 * 60);
        assert_eq!(Window::H1.length_ms(p), 3_600_000);
    }

    #[test]
    fn windows_scale_with_the_period() {
        // 1 h period: 1h × 1h/30d = 5 s; 5m × 1h/30d = 0.4166.. s.
        let hour = Duration::from_secs(3600);
        assert_eq!(Window::H1.length_ms(hour), 5000);
        assert_eq!(Window::M5.length_ms(hour), 417);
        assert_eq!(Window::Period.length_ms(hour), 3_600_000);
        assert_eq!(Window::H1.length(hour), Duration::from_secs(5));
        assert_eq!(Window::M5.length(hour), Duration::from_nanos(416_666_667));
        // 28 d: 5m × 28/30 = 4m40s.
        let four_weeks = Duration::from_secs(28 * 24 * 3600);
        assert_eq!(Window::M5.length(four_weeks), Duration::from_secs(280));
    }

    #[test]
    fn fractional_widths_keep_exact_edges() {
        // A 1-hour period: fine buckets of 3600 s / 86 400 = 41.666.. ms. 11 s is the edge
        // of bucket 264 exactly, and the 1h window (120 buckets) is (6 s, 11 s].
        let mut r = Ring::new(Duration::from_secs(3600), FINE_PER_PERIOD, FINE_LEN);
        let s = |n: u64| n * 1_000_000_000;
        r.add(s(6), false);
        r.add(s(6) + 1, true);
        r.add(s(11), true);
        assert_eq!(r.sum(s(11), 120), (2.0, 2.0));
    }

    #[test]
    fn ring_windows_are_open_at_the_start() {
        let mut r = Ring::new(Duration::from_nanos(10), 1, 5);
        r.add(10, false); // bucket 1: (0, 10]
        r.add(11, true); // bucket 2: (10, 20]
        r.add(20, false); // bucket 2
        // (0, 20]: everything.
        assert_eq!(r.sum(20, 2), (3.0, 1.0));
        // (10, 20]: not the request at 10.
        assert_eq!(r.sum(20, 1), (2.0, 1.0));
        // (5, 25]: bucket 3 (empty), bucket 2, half of bucket 1.
        assert_eq!(r.sum(25, 2), (2.5, 1.0));
    }

    #[test]
    fn ring_forgets_and_drops_what_is_too_old() {
        let mut r = Ring::new(Duration::from_nanos(10), 1, 3);
        r.add(10, true);
        r.add(1000, false);
        assert_eq!(r.sum(1000, 2), (1.0, 0.0));
        // Far behind the head: dropped rather than counted into a reused slot.
        r.add(10, true);
        assert_eq!(r.sum(1000, 2), (1.0, 0.0));
        // Just behind the head but still in the ring: counted.
        r.add(985, true);
        assert_eq!(r.sum(1000, 2), (2.0, 1.0));
    }
}
