//! The scorecard of `bulwark verify`: what each fault cost, whether the stack held its
//! steady state through it, and one weighted score over the whole run.
//!
//! `bulwark verify` injects each fault kind in turn into each service of a stack while an
//! open-loop load runs against it, and records one [`Case`] per (service, fault): requests
//! sent and lost, errors by class, time to detection and to recovery, client p99 and the
//! SLO error budget spent. A [`Hypothesis`] judges each case into [`Check`]s; [`score`]
//! weighs the cases into a 0–100 score (Litmus's resilience score); a [`Scorecard`] holds
//! it all with the verdict, and the renderers turn it into a terminal [`table`],
//! [`markdown`] for a pull request, [`json`] for machines and [`junit`] XML for CI.
//!
//! This crate only holds data and pure functions over it: the driver that runs the faults
//! and measures them lives elsewhere, and nothing here reads a clock or the network.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod human;
mod hypothesis;
mod junit;
mod render;
pub mod report;
mod score;

pub use hypothesis::{Hypothesis, P99Bound};
pub use junit::junit;
pub use render::{json, markdown, table, write_all};
pub use report::{Case, Check, Scorecard};
pub use score::{default_weight, score};
