//! Pure resilience mechanisms. Every timing decision takes `now` (and any randomness) as an
//! argument, so each one is tested without sleeping.
//!
//! Architecture invariant: this crate reads no clock, spawns no task and does no I/O.
#![forbid(unsafe_code)]

mod backoff;
mod threshold;

pub use backoff::{Backoff, CrashLoop, RestartDecision};
pub use threshold::{Threshold, Transition};
