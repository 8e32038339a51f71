//! The SLO engine driven by a synthetic clock: every expected number is computed by hand
//! in the comments next to it.
//!
//! Conventions: `t0` is the engine's origin; "minute m" is `t0 + m × 60 s`; traffic is
//! recorded at exact minute marks and evaluated at minute marks, which are bucket edges
//! for a 30-day SLO (fine buckets 30 s, coarse buckets 1 h), so window counts are exact.
//! A window ending at `t` holds the requests of `(t - length, t]`: the 5m window at
//! minute m holds minutes m-4 ..= m. Budget b = 1 - 0.999 = 0.001.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{LocalReason, OutcomeSink, RequestOutcome};
use observe::slo::{
    AlertTransition, SloEngine, SloReport, SloSink, Tier, TierChange, TierState, Verdict, Window,
    classify,
};
use prometheus_client::registry::Registry;
use proptest::prelude::*;
use spec::SloKind;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn stack(slos: &str) -> spec::Stack {
    let src = format!(
        "[services.web]\nrun = [\"x\"]\nexpose = {{ listen = \"127.0.0.1:8080\" }}\n{slos}"
    );
    spec::parse(&src, Path::new("stack.toml")).unwrap_or_else(|e| panic!("{e}"))
}

const AVAILABILITY: &str = r#"
[[services.web.slo]]
name = "availability"
kind = "availability"
objective = 99.9
"#;

fn outcome(status: u16) -> RequestOutcome<'static> {
    RequestOutcome {
        service: "web",
        status,
        duration: Duration::from_millis(20),
        local: None,
        revision: None,
    }
}

#[track_caller]
fn approx(actual: f64, expected: f64) {
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "expected {expected}, got {actual}"
    );
}

/// An engine with a clock counted in minutes from its origin.
struct Sim {
    engine: SloEngine,
    t0: Instant,
}

impl Sim {
    fn new(slos: &str) -> Sim {
        let t0 = Instant::now();
        Sim {
            engine: SloEngine::new(&stack(slos), t0),
            t0,
        }
    }

    fn at(&self, minute: u64) -> Instant {
        self.t0 + MINUTE * u32::try_from(minute).expect("minute fits")
    }

    /// `good` requests with status 200 and `bad` with 503 at minute `m`.
    fn traffic(&self, m: u64, good: u32, bad: u32) {
        for _ in 0..good {
            self.engine.record(&outcome(200), self.at(m));
        }
        for _ in 0..bad {
            self.engine.record(&outcome(503), self.at(m));
        }
    }

    fn eval(&self, m: u64) -> SloReport {
        let mut reports = self.engine.evaluate(self.at(m));
        assert_eq!(reports.len(), 1);
        reports.remove(0)
    }
}

/// `(window, total, bad, burn rate)` of a report, for compact assertions.
#[track_caller]
fn windows(r: &SloReport, expected: &[(Window, f64, f64, f64)]) {
    for &(w, total, bad, burn) in expected {
        let got = r.window(w);
        assert_eq!(got.window, w);
        approx(got.total, total);
        approx(got.bad, bad);
        approx(got.burn_rate, burn);
    }
}

fn transition(r: &SloReport, tier: Tier, at: Instant, change: TierChange) -> AlertTransition {
    AlertTransition {
        service: r.service.clone(),
        slo: r.slo.clone(),
        tier,
        at,
        change,
    }
}

/// 30 (then 40) days at 10 requests a minute with a 5-minute outage on day 10.
#[test]
// Long on purpose: one 30-day scenario; each step asserts on the state the previous one left.
#[allow(clippy::too_many_lines)]
fn thirty_day_scenario() {
    let sim = Sim::new(AVAILABILITY);
    let incident = 14_401..=14_405; // day 10 + 1 min ..= day 10 + 5 min
    let traffic = |m: u64| {
        if incident.contains(&m) {
            sim.traffic(m, 0, 10);
        } else {
            sim.traffic(m, 10, 0);
        }
    };

    // Day 0 to day 10: minutes 1 ..= 14 400, all good.
    for m in 1..=14_400 {
        traffic(m);
    }
    let r = sim.eval(14_400);
    // 10 per minute: 5m = 50, 30m = 300, 1h = 600, 6h = 3 600, 3d = 4 320 min = 43 200,
    // period so far = 14 400 min = 144 000. Nothing bad.
    windows(
        &r,
        &[
            (Window::M5, 50.0, 0.0, 0.0),
            (Window::M30, 300.0, 0.0, 0.0),
            (Window::H1, 600.0, 0.0, 0.0),
            (Window::H6, 3600.0, 0.0, 0.0),
            (Window::D3, 43_200.0, 0.0, 0.0),
            (Window::Period, 144_000.0, 0.0, 0.0),
        ],
    );
    assert_eq!(r.sli, Some(1.0));
    assert_eq!(r.error_budget_remaining, 1.0);
    assert_eq!(r.time_to_exhaustion, None, "nothing burns");
    assert_eq!(
        (r.page, r.ticket, r.no_data),
        (
            TierState::Inactive,
            TierState::Inactive,
            TierState::Inactive
        )
    );
    assert!(r.transitions.is_empty());
    assert_eq!(r.window(Window::H1).length, HOUR);
    assert_eq!(r.window(Window::D3).length, 3 * DAY);
    assert_eq!(r.period, 30 * DAY);

    // The outage and the 6 h after it, evaluated every minute.
    let mut all = Vec::new();
    let mut reports = std::collections::BTreeMap::new();
    for m in 14_401..=14_770 {
        traffic(m);
        let r = sim.eval(m);
        all.extend(r.transitions.iter().cloned());
        reports.insert(m, r);
    }

    // Minute 14 401, the first bad minute: 10 bad.
    //   5m:  minutes 14 397..=14 401: 10 / 50 = 0.2 → burn 0.2 / 0.001 = 200
    //   1h:  10 / 600 = 1/60 → burn 16.67 > 14.4, and 5m's 200 > 14.4: the fast pair pages
    //   30m: 10 / 300 → burn 33.3;  6h: 10 / 3 600 → burn 2.78 < 6: the slow pair does not
    //   3d:  10 / 43 200 → burn 0.23 < 1: no ticket
    //   period: 144 010 requests, 10 bad; allowed 0.001 × 144 010 = 144.01;
    //     remaining 1 - 10 / 144.01 = 0.930560..
    //   exhaustion at the 1h burn: 0.930560 × 30 d / 16.67 = 0.930560 × 155 520 s
    //     = 144 720.7 s (40.2 h)
    let r = &reports[&14_401];
    let b = 1.0 - 0.999;
    windows(
        r,
        &[
            (Window::M5, 50.0, 10.0, 0.2 / b),
            (Window::M30, 300.0, 10.0, (10.0 / 300.0) / b),
            (Window::H1, 600.0, 10.0, (10.0 / 600.0) / b),
            (Window::H6, 3600.0, 10.0, (10.0 / 3600.0) / b),
            (Window::D3, 43_200.0, 10.0, (10.0 / 43_200.0) / b),
            (Window::Period, 144_010.0, 10.0, (10.0 / 144_010.0) / b),
        ],
    );
    approx(r.burn_rate(Window::H1), 16.666_666_666_666_67);
    approx(r.error_budget_remaining, 1.0 - 10.0 / 144.01);
    approx(r.sli.expect("traffic"), 1.0 - 10.0 / 144_010.0);
    let remaining = 1.0 - 10.0 / 144.01;
    let exhaustion = r.time_to_exhaustion.expect("burning").as_secs_f64();
    approx(exhaustion, remaining * (30.0 * 86_400.0) / (1.0 / 60.0 / b));
    assert!((exhaustion - 144_720.6).abs() < 1.0, "{exhaustion}");
    assert_eq!(
        r.page,
        TierState::Firing {
            since: sim.at(14_401)
        }
    );
    assert_eq!(r.ticket, TierState::Inactive);

    // Minute 14 405, the last bad minute: 50 bad.
    //   5m: 50/50 → 1000; 1h: 50/600 → 83.3; 30m: 50/300 → 166.7; 6h: 50/3 600 → 13.9
    //   3d: 50/43 200 → 1.157 > 1 and 6h 13.9 > 1: the ticket burns, but the page fires,
    //   so the ticket is inhibited (Inactive).
    //   remaining: 1 - 50 / (0.001 × 144 050) = 1 - 50/144.05 = 0.652898..
    //   exhaustion: 0.652898 × 2 592 000 s / 83.33 = 1 692 311.7 s / 83.33 = 20 307.7 s
    let r = &reports[&14_405];
    windows(
        r,
        &[
            (Window::M5, 50.0, 50.0, 1.0 / b),
            (Window::M30, 300.0, 50.0, (50.0 / 300.0) / b),
            (Window::H1, 600.0, 50.0, (50.0 / 600.0) / b),
            (Window::H6, 3600.0, 50.0, (50.0 / 3600.0) / b),
            (Window::D3, 43_200.0, 50.0, (50.0 / 43_200.0) / b),
        ],
    );
    approx(r.error_budget_remaining, 1.0 - 50.0 / 144.05);
    let exhaustion = r.time_to_exhaustion.expect("burning").as_secs_f64();
    assert!((exhaustion - 20_307.7).abs() < 0.1, "{exhaustion}");
    assert!(r.page.is_firing());
    assert_eq!(r.ticket, TierState::Inactive, "inhibited by the page");

    // Minute 14 410: the 5m window (14 406..=14 410) is clean, so the fast pair is off,
    // but the slow pair holds: 6h 50/3 600 → 13.9 > 6, 30m 50/300 → 166.7 > 6.
    let r = &reports[&14_410];
    approx(r.burn_rate(Window::M5), 0.0);
    assert!(r.page.is_firing());
    // Minute 14 434: the 30m window (14 405..=14 434) still holds minute 14 405:
    // 10/300 → 33.3 > 6.
    assert!(reports[&14_434].page.is_firing());
    approx(reports[&14_434].burn_rate(Window::M30), (10.0 / 300.0) / b);

    // Minute 14 435: the 30m window (14 406..=14 435) is clean: the page resolves. The
    // ticket condition still holds (3d: 50/43 200 → 1.157; 6h: 50/3 600 → 13.9) and is
    // no longer inhibited: the ticket fires.
    let r = &reports[&14_435];
    assert_eq!(r.page, TierState::Inactive);
    assert_eq!(
        r.ticket,
        TierState::Firing {
            since: sim.at(14_435)
        }
    );
    approx(r.burn_rate(Window::D3), (50.0 / 43_200.0) / b);

    // Minute 14 764: the 6h window (14 405..=14 764) holds minute 14 405: 10/3 600 →
    // 2.78 > 1, still a ticket. Minute 14 765: the 6h window is clean: resolved.
    assert!(reports[&14_764].ticket.is_firing());
    approx(reports[&14_764].burn_rate(Window::H6), (10.0 / 3600.0) / b);
    assert_eq!(reports[&14_765].ticket, TierState::Inactive);
    approx(
        reports[&14_765].burn_rate(Window::D3),
        (50.0 / 43_200.0) / b,
    );

    assert_eq!(
        all,
        vec![
            transition(r, Tier::Page, sim.at(14_401), TierChange::Fired),
            transition(
                r,
                Tier::Page,
                sim.at(14_435),
                TierChange::Resolved {
                    since: sim.at(14_401),
                    inhibited: false
                }
            ),
            transition(r, Tier::Ticket, sim.at(14_435), TierChange::Fired),
            transition(
                r,
                Tier::Ticket,
                sim.at(14_765),
                TierChange::Resolved {
                    since: sim.at(14_435),
                    inhibited: false
                }
            ),
        ]
    );

    // Day 30 (minute 43 200): the period is (0, 30 d]: 432 000 requests, 50 bad.
    //   remaining 1 - 50 / (0.001 × 432 000) = 1 - 50/432 = 0.884259..
    //   SLI 1 - 50 / 432 000 = 0.999884..
    for m in 14_771..=43_200 {
        traffic(m);
    }
    let r = sim.eval(43_200);
    windows(
        &r,
        &[(Window::Period, 432_000.0, 50.0, (50.0 / 432_000.0) / b)],
    );
    approx(r.error_budget_remaining, 1.0 - 50.0 / 432.0);
    approx(r.sli.expect("traffic"), 1.0 - 50.0 / 432_000.0);
    assert!(r.transitions.is_empty());

    // Day 40 (minute 57 600): the period is (10 d, 40 d]; the outage (minutes
    // 14 401..=14 405, after 10 d = minute 14 400) is still inside: same numbers.
    for m in 43_201..=57_600 {
        traffic(m);
    }
    let r = sim.eval(57_600);
    approx(r.window(Window::Period).total, 432_000.0);
    approx(r.window(Window::Period).bad, 50.0);
    approx(r.error_budget_remaining, 1.0 - 50.0 / 432.0);

    // 5 minutes later the outage is out of the period (10 d + 5 min, 40 d + 5 min], but
    // the period is read from 1 h buckets: the oldest one, hour 241 (minutes
    // 14 401..=14 460: 600 requests, 50 bad), still counts for the 55 of its 60 minutes
    // inside the window, its requests taken as spread evenly: 50 × 55/60 = 45.83 bad
    // (exactly 0 in truth). This is the bounded-memory approximation; it is exact on
    // hour edges, as the next check shows.
    for m in 57_601..=57_605 {
        traffic(m);
    }
    let r = sim.eval(57_605);
    approx(r.window(Window::Period).bad, 50.0 * 55.0 / 60.0);
    approx(r.window(Window::Period).total, 432_000.0);

    // Day 40 + 1 h: the window (10 d + 1 h, 40 d + 1 h] starts after hour 241: 0 bad,
    // the whole budget is back.
    for m in 57_606..=57_660 {
        traffic(m);
    }
    let r = sim.eval(57_660);
    approx(r.window(Window::Period).total, 432_000.0);
    approx(r.window(Window::Period).bad, 0.0);
    assert_eq!(r.error_budget_remaining, 1.0);
}

/// A slow burn tickets; a spike pages, which inhibits (resolves) the firing ticket; when
/// the page resolves the ticket comes back.
#[test]
fn page_inhibits_a_firing_ticket() {
    let sim = Sim::new(AVAILABILITY);
    // 100 requests a minute; 1 of them bad at every 5th minute (1 in 500: 2 × budget),
    // and all 100 bad at minute 61.
    let traffic = |m: u64| match m {
        61 => sim.traffic(m, 0, 100),
        m if m % 5 == 0 => sim.traffic(m, 99, 1),
        m => sim.traffic(m, 100, 0),
    };
    let b = 1.0 - 0.999;
    let mut all = Vec::new();
    let mut reports = std::collections::BTreeMap::new();
    for m in 1..=100 {
        traffic(m);
        let r = sim.eval(m);
        all.extend(r.transitions.iter().cloned());
        reports.insert(m, r);
    }
    // Minute 4: 400 requests, none bad.
    assert!(!reports[&4].ticket.is_firing());
    // Minute 5: everything so far (500) is in every window but 5m, 1 bad: burn
    // 1/500/0.001 = 2. Ticket: 3d 2 > 1 and 6h 2 > 1. Page: 1h 2 < 14.4, 6h 2 < 6.
    let r = &reports[&5];
    approx(r.burn_rate(Window::D3), 2.0);
    approx(r.burn_rate(Window::H1), 2.0);
    assert_eq!(r.ticket, TierState::Firing { since: sim.at(5) });
    assert_eq!(r.page, TierState::Inactive);
    // Minute 61: 1h = minutes 2..=61: 6 000 requests; bad: minutes 5, 10, .., 60 (12)
    // + 100 = 112 → burn 112/6000/0.001 = 18.67 > 14.4. 5m = minutes 57..=61: bad 1
    // (minute 60) + 100 = 101 of 500 → 202. The page fires; the ticket (3d: 112 of
    // 6 100 → 18.4) is inhibited.
    let r = &reports[&61];
    approx(r.burn_rate(Window::H1), (112.0 / 6000.0) / b);
    approx(r.burn_rate(Window::M5), (101.0 / 500.0) / b);
    assert!(r.page.is_firing());
    assert_eq!(r.ticket, TierState::Inactive);
    // Minute 90: the 30m window (61..=90) still holds minute 61: bad 100 + 6 (65..=90) =
    // 106 of 3 000 → 35.3 > 6, and 6h (everything: 9 000, bad 18 + 100 = 118) → 13.1 > 6.
    approx(reports[&90].burn_rate(Window::M30), (106.0 / 3000.0) / b);
    assert!(reports[&90].page.is_firing());
    // Minute 91: 30m (62..=91) holds 65, 70, .., 90: 6 of 3 000 → 2 < 6: the page
    // resolves, and the ticket (3d: 118 of 9 100 → 12.97) fires again.
    approx(reports[&91].burn_rate(Window::M30), (6.0 / 3000.0) / b);
    assert_eq!(reports[&91].page, TierState::Inactive);
    assert_eq!(reports[&91].ticket, TierState::Firing { since: sim.at(91) });

    let r = &reports[&100];
    assert_eq!(
        all,
        vec![
            transition(r, Tier::Ticket, sim.at(5), TierChange::Fired),
            transition(r, Tier::Page, sim.at(61), TierChange::Fired),
            transition(
                r,
                Tier::Ticket,
                sim.at(61),
                TierChange::Resolved {
                    since: sim.at(5),
                    inhibited: true
                }
            ),
            transition(
                r,
                Tier::Page,
                sim.at(91),
                TierChange::Resolved {
                    since: sim.at(61),
                    inhibited: false
                }
            ),
            transition(r, Tier::Ticket, sim.at(91), TierChange::Fired),
        ]
    );
}

#[test]
fn minimum_traffic_guard() {
    // One error in two requests: burn rate (1/2) / 0.001 = 500 over every window, far
    // above every factor, but the long windows saw 2 < 10 (default min_requests)
    // requests: no page, no ticket.
    let sim = Sim::new(AVAILABILITY);
    sim.traffic(1, 1, 1);
    let r = sim.eval(1);
    approx(r.burn_rate(Window::H1), 500.0);
    approx(r.burn_rate(Window::M5), 500.0);
    assert_eq!(r.page, TierState::Inactive);
    assert_eq!(r.ticket, TierState::Inactive);
    assert!(r.transitions.is_empty());
    // Eight more good requests: 10 requests, 1 bad: 1h total 10 >= 10 and burn
    // (1/10) / 0.001 = 100 > 14.4: now it pages.
    sim.traffic(2, 8, 0);
    let r = sim.eval(2);
    approx(r.window(Window::H1).total, 10.0);
    approx(r.burn_rate(Window::H1), 100.0);
    assert!(r.page.is_firing());

    // With the guard off (min_requests = 0), one error in two requests pages at once.
    let sim = Sim::new(&format!("{AVAILABILITY}alerts = {{ min_requests = 0 }}\n"));
    sim.traffic(1, 1, 1);
    let r = sim.eval(1);
    assert_eq!(r.page, TierState::Firing { since: sim.at(1) });
}

#[test]
fn no_data_alert() {
    let sim = Sim::new(&format!("{AVAILABILITY}alerts = {{ no_data = \"10m\" }}\n"));
    let at = |d: Duration| sim.t0 + d;
    let eval = |d: Duration| sim.engine.evaluate(at(d)).remove(0);
    // Nothing since the start (the origin counts as the last sign of life).
    assert_eq!(eval(Duration::from_secs(599)).no_data, TierState::Inactive);
    let r = eval(10 * MINUTE);
    assert_eq!(
        r.no_data,
        TierState::Firing {
            since: at(10 * MINUTE)
        }
    );
    assert_eq!(
        r.transitions,
        vec![transition(
            &r,
            Tier::NoData,
            at(10 * MINUTE),
            TierChange::Fired
        )]
    );
    // A request at 11 min resolves it.
    sim.engine.record(&outcome(200), at(11 * MINUTE));
    let r = eval(11 * MINUTE);
    assert_eq!(r.no_data, TierState::Inactive);
    assert_eq!(
        r.transitions,
        vec![transition(
            &r,
            Tier::NoData,
            at(11 * MINUTE),
            TierChange::Resolved {
                since: at(10 * MINUTE),
                inhibited: false
            }
        )]
    );
    // 10 minutes after that request, it fires again; not a second before.
    assert_eq!(
        eval(21 * MINUTE - Duration::from_secs(1)).no_data,
        TierState::Inactive
    );
    assert!(eval(21 * MINUTE).no_data.is_firing());

    // Off by default: days of silence, no alert.
    let quiet = Sim::new(AVAILABILITY);
    let r = quiet.eval(3 * 24 * 60);
    assert_eq!(r.no_data, TierState::Inactive);
    assert_eq!(r.sli, None);
    assert_eq!(r.error_budget_remaining, 1.0);
}

#[test]
fn tiers_can_be_switched_off() {
    // 100 % errors, 100 requests a minute, for 2 minutes: page and ticket conditions
    // both hold (burn 1 000 everywhere).
    let run = |alerts: &str| {
        let sim = Sim::new(&format!("{AVAILABILITY}alerts = {alerts}\n"));
        sim.traffic(1, 0, 100);
        sim.traffic(2, 0, 100);
        let r = sim.eval(2);
        approx(r.burn_rate(Window::D3), 1000.0);
        (r.page.is_firing(), r.ticket.is_firing())
    };
    assert_eq!(run("{}"), (true, false), "the page inhibits the ticket");
    assert_eq!(
        run("{ page = false }"),
        (false, true),
        "nothing to inhibit it"
    );
    assert_eq!(run("{ ticket = false }"), (true, false));
    assert_eq!(run("{ page = false, ticket = false }"), (false, false));
}

#[test]
fn availability_classification() {
    let plain = SloKind::Availability { count_429: false };
    let strict = SloKind::Availability { count_429: true };
    let with = |status: u16, local: Option<LocalReason>| RequestOutcome {
        service: "web",
        status,
        duration: Duration::from_millis(1),
        local,
        revision: None,
    };
    use LocalReason::*;
    use Verdict::*;
    // (outcome, without count_429, with count_429)
    let table = [
        (with(200, None), Good, Good),
        (with(302, None), Good, Good),
        (with(404, None), Good, Good),
        (with(400, Some(BadRequest)), Good, Good),
        (with(429, None), Good, Bad),
        (with(429, Some(RateLimited)), Good, Bad),
        (with(500, None), Bad, Bad),
        (with(503, None), Bad, Bad),
        (with(502, Some(UpstreamFailed)), Bad, Bad),
        (with(504, Some(Timeout)), Bad, Bad),
        (with(503, Some(NoReplica)), Bad, Bad),
        (with(503, Some(Shed)), Bad, Bad),
        // Injected faults count by what the client got.
        (with(503, Some(Injected)), Bad, Bad),
        (with(200, Some(Injected)), Good, Good),
    ];
    for (o, without, with_429) in table {
        assert_eq!(classify(&plain, &o), without, "{o:?}");
        assert_eq!(classify(&strict, &o), with_429, "{o:?} (count_429)");
    }
}

#[test]
fn latency_counts_successful_requests_exactly() {
    let kind = SloKind::Latency {
        threshold: Duration::from_millis(300),
    };
    let req = |status: u16, ms: u64, local: Option<LocalReason>| RequestOutcome {
        service: "web",
        status,
        duration: Duration::from_millis(ms),
        local,
        revision: None,
    };
    use Verdict::*;
    let table = [
        (req(200, 299, None), Good),
        // Strictly faster than the threshold: 300 ms is not.
        (req(200, 300, None), Bad),
        (req(200, 5000, None), Bad),
        (req(404, 10, None), Good),
        // Failures and bulwark's own answers are not latency samples.
        (req(503, 10, None), Excluded),
        (req(504, 30_000, Some(LocalReason::Timeout)), Excluded),
        (req(503, 1, Some(LocalReason::Shed)), Excluded),
        (req(429, 1, Some(LocalReason::RateLimited)), Excluded),
    ];
    for (o, verdict) in table {
        assert_eq!(classify(&kind, &o), verdict, "{o:?}");
    }

    // In the engine: 3 counted (2 good, 1 slow), 2 excluded.
    let sim = Sim::new(
        r#"
[[services.web.slo]]
name = "latency"
kind = "latency"
objective = 99
threshold = "300ms"
alerts = { no_data = "1m" }
"#,
    );
    for o in [
        req(200, 100, None),
        req(200, 299, None),
        req(200, 301, None),
        req(503, 100, None),
        req(503, 1, Some(LocalReason::Shed)),
    ] {
        sim.engine.record(&o, sim.at(1));
    }
    let r = sim.eval(1);
    approx(r.window(Window::Period).total, 3.0);
    approx(r.window(Window::Period).bad, 1.0);
    // Budget 1 %: allowed 0.01 × 3 = 0.03 bad; 1 bad → 1 - 1/0.03 = -32.3: overspent.
    approx(r.error_budget_remaining, 1.0 - 1.0 / (0.01 * 3.0));
    assert_eq!(r.time_to_exhaustion, Some(Duration::ZERO));

    // Excluded requests are still traffic: a failure at minute 1 keeps the no-data alert
    // (1m) quiet until minute 2; counted from the origin it would fire at minute 1.
    let sim = Sim::new(
        r#"
[[services.web.slo]]
name = "latency"
kind = "latency"
objective = 99
threshold = "300ms"
alerts = { no_data = "1m" }
"#,
    );
    sim.engine.record(&req(503, 1, None), sim.at(1));
    let r = sim
        .engine
        .evaluate(sim.at(1) + Duration::from_secs(59))
        .remove(0);
    assert_eq!(r.no_data, TierState::Inactive);
    assert_eq!(r.sli, None, "no latency sample");
    assert!(sim.eval(2).no_data.is_firing());
}

#[test]
fn windows_scale_with_the_period() {
    // A 1-hour SLO: 1h → 1h × 1h/30d = 5 s; 5m → 5m/720 = 416.67 ms. Errors for 1 s
    // after 10 s of good traffic (100 a second): the 5 s window holds 400 good + 100
    // bad → 0.2 / 0.01 = 20 > 14.4; the 416 ms window holds 100 bad (at t = 11 s) only
    // → 100. It pages.
    let sim = Sim::new(
        r#"
[[services.web.slo]]
name = "hourly"
kind = "availability"
objective = 99
period = "1h"
"#,
    );
    let at = |ms: u64| sim.t0 + Duration::from_millis(ms);
    for s in 1..=10 {
        for _ in 0..100 {
            sim.engine.record(&outcome(200), at(s * 1000));
        }
    }
    for _ in 0..100 {
        sim.engine.record(&outcome(503), at(11_000));
    }
    let r = sim.engine.evaluate(at(11_000)).remove(0);
    assert_eq!(r.window(Window::H1).length, Duration::from_secs(5));
    assert_eq!(
        r.window(Window::M5).length,
        Duration::from_nanos(416_666_667)
    );
    // The 5 s window (6 s, 11 s] holds the requests at 7, 8, 9, 10 and 11 s.
    approx(r.window(Window::H1).total, 500.0);
    approx(r.burn_rate(Window::H1), (100.0 / 500.0) / (1.0 - 0.99));
    approx(r.burn_rate(Window::M5), 1.0 / (1.0 - 0.99));
    assert!(r.page.is_firing());
}

#[test]
fn peek_does_not_take_transitions() {
    let sim = Sim::new(AVAILABILITY);
    sim.traffic(1, 0, 100);
    let peeked = sim.engine.peek(sim.at(1)).remove(0);
    assert!(peeked.page.is_firing());
    assert_eq!(peeked.transitions.len(), 1);
    // `evaluate` still sees (and takes) the transition; then it is gone.
    assert_eq!(sim.eval(1).transitions.len(), 1);
    assert!(sim.eval(1).transitions.is_empty());
    assert!(sim.engine.peek(sim.at(1))[0].transitions.is_empty());
}

#[test]
fn prometheus_counters() {
    let sim = Sim::new(&format!(
        "{AVAILABILITY}\n[[services.web.slo]]\nname = \"fast\"\nkind = \"latency\"\n\
         objective = 99\nthreshold = \"10ms\"\n"
    ));
    let mut registry = Registry::default();
    sim.engine.register(&mut registry);
    let encode = |registry: &Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    };
    // The series exist at 0 before any request, so rates and absent() behave.
    let text = encode(&registry);
    assert!(
        text.contains("bulwark_slo_requests_total{service=\"web\",slo=\"availability\"} 0"),
        "{text}"
    );
    // 200 in 20 ms (availability good; latency slow), 503 (availability bad; latency
    // excluded), 200 in 20 ms.
    sim.traffic(1, 2, 1);
    let text = encode(&registry);
    for line in [
        "# TYPE bulwark_slo_requests counter",
        "bulwark_slo_requests_total{service=\"web\",slo=\"availability\"} 3",
        "bulwark_slo_errors_total{service=\"web\",slo=\"availability\"} 1",
        "bulwark_slo_requests_total{service=\"web\",slo=\"fast\"} 2",
        "bulwark_slo_errors_total{service=\"web\",slo=\"fast\"} 2",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

/// Under `bulwark agent` every SLO series says its node; under `bulwark up` none has the
/// label, so the exported rules and dashboards see the same series as before.
#[test]
fn an_agents_slo_series_carry_its_node() {
    let series = |node: Option<&str>| {
        let sim = Sim::new(AVAILABILITY);
        let mut registry = Registry::default();
        sim.engine.register_on_node(&mut registry, node);
        sim.traffic(1, 1, 1);
        sim.eval(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text.lines()
            .filter(|l| l.starts_with("bulwark_slo_"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let on_h0 = series(Some("h0"));
    for prefix in [
        "bulwark_slo_requests_total{",
        "bulwark_slo_errors_total{",
        "bulwark_slo_error_budget_remaining{",
        "bulwark_slo_burn_rate{",
    ] {
        assert!(
            on_h0.iter().any(|l| l.starts_with(prefix)),
            "{prefix}: {on_h0:?}"
        );
    }
    assert!(on_h0.iter().all(|l| l.contains("node=\"h0\"")), "{on_h0:?}");
    let plain = series(None);
    assert_eq!(plain.len(), on_h0.len());
    assert!(plain.iter().all(|l| !l.contains("node=")), "{plain:?}");
}

#[test]
fn other_services_are_ignored() {
    let sim = Sim::new(AVAILABILITY);
    sim.engine.record(
        &RequestOutcome {
            service: "db",
            ..outcome(503)
        },
        sim.at(1),
    );
    assert_eq!(sim.eval(1).sli, None);
}

#[test]
fn shared_across_threads_and_as_an_outcome_sink() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<SloEngine>();
    send_sync::<SloSink>();

    let t0 = Instant::now();
    let engine = Arc::new(SloEngine::new(&stack(AVAILABILITY), t0));
    let sink: Arc<dyn OutcomeSink> = Arc::new(SloSink(engine.clone()));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for n in 0..1000 {
                    // One thread in four sends a 503 every tenth request: 100 bad.
                    let status = if i == 0 && n % 10 == 0 { 503 } else { 200 };
                    sink.record(&outcome(status));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let r = engine.evaluate(Instant::now()).remove(0);
    approx(r.window(Window::Period).total, 4000.0);
    approx(r.window(Window::Period).bad, 100.0);
    // 100 bad of 4 000, allowed 4: 1 - 100/4 = -24.
    approx(r.error_budget_remaining, -24.0);
}

/// Requests in `(t - length, t]`, counted one by one.
fn brute(events: &[(Duration, bool)], t: Duration, length: Duration) -> (f64, f64) {
    let inside = events.iter().filter(|(at, _)| *at <= t && *at + length > t);
    let (mut total, mut bad) = (0.0, 0.0);
    for (_, b) in inside {
        total += 1.0;
        if *b {
            bad += 1.0;
        }
    }
    (total, bad)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For random traffic inside one period, the budget is exactly 1 - bad / (b × total)
    /// and the SLI 1 - bad / total; every window, evaluated on an hour edge, matches a
    /// one-by-one count of the requests in it (ring wrap-around and clearing included).
    #[test]
    fn budget_and_windows_match_a_brute_force_count(
        start_hour in 0u64..700,
        mut offsets in proptest::collection::vec((1u64..8 * 3_600_000, any::<bool>(), 0u8..10), 0..400),
        extra_hours in 0u64..4,
        objective_permille in 900u32..1000,
    ) {
        offsets.sort_unstable();
        let objective = f64::from(objective_permille) / 10.0;
        let sim = Sim::new(&format!(
            "[[services.web.slo]]\nname = \"a\"\nkind = \"availability\"\nobjective = {objective}\n"
        ));
        let mut events = Vec::new();
        for &(ms, bad_flag, weight) in &offsets {
            // Bias towards good requests, so budgets are not always overspent.
            let bad = bad_flag && weight == 0;
            let at = HOUR * u32::try_from(start_hour).expect("fits") + Duration::from_millis(ms);
            sim.engine.record(&outcome(if bad { 503 } else { 200 }), sim.t0 + at);
            events.push((at, bad));
        }
        let last = events.last().map_or(Duration::ZERO, |e| e.0);
        let hours = last.as_secs().div_ceil(3600) + extra_hours;
        let t = HOUR * u32::try_from(hours.min(720)).expect("fits");
        prop_assume!(t >= last);
        let r = sim.engine.evaluate(sim.t0 + t).remove(0);

        let total = events.len() as f64;
        let bad = events.iter().filter(|e| e.1).count() as f64;
        let budget = 1.0 - objective / 100.0;
        let period = r.window(Window::Period);
        prop_assert_eq!(period.total, total);
        prop_assert_eq!(period.bad, bad);
        if total > 0.0 {
            let expected = 1.0 - bad / (budget * total);
            prop_assert!((r.error_budget_remaining - expected).abs() < 1e-9 * expected.abs().max(1.0));
            prop_assert!((r.sli.expect("traffic") - (1.0 - bad / total)).abs() < 1e-12);
        } else {
            prop_assert_eq!(r.error_budget_remaining, 1.0);
        }
        for w in Window::ALL {
            let (total, bad) = brute(&events, t, w.length(r.period));
            prop_assert_eq!(r.window(w).total, total, "{:?}", w);
            prop_assert_eq!(r.window(w).bad, bad, "{:?}", w);
        }
    }
}
