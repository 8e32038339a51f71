//! Scaling up and down, seen in the status table, the endpoints and the processes.

use bus::EventKind;

use crate::harness::*;

const SLEEPER: &str = r#"
[services.s]
run = ["sh", "-c", "exec sleep 60"]
"#;

#[tokio::test]
async fn scale_up_adds_ready_replicas_and_scale_down_removes_the_highest() {
    let mut rt = Rt::start(SLEEPER);
    rt.until("s", |s| all_ready(s, 1)).await;
    let endpoints = rt.sup.endpoints("s").expect("a known service");

    assert_eq!(rt.sup.scale("s", 3).expect("scaled"), 1);
    let up = rt.until("s", |s| all_ready(s, 3)).await;
    assert_eq!(up.desired, 3);
    let indices: Vec<u32> = up.replicas.iter().map(|r| r.index).collect();
    assert_eq!(indices, [0, 1, 2]);
    let ready = endpoints.borrow().clone();
    let mut ports: Vec<u16> = ready.ready.iter().map(|e| e.addr.port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(
        ports.len(),
        3,
        "one endpoint per ready replica: {:?}",
        ready.ready
    );
    let pids: Vec<u32> = up
        .replicas
        .iter()
        .map(|r| r.pid.expect("running"))
        .collect();

    assert_eq!(rt.sup.scale("s", 1).expect("scaled"), 3);
    let down = rt.until("s", |s| s.replicas.len() == 1).await;
    assert_eq!(down.desired, 1);
    assert_eq!(down.replicas[0].index, 0);
    assert_eq!(
        down.replicas[0].pid,
        Some(pids[0]),
        "the survivor was not touched"
    );
    assert_eq!(down.replicas[0].restarts, 0);
    let removed: Vec<u32> = rt
        .seen(|e| matches!(e, EventKind::ReplicaStopping { reason, .. } if reason == "scaled down"))
        .iter()
        .map(|(_, e)| match e {
            EventKind::ReplicaStopping { index, .. } => *index,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.contains(&1) && removed.contains(&2), "{removed:?}");
    assert!(
        rt.seen(|e| matches!(e, EventKind::Scaled { from: 3, to: 1, .. }))
            .len()
            == 1
    );
    let ready = endpoints.borrow().clone();
    let replicas: Vec<u32> = ready.ready.iter().map(|e| e.replica).collect();
    assert_eq!(replicas, [0], "endpoints follow");
    for pid in &pids[1..] {
        assert!(!is_our_child(*pid), "replica process {pid} is gone");
    }

    // Scaling up again takes the lowest free index.
    rt.sup.scale("s", 2).expect("scaled");
    let again = rt.until("s", |s| all_ready(s, 2)).await;
    let indices: Vec<u32> = again.replicas.iter().map(|r| r.index).collect();
    assert_eq!(indices, [0, 1]);
    rt.sup.shutdown().await;
    let after = rt.status("s").expect("listed");
    assert!(after.replicas.iter().all(|r| r.pid.is_none() && !r.ready));
}
