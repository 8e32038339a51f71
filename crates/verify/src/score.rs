//! The resilience score: Litmus's weighted model over the cases of a run.

use crate::report::Case;

/// The weighted resilience score of `cases`, 0 to 100 (LitmusChaos's model):
///
/// ```text
/// score = Σ (weight_i × probe_success_pct_i) / Σ weight_i
/// probe_success_pct_i = 100 × passed checks_i / checks_i      (0 for a case without checks)
/// ```
///
/// So a case of weight 10 with 2 of 3 checks passed and a case of weight 5 with all passed
/// score (10 × 66.7 + 5 × 100) / 15 = 77.8. With no cases, or only cases of weight 0,
/// nothing was shown and the score is 0.
pub fn score(cases: &[Case]) -> f64 {
    let total: f64 = cases.iter().map(|case| f64::from(case.weight)).sum();
    if total == 0.0 {
        return 0.0;
    }
    let weighted: f64 = cases
        .iter()
        .map(|case| f64::from(case.weight) * case.probe_success_pct())
        .sum();
    weighted / total
}

/// The weight a fault kind counts for in the score unless the stack file says otherwise:
///
/// | kind         | weight |
/// |--------------|--------|
/// | `kill`       | 10     |
/// | `stop`       | 8      |
/// | `http-abort` | 6      |
/// | `http-reset` | 6      |
/// | `http-delay` | 4      |
/// | any other    | 5      |
///
/// A crashed replica is the failure bulwark exists to absorb and the most common one, so it
/// weighs most; a graceful stop is the same loss with a warning. Aborted and reset requests
/// are failures clients see directly; added delay degrades rather than breaks.
pub fn default_weight(kind: &str) -> u32 {
    match kind {
        "kill" => 10,
        "stop" => 8,
        "http-abort" | "http-reset" => 6,
        "http-delay" => 4,
        _ => 5,
    }
}
