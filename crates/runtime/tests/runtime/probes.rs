//! Probe transitions with exec probes, in real time with short periods.

use bus::{EventKind, ProbeKind};

use crate::harness::*;

#[tokio::test]
async fn a_failing_readiness_probe_takes_the_replica_out_without_restarting_it() {
    let flag = temp_path("ready-flag");
    let _ = std::fs::remove_file(&flag);
    let mut rt = Rt::start(&format!(
        r#"
[services.s]
run = ["sh", "-c", "exec sleep 60"]
[services.s.readiness]
exec = ["test", "-f", "{}"]
period = "50ms"
failure_threshold = 1
"#,
        flag.display()
    ));
    let endpoints = rt.sup.endpoints("s").expect("a known service");
    let (_, first) = rt
        .expect(|e| {
            matches!(
                e,
                EventKind::ReplicaUnready { .. } | EventKind::ReplicaReady { .. }
            )
        })
        .await;
    assert!(
        matches!(first, EventKind::ReplicaUnready { .. }),
        "{first:?}"
    );
    assert!(endpoints.borrow().ready.is_empty());

    std::fs::write(&flag, b"").expect("flag");
    let s = rt.until("s", |s| all_ready(s, 1)).await;
    assert_eq!(s.replicas[0].state, runtime::ReplicaState::Running);
    assert_eq!(endpoints.borrow().ready.len(), 1);

    std::fs::remove_file(&flag).expect("flag");
    let (_, unready) = rt
        .expect(|e| matches!(e, EventKind::ReplicaUnready { .. }))
        .await;
    let EventKind::ReplicaUnready { reason, .. } = unready else {
        unreachable!()
    };
    assert!(
        reason.contains("readiness probe failed") && reason.contains("exec"),
        "{reason}"
    );
    let s = rt.until("s", |s| !s.replicas[0].ready).await;
    assert_eq!(s.replicas[0].restarts, 0, "readiness never restarts");
    assert_eq!(s.replicas[0].state, runtime::ReplicaState::Running);
    assert!(endpoints.borrow().ready.is_empty());
    rt.sup.shutdown().await;
    if let Some(dir) = flag.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A service `s` whose `probe` (`liveness` or `startup`) runs `exec` every 50 ms, gives up
/// after two failures, and restarts with a short backoff.
fn failing_probe(probe: &str, exec: &str) -> String {
    format!(
        r#"
[services.s]
run = ["sh", "-c", "exec sleep 60"]
[services.s.{probe}]
exec = {exec}
period = "50ms"
failure_threshold = 2
[services.s.backoff]
initial = "50ms"
max = "100ms"
"#
    )
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_replica() {
    let mut rt = Rt::start(&failing_probe(
        "liveness",
        r#"["sh", "-c", "echo sick >&2; exit 1"]"#,
    ));
    let (_, failed) = rt
        .expect(|e| matches!(e, EventKind::ProbeFailed { .. }))
        .await;
    let EventKind::ProbeFailed { probe, reason, .. } = failed else {
        unreachable!()
    };
    assert_eq!(probe, ProbeKind::Liveness);
    assert!(
        reason.contains("liveness probe failed 2 times in a row"),
        "{reason}"
    );
    assert!(
        reason.contains("sick"),
        "the probe's output is in the reason: {reason}"
    );
    rt.expect(|e| matches!(e, EventKind::ReplicaExited { .. }))
        .await;
    rt.expect(|e| matches!(e, EventKind::RestartScheduled { .. }))
        .await;
    rt.expect(|e| matches!(e, EventKind::ReplicaStarted { .. }))
        .await;
    let s = rt.until("s", |s| s.replicas[0].restarts >= 1).await;
    assert!(s.replicas[0].pid.is_some());
    rt.sup.shutdown().await;
}

#[tokio::test]
async fn a_failing_startup_probe_restarts_before_running() {
    let mut rt = Rt::start(&failing_probe("startup", r#"["false"]"#));
    let (_, failed) = rt
        .expect(|e| matches!(e, EventKind::ProbeFailed { .. }))
        .await;
    assert!(
        matches!(
            failed,
            EventKind::ProbeFailed {
                probe: ProbeKind::Startup,
                ..
            }
        ),
        "{failed:?}"
    );
    assert!(
        rt.seen(|e| matches!(
            e,
            EventKind::ReplicaRunning { .. } | EventKind::ReplicaReady { .. }
        ))
        .is_empty(),
        "never running, never ready"
    );
    rt.until("s", |s| s.replicas[0].restarts >= 1).await;
    rt.sup.shutdown().await;
}
