//! Stopping: the stop signal, then SIGKILL of the group once the grace is over.

use bus::{EventKind, Exit};

use crate::harness::*;

fn exit_of(rt: &Rt, name: &str) -> Exit {
    rt.bus
        .history()
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ReplicaExited { service, exit, .. } if service == name => Some(*exit),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} exited"))
}

/// Milliseconds (wall clock) from the replica's stop to its exit.
fn stop_took_ms(rt: &Rt, name: &str) -> u64 {
    let at = |kind: &str| {
        rt.bus
            .history()
            .iter()
            .find(|e| {
                let (s, k) = match &e.kind {
                    EventKind::ReplicaStopping { service, .. } => (service, "stopping"),
                    EventKind::ReplicaExited { service, .. } => (service, "exited"),
                    _ => return false,
                };
                s == name && k == kind
            })
            .map(|e| e.at_ms)
            .unwrap_or_else(|| panic!("{name} {kind}"))
    };
    at("exited") - at("stopping")
}

#[tokio::test]
async fn a_child_ignoring_the_stop_signal_is_killed_after_the_grace() {
    // `trap "" TERM` is inherited through exec: neither the shell nor sleep will stop.
    let mut rt = Rt::start(
        r#"
[services.stubborn]
run = ["sh", "-c", "trap '' TERM; echo trapped; exec sleep 60"]
stop_grace = "300ms"

[services.polite]
run = ["sh", "-c", "echo up; exec sleep 60"]
stop_grace = "5s"
"#,
    );
    rt.until("stubborn", |s| all_ready(s, 1)).await;
    rt.until("polite", |s| all_ready(s, 1)).await;
    rt.line("stubborn", 0, "trapped").await;
    rt.line("polite", 0, "up").await;
    let stubborn_pid = rt.status("stubborn").unwrap().replicas[0].pid.unwrap();

    let began = std::time::Instant::now();
    rt.sup.shutdown().await;
    assert!(
        began.elapsed() < std::time::Duration::from_secs(4),
        "the polite one was not waited on"
    );

    let killed: Vec<(String, u32)> = rt
        .bus
        .history()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ReplicaKilled { service, pid, .. } => Some((service.clone(), *pid)),
            _ => None,
        })
        .collect();
    assert_eq!(killed, [("stubborn".to_owned(), stubborn_pid)]);
    assert_eq!(exit_of(&rt, "stubborn").signal, Some(9));
    let took = stop_took_ms(&rt, "stubborn");
    assert!(
        (299..2000).contains(&took),
        "killed after the grace: {took} ms"
    );

    assert_eq!(
        exit_of(&rt, "polite").signal,
        Some(15),
        "SIGTERM was enough"
    );
    assert!(stop_took_ms(&rt, "polite") < 2000);
    assert!(!is_our_child(stubborn_pid));
    for s in ["stubborn", "polite"] {
        let status = rt.status(s).unwrap();
        assert_eq!(status.replicas[0].state, runtime::ReplicaState::Stopped);
        assert_eq!(status.replicas[0].pid, None);
    }
}
