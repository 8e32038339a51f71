//! The scorecard's data: what `bulwark verify` measured for each fault and what it
//! concluded. These types are the JSON report's schema as well (`verify.json`), so a
//! field renamed here is a breaking change for whoever reads that file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::score::{default_weight, score};

/// One run of `bulwark verify`: every case, the weighted score and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    /// The stack file's path, as given on the command line.
    pub stack: String,
    /// When the run started: RFC 3339 in UTC, such as `2026-12-02T12:45:56Z`.
    pub started: String,
    /// The open-loop load offered during every case, in requests per second.
    pub load_rate: f64,
    /// One case per (service, fault kind), in the order they ran.
    pub cases: Vec<Case>,
    /// The weighted score of the cases, 0 to 100 (see [`score`](crate::score)).
    pub score: f64,
    /// The lowest score that passes, if one was asked for.
    pub min_score: Option<f64>,
    /// Every case passed, and the score reached `min_score` if there is one.
    pub passed: bool,
}

impl Scorecard {
    /// A scorecard over judged `cases`: computes the score and the verdict.
    ///
    /// The run passes when every case passed and, if `min_score` is given, the score is at
    /// least `min_score`. A minimum therefore never rescues a failed case; it only adds a
    /// second condition. An empty run passes unless a minimum above 0 is given, as its
    /// score is 0.
    pub fn new(
        stack: impl Into<String>,
        started: impl Into<String>,
        load_rate: f64,
        cases: Vec<Case>,
        min_score: Option<f64>,
    ) -> Self {
        let score = score(&cases);
        let passed =
            cases.iter().all(|case| case.passed) && min_score.is_none_or(|min| score >= min);
        Scorecard {
            stack: stack.into(),
            started: started.into(),
            load_rate,
            cases,
            score,
            min_score,
            passed,
        }
    }
}

/// One fault injected into one service, what it cost, and the checks it was judged by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The service the fault was injected into.
    pub service: String,
    /// The fault kind: `kill`, `stop`, `http-abort`, `http-reset`, `http-delay`, ...
    pub fault: String,
    /// What was done, in one line: `SIGKILL of replica web/1`.
    pub description: String,
    /// How much this case counts in the score (see [`default_weight`]).
    pub weight: u32,
    /// Requests the load generator sent during the case.
    pub sent: u64,
    /// Requests that got no successful answer.
    pub lost: u64,
    /// Failed requests by class: an HTTP status (`"503"`), `"connect"`, `"timeout"` or
    /// `"other"`, to a count.
    pub errors: BTreeMap<String, u64>,
    /// From the fault to bulwark's first reaction to it (an ejection, a restart, a probe
    /// failure), in milliseconds; `None` if bulwark never reacted.
    pub detect_ms: Option<u64>,
    /// From the fault until the service had its full ready count and a steady state again,
    /// in milliseconds; `None` if that did not happen within the observation window.
    pub recover_ms: Option<u64>,
    /// The client-side p99 latency during the fault, in milliseconds.
    pub p99_ms: f64,
    /// The client-side p99 latency of the same load before any fault, in milliseconds.
    pub baseline_p99_ms: f64,
    /// The share of the SLO error budget spent during the case (1.0 is the whole budget,
    /// and more is possible); `None` if the service has no SLO.
    pub budget_spent: Option<f64>,
    /// The steady-state hypothesis, item by item, as judged (see [`Hypothesis::judge`]).
    ///
    /// [`Hypothesis::judge`]: crate::Hypothesis::judge
    pub checks: Vec<Check>,
    /// Every check passed.
    pub passed: bool,
}

impl Case {
    /// A case not yet measured nor judged: zero figures, no checks, not passed, and the
    /// fault kind's [`default_weight`].
    pub fn new(
        service: impl Into<String>,
        fault: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        let fault = fault.into();
        Case {
            service: service.into(),
            weight: default_weight(&fault),
            fault,
            description: description.into(),
            sent: 0,
            lost: 0,
            errors: BTreeMap::new(),
            detect_ms: None,
            recover_ms: None,
            p99_ms: 0.0,
            baseline_p99_ms: 0.0,
            budget_spent: None,
            checks: Vec::new(),
            passed: false,
        }
    }

    /// Litmus's probe success percentage: 100 × passed checks / checks, and 0 for a case
    /// without checks (a case nobody judged has shown nothing).
    pub fn probe_success_pct(&self) -> f64 {
        if self.checks.is_empty() {
            return 0.0;
        }
        let passed = self.checks.iter().filter(|check| check.passed).count();
        100.0 * passed as f64 / self.checks.len() as f64
    }

    /// The checks that failed, in order.
    pub fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|check| !check.passed)
    }
}

/// One item of the steady-state hypothesis, judged: "no request lost", "p99 at most
/// 250 ms", "recovered within 30 s".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was expected, in a few words.
    pub name: String,
    /// The case met it.
    pub passed: bool,
    /// What was measured against it, in one line: "3 of 1200 lost (503: 3)".
    pub detail: String,
}
