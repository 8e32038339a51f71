use super::*;
use bus::Exit;

fn ev(at_ms: u64, kind: EventKind) -> Event {
    Event {
        seq: at_ms,
        at_ms,
        kind,
    }
}

fn ready(at: u64, index: u32) -> Event {
    ev(
        at,
        EventKind::ReplicaReady {
            service: "web".into(),
            index,
        },
    )
}

fn exited(at: u64, index: u32) -> Event {
    ev(
        at,
        EventKind::ReplicaExited {
            service: "web".into(),
            index,
            pid: 1,
            exit: Exit {
                code: None,
                signal: Some(9),
            },
            uptime_ms: 5,
        },
    )
}

#[test]
fn losing_the_last_ready_replica_opens_and_recovery_resolves() {
    let mut inc = Incidents::new();
    inc.on_event(&ev(
        0,
        EventKind::ReplicaStarted {
            service: "web".into(),
            index: 0,
            pid: 1,
            port: 1,
        },
    ));
    assert!(inc.on_event(&ready(100, 0)).is_none());
    assert!(inc.on_event(&ready(100, 1)).is_none());
    assert!(inc.on_event(&exited(1000, 0)).is_none(), "one replica left");
    let Some(IncidentChange::Opened(i)) = inc.on_event(&exited(2000, 1)) else {
        panic!("opens")
    };
    assert_eq!(i.fault_at_ms, Some(2000));
    assert_eq!(i.fault.as_deref(), Some("web/1 exited: killed by signal 9"));
    assert_eq!(i.mttd_ms(), Some(0));
    inc.on_event(&ev(
        2300,
        EventKind::RestartScheduled {
            service: "web".into(),
            index: 1,
            delay_ms: 250,
            restarts: 1,
            reason: "x".into(),
        },
    ));
    let Some(IncidentChange::Resolved(i)) = inc.on_event(&ready(2600, 1)) else {
        panic!("resolves")
    };
    assert_eq!(i.ttr_ms(), Some(600));
    let kinds: Vec<&str> = i.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["fault", "detected", "action", "action", "resolved"]
    );
    let r = &inc.reliability(10_000)[0];
    assert_eq!(r.incidents, 1);
    assert_eq!(r.mttr_ms, Some(600.0));
    // observed 10 000 ms, 600 down
    assert!((r.availability - 0.94).abs() < 1e-9, "{r:?}");
    assert_eq!(r.mtbf_ms, Some(9400.0));
}

#[test]
fn alert_trigger_uses_the_hint_and_stays_open_until_every_trigger_clears() {
    let mut inc = Incidents::new();
    let c = inc.trigger(
        "web",
        "web/avail/page",
        "burning".into(),
        Some((500, "first failed request".into())),
        900,
    );
    let IncidentChange::Opened(i) = c else {
        panic!()
    };
    assert_eq!(i.mttd_ms(), Some(400));
    let IncidentChange::Updated(_) =
        inc.trigger("web", NO_READY_REPLICA, "none ready".into(), None, 1000)
    else {
        panic!()
    };
    assert!(matches!(
        inc.clear("web", "web/avail/page", 2000),
        Some(IncidentChange::Updated(_))
    ));
    let Some(IncidentChange::Resolved(i)) = inc.clear("web", NO_READY_REPLICA, 3000) else {
        panic!()
    };
    assert_eq!(i.ttr_ms(), Some(2100));
    assert!(inc.clear("web", NO_READY_REPLICA, 4000).is_none());
}

#[test]
fn requested_stops_and_shutdown_are_not_incidents() {
    let mut inc = Incidents::new();
    inc.on_event(&ready(0, 0));
    inc.on_event(&ev(
        3,
        EventKind::ReplicaExited {
            service: "web".into(),
            index: 1,
            pid: 1,
            exit: Exit {
                code: Some(0),
                signal: None,
            },
            uptime_ms: 1,
        },
    ));
    // Restarting a lone replica leaves nobody serving: an incident, but the requested
    // stop is not its fault (the old exit of another replica is the last fault seen).
    let c = inc.on_event(&ev(
        10,
        EventKind::ReplicaStopping {
            service: "web".into(),
            index: 0,
            reason: "restart requested".into(),
        },
    ));
    let Some(IncidentChange::Opened(i)) = c else {
        panic!("{c:?}")
    };
    assert_eq!(i.fault.as_deref(), Some("web/1 exited: exit status 0"));
    assert!(
        inc.on_event(&exited(20, 0)).is_none(),
        "requested exit adds no fault"
    );
    assert_eq!(inc.last_fault["web"].0, 3);
    let mut inc = Incidents::new();
    inc.on_event(&ready(0, 0));
    inc.on_event(&ev(5, EventKind::StackStopping));
    assert!(inc.on_event(&exited(10, 0)).is_none());
    assert!(inc.list().is_empty());
}

#[test]
fn restore_closes_incidents_left_open() {
    let mut inc = Incidents::new();
    inc.trigger("web", "a", "t".into(), None, 100);
    let saved = inc.list();
    let mut again = Incidents::new();
    let changes = again.restore(saved, 5000);
    assert_eq!(changes.len(), 1);
    let IncidentChange::Resolved(i) = &changes[0] else {
        panic!()
    };
    assert_eq!(i.resolved_at_ms, Some(5000));
    let IncidentChange::Opened(n) = again.trigger("web", "a", "t".into(), None, 6000) else {
        panic!()
    };
    assert_eq!(n.id, 2, "ids continue");
}
