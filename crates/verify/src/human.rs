//! Figures for people: durations in milliseconds or seconds, shares as percentages.

/// A duration given in milliseconds: "0.8 ms", "312 ms", "1.4 s", "30 s", "125 s"; "-" when
/// it is not a number.
pub(crate) fn millis(ms: f64) -> String {
    if !ms.is_finite() {
        return "-".to_owned();
    }
    // Thresholds sit where rounding would carry into the next unit ("1000 ms", "10.0 ms").
    if ms < 9.95 && ms.fract() != 0.0 {
        format!("{ms:.1} ms")
    } else if ms < 999.5 {
        format!("{ms:.0} ms")
    } else if ms < 99_950.0 {
        format!("{} s", short(ms / 1000.0))
    } else {
        format!("{:.0} s", ms / 1000.0)
    }
}

/// A measured duration that may be missing: [`millis`], or "-".
pub(crate) fn maybe_millis(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| millis(ms as f64))
}

/// A share (1.0 is all of it) as a percentage, "12.5%"; "-" when missing.
pub(crate) fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), |share| format!("{:.1}%", share * 100.0))
}

/// A number with at most one decimal and no trailing ".0": "80", "80.5", "200".
pub(crate) fn short(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
}

/// "PASS" or "FAIL".
pub(crate) fn verdict(passed: bool) -> &'static str {
    if passed { "PASS" } else { "FAIL" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_their_unit() {
        let cases = [
            (0.0, "0 ms"),
            (0.84, "0.8 ms"),
            (7.0, "7 ms"),
            (9.96, "10 ms"),
            (312.0, "312 ms"),
            (999.4, "999 ms"),
            (999.6, "1 s"),
            (1400.0, "1.4 s"),
            (30_000.0, "30 s"),
            (30_040.0, "30 s"),
            (125_000.0, "125 s"),
            (f64::NAN, "-"),
        ];
        for (ms, want) in cases {
            assert_eq!(millis(ms), want, "{ms} ms");
        }
        assert_eq!(maybe_millis(Some(312)), "312 ms");
        assert_eq!(maybe_millis(None), "-");
    }

    #[test]
    fn shares_and_short_numbers() {
        assert_eq!(percent(Some(0.125)), "12.5%");
        assert_eq!(percent(Some(1.5)), "150.0%");
        assert_eq!(percent(None), "-");
        assert_eq!(short(80.0), "80");
        assert_eq!(short(80.26), "80.3");
        assert_eq!(short(93.333), "93.3");
    }
}
