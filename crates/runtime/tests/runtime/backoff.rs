//! Restart backoff on tokio's paused clock: the waits between restarts are timers, so
//! seconds of backoff pass at once while the children run for real.

use std::time::Duration;

use bus::EventKind;
use tokio::time::Instant;

use crate::harness::*;

fn is<'a>(service: &'a str, kind: &'a str) -> impl Fn(&EventKind) -> bool + 'a {
    move |e| {
        let name = match e {
            EventKind::ReplicaStarted { service, .. } => (service, "started"),
            EventKind::ReplicaExited { service, .. } => (service, "exited"),
            EventKind::RestartScheduled { service, .. } => (service, "scheduled"),
            EventKind::CrashLooping { service, .. } => (service, "looping"),
            _ => return false,
        };
        name.0 == service && name.1 == kind
    }
}

fn delay_ms(e: &EventKind) -> u64 {
    match e {
        EventKind::RestartScheduled { delay_ms, .. } => *delay_ms,
        other => panic!("not a restart: {other:?}"),
    }
}

/// The (paused-clock) time from each exit to the next start.
fn gaps_ms(rt: &Rt, service: &str) -> Vec<u64> {
    let exits: Vec<Instant> = rt.seen(is(service, "exited")).iter().map(|e| e.0).collect();
    let starts: Vec<Instant> = rt
        .seen(is(service, "started"))
        .iter()
        .map(|e| e.0)
        .collect();
    exits
        .iter()
        .zip(&starts[1..])
        .map(|(exit, start)| start.duration_since(*exit).as_millis() as u64)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn delays_between_restarts_grow_within_initial_and_max() {
    let mut rt = Rt::start(
        r#"
[services.bad]
run = ["sh", "-c", "echo boom >&2; exit 3"]
[services.bad.backoff]
initial = "1s"
max = "8s"
"#,
    );
    let began = Instant::now();
    for _ in 0..7 {
        rt.expect(is("bad", "started")).await;
    }
    let delays: Vec<u64> = rt
        .seen(is("bad", "scheduled"))
        .iter()
        .map(|e| delay_ms(&e.1))
        .collect();
    assert!(delays.len() >= 6, "{delays:?}");
    assert!(
        delays.iter().all(|d| (1000..=8000).contains(d)),
        "within [initial, max]: {delays:?}"
    );
    assert!(
        delays[0] < delays[1] && delays[1] < delays[2] && delays[2] < delays[3],
        "growing: {delays:?}"
    );
    assert!(
        delays[4..].iter().all(|&d| d >= 6400),
        "near the max: {delays:?}"
    );
    // The replica really waited each delay (on the paused clock), and no longer.
    for (gap, delay) in gaps_ms(&rt, "bad").iter().zip(&delays) {
        assert!(
            (*delay..=delay + 5).contains(gap),
            "waited {gap} ms for {delay} ms"
        );
    }
    assert!(began.elapsed() >= Duration::from_millis(delays[..6].iter().sum()));

    rt.expect(is("bad", "scheduled")).await;
    let looping = rt.seen(is("bad", "looping"));
    assert_eq!(looping.len(), 1, "announced once: {looping:?}");
    let status = rt.status("bad").expect("listed");
    let r = &status.replicas[0];
    assert_eq!(r.state, runtime::ReplicaState::CrashLooping);
    assert_eq!(r.last_exit.and_then(|e| e.code), Some(3));
    assert!(r.stderr_tail.iter().any(|l| l == "boom"), "{r:?}");
    rt.sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_backoff_reaches_the_next_restart_of_running_replicas() {
    let backoff = |d: &str| {
        format!(
            "[services.bad]\nrun = [\"sh\", \"-c\", \"exit 3\"]\n\
             [services.bad.backoff]\ninitial = \"{d}\"\nmax = \"{d}\"\n"
        )
    };
    let mut rt = Rt::start(&backoff("1s"));
    let (_, first) = rt.expect(is("bad", "scheduled")).await;
    assert_eq!(delay_ms(&first), 1000);

    let changes = rt
        .sup
        .reload(&stack(&backoff("3s")))
        .expect("reloaded")
        .changes;
    assert_eq!(changes, ["bad: settings updated in place"]);
    let (_, next) = rt.expect(is("bad", "scheduled")).await;
    assert_eq!(delay_ms(&next), 3000, "the reloaded backoff is honoured");
    let (waited_from, _) = rt
        .seen(is("bad", "exited"))
        .last()
        .cloned()
        .expect("exited");
    let (started, _) = rt.expect(is("bad", "started")).await;
    assert!(started.duration_since(waited_from) >= Duration::from_secs(3));
    rt.sup.shutdown().await;
}
