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
async fn a_changed_spec_reaches_every_replica_by_a_rolling_restart() {
    let mut rt = Rt::start(&versioned(1, 2));
    rt.until("s", |s| all_ready(s, 2)).await;
    rt.line("s", 0, "v=1").await;
    rt.line("s", 1, "v=1").await;
    let before = rt.bus.last_seq();

    let changes = rt.sup.reload(&stack(&versioned(2, 2))).expect("reloaded");
    assert_eq!(
        changes,
        ["s: rolling restart (its command or settings changed)"]
    );
    rt.line("s", 0, "v=2").await;
    rt.line("s", 1, "v=2").await;
    let s = rt
        .until("s", |s| {
            all_ready(s, 2) && s.replicas.iter().all(|r| r.restarts == 1)
        })
        .await;
    assert_eq!(s.desired, 2);

    // One at a time: replica 1 is stopped only once replica 0 is ready again.
    let history = rt.bus.history();
    let after: Vec<&EventKind> = history
        .iter()
        .filter(|e| e.seq > before)
        .map(|e| &e.kind)
        .collect();
    let at = |pred: &dyn Fn(&EventKind) -> bool| after.iter().position(|e| pred(e));
    let ready0 = at(&|e| matches!(e, EventKind::ReplicaReady { index: 0, .. }));
    let stopping1 = at(&|e| matches!(e, EventKind::ReplicaStopping { index: 1, .. }));
    assert!(ready0.is_some() && ready0 < stopping1, "{after:#?}");
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
    let changes = rt.sup.reload(&stack(&next)).expect("reloaded");
    assert_eq!(changes, ["extra: added", "s: scaled 2 -> 1"]);
    rt.until("extra", |s| all_ready(s, 1)).await;
    let s = rt.until("s", |s| s.replicas.len() == 1).await;
    assert_eq!(s.replicas[0].restarts, 0, "a count change restarts nobody");

    // Removed from the stack: drained, stopped and forgotten.
    let changes = rt.sup.reload(&stack(&versioned(1, 1))).expect("reloaded");
    assert_eq!(changes, ["extra: removed"]);
    rt.expect(|e| matches!(e, EventKind::ReplicaExited { service, .. } if service == "extra"))
        .await;
    assert!(rt.status("extra").is_none());
    rt.sup.shutdown().await;
}
