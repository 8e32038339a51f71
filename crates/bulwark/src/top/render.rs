//! How `bulwark top` draws its model: a header (the API, the last refresh, an unreachable
//! API), the replicas under their services, firing alerts beside open incidents, the latest
//! events, and a footer (key hints, or what the last action did). Any size works: below
//! [`FULL_HEIGHT`] rows only the replicas are shown, and a window shrinks to fit.

use std::time::{Duration, UNIX_EPOCH};

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, Paragraph, Row, StatefulWidget, Table, TableState, Widget,
};

use super::state::{EventLine, FLASH_MS, Model, Overlay, exit_text};

/// Below this many rows only the header, the replicas and the footer are drawn.
pub const FULL_HEIGHT: u16 = 16;
/// The events a `--once` frame lists.
const ONCE_EVENTS: usize = 20;
/// The alerts or incidents a pane lists at most.
const SIDE_ROWS: usize = 20;

const RED: Style = Style::new().fg(Color::Red);
const GREEN: Style = Style::new().fg(Color::Green);
const YELLOW: Style = Style::new().fg(Color::Yellow);
const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().add_modifier(Modifier::DIM);

/// Draws the view into `area` of `buf`; `table` keeps the replicas' scroll position between
/// frames.
pub fn draw(model: &Model, now_ms: u64, table: &mut TableState, area: Rect, buf: &mut Buffer) {
    let full = !model.interactive || area.height >= FULL_HEIGHT;
    let head = header(model, now_ms);
    let side_rows = model
        .alerts
        .len()
        .max(model.incidents.len())
        .clamp(1, SIDE_ROWS);
    let (side_h, events_h) = match (full, model.interactive) {
        (false, _) => (0, 0),
        (true, true) => (side_rows.min(6) as u16 + 2, 8),
        (true, false) => (
            side_rows as u16 + 2,
            model.events.len().clamp(1, ONCE_EVENTS) as u16 + 2,
        ),
    };
    let head_h = head.len() as u16;
    let foot_h = u16::from(model.interactive);
    // The replicas take what they need, the events the rest (at least `events_h` rows);
    // when the replicas need more than there is, they scroll.
    let rest = area.height.saturating_sub(head_h + side_h + foot_h);
    let body_h = if events_h == 0 {
        rest
    } else {
        let natural = (model.services.len() + model.replicas().count() + 3) as u16;
        natural.min(rest.saturating_sub(events_h)).max(3.min(rest))
    };
    let [head_area, body, side, events, foot] = Layout::vertical([
        Constraint::Length(head_h),
        Constraint::Length(body_h),
        Constraint::Length(side_h),
        Constraint::Fill(1),
        Constraint::Length(foot_h),
    ])
    .areas(area);
    Paragraph::new(head).render(head_area, buf);
    replicas(model, now_ms, table, body, buf);
    if side_h > 0 {
        let [alerts, incidents] = Layout::horizontal([Constraint::Percentage(50); 2]).areas(side);
        alerts_pane(model, alerts, buf);
        incidents_pane(model, incidents, buf);
    }
    if events_h > 0 {
        events_pane(model, events, buf);
    }
    footer(model, now_ms).render(foot, buf);
    if let Some(overlay) = &model.overlay {
        window(model, overlay, area, buf);
    }
}

/// One frame as text, as tall as its content and `width` wide (`bulwark top --once`).
pub fn plain(model: &Model, now_ms: u64, width: u16) -> String {
    let table_h = model.services.len() + model.replicas().count() + 3;
    let height = header(model, now_ms).len()
        + table_h
        + model
            .alerts
            .len()
            .max(model.incidents.len())
            .clamp(1, SIDE_ROWS)
        + 2
        + model.events.len().clamp(1, ONCE_EVENTS)
        + 2;
    let area = Rect::new(0, 0, width, u16::try_from(height).unwrap_or(u16::MAX));
    let mut buf = Buffer::empty(area);
    draw(model, now_ms, &mut TableState::default(), area, &mut buf);
    text(&buf)
}

/// The symbols of `buf`, a line per row, without trailing blanks.
pub fn text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let line: String = (area.left()..area.right())
            .map(|x| buf[(x, y)].symbol())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn header(model: &Model, now_ms: u64) -> Vec<Line<'static>> {
    let total = model.replicas().count();
    let ready = model.replicas().filter(|(_, r)| r.ready).count();
    let mut first = vec![
        Span::styled("bulwark top", BOLD),
        Span::raw(format!("  API {}", model.api)),
    ];
    match model.refreshed_ms {
        Some(at) => first.push(Span::raw(format!("  refreshed {} UTC", clock(at)))),
        None if model.down.is_none() => first.push(Span::raw("  connecting…")),
        None => {}
    }
    if model.refreshed_ms.is_some() {
        let style = if ready == total { GREEN } else { YELLOW };
        first.push(Span::styled(
            format!("  {ready}/{total} replicas ready"),
            style,
        ));
        if !model.alerts.is_empty() {
            first.push(Span::styled(
                format!("  {} firing", model.alerts.len()),
                RED.add_modifier(Modifier::BOLD),
            ));
        }
    }
    let mut lines = vec![Line::from(first)];
    if let Some(down) = &model.down {
        lines.push(Line::styled(
            // What to know first comes first: a narrow terminal cuts the end of the error.
            format!(
                "API unreachable, retrying every {}s (down since {}, {}): {}",
                down.retry.as_secs().max(1),
                clock(down.since_ms),
                age(now_ms.saturating_sub(down.since_ms)),
                down.error,
            ),
            RED.add_modifier(Modifier::BOLD),
        ));
    }
    lines
}

fn replicas(model: &Model, now_ms: u64, table: &mut TableState, area: Rect, buf: &mut Buffer) {
    let selected = model.selected.as_ref();
    // `Cell::from("")`, not `Cell::default()`: a default cell spans no column and shifts
    // the rest of its row left (ratatui 0.30).
    let mut rows = Vec::with_capacity(model.services.len() + model.replicas().count());
    let mut selected_row = None;
    for s in &model.services {
        let style = if s.ready >= s.desired { GREEN } else { RED };
        let mut notes = Vec::new();
        notes.extend(s.rollout.as_deref().map(|r| format!("rollout {r}")));
        notes.extend(s.drift.as_deref().map(|d| format!("drift: {d}")));
        rows.push(Row::new(vec![
            Cell::from(s.name.clone()).style(BOLD),
            Cell::from(""),
            Cell::from(""),
            Cell::from(format!("{}/{} ready", s.ready, s.desired)).style(style),
            Cell::from(""),
            Cell::from(""),
            Cell::from(""),
            Cell::from(notes.join("; ")),
        ]));
        for r in &s.replicas {
            if selected.is_some_and(|id| id.service == s.name && id.index == r.index) {
                selected_row = Some(rows.len());
            }
            rows.push(replica_row(&s.name, r, now_ms));
        }
    }
    // A printed frame has no selection to show.
    table.select(selected_row.filter(|_| model.interactive));
    // Scrolled no further than needed to fill the pane: after the terminal grew, the first
    // rows come back into view.
    let shown = usize::from(area.height.saturating_sub(3));
    let fill = rows.len().saturating_sub(shown);
    if table.offset() > fill {
        *table.offset_mut() = fill;
    }
    let name_w = model
        .services
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .clamp(7, 24) as u16;
    let widths = [
        Constraint::Length(name_w),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(15),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Min(9),
    ];
    let head = Row::new([
        "SERVICE",
        "#",
        "PID",
        "STATE",
        "READY",
        "RESTARTS",
        "AGE",
        "LAST EXIT",
    ])
    .style(BOLD);
    let title = format!(" Replicas ({}) ", model.replicas().count());
    let widget = Table::new(rows, widths)
        .header(head)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    StatefulWidget::render(widget, area, buf, table);
}

/// A replica's row; its service's name, dimmed, says whose it is once the service's own row
/// has scrolled away.
fn replica_row(service: &str, r: &api::json::Replica, now_ms: u64) -> Row<'static> {
    let mut state = r.state.clone();
    if r.crash_looping && state != "crash-looping" {
        state.push_str(" (looping)");
    }
    if r.held_out {
        state.push_str(" held out");
    }
    let state_style = if r.crash_looping || r.state == "oom-killed" {
        RED.add_modifier(Modifier::BOLD)
    } else if r.state == "running" && r.ready {
        GREEN
    } else {
        YELLOW
    };
    let exit = r.last_exit.as_ref().map_or_else(
        || "-".to_owned(),
        |e| {
            if e.oom_killed {
                "oom-killed".to_owned()
            } else {
                exit_text(e.code.map(i64::from), e.signal.map(i64::from))
            }
        },
    );
    let up = match (r.pid, r.started_at_ms) {
        (Some(_), Some(at)) => age(now_ms.saturating_sub(at)),
        _ => "-".into(),
    };
    Row::new(vec![
        Cell::from(service.to_owned()).style(DIM),
        Cell::from(r.index.to_string()),
        Cell::from(r.pid.map_or_else(|| "-".into(), |p| p.to_string())),
        Cell::from(state).style(state_style),
        Cell::from(if r.ready { "yes" } else { "no" }).style(if r.ready { GREEN } else { RED }),
        Cell::from(r.restarts.to_string()),
        Cell::from(up),
        Cell::from(exit),
    ])
}

fn alerts_pane(model: &Model, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line<'_>> = if model.alerts.is_empty() {
        vec![Line::styled("none", DIM)]
    } else {
        model
            .alerts
            .iter()
            .map(|a| {
                let style = match a.severity {
                    api::json::Severity::Page => RED,
                    api::json::Severity::Ticket => YELLOW,
                };
                Line::from(vec![
                    Span::styled(format!("{:<6} ", a.severity.as_str()), style),
                    Span::raw(format!("{}/{} {}", a.service, a.name, a.summary)),
                    Span::styled(if a.notified { "" } else { " (silenced)" }, DIM),
                ])
            })
            .collect()
    };
    let title = format!(" Firing alerts ({}) ", model.alerts.len());
    Paragraph::new(lines)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

fn incidents_pane(model: &Model, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line<'_>> = if model.incidents.is_empty() {
        vec![Line::styled("none", DIM)]
    } else {
        model
            .incidents
            .iter()
            .map(|i| {
                Line::raw(format!(
                    "#{} {}: {} (since {})",
                    i.id,
                    i.service,
                    i.title,
                    clock(i.detected_at_ms)
                ))
            })
            .collect()
    };
    let title = format!(" Open incidents ({}) ", model.incidents.len());
    Paragraph::new(lines)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

fn events_pane(model: &Model, area: Rect, buf: &mut Buffer) {
    let shown = usize::from(area.height.saturating_sub(2));
    let skip = model.events.len().saturating_sub(shown);
    let mut lines: Vec<Line<'_>> = model.events.iter().skip(skip).map(event_line).collect();
    if lines.is_empty() {
        lines.push(Line::styled("none yet", DIM));
    }
    let title = match &model.stream_down {
        None => Line::raw(" Events "),
        Some(e) => Line::from(vec![
            Span::raw(" Events "),
            Span::styled(format!("(stream down: {e}; reconnecting) "), RED),
        ]),
    };
    Paragraph::new(lines)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

fn event_line(e: &EventLine) -> Line<'_> {
    let style = match e.kind.as_str() {
        "replica_exited" | "replica_oom_killed" | "crash_looping" | "spawn_failed"
        | "replica_killed" | "gap" | "promote_failed" => RED,
        "replica_unready" | "probe_failed" | "replica_ejected" | "leader_lost" => YELLOW,
        "replica_ready" | "leader_elected" => GREEN,
        _ => Style::new(),
    };
    Line::from(vec![
        Span::styled(format!("{} ", clock(e.at_ms)), DIM),
        Span::styled(format!("{:<18} ", e.kind), style),
        Span::raw(e.text.as_str()),
    ])
}

fn footer(model: &Model, now_ms: u64) -> Line<'_> {
    match &model.flash {
        Some((at, text)) if now_ms.saturating_sub(*at) < FLASH_MS => {
            Line::styled(text.as_str(), BOLD)
        }
        _ => Line::styled(
            "up/down or j/k select  Enter stderr  r restart  ? help  q quit",
            DIM,
        ),
    }
}

const HELP: &[&str] = &[
    "up/down, j/k      select a replica",
    "PgUp/PgDn, g/G    a page up or down, first or last",
    "Enter, l          the selected replica's stderr tail",
    "r                 restart the selected replica (asks y/n)",
    "?                 this help",
    "Esc               close this window (quit when none is open)",
    "q, Ctrl-C         quit",
    "",
    "The status refreshes after each event, at most once a second,",
    "and every 2 s otherwise; events appear as they happen.",
];

/// The open window, centred over `area` and cut to fit it.
fn window(model: &Model, overlay: &Overlay, area: Rect, buf: &mut Buffer) {
    let (title, lines): (String, Vec<Line<'_>>) = match overlay {
        Overlay::Help => (
            " Keys ".into(),
            HELP.iter().map(|l| Line::raw(*l)).collect(),
        ),
        Overlay::Stderr(id) => {
            let lines: Vec<Line<'_>> = match model.replica(id) {
                None => vec![Line::raw("this replica is gone")],
                Some(r) if r.stderr_tail.is_empty() => {
                    vec![Line::styled("nothing on stderr yet", DIM)]
                }
                Some(r) => r
                    .stderr_tail
                    .iter()
                    .map(|l| Line::raw(l.as_str()))
                    .collect(),
            };
            (format!(" {id} stderr, last lines (Esc closes) "), lines)
        }
        Overlay::Confirm(id) => {
            let pid = model
                .replica(id)
                .and_then(|r| r.pid)
                .map_or_else(String::new, |p| format!(" (pid {p})"));
            (
                " Restart ".into(),
                vec![Line::styled(format!("Restart {id}{pid}? y/n"), BOLD)],
            )
        }
    };
    let widest = lines
        .iter()
        .map(Line::width)
        .max()
        .unwrap_or(0)
        .max(title.len());
    let width = (widest as u16).saturating_add(4).min(area.width);
    let height = (lines.len() as u16).saturating_add(2).min(area.height);
    let rect = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    // The tail of a long stderr is what matters: show its last lines.
    let scroll = (lines.len() as u16).saturating_sub(height.saturating_sub(2));
    Clear.render(rect, buf);
    Paragraph::new(lines)
        .scroll((scroll, 0))
        .block(Block::bordered().title(title))
        .render(rect, buf);
}

/// `21:03:11` (UTC) for a time in ms since the epoch.
pub fn clock(at_ms: u64) -> String {
    let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at_ms));
    t.to_string().get(11..19).unwrap_or("?").to_owned()
}

/// `45s`, `12m`, `3h`, `2d`: how long, to the largest unit.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests;
