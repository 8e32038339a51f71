//! How `bulwark status` and `bulwark events` print what the API answers.

use crate::output::outln;
use crate::reports::ms_to_time;

/// One line on the journal: `ok`, or failing since when and why.
fn journal_line(j: &api::json::Journal) -> String {
    match j.failing_since_ms {
        None => format!(
            "journal: ok ({} write errors, {} events lost since start)",
            j.write_errors, j.lost_events
        ),
        Some(since) => format!(
            "journal: FAILING since {}: {} ({} write errors, {} events lost); bulwark keeps \
             retrying; free space in the state directory",
            ms_to_time(since),
            j.last_error.as_deref().unwrap_or("unknown error"),
            j.write_errors,
            j.lost_events
        ),
    }
}

/// `memory 12.3 MiB / 64.0 MiB  cpu 1.52 s (limit 0.2 cores)  pids 3 / 32`.
fn resources_line(r: &api::json::ReplicaResources) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let of = |used: String, limit: Option<String>| match limit {
        Some(l) => format!("{used} / {l}"),
        None => used,
    };
    let memory = of(
        r.memory_bytes.map_or("-".into(), mib),
        r.memory_limit_bytes.map(mib),
    );
    let cpu = match (r.cpu_seconds, r.cpu_limit_cores) {
        (used, Some(l)) => format!(
            "{} (limit {l} cores)",
            used.map_or("-".into(), |s| format!("{s:.2} s"))
        ),
        (used, None) => used.map_or("-".into(), |s| format!("{s:.2} s")),
    };
    let pids = of(
        r.pids.map_or("-".into(), |p| p.to_string()),
        r.pids_limit.map(|p| p.to_string()),
    );
    format!("memory {memory}  cpu {cpu}  pids {pids}")
}

pub(crate) fn print_status(status: &api::json::Status) {
    outln!(
        "{:<16} {:>3}  {:<14} {:<5} {:>8} {:>6} {:>8}  LAST EXIT",
        "SERVICE",
        "#",
        "STATE",
        "READY",
        "PID",
        "PORT",
        "RESTARTS"
    );
    for s in &status.services {
        for r in &s.replicas {
            let exit = match &r.last_exit {
                Some(api::json::Exit {
                    oom_killed: true, ..
                }) => "oom-killed".into(),
                Some(api::json::Exit { code: Some(c), .. }) => format!("exit {c}"),
                Some(api::json::Exit {
                    signal: Some(s), ..
                }) => format!("signal {s}"),
                _ => "-".into(),
            };
            outln!(
                "{:<16} {:>3}  {:<14} {:<5} {:>8} {:>6} {:>8}  {}",
                s.name,
                r.index,
                r.state,
                if r.ready { "yes" } else { "no" },
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.port.map_or("-".into(), |p| p.to_string()),
                r.restarts,
                exit
            );
            if let Some(res) = &r.resources {
                outln!("{:<16}      {}", "", resources_line(res));
            }
            // A private network's replica is not on 127.0.0.1: say where it is.
            if let (Some(addr), Some(port)) = (r.addr, r.port)
                && !addr.is_loopback()
            {
                outln!(
                    "{:<16}      address: {}",
                    "",
                    std::net::SocketAddr::new(addr, port)
                );
            }
            match (&r.role, r.token) {
                (Some(role), Some(t)) => outln!("{:<16}      role: {role}, fencing token {t}", ""),
                (Some(role), None) => outln!("{:<16}      role: {role}", ""),
                _ => {}
            }
            if let Some(text) = &r.notify_status {
                outln!("{:<16}      status: {text}", "");
            }
            for line in &r.stderr_tail {
                outln!("{:<16}      | {line}", "");
            }
        }
        let exposed = s
            .expose
            .as_deref()
            .map(|a| format!(" on {a}"))
            .unwrap_or_default();
        outln!(
            "{:<16} {}/{} ready{exposed}, revision {}",
            "",
            s.ready,
            s.desired,
            s.revision
        );
        if let Some(r) = &s.rollout {
            outln!("{:<16} rollout: {r}", "");
        }
        if let Some(d) = &s.drift {
            outln!("{:<16} differs from the stack file: {d}", "");
        }
        if !s.secrets.is_empty() {
            outln!(
                "{:<16} secrets: {} (values hidden)",
                "",
                s.secrets.join(", ")
            );
        }
        if let Some(a) = &s.autoscale {
            outln!("{:<16} {}", "", crate::remedy_cmd::autoscale_line(a));
        }
    }
    for a in &status.pending_approvals {
        outln!("{}", crate::remedy_cmd::pending_line(a));
    }
    if let Some(j) = &status.journal {
        outln!("{}", journal_line(j));
    }
}

/// One line per event: time, type, replica, then the other fields.
pub(crate) fn describe_event(v: &serde_json::Value) -> String {
    let at = v["at_ms"].as_u64().unwrap_or(0);
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at),
    );
    let kind = v["type"].as_str().unwrap_or("?");
    let who = match (v["service"].as_str(), v["index"].as_u64()) {
        (Some(s), Some(i)) => format!("{s}/{i}"),
        (Some(s), None) => s.to_string(),
        _ => String::new(),
    };
    let mut rest = String::new();
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            if matches!(k.as_str(), "seq" | "at_ms" | "type" | "service" | "index") {
                continue;
            }
            rest.push_str(&format!(" {k}={val}"));
        }
    }
    format!("{time} {kind:<18} {who:<10}{rest}")
}
