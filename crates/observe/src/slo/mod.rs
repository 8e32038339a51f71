//! SLOs: SLIs from request outcomes, error budgets, multi-window multi-burn-rate alerts,
//! and their export as Prometheus rules.
//!
//! # What is counted
//!
//! The proxy reports every request's outcome ([`bus::RequestOutcome`]); each SLO of the
//! request's service classifies it ([`classify`]):
//!
//! * availability: bad when the status is >= 500, or bulwark answered by itself because
//!   no replica was ready, every try failed, the request timed out, or it was shed; 429
//!   is bad only with `count_429_as_error = true`; every other 4xx is the client's doing
//!   and good.
//! * latency: only *successful* requests count (status < 500 and answered by a replica,
//!   as Google's SLO guidance measures latency): good when strictly faster than the
//!   threshold, compared per request (no histogram buckets, so any threshold is exact).
//!   Failures, and answers bulwark gave by itself (shed, rate limited, timed out), are
//!   left out: a fast 503 must not make the latency SLI look better, and a timeout is
//!   already spent from the availability budget.
//!
//! # Alerts
//!
//! The SRE Workbook's multi-window multi-burn-rate alerts, scaled to the SLO's period
//! (each window × `period / 30d`, see [`Window`]); burn rate = error ratio over the
//! window / (1 - objective), and both windows of a pair must exceed the factor:
//!
//! | tier   | long window | short window | burn rate above | budget spent when it fires |
//! |--------|-------------|--------------|-----------------|----------------------------|
//! | page   | 1h          | 5m           | 14.4            | 2 %                        |
//! | page   | 6h          | 30m          | 6               | 5 %                        |
//! | ticket | 3d          | 6h           | 1               | 10 %                       |
//!
//! Guards users ask for: a pair does not fire while its long window saw fewer than
//! `min_requests` requests (one failure out of two requests is not an outage); tiers can
//! be switched off; a firing page inhibits the ticket of the same SLO (as an Alertmanager
//! inhibit rule would); `no_data` fires when the service got no request at all for that
//! long. Transitions come out of [`SloEngine::evaluate`], for the caller to open
//! incidents and notify.
//!
//! # Memory
//!
//! Per SLO, independent of traffic and period: two rings of 721 buckets of two `u64`
//! counters: fine buckets (period / 86 400: 30 s for 30 days) for the 5m, 30m, 1h and 6h
//! windows, coarse buckets (period / 720: 1 h for 30 days) for 3d and the period. That
//! is 2 × 721 × 16 B ≈ 22.5 KiB, plus the SLO's spec and two counters.

mod rules;
mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bus::{LocalReason, OutcomeSink, RequestOutcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use spec::{Slo, SloKind, Stack};

mod gauges;

pub use gauges::{METRIC_BUDGET, METRIC_BURN};
pub use rules::{ALERT_BURN, ALERT_NO_DATA, rules, rules_test};
pub use window::{WORKBOOK_PERIOD, Window};

use window::{COARSE_LEN, COARSE_PER_PERIOD, FINE_LEN, FINE_PER_PERIOD, Resolution, Ring};

/// Name of the counter of requests that count toward an SLO (its SLI's denominator);
/// exposed as `bulwark_slo_requests_total{service,slo}`.
pub const METRIC_REQUESTS: &str = "bulwark_slo_requests";
/// Name of the counter of requests that were bad for an SLO (failed for availability,
/// too slow for latency); exposed as `bulwark_slo_errors_total{service,slo}`.
pub const METRIC_ERRORS: &str = "bulwark_slo_errors";

/// A burn-rate alert pair: fires when both windows burn faster than `factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnPair {
    pub tier: Tier,
    pub long: Window,
    pub short: Window,
    pub factor: f64,
}

/// The SRE Workbook's pairs, in the Workbook's 30-day names (scaled per SLO).
pub const BURN_PAIRS: [BurnPair; 3] = [
    BurnPair {
        tier: Tier::Page,
        long: Window::H1,
        short: Window::M5,
        factor: 14.4,
    },
    BurnPair {
        tier: Tier::Page,
        long: Window::H6,
        short: Window::M30,
        factor: 6.0,
    },
    BurnPair {
        tier: Tier::Ticket,
        long: Window::D3,
        short: Window::H6,
        factor: 1.0,
    },
];

/// An alert tier of an SLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Fast burn: wake someone up.
    Page,
    /// Slow burn: open a ticket. Inhibited while the page fires.
    Ticket,
    /// No request at all for `no_data`.
    NoData,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Page, Tier::Ticket, Tier::NoData];

    /// `"page"`, `"ticket"`, `"no_data"`: also the `severity` label of exported alerts
    /// for the first two.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Page => "page",
            Tier::Ticket => "ticket",
            Tier::NoData => "no_data",
        }
    }
}

/// Whether a tier fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierState {
    Inactive,
    /// Firing since the evaluation that first saw its condition true.
    Firing {
        since: Instant,
    },
}

impl TierState {
    pub fn is_firing(self) -> bool {
        matches!(self, TierState::Firing { .. })
    }
}

/// A tier starting or stopping to fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertTransition {
    pub service: String,
    pub slo: String,
    pub tier: Tier,
    /// The evaluation time at which the change was seen.
    pub at: Instant,
    pub change: TierChange,
}

/// How a tier's [`TierState`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierChange {
    Fired,
    Resolved {
        /// When it started firing.
        since: Instant,
        /// The ticket stopped because the page of the same SLO started, not because the
        /// burn stopped.
        inhibited: bool,
    },
}

/// How one request counts for one SLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Bad,
    /// Not part of this SLO's SLI (a failed request, for a latency SLO).
    Excluded,
}

/// Classifies a request for an SLO of `kind` (see the module documentation).
pub fn classify(kind: &SloKind, outcome: &RequestOutcome<'_>) -> Verdict {
    let failed = outcome.status >= 500
        || matches!(
            outcome.local,
            Some(
                LocalReason::NoReplica
                    | LocalReason::UpstreamFailed
                    | LocalReason::Timeout
                    | LocalReason::Shed
            )
        );
    match *kind {
        SloKind::Availability { count_429 } => {
            if failed || (count_429 && outcome.status == 429) {
                Verdict::Bad
            } else {
                Verdict::Good
            }
        }
        SloKind::Latency { threshold } => {
            if failed || outcome.local.is_some() {
                Verdict::Excluded
            } else if outcome.duration < threshold {
                Verdict::Good
            } else {
                Verdict::Bad
            }
        }
    }
}

/// Requests and bad requests over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReport {
    pub window: Window,
    /// The window's length for this SLO's period.
    pub length: Duration,
    /// Fractional when the window starts inside a bucket (see the module docs).
    pub total: f64,
    pub bad: f64,
    /// Share of good requests; `None` without requests.
    pub sli: Option<f64>,
    /// (bad / total) / (1 - objective); 0 without requests.
    pub burn_rate: f64,
}

/// One SLO's state at an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct SloReport {
    pub service: String,
    pub slo: String,
    pub kind: SloKind,
    /// A fraction, e.g. 0.999.
    pub objective: f64,
    pub period: Duration,
    /// SLI over the period so far (since the engine started, up to one period back);
    /// `None` without requests.
    pub sli: Option<f64>,
    /// 1 - bad / (allowed bad), allowed bad = (1 - objective) × requests over the
    /// period. 1 without requests; negative once the budget is overspent.
    pub error_budget_remaining: f64,
    /// Every window, in [`Window::ALL`] order (the period last).
    pub windows: [WindowReport; 6],
    pub page: TierState,
    pub ticket: TierState,
    pub no_data: TierState,
    /// Changes since the previous [`SloEngine::evaluate`].
    pub transitions: Vec<AlertTransition>,
    /// When the remaining budget runs out if the 1h (scaled) burn rate goes on:
    /// remaining × period / burn rate. `Some(ZERO)` once spent, `None` while nothing
    /// burns (or beyond what a `Duration` holds).
    pub time_to_exhaustion: Option<Duration>,
}

impl SloReport {
    pub fn window(&self, window: Window) -> &WindowReport {
        // `windows` is in `Window::ALL` order, which is declaration order.
        &self.windows[window as usize]
    }

    pub fn burn_rate(&self, window: Window) -> f64 {
        self.window(window).burn_rate
    }

    pub fn alert(&self, tier: Tier) -> TierState {
        match tier {
            Tier::Page => self.page,
            Tier::Ticket => self.ticket,
            Tier::NoData => self.no_data,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SloLabels {
    service: String,
    slo: String,
}

/// All SLOs of a stack: counts request outcomes and evaluates budgets and alerts.
///
/// Pure: time is passed in (`now`), measured from the `origin` given to [`SloEngine::new`].
/// `Send + Sync`: share it in an `Arc`; [`SloEngine::record`] takes one short lock per
/// SLO of the request's service. Evaluate from one task (say every second): transitions
/// are handed out once, to whoever evaluates; [`SloEngine::peek`] reads without taking
/// them.
#[derive(Debug)]
pub struct SloEngine {
    origin: Instant,
    cells: Vec<Cell>,
    by_service: HashMap<String, Vec<usize>>,
    requests: Family<SloLabels, Counter>,
    errors: Family<SloLabels, Counter>,
    gauges: gauges::Gauges,
}

#[derive(Debug)]
struct Cell {
    service: String,
    slo: Slo,
    requests: Counter,
    errors: Counter,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    fine: Ring,
    coarse: Ring,
    last_request: Option<Instant>,
    page: TierState,
    ticket: TierState,
    no_data: TierState,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain counters: after a panic elsewhere it is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SloEngine {
    /// Every SLO of every service of `stack`; windows start at `origin`.
    pub fn new(stack: &Stack, origin: Instant) -> SloEngine {
        SloEngine::from_slos(
            stack
                .services
                .iter()
                .flat_map(|s| s.slos.iter().map(|slo| (s.name.as_str(), slo))),
            origin,
        )
    }

    /// The given `(service, slo)` pairs; windows start at `origin`.
    pub fn from_slos<'a>(
        slos: impl IntoIterator<Item = (&'a str, &'a Slo)>,
        origin: Instant,
    ) -> SloEngine {
        let requests = Family::<SloLabels, Counter>::default();
        let errors = Family::<SloLabels, Counter>::default();
        let mut cells = Vec::new();
        let mut by_service: HashMap<String, Vec<usize>> = HashMap::new();
        for (service, slo) in slos {
            let labels = SloLabels {
                service: service.to_owned(),
                slo: slo.name.clone(),
            };
            by_service
                .entry(service.to_owned())
                .or_default()
                .push(cells.len());
            cells.push(Cell {
                service: service.to_owned(),
                slo: slo.clone(),
                // Created up front, so the series exist (at 0) from the start and the
                // hot path touches atomics only.
                requests: requests.get_or_create(&labels).clone(),
                errors: errors.get_or_create(&labels).clone(),
                state: Mutex::new(State {
                    fine: Ring::new(slo.period, FINE_PER_PERIOD, FINE_LEN),
                    coarse: Ring::new(slo.period, COARSE_PER_PERIOD, COARSE_LEN),
                    last_request: None,
                    page: TierState::Inactive,
                    ticket: TierState::Inactive,
                    no_data: TierState::Inactive,
                }),
            });
        }
        SloEngine {
            origin,
            cells,
            by_service,
            requests,
            errors,
            gauges: gauges::Gauges::default(),
        }
    }

    /// Registers `bulwark_slo_requests_total{service,slo}` and
    /// `bulwark_slo_errors_total{service,slo}`: the counters the exported rules
    /// ([`rules`]) compute the same error ratios from; and the gauges of the last
    /// evaluation ([`METRIC_BUDGET`], [`METRIC_BURN`]).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            METRIC_REQUESTS,
            "Requests that count toward the SLO (the SLI's denominator)",
            self.requests.clone(),
        );
        registry.register(
            METRIC_ERRORS,
            "Requests that were bad for the SLO: failed (availability) or too slow (latency)",
            self.errors.clone(),
        );
        self.gauges.register(registry);
    }

    /// [`register`](Self::register) with a `node` label on every series when `node` is
    /// given (a cluster agent's node); the same series as `register` without one.
    pub fn register_on_node(&self, registry: &mut Registry, node: Option<&str>) {
        match node {
            Some(n) => self
                .register(registry.sub_registry_with_label(("node".into(), n.to_owned().into()))),
            None => self.register(registry),
        }
    }

    /// The services that have an SLO.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.by_service.keys().map(String::as_str)
    }

    /// Number of SLOs.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    fn clock(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts one request for every SLO of its service. Hot path: a map lookup, then per
    /// SLO one short lock and two atomic increments.
    pub fn record(&self, outcome: &RequestOutcome<'_>, now: Instant) {
        let Some(indices) = self.by_service.get(outcome.service) else {
            return;
        };
        let t = self.clock(now);
        for &i in indices {
            let cell = &self.cells[i];
            let verdict = classify(&cell.slo.kind, outcome);
            {
                let mut s = cell.lock();
                if s.last_request.is_none_or(|last| last < now) {
                    s.last_request = Some(now);
                }
                if verdict != Verdict::Excluded {
                    let bad = verdict == Verdict::Bad;
                    s.fine.add(t, bad);
                    s.coarse.add(t, bad);
                }
            }
            match verdict {
                Verdict::Good => {
                    cell.requests.inc();
                }
                Verdict::Bad => {
                    cell.requests.inc();
                    cell.errors.inc();
                }
                Verdict::Excluded => {}
            }
        }
    }

    /// Every SLO's report at `now`, in stack order; alert states move on and the
    /// transitions since the last call are in the reports.
    /// The budget and burn-rate gauges are set from them.
    pub fn evaluate(&self, now: Instant) -> Vec<SloReport> {
        let reports: Vec<SloReport> = self
            .cells
            .iter()
            .map(|c| self.report(c, now, true))
            .collect();
        self.gauges.set(&reports);
        reports
    }

    /// Like [`SloEngine::evaluate`] but changes nothing: alert states and transitions are
    /// what `evaluate` would report now. For readers such as `bulwark slo`.
    pub fn peek(&self, now: Instant) -> Vec<SloReport> {
        self.cells
            .iter()
            .map(|c| self.report(c, now, false))
            .collect()
    }

    fn report(&self, cell: &Cell, now: Instant, commit: bool) -> SloReport {
        let t = self.clock(now);
        let slo = &cell.slo;
        let budget = slo.error_budget();
        let mut s = cell.lock();

        let windows = Window::ALL.map(|window| {
            let (total, bad) = match window.resolution() {
                Resolution::Fine(n) => s.fine.sum(t, n),
                Resolution::Coarse(n) => s.coarse.sum(t, n),
            };
            let ratio = if total > 0.0 { bad / total } else { 0.0 };
            WindowReport {
                window,
                length: window.length(slo.period),
                total,
                bad,
                sli: (total > 0.0).then_some(1.0 - ratio),
                burn_rate: ratio / budget,
            }
        });
        let get = |w: Window| &windows[w as usize];

        let pair_fires = |tier: Tier| {
            BURN_PAIRS.iter().filter(|p| p.tier == tier).any(|p| {
                let (long, short) = (get(p.long), get(p.short));
                long.total >= slo.alerts.min_requests as f64
                    && long.burn_rate > p.factor
                    && short.burn_rate > p.factor
            })
        };
        let page = slo.alerts.page && pair_fires(Tier::Page);
        let ticket_burn = slo.alerts.ticket && pair_fires(Tier::Ticket);
        let ticket = ticket_burn && !page;
        let quiet_since = s.last_request.map_or(self.origin, |l| l.max(self.origin));
        // A `no_data` of 0 is off.
        let no_data = slo.alerts.no_data;
        let no_data = !no_data.is_zero() && now.saturating_duration_since(quiet_since) >= no_data;

        let mut transitions = Vec::new();
        let mut step = |state: TierState, firing: bool, tier: Tier, inhibited: bool| {
            let (next, change) = match (state, firing) {
                (TierState::Inactive, true) => {
                    (TierState::Firing { since: now }, Some(TierChange::Fired))
                }
                (TierState::Firing { since }, false) => (
                    TierState::Inactive,
                    Some(TierChange::Resolved { since, inhibited }),
                ),
                (state, _) => (state, None),
            };
            if let Some(change) = change {
                transitions.push(AlertTransition {
                    service: cell.service.clone(),
                    slo: slo.name.clone(),
                    tier,
                    at: now,
                    change,
                });
            }
            next
        };
        let page_state = step(s.page, page, Tier::Page, false);
        let ticket_state = step(s.ticket, ticket, Tier::Ticket, ticket_burn && page);
        let no_data_state = step(s.no_data, no_data, Tier::NoData, false);
        if commit {
            s.page = page_state;
            s.ticket = ticket_state;
            s.no_data = no_data_state;
        }
        drop(s);

        let period = get(Window::Period);
        let allowed = budget * period.total;
        let error_budget_remaining = if period.total > 0.0 {
            1.0 - period.bad / allowed
        } else {
            1.0
        };
        let burn = get(Window::H1).burn_rate;
        let time_to_exhaustion = if error_budget_remaining <= 0.0 {
            Some(Duration::ZERO)
        } else if burn > 0.0 {
            Duration::try_from_secs_f64(error_budget_remaining * slo.period.as_secs_f64() / burn)
                .ok()
        } else {
            None
        };

        SloReport {
            service: cell.service.clone(),
            slo: slo.name.clone(),
            kind: slo.kind,
            objective: slo.objective,
            period: slo.period,
            sli: period.sli,
            error_budget_remaining,
            windows,
            page: page_state,
            ticket: ticket_state,
            no_data: no_data_state,
            transitions,
            time_to_exhaustion,
        }
    }
}

/// The engine as the proxy's [`OutcomeSink`]: stamps each outcome with `Instant::now()`,
/// the only clock read of this module.
#[derive(Debug, Clone)]
pub struct SloSink(pub Arc<SloEngine>);

impl OutcomeSink for SloSink {
    fn record(&self, outcome: &RequestOutcome<'_>) {
        self.0.record(outcome, Instant::now());
    }
}

/// Every `(service, slo)` of `stack`, in stack order: the input of [`rules`] and
/// [`rules_test`].
pub fn stack_slos(stack: &Stack) -> Vec<(&str, &Slo)> {
    stack
        .services
        .iter()
        .flat_map(|s| s.slos.iter().map(move |slo| (s.name.as_str(), slo)))
        .collect()
}
