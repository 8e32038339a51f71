use super::*;

pub fn replica(index: u32, pid: u32) -> Replica {
    Replica {
        index,
        pid: Some(pid),
        runtime_pid: None,
        addr: None,
        port: Some(10_000 + index as u16),
        state: "running".into(),
        ready: true,
        restarts: 0,
        crash_looping: false,
        last_exit: None,
        stderr_tail: Vec::new(),
        started_at_ms: Some(1_000),
        revision: 1,
        held_out: false,
        resources: None,
        notify_status: None,
        role: None,
        token: None,
    }
}

pub fn service(name: &str, replicas: Vec<Replica>) -> Service {
    Service {
        name: name.into(),
        desired: replicas.len() as u32,
        ready: replicas.iter().filter(|r| r.ready).count() as u32,
        expose: None,
        replicas,
        revision: 1,
        rollout: None,
        drift: None,
        autoscale: None,
        secrets: Vec::new(),
    }
}

pub fn snapshot(services: Vec<Service>) -> Msg {
    Msg::Fetched(Box::new(Snapshot {
        status: Status {
            services,
            journal: None,
            pending_approvals: Vec::new(),
        },
        alerts: Vec::new(),
        incidents: Vec::new(),
    }))
}

fn id(service: &str, index: u32) -> ReplicaId {
    ReplicaId {
        service: service.into(),
        index,
    }
}

fn two_services() -> Model {
    let mut m = Model::new("127.0.0.1:1".into(), true);
    m.update(
        snapshot(vec![
            service("api", vec![replica(0, 100), replica(1, 101)]),
            service("web", vec![replica(0, 200)]),
        ]),
        5_000,
    );
    m
}

#[test]
fn the_first_answer_selects_the_first_replica_and_keys_move_within_the_list() {
    let mut m = two_services();
    assert_eq!(m.selected, Some(id("api", 0)));
    assert_eq!(m.refreshed_ms, Some(5_000));
    m.update(Msg::Key(Key::Up), 0);
    assert_eq!(m.selected, Some(id("api", 0)), "stops at the top");
    m.update(Msg::Key(Key::Down), 0);
    m.update(Msg::Key(Key::Down), 0);
    assert_eq!(m.selected, Some(id("web", 0)), "crosses services");
    m.update(Msg::Key(Key::Down), 0);
    assert_eq!(m.selected, Some(id("web", 0)), "stops at the bottom");
    m.update(Msg::Key(Key::Home), 0);
    assert_eq!(m.selected, Some(id("api", 0)));
    m.update(Msg::Key(Key::End), 0);
    assert_eq!(m.selected, Some(id("web", 0)));
    m.update(Msg::Key(Key::PageUp), 0);
    assert_eq!(m.selected, Some(id("api", 0)));
}

#[test]
fn the_selection_follows_its_replica_and_falls_back_to_its_place() {
    let mut m = two_services();
    m.update(Msg::Key(Key::Down), 0);
    // A new replica appears before the selected one: the selection stays on api/1.
    m.update(
        snapshot(vec![
            service("aaa", vec![replica(0, 50)]),
            service("api", vec![replica(0, 100), replica(1, 101)]),
        ]),
        6_000,
    );
    assert_eq!(m.selected, Some(id("api", 1)));
    // api is scaled to one replica: the one now at the selection's place (2) is taken.
    m.update(
        snapshot(vec![
            service("aaa", vec![replica(0, 50)]),
            service("api", vec![replica(0, 100)]),
            service("web", vec![replica(0, 200)]),
        ]),
        7_000,
    );
    assert_eq!(m.selected, Some(id("web", 0)));
    m.update(snapshot(vec![]), 8_000);
    assert_eq!(m.selected, None);
    m.update(Msg::Key(Key::Down), 0);
    m.update(Msg::Key(Key::Open), 0);
    assert_eq!(m.overlay, None, "nothing to open without replicas");
}

#[test]
fn restart_needs_a_yes_and_anything_else_cancels() {
    let mut m = two_services();
    assert_eq!(m.update(Msg::Key(Key::Restart), 0), None);
    assert_eq!(m.overlay, Some(Overlay::Confirm(id("api", 0))));
    assert_eq!(m.update(Msg::Key(Key::No), 0), None);
    assert_eq!(m.overlay, None);
    m.update(Msg::Key(Key::Restart), 0);
    assert_eq!(m.update(Msg::Key(Key::Down), 0), None);
    assert_eq!(m.overlay, None);
    assert_eq!(m.selected, Some(id("api", 0)), "the key only cancelled");
    m.update(Msg::Key(Key::Restart), 0);
    assert_eq!(
        m.update(Msg::Key(Key::Yes), 0),
        Some(Effect::Restart(id("api", 0)))
    );
    assert_eq!(m.overlay, None);
    let effect = m.update(
        Msg::Restarted {
            id: id("api", 0),
            error: Some("API answered 403 Forbidden: needs operator".into()),
        },
        9_000,
    );
    assert_eq!(effect, Some(Effect::Refresh));
    let (at, text) = m.flash.clone().unwrap();
    assert_eq!(at, 9_000);
    assert!(
        text.contains("restart of api/0 failed: API answered 403"),
        "{text}"
    );
}

#[test]
fn esc_closes_a_window_first_and_q_always_quits() {
    let mut m = two_services();
    m.update(Msg::Key(Key::Open), 0);
    assert_eq!(m.overlay, Some(Overlay::Stderr(id("api", 0))));
    m.update(Msg::Key(Key::Down), 0);
    assert_eq!(m.selected, Some(id("api", 0)), "keys go to the window");
    m.update(Msg::Key(Key::Back), 0);
    assert_eq!(m.overlay, None);
    assert!(!m.quit);
    m.update(Msg::Key(Key::Help), 0);
    m.update(Msg::Key(Key::Quit), 0);
    assert!(m.quit);
    let mut m = two_services();
    m.update(Msg::Key(Key::Back), 0);
    assert!(m.quit);
}

#[test]
fn a_failed_refresh_keeps_what_was_shown_and_when_it_went_down() {
    let mut m = two_services();
    let failed = |e: &str| Msg::FetchFailed {
        error: e.into(),
        retry: Duration::from_secs(2),
    };
    m.update(failed("cannot reach"), 10_000);
    m.update(failed("still cannot reach"), 12_000);
    let down = m.down.clone().unwrap();
    assert_eq!(down.since_ms, 10_000);
    assert_eq!(down.error, "still cannot reach");
    assert_eq!(m.replicas().count(), 3, "the last answer stays on screen");
    m.update(snapshot(vec![]), 13_000);
    assert_eq!(m.down, None);
}

#[test]
fn events_become_lines_the_newest_kept_and_each_asks_for_a_refresh() {
    let mut m = two_services();
    let exited = r#"{"seq":7,"at_ms":1000,"type":"replica_exited","service":"web","index":0,
        "pid":200,"exit":{"code":null,"signal":9},"uptime_ms":1500}"#;
    assert_eq!(
        m.update(Msg::Event(exited.replace('\n', "")), 0),
        Some(Effect::Refresh)
    );
    assert_eq!(
        m.events.back().unwrap(),
        &EventLine {
            at_ms: 1000,
            kind: "replica_exited".into(),
            text: "web/0 exit=signal 9 pid=200 uptime_ms=1500".into(),
        }
    );
    assert_eq!(m.update(Msg::Event("not json".into()), 0), None);
    for i in 0..EVENTS_KEPT + 5 {
        m.update(
            Msg::Event(format!(r#"{{"seq":{i},"at_ms":{i},"type":"stack_up"}}"#)),
            0,
        );
    }
    assert_eq!(m.events.len(), EVENTS_KEPT);
    assert_eq!(m.events.back().unwrap().at_ms, EVENTS_KEPT as u64 + 4);
    m.update(Msg::StreamDown("gone".into()), 0);
    assert_eq!(m.stream_down.as_deref(), Some("gone"));
    m.update(Msg::StreamUp, 0);
    assert!(m.events.is_empty(), "the backlog follows a reconnection");
    assert_eq!(m.stream_down, None);
}

#[test]
fn only_firing_alerts_and_open_incidents_are_kept() {
    let mut m = Model::new(String::new(), false);
    let alert = |state| Alert {
        id: "a".into(),
        fingerprint: "web/availability/page".into(),
        service: "web".into(),
        name: "availability".into(),
        severity: api::json::Severity::Page,
        summary: "burning".into(),
        state,
        started_at_ms: 1,
        resolved_at_ms: None,
        notified: true,
    };
    let incident = |id, state| Incident {
        id,
        service: "web".into(),
        title: "web has no ready replica".into(),
        state,
        fault_at_ms: None,
        fault: None,
        detected_at_ms: 1,
        resolved_at_ms: None,
        triggers: Default::default(),
        timeline: Vec::new(),
        more_actions: 0,
        resolved_by: None,
        node: None,
    };
    m.update(
        Msg::Fetched(Box::new(Snapshot {
            status: Status {
                services: Vec::new(),
                journal: None,
                pending_approvals: Vec::new(),
            },
            alerts: vec![alert(AlertState::Resolved), alert(AlertState::Firing)],
            incidents: vec![
                incident(1, IncidentState::Resolved),
                incident(2, IncidentState::Open),
            ],
        })),
        0,
    );
    assert_eq!(m.alerts.len(), 1);
    assert_eq!(m.alerts[0].state, AlertState::Firing);
    assert_eq!(m.incidents.iter().map(|i| i.id).collect::<Vec<_>>(), [2]);
}
