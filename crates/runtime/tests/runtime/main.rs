//! The runtime at its own level: a real `Supervisor` with real `sh -c` children, driven
//! through its API and observed through the bus, the status table, endpoints and logs.
//! Tests that only wait (backoff) run on tokio's paused clock; tests where real processes
//! and probes take time run in real time with short durations.

mod backoff;
mod env;
mod harness;
mod probes;
mod reload;
mod scale;
mod stop;
