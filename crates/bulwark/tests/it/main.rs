//! Integration tests: the real `bulwark` binary, real child processes, real sockets on
//! 127.0.0.1 with ephemeral ports. One test binary; see `harness.rs`.

mod harness;
mod hosts;

mod api;
mod api_tls;
mod audit;
mod backups;
mod browser;
mod chaos;
mod check;
mod cluster;
mod completions;
mod dashboard;
mod degrade;
mod ext_auth;
mod faults;
mod grafana;
mod hardening_api;
mod hardening_proxy;
mod hardening_runtime;
mod import;
mod leader;
mod lifecycle;
mod oci;
mod oci_init;
mod oci_notify;
mod oci_processes;
mod oci_resources;
mod probes;
mod proxy;
mod remedy;
mod resilience;
mod resources;
mod restart;
mod roles;
mod rollout;
mod schema;
mod sdnotify;
mod secrets;
mod series;
mod slo;
mod tcp_tls;
mod tls;
mod top;
mod workers;
