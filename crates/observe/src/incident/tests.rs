use super::*;
use bus::Exit;

fn ev(at_ms: u64, kind: EventKind) -> Event {
    Event {
        seq: at_ms,
        at_ms,
        origin: None,
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

#[test]
fn an_agents_incidents_name_its_node_and_older_records_read_without_one() {
    let mut inc = Incidents::on_node(Some("h0"));
    let IncidentChange::Opened(i) = inc.trigger("web", "a", "t".into(), None, 100) else {
        panic!("opens")
    };
    assert_eq!(i.node.as_deref(), Some("h0"));
    let json = serde_json::to_value(&i).unwrap();
    assert_eq!(json["node"], "h0");
    let back: Incident = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, i);
    // Stored before cluster mode (or under `bulwark up`): no `node`, and none written.
    let mut old = json;
    old.as_object_mut().unwrap().remove("node");
    let old: Incident = serde_json::from_value(old).unwrap();
    assert_eq!(old.node, None);
    assert!(serde_json::to_value(&old).unwrap().get("node").is_none());
    // Restored into an agent's store, an old record keeps saying nothing about a node.
    let changes = Incidents::on_node(Some("h1")).restore(vec![old], 200);
    assert_eq!(changes[0].incident().node, None);
    let IncidentChange::Opened(up) = Incidents::new().trigger("web", "a", "t".into(), None, 1)
    else {
        panic!("opens")
    };
    assert_eq!(up.node, None);
}

fn remediation(at: u64, id: u64, decision: &str, guard: Option<&str>, detail: &str) -> Event {
    ev(
        at,
        EventKind::Remediation {
            id,
            rule: "restart-on-page".into(),
            service: "web".into(),
            replica: None,
            actions: vec!["restart-service".into()],
            decision: decision.into(),
            guard: guard.map(Into::into),
            trigger: "page alert web/availability".into(),
            detail: detail.into(),
        },
    )
}

#[test]
fn a_remediation_lands_on_the_open_incident_with_its_guard_and_detail() {
    let mut inc = Incidents::new();
    inc.trigger("web", "web/avail/page", "burning".into(), None, 100);
    let c = inc.on_event(&remediation(
        200,
        3,
        "skipped",
        Some("cooldown"),
        "last acted 20s ago",
    ));
    let Some(IncidentChange::Updated(i)) = c else {
        panic!("{c:?}")
    };
    let last = i.timeline.last().unwrap();
    assert_eq!((last.at_ms, last.kind.as_str()), (200, "remediation"));
    assert_eq!(
        last.text,
        "remediation restart-on-page #3 (restart-service): skipped by cooldown — last acted 20s ago"
    );
    assert_eq!(i.resolved_by, None, "only a finished remediation resolves");
    let c = inc.on_event(&remediation(300, 4, "acted", None, ""));
    let text = c.unwrap().incident().timeline.last().unwrap().text.clone();
    assert_eq!(
        text,
        "remediation restart-on-page #4 (restart-service): acted"
    );
}

#[test]
fn anomalies_and_autoscaling_land_on_the_open_incident() {
    let mut inc = Incidents::new();
    inc.trigger("web", "web/avail/page", "burning".into(), None, 100);
    inc.on_event(&ev(
        200,
        EventKind::AnomalyDetected {
            service: "web".into(),
            replica: Some(1),
            kind: "memory-leak".into(),
            confidence: 0.931,
            forecast_ms: Some(250_000),
            detail: "rss +2 MiB/min".into(),
        },
    ));
    let c = inc.on_event(&ev(
        300,
        EventKind::Autoscaled {
            service: "web".into(),
            from: 2,
            to: 4,
            target: "request_rate".into(),
            value: 180.0,
            goal: 100.0,
            reason: "up".into(),
        },
    ));
    let entries: Vec<(&str, &str)> = c.as_ref().unwrap().incident().timeline[1..]
        .iter()
        .map(|e| (e.kind.as_str(), e.text.as_str()))
        .collect();
    assert_eq!(
        entries,
        vec![
            (
                "anomaly",
                "memory-leak on web/1: rss +2 MiB/min (confidence 0.93, limit in 4m)"
            ),
            (
                "action",
                "web autoscaled 2 -> 4: request_rate 180.0 per replica, target 100.0 (up)"
            ),
        ]
    );
    assert_eq!(span(7_800_000), "2h10m");
    assert_eq!(span(7_200_000), "2h");
    assert_eq!(span(999), "0s");
}

#[test]
fn a_finished_remediation_resolves_the_incident_and_splits_the_mttr() {
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
    // A manual one: opened at 1000, resolved at 1500.
    inc.trigger("web", "a", "burning".into(), None, 1000);
    inc.clear("web", "a", 1500);
    // An automated one: opened at 2000, resolved at 2200 after two remediations finished.
    inc.trigger("web", "a", "burning".into(), None, 2000);
    let mut other = remediation(2050, 5, "done", None, "");
    if let EventKind::Remediation { rule, .. } = &mut other.kind {
        *rule = "scale-out".into();
    }
    inc.on_event(&other);
    inc.on_event(&remediation(2100, 6, "done", None, "restarted 2 replicas"));
    let Some(IncidentChange::Resolved(i)) = inc.clear("web", "a", 2200) else {
        panic!("resolves")
    };
    assert_eq!(
        i.resolved_by.as_deref(),
        Some("restart-on-page"),
        "the last wins"
    );
    let saved = inc.list();
    assert_eq!(saved[0].resolved_by, None);
    assert_eq!(saved[1].resolved_by.as_deref(), Some("restart-on-page"));
    let r = &inc.reliability(10_000)[0];
    assert_eq!((r.incidents, r.automated), (2, 1));
    assert_eq!(r.mttr_ms, Some(350.0));
    assert_eq!(r.mttr_automated_ms, Some(200.0));
    assert_eq!(r.mttr_manual_ms, Some(500.0));
    // An open incident with a finished remediation is not counted yet.
    inc.trigger("web", "a", "burning".into(), None, 3000);
    inc.on_event(&remediation(3100, 7, "done", None, ""));
    let r = &inc.reliability(10_000)[0];
    assert_eq!((r.incidents, r.open, r.automated), (3, 1, 1));
    assert_eq!(r.mttr_automated_ms, Some(200.0));
    // The credit survives a restart of bulwark.
    let mut again = Incidents::new();
    again.restore(saved, 20_000);
    assert_eq!(again.reliability(30_000)[0].automated, 1);
}

#[test]
fn an_incident_stored_before_remediation_still_loads() {
    let old = r#"{"id":4,"service":"web","title":"web has no ready replica","state":"resolved",
        "fault_at_ms":5,"fault":"web/0 exited","detected_at_ms":6,"resolved_at_ms":9,
        "triggers":[],"timeline":[{"at_ms":6,"kind":"detected","text":"x"}],"more_actions":0}"#;
    let i: Incident = serde_json::from_str(old).unwrap();
    assert_eq!((i.id, i.resolved_by.as_deref()), (4, None));
    assert_eq!(i.ttr_ms(), Some(3));
}

#[test]
fn a_remediation_without_an_open_incident_changes_nothing() {
    let mut inc = Incidents::new();
    assert!(
        inc.on_event(&remediation(100, 1, "done", None, "x"))
            .is_none()
    );
    assert!(inc.list().is_empty());
    inc.trigger("web", "a", "t".into(), None, 200);
    inc.clear("web", "a", 300);
    assert!(
        inc.on_event(&remediation(400, 2, "done", None, "x"))
            .is_none()
    );
    let all = inc.list();
    assert_eq!(
        all[0].resolved_by, None,
        "a resolved incident is left as it was"
    );
    assert_eq!(all[0].timeline.len(), 2);
}

#[test]
fn a_huge_detail_is_bounded_on_a_character_boundary() {
    let mut inc = Incidents::new();
    inc.trigger("web", "a", "t".into(), None, 100);
    // Two-byte characters, so that the cut falls inside one unless it is careful.
    let detail = "é".repeat(512 * 1024) + "x";
    let c = inc.on_event(&remediation(200, 1, "failed", None, &detail));
    let text = c.unwrap().incident().timeline.last().unwrap().text.clone();
    assert!(text.len() <= TEXT_MAX + '…'.len_utf8(), "{}", text.len());
    assert!(text.starts_with("remediation restart-on-page #1 (restart-service): failed — éé"));
    assert!(text.ends_with('…'));
}

#[test]
fn remediations_count_against_the_timeline_bound() {
    let mut inc = Incidents::new();
    inc.trigger("web", "a", "t".into(), None, 100);
    for n in 0..TIMELINE_MAX as u64 + 10 {
        inc.on_event(&remediation(200 + n, n, "skipped", Some("rate-limit"), ""));
    }
    let Some(IncidentChange::Resolved(i)) = inc.clear("web", "a", 10_000) else {
        panic!()
    };
    assert_eq!(i.timeline.len(), TIMELINE_MAX + 1, "the resolution is kept");
    assert_eq!(i.more_actions, 11);
    assert_eq!(i.timeline.last().unwrap().kind, "resolved");
}

#[test]
fn an_oom_kill_is_the_incidents_fault_rather_than_its_signal_9() {
    let mut inc = Incidents::new();
    inc.on_event(&ready(100, 0));
    inc.on_event(&ev(
        2000,
        EventKind::ReplicaOomKilled {
            service: "web".into(),
            index: 0,
            pid: 1,
            memory_limit: Some(64 << 20),
            kills: 1,
        },
    ));
    let Some(IncidentChange::Opened(i)) = inc.on_event(&exited(2001, 0)) else {
        panic!("opens")
    };
    assert_eq!(
        i.fault.as_deref(),
        Some("web/0 OOM-killed past its memory limit of 67108864 bytes")
    );
    assert_eq!(i.fault_at_ms, Some(2000));
}
