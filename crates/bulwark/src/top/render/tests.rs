use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::*;
use crate::top::state::tests::{replica, service, snapshot};
use crate::top::state::{Key, Msg};

/// The model drawn on a `width`x`height` terminal, as text.
fn screen(model: &Model, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut table = TableState::default();
    terminal
        .draw(|f| draw(model, 65_000, &mut table, f.area(), f.buffer_mut()))
        .unwrap();
    text(terminal.backend().buffer())
}

fn stack() -> Model {
    let mut m = Model::new("127.0.0.1:7070".into(), true);
    let mut crashing = replica(1, 4242);
    crashing.state = "crash-looping".into();
    crashing.crash_looping = true;
    crashing.ready = false;
    crashing.restarts = 7;
    crashing.pid = None;
    crashing.last_exit = Some(api::json::Exit {
        code: None,
        signal: Some(9),
        oom_killed: false,
    });
    crashing.stderr_tail = vec!["boom".into(), "panic: out of cheese".into()];
    m.update(
        snapshot(vec![service("web", vec![replica(0, 4141), crashing])]),
        60_000,
    );
    m
}

#[test]
fn a_frame_shows_services_replicas_and_their_troubles() {
    let m = stack();
    let s = screen(&m, 100, 30);
    assert!(s.contains("API 127.0.0.1:7070"), "{s}");
    assert!(s.contains("refreshed 00:01:00"), "{s}");
    assert!(s.contains("1/2 replicas ready"), "{s}");
    assert!(s.contains("1/2 ready"), "{s}");
    let row = s.lines().find(|l| l.contains("4141")).unwrap();
    assert!(
        row.contains("running") && row.contains("yes") && row.contains("1m"),
        "{row}"
    );
    let row = s.lines().find(|l| l.contains("crash-looping")).unwrap();
    assert!(row.contains("signal 9") && row.contains(" 7 "), "{row}");
    assert!(
        s.contains("Firing alerts (0)") && s.contains("Open incidents (0)"),
        "{s}"
    );
    assert!(s.contains("q quit"), "{s}");
}

#[test]
fn an_unreachable_api_is_said_in_the_header_over_the_last_answer() {
    let mut m = stack();
    m.update(
        Msg::FetchFailed {
            error: "cannot reach bulwark's API at 127.0.0.1:7070".into(),
            retry: Duration::from_secs(2),
        },
        62_000,
    );
    let s = screen(&m, 160, 30);
    assert!(
        s.contains(
            "API unreachable, retrying every 2s (down since 00:01:02, 3s): cannot reach \
             bulwark's API at 127.0.0.1:7070"
        ),
        "{s}"
    );
    assert!(s.contains("4141"), "the last answer stays: {s}");
}

#[test]
fn windows_show_the_stderr_tail_the_confirmation_and_the_help() {
    let mut m = stack();
    m.update(Msg::Key(Key::Down), 0);
    m.update(Msg::Key(Key::Open), 0);
    let s = screen(&m, 100, 30);
    assert!(s.contains("web/1 stderr"), "{s}");
    assert!(s.contains("panic: out of cheese"), "{s}");
    m.update(Msg::Key(Key::Back), 0);
    m.update(Msg::Key(Key::Restart), 0);
    let s = screen(&m, 100, 30);
    assert!(s.contains("Restart web/1? y/n"), "{s}");
    m.update(Msg::Key(Key::No), 0);
    m.update(Msg::Key(Key::Help), 0);
    assert!(screen(&m, 100, 30).contains("restart the selected replica"));
}

#[test]
fn tiny_and_empty_terminals_draw_without_panicking() {
    let mut m = stack();
    m.update(Msg::Key(Key::Help), 0);
    for (w, h) in [(20, 5), (1, 1), (0, 0), (5, 40), (200, 2)] {
        screen(&m, w, h);
    }
    let s = screen(&stack(), 20, 5);
    assert!(s.contains("bulwark top"), "{s}");
    // Too short for the panes: the replicas get the room.
    let s = screen(&stack(), 80, 10);
    assert!(s.contains("4141") && !s.contains("Events"), "{s}");
}

#[test]
fn a_thousand_replicas_scroll_to_the_selection() {
    let mut m = Model::new("127.0.0.1:7070".into(), true);
    let replicas = (0..1000).map(|i| replica(i, 100_000 + i)).collect();
    m.update(snapshot(vec![service("web", replicas)]), 60_000);
    m.update(Msg::Key(Key::End), 0);
    let mut terminal = Terminal::new(TestBackend::new(100, 40)).unwrap();
    let mut table = TableState::default();
    let started = std::time::Instant::now();
    for _ in 0..10 {
        terminal
            .draw(|f| draw(&m, 65_000, &mut table, f.area(), f.buffer_mut()))
            .unwrap();
    }
    // Generous: a frame takes about a millisecond in a debug build.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let s = text(terminal.backend().buffer());
    assert!(s.contains("Replicas (1000)"), "{s}");
    let row = s.lines().find(|l| l.contains("> ")).unwrap();
    assert!(
        row.contains("100999") && row.contains("web"),
        "the last one is selected and shown, with its service: {row}"
    );
    assert!(!s.contains(" 100000 "), "the first is scrolled away: {s}");
    m.update(Msg::Key(Key::Home), 0);
    terminal
        .draw(|f| draw(&m, 65_000, &mut table, f.area(), f.buffer_mut()))
        .unwrap();
    let s = text(terminal.backend().buffer());
    assert!(s.contains("100000"), "{s}");
}

#[test]
fn rows_scrolled_away_on_a_small_terminal_come_back_when_it_grows() {
    let mut m = stack();
    m.update(Msg::Key(Key::End), 0);
    let mut table = TableState::default();
    let mut frame = |w, h| {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        terminal
            .draw(|f| draw(&m, 65_000, &mut table, f.area(), f.buffer_mut()))
            .unwrap();
        text(terminal.backend().buffer())
    };
    let s = frame(60, 6);
    assert!(s.contains("signal 9") && !s.contains("4141"), "{s}");
    let s = frame(60, 30);
    assert!(s.contains("web") && s.contains("4141"), "{s}");
}

#[test]
fn a_plain_frame_is_as_tall_as_its_content() {
    let mut m = stack();
    m.interactive = false;
    for i in 0..30 {
        m.update(
            Msg::Event(format!(
                r#"{{"seq":{i},"at_ms":61000,"type":"replica_ready","service":"web","index":0}}"#
            )),
            0,
        );
    }
    let s = plain(&m, 65_000, 120);
    assert!(s.contains("4141") && s.contains("crash-looping"), "{s}");
    assert_eq!(
        s.lines().filter(|l| l.contains("replica_ready")).count(),
        ONCE_EVENTS,
        "{s}"
    );
    assert!(!s.contains("q quit"), "no key hints: {s}");
    assert!(s.lines().last().unwrap().starts_with('└'), "{s}");
}

#[test]
fn ages_and_clocks() {
    assert_eq!(age(999), "0s");
    assert_eq!(age(59_000), "59s");
    assert_eq!(age(60_000), "1m");
    assert_eq!(age(7_200_000), "2h");
    assert_eq!(age(3 * 86_400_000), "3d");
    assert_eq!(clock(0), "00:00:00");
    assert_eq!(clock(86_399_000), "23:59:59");
}
