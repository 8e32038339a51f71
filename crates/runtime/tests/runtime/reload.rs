//! Reloading a changed stack: the new spec reaches the replicas, one at a time.

use bus::EventKind;

use crate::harness::*;

fn versioned(v: u32, replicas: u32) -> String {
    format!(
        r#"
[services.s]
run = ["sh", "-c", "echo v=$V; exec sleep 60"]
replicas = {replicas}
env = {{ V = "{v}" }}
"#
    )
}

#[tokio::test]
async fn a_process_change_is_left_to_a_rollout_which_runs_it_as_a_new_revision() {
    let mut rt = Rt::start(&versioned(1, 2));
    rt.until("s", |s| all_ready(s, 2)).await;
    rt.line("s", 0, "v=1").await;

    let reloaded = rt.sup.reload(&stack(&versioned(2, 2))).expect("reloaded");
    assert_eq!(
        reloaded.changes,
        ["s: rollout (its command, environment or probes changed)"]
    );
    assert_eq!(reloaded.rollouts.len(), 1);
    // The stable revision keeps running what it ran: a crash restarts version 1.
    let spec = rt.sup.service_spec("s").expect("spec");
    assert_eq!(spec.env["V"], "1");

    let rev = rt.sup.stage(&reloaded.rollouts[0]).expect("staged");
    assert_eq!(rev, 2);
    assert!(
        matches!(
            rt.sup.scale("s", 3),
            Err(runtime::ControlError::RolloutUnderWay(_))
        ),
        "scaling waits for the rollout"
    );
    let started = rt.sup.start_replicas("s", rev, 1);
    assert_eq!(started, [2], "the lowest free index");
    rt.line("s", 2, "v=2").await;
    let s = rt.until("s", |s| all_ready(s, 3)).await;
    let revs: Vec<(u32, u32)> = s.replicas.iter().map(|r| (r.index, r.revision)).collect();
    assert_eq!(revs, [(0, 1), (1, 1), (2, 2)]);
    let view = rt.sup.revisions("s").expect("view");
    assert_eq!(view.of(2).count(), 1);

    rt.sup.remove_replicas("s", &[0, 1]);
    rt.until("s", |s| s.replicas.len() == 1).await;
    rt.sup.settle("s", rev);
    let s = rt.status("s").expect("status");
    assert_eq!(s.revision, 2);
    assert_eq!(rt.sup.service_spec("s").expect("spec").env["V"], "2");
    rt.sup.scale("s", 2).expect("released after the rollout");
    rt.line("s", 0, "v=2").await;
    rt.sup.shutdown().await;
}

#[tokio::test]
async fn a_reload_adds_services_after_their_dependencies_and_scales_the_others() {
    let mut rt = Rt::start(&versioned(1, 2));
    rt.until("s", |s| all_ready(s, 2)).await;
    let mut next = versioned(1, 1);
    next.push_str(
        "[services.extra]\nrun = [\"sh\", \"-c\", \"exec sleep 60\"]\ndepends_on = [\"s\"]\n",
    );
    let changes = rt.sup.reload(&stack(&next)).expect("reloaded").changes;
    assert_eq!(changes, ["extra: added", "s: scaled 2 -> 1"]);
    rt.until("extra", |s| all_ready(s, 1)).await;
    let s = rt.until("s", |s| s.replicas.len() == 1).await;
    assert_eq!(s.replicas[0].restarts, 0, "a count change restarts nobody");

    // Removed from the stack: drained, stopped and forgotten.
    let changes = rt
        .sup
        .reload(&stack(&versioned(1, 1)))
        .expect("reloaded")
        .changes;
    assert_eq!(changes, ["extra: removed"]);
    rt.expect(|e| matches!(e, EventKind::ReplicaExited { service, .. } if service == "extra"))
        .await;
    assert!(rt.status("extra").is_none());
    rt.sup.shutdown().await;
}

/// A cluster agent runs `replicas = 0` of a service until replicas are placed on its node,
/// then reloads a count: the service, never started, starts that many; and back to none.
#[tokio::test]
async fn a_service_with_no_replica_starts_the_count_a_reload_gives_it() {
    let mut rt = Rt::start(&versioned(1, 0));
    let changes = rt
        .sup
        .reload(&stack(&versioned(1, 2)))
        .expect("reloaded")
        .changes;
    assert_eq!(changes, ["s: scaled 0 -> 2"]);
    rt.until("s", |s| all_ready(s, 2)).await;
    let changes = rt
        .sup
        .reload(&stack(&versioned(1, 0)))
        .expect("reloaded")
        .changes;
    assert_eq!(changes, ["s: scaled 2 -> 0"]);
    rt.until("s", |s| s.replicas.is_empty()).await;
    rt.sup.shutdown().await;
}
