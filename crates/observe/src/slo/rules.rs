//! Export of the SLOs as Prometheus rules (Sloth-style), and a `promtool test rules` file
//! that proves them.
//!
//! The rules compute what the engine computes, from the counters it exports
//! (`bulwark_slo_requests_total`, `bulwark_slo_errors_total`): one recording rule per
//! window for the error ratio, then alerting rules with the same windows (scaled to the
//! period), factors, minimum-traffic guard, tiers and page-inhibits-ticket. The YAML is
//! written by hand, for people to read: block scalars for expressions, comments, every
//! string value quoted (an SLO named `true` or `1e3` stays a string).

use std::fmt::Write as _;

use spec::Slo;

use super::{BURN_PAIRS, BurnPair, METRIC_ERRORS, METRIC_REQUESTS, Tier, Window};

/// Alert name of the burn-rate alerts; `severity` is `page` or `ticket`.
pub const ALERT_BURN: &str = "BulwarkSloBurnRate";
/// Alert name of the no-data alert (`severity="ticket"`, as bulwark's own alerting files it).
pub const ALERT_NO_DATA: &str = "BulwarkSloNoData";

/// The Prometheus rule file for `slos` (`(service, slo)` pairs, e.g. from
/// [`super::stack_slos`]): one group per SLO.
pub fn rules(slos: &[(&str, &Slo)]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Prometheus rules for bulwark's SLOs, generated from the stack file.\n\
         # Multi-window multi-burn-rate alerts (SRE Workbook, ch. 5), with the Workbook's\n\
         # 30-day windows scaled to each SLO's period. Inputs: the counters\n\
         # bulwark_slo_requests_total and bulwark_slo_errors_total{service,slo} on /metrics.\n\
         groups:\n",
    );
    if slos.is_empty() {
        out.truncate(out.len() - 1);
        out.push_str(" []\n");
        return out;
    }
    for (service, slo) in slos {
        group(&mut out, service, slo);
    }
    out
}

fn group(out: &mut String, service: &str, slo: &Slo) {
    let s = Ctx { service, slo };
    let _ = writeln!(
        out,
        "  # {service}/{}: {} {} % over {}",
        slo.name,
        kind_name(slo),
        percent(slo.objective),
        prom_duration(slo.period.as_millis().try_into().unwrap_or(u64::MAX))
    );
    let _ = writeln!(
        out,
        "  - name: {}",
        q(&format!("bulwark-slo-{service}-{}", slo.name))
    );
    out.push_str("    rules:\n");
    for window in windows_used(slo) {
        let range = s.range(window);
        let _ = writeln!(out, "      - record: {}", q(&s.record(window)));
        out.push_str("        expr: |\n");
        let _ = writeln!(
            out,
            "          sum by (service, slo) (rate({METRIC_ERRORS}_total{}[{range}]))",
            s.matchers()
        );
        out.push_str("          /\n");
        let _ = writeln!(
            out,
            "          sum by (service, slo) (rate({METRIC_REQUESTS}_total{}[{range}]))",
            s.matchers()
        );
    }
    for tier in [Tier::Page, Tier::Ticket, Tier::NoData] {
        let Some(expr) = s.alert_expr(tier) else {
            continue;
        };
        let name = if tier == Tier::NoData {
            ALERT_NO_DATA
        } else {
            ALERT_BURN
        };
        let _ = writeln!(out, "      - alert: {}", q(name));
        out.push_str("        expr: |\n");
        for line in expr.lines() {
            let _ = writeln!(out, "          {line}");
        }
        out.push_str("        labels:\n");
        for (k, v) in s.labels(tier) {
            let _ = writeln!(out, "          {k}: {}", q(&v));
        }
        out.push_str("        annotations:\n");
        for (k, v) in s.annotations(tier) {
            let _ = writeln!(out, "          {k}: {}", q(&v));
        }
    }
}

/// The windows the enabled alerts read, in [`Window::ALL`] order.
fn windows_used(slo: &Slo) -> Vec<Window> {
    let mut used: Vec<Window> = BURN_PAIRS
        .iter()
        .filter(|p| enabled(slo, p.tier))
        .flat_map(|p| [p.long, p.short])
        .collect();
    used.sort();
    used.dedup();
    used
}

fn enabled(slo: &Slo, tier: Tier) -> bool {
    match tier {
        Tier::Page => slo.alerts.page,
        Tier::Ticket => slo.alerts.ticket,
        Tier::NoData => !slo.alerts.no_data.is_zero(),
    }
}

struct Ctx<'a> {
    service: &'a str,
    slo: &'a Slo,
}

impl Ctx<'_> {
    fn matchers(&self) -> String {
        format!(
            "{{service=\"{}\", slo=\"{}\"}}",
            self.service, self.slo.name
        )
    }

    fn range(&self, window: Window) -> String {
        prom_duration(window.length_ms(self.slo.period))
    }

    fn record(&self, window: Window) -> String {
        format!("bulwark_slo:error_ratio:rate{}", self.range(window))
    }

    /// `(14.4 * (1 - 0.999))`: the objective in its exact (shortest round-trip) form, so
    /// Prometheus compares against the same threshold the engine uses.
    fn threshold(&self, factor: f64) -> String {
        format!("({factor} * (1 - {}))", self.slo.objective)
    }

    fn pair_expr(&self, pair: &BurnPair) -> String {
        let m = self.matchers();
        let t = self.threshold(pair.factor);
        let mut e = format!(
            "(\n    {long}{m} > {t}\n  and on (service, slo)\n    {short}{m} > {t}",
            long = self.record(pair.long),
            short = self.record(pair.short),
        );
        let min = self.slo.alerts.min_requests;
        if min > 0 {
            let _ = write!(
                e,
                "\n  and on (service, slo)\n    sum by (service, slo) \
                 (increase({METRIC_REQUESTS}_total{m}[{}])) >= {min}",
                self.range(pair.long)
            );
        }
        e.push_str("\n)");
        e
    }

    fn tier_expr(&self, tier: Tier) -> String {
        BURN_PAIRS
            .iter()
            .filter(|p| p.tier == tier)
            .map(|p| self.pair_expr(p))
            .collect::<Vec<_>>()
            .join("\nor\n")
    }

    fn alert_expr(&self, tier: Tier) -> Option<String> {
        if !enabled(self.slo, tier) {
            return None;
        }
        Some(match tier {
            Tier::Page => self.tier_expr(Tier::Page),
            Tier::Ticket if self.slo.alerts.page => format!(
                "{}\nunless on (service, slo)\n(\n{}\n)",
                self.tier_expr(Tier::Ticket),
                indent(&self.tier_expr(Tier::Page), "  ")
            ),
            Tier::Ticket => self.tier_expr(Tier::Ticket),
            Tier::NoData => {
                // No increase over the window, and the counter already existed at its
                // start: a bulwark that just started is not "quiet" yet.
                let d = self.no_data_ms().unwrap_or(0);
                let range = prom_duration(d);
                let m = self.matchers();
                format!(
                    "sum by (service, slo) (increase({METRIC_REQUESTS}_total{m}[{range}])) == 0\n\
                     and on (service, slo)\n\
                     sum by (service, slo) ({METRIC_REQUESTS}_total{m} offset {range})"
                )
            }
        })
    }

    fn no_data_ms(&self) -> Option<u64> {
        let d = self.slo.alerts.no_data;
        (!d.is_zero()).then(|| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    fn labels(&self, tier: Tier) -> [(&'static str, String); 3] {
        let severity = match tier {
            Tier::Page => "page",
            Tier::Ticket | Tier::NoData => "ticket",
        };
        [
            ("severity", severity.to_owned()),
            ("service", self.service.to_owned()),
            ("slo", self.slo.name.clone()),
        ]
    }

    fn pair_text(&self, pair: &BurnPair) -> String {
        format!(
            "above {}x over {} and {}",
            pair.factor,
            self.range(pair.long),
            self.range(pair.short)
        )
    }

    /// Static text (no templates), so a test can expect it exactly.
    fn annotations(&self, tier: Tier) -> [(&'static str, String); 2] {
        let who = format!("{}/{}", self.service, self.slo.name);
        let what = format!(
            "{} {} % over {}",
            kind_name(self.slo),
            percent(self.slo.objective),
            prom_duration(self.slo.period.as_millis().try_into().unwrap_or(u64::MAX))
        );
        let pairs = |tier: Tier| {
            BURN_PAIRS
                .iter()
                .filter(|p| p.tier == tier)
                .map(|p| self.pair_text(p))
                .collect::<Vec<_>>()
                .join(", or ")
        };
        match tier {
            Tier::Page => [
                ("summary", format!("{who}: error budget burning fast")),
                (
                    "description",
                    format!("SLO {what}: burn rate {}.", pairs(Tier::Page)),
                ),
            ],
            Tier::Ticket => [
                ("summary", format!("{who}: error budget burning")),
                (
                    "description",
                    format!("SLO {what}: burn rate {}.", pairs(Tier::Ticket)),
                ),
            ],
            Tier::NoData => [
                ("summary", format!("{who}: no requests")),
                (
                    "description",
                    format!(
                        "SLO {what}: no request at all for {}.",
                        prom_duration(self.no_data_ms().unwrap_or(0))
                    ),
                ),
            ],
        }
    }
}

fn kind_name(slo: &Slo) -> String {
    match slo.kind {
        spec::SloKind::Availability { .. } => "availability".to_owned(),
        spec::SloKind::Latency { threshold } => format!(
            "latency < {}",
            prom_duration(threshold.as_millis().try_into().unwrap_or(u64::MAX))
        ),
    }
}

/// `0.999` → `99.9`.
fn percent(objective: f64) -> String {
    let s = format!("{:.9}", objective * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Milliseconds as a Prometheus duration: `3d`, `2d19h12m`, `417ms`, `0s`.
pub(crate) fn prom_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    out
}

/// A `promtool test rules` file for the rules [`rules`] makes from the same `slos`,
/// which must be saved as `rule_file` (relative to the test file's directory).
///
/// Per SLO, synthetic counters and the alerts they must raise at the time the SLO's
/// windows and factors predict:
/// * page enabled: clean traffic for a full 6h window (scaled), then 100 % errors. After
///   `d` of errors the long windows' error ratio is `d / 1h` and `d / 6h`, so the page
///   fires once `d > 14.4 × budget × 1h` (or `6 × budget × 6h`, if sooner); the test
///   expects nothing at the last clean sample and the page, alone (the ticket, burning
///   too, is inhibited), at the first sample 10 % past that point. A wrong factor or
///   window moves the firing time and fails the test.
/// * page enabled: a steady burn rate of 8 from the start (above the slow pair's 6,
///   below the fast pair's 14.4): the page fires at the second sample.
/// * ticket enabled: a steady burn rate of 4 (above 1, below 6): the ticket fires at
///   the second sample and the page does not.
/// * no_data enabled: counters that never move: the no-data alert fires once they have
///   been flat for `no_data`, not one evaluation before.
///
/// Series intervals are at most a fifth of the 5m window (scaled), so every rate has
/// samples, picked from a list in which each divides the next (1ms, 2ms, 10ms, .. 1m);
/// the evaluation interval is the smallest of them. Traffic is at least `min_requests`
/// per interval, so the minimum-traffic guard holds from the second sample.
///
/// promtool evaluates every rule at every evaluation interval up to each case's last
/// check, and the interval is one for the whole file: an SLO with a period of minutes
/// next to one of days makes the days-long case run in millisecond steps, which takes
/// minutes. Test such a mix one SLO at a time (the slice may hold any subset).
pub fn rules_test(slos: &[(&str, &Slo)], rule_file: &str) -> String {
    let mut cases: Vec<Case> = Vec::new();
    for (service, slo) in slos {
        let s = Ctx { service, slo };
        let budget = slo.error_budget();
        let interval = nice_interval(Window::M5.length_ms(slo.period) / 5);
        // Enough requests per interval that 4 × the budget is a whole number of errors
        // (at least 400, so rounding moves the burn rate by 0.25 % at most), and that the
        // minimum-traffic guard holds.
        let per_interval = ((100.0 / budget).ceil() as u64)
            .max(100)
            .max(slo.alerts.min_requests);
        if let Some(errors_for) = page_after(slo).filter(|_| slo.alerts.page) {
            // Clean history covering the longest page window, then 100 % errors.
            let clean = Window::H6.length_ms(slo.period).div_ceil(interval) + 1;
            let start = clean * interval;
            let k = errors_for.div_ceil(interval).max(1);
            cases.push(Case {
                s: Ctx { service, slo },
                comment: format!(
                    "{service}/{}: clean for {}, then 100 % errors: the page fires {} later \
                     (the first sample past {} of errors); the ticket is inhibited",
                    slo.name,
                    prom_duration(start),
                    prom_duration(k * interval),
                    prom_duration(errors_for)
                ),
                interval,
                requests: format!("0+{per_interval}x{}", clean + k + 1),
                errors: format!("0x{} 0+{per_interval}x{}", clean - 1, k + 1),
                alert: ALERT_BURN,
                tier: Tier::Page,
                quiet_at: start,
                fires_at: start + k * interval,
            });
        }
        // Constant burn rates from the start, firing at the second sample: 8 (over the
        // slow page pair's 6, under the fast one's 14.4) pages; 4 only tickets.
        let steady = [(8.0, Tier::Page), (4.0, Tier::Ticket)];
        for (burn, tier) in steady {
            if !enabled(slo, tier) || burn * budget >= 1.0 {
                continue;
            }
            let errors = (burn * budget * per_interval as f64).round() as u64;
            cases.push(Case {
                s: Ctx { service, slo },
                comment: format!(
                    "{service}/{}: {errors} errors in every {per_interval} requests (burn \
                     rate {:.2}): {}",
                    slo.name,
                    errors as f64 / per_interval as f64 / budget,
                    if tier == Tier::Page {
                        "a page through the 6h/30m pair only; the ticket is inhibited"
                    } else {
                        "a ticket, no page"
                    }
                ),
                interval,
                requests: format!("0+{per_interval}x3"),
                errors: format!("0+{errors}x3"),
                alert: ALERT_BURN,
                tier,
                quiet_at: 0,
                fires_at: interval,
            });
        }
        if let Some(no_data) = s.no_data_ms() {
            let interval = nice_interval(no_data / 5);
            let steps = no_data / interval + 2;
            cases.push(Case {
                s: Ctx { service, slo },
                comment: format!(
                    "{service}/{}: no requests at all: no data for {}",
                    slo.name,
                    prom_duration(no_data)
                ),
                interval,
                requests: format!("0x{steps}"),
                errors: format!("0x{steps}"),
                alert: ALERT_NO_DATA,
                tier: Tier::NoData,
                // Set below, once the evaluation interval is known.
                quiet_at: 0,
                fires_at: no_data,
            });
        }
    }

    let eval = cases.iter().map(|c| c.interval).min().unwrap_or(60_000);
    let mut out = String::new();
    out.push_str(
        "# promtool test rules file for bulwark's SLO rules, generated from the stack file.\n",
    );
    let _ = writeln!(out, "rule_files:\n  - {}", q(rule_file));
    let _ = writeln!(out, "evaluation_interval: {}", prom_duration(eval));
    if cases.is_empty() {
        out.push_str("tests: []\n");
        return out;
    }
    out.push_str("tests:\n");
    for case in &mut cases {
        if case.tier == Tier::NoData {
            // The first evaluation at or after `no_data`, and the one before it.
            case.fires_at = case.fires_at.div_ceil(eval) * eval;
            case.quiet_at = case.fires_at - eval;
        }
        case.write(&mut out);
    }
    out
}

/// How long 100 % errors after a clean history take to page, with a 10 % margin over
/// the exact point (so Prometheus' rate extrapolation cannot decide the outcome):
/// the sooner of the page pairs. `None` when a page can never fire (an objective so low
/// that even 100 % errors burn slower than the factors).
fn page_after(slo: &Slo) -> Option<u64> {
    let budget = slo.error_budget();
    BURN_PAIRS
        .iter()
        .filter(|p| p.tier == Tier::Page && 1.1 * p.factor * budget < 1.0)
        // The long window is the binding one: after d of errors its ratio is d / long,
        // the short one's is min(1, d / short), larger.
        .map(|p| (1.1 * p.factor * budget * p.long.length_ms(slo.period) as f64).round() as u64)
        .min()
}

struct Case<'a> {
    s: Ctx<'a>,
    comment: String,
    /// Series interval, ms.
    interval: u64,
    /// Series values in promtool's expanding notation.
    requests: String,
    errors: String,
    alert: &'static str,
    tier: Tier,
    /// An evaluation time (ms) at which no alert of `alert`'s name fires.
    quiet_at: u64,
    /// An evaluation time (ms) at which exactly this tier's alert fires.
    fires_at: u64,
}

impl Case<'_> {
    fn write(&self, out: &mut String) {
        let m = self.s.matchers();
        let _ = writeln!(out, "  # {}", self.comment);
        let _ = writeln!(out, "  - interval: {}", prom_duration(self.interval));
        out.push_str("    input_series:\n");
        for (metric, values) in [
            (METRIC_REQUESTS, &self.requests),
            (METRIC_ERRORS, &self.errors),
        ] {
            let _ = writeln!(out, "      - series: '{metric}_total{m}'");
            let _ = writeln!(out, "        values: \"{values}\"");
        }
        out.push_str("    alert_rule_test:\n");
        let _ = writeln!(out, "      - eval_time: {}", prom_duration(self.quiet_at));
        let _ = writeln!(out, "        alertname: {}", q(self.alert));
        out.push_str("        exp_alerts: []\n");
        let _ = writeln!(out, "      - eval_time: {}", prom_duration(self.fires_at));
        let _ = writeln!(out, "        alertname: {}", q(self.alert));
        out.push_str("        exp_alerts:\n");
        out.push_str("          - exp_labels:\n");
        for (k, v) in self.s.labels(self.tier) {
            let _ = writeln!(out, "              {k}: {}", q(&v));
        }
        out.push_str("            exp_annotations:\n");
        for (k, v) in self.s.annotations(self.tier) {
            let _ = writeln!(out, "              {k}: {}", q(&v));
        }
    }
}

/// The largest of 1ms, 2ms, 10ms, 20ms, 100ms, 200ms, 1s, 2s, 10s, 20s, 1m not above
/// `limit` (ms); each divides the next, so the smallest one used divides them all.
fn nice_interval(limit: u64) -> u64 {
    [60_000, 20_000, 10_000, 2000, 1000, 200, 100, 20, 10, 2, 1]
        .into_iter()
        .find(|&i| i <= limit)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(prom_duration(0), "0s");
        assert_eq!(prom_duration(417), "417ms");
        assert_eq!(prom_duration(300_000), "5m");
        assert_eq!(prom_duration(259_200_000), "3d");
        assert_eq!(prom_duration(241_920_000), "2d19h12m");
        assert_eq!(prom_duration(61_001), "1m1s1ms");
    }

    #[test]
    fn intervals() {
        assert_eq!(nice_interval(60_000), 60_000);
        assert_eq!(nice_interval(56_000), 20_000);
        assert_eq!(nice_interval(83), 20);
        assert_eq!(nice_interval(7), 2);
        assert_eq!(nice_interval(0), 1);
    }

    #[test]
    fn percents() {
        assert_eq!(percent(99.9 / 100.0), "99.9");
        assert_eq!(percent(0.99), "99");
    }
}
