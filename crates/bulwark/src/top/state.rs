//! What `bulwark top` shows, and how each message changes it. Pure: no terminal, no socket,
//! no clock — the time comes in with the messages and the render.

use std::collections::VecDeque;
use std::time::Duration;

use api::json::{Alert, AlertState, Incident, IncidentState, Replica, Service, Status};

/// The events kept for the events pane (the newest).
pub const EVENTS_KEPT: usize = 200;
/// How far PageUp and PageDown move the selection.
pub const PAGE: usize = 10;
/// How long the outcome of an action stays in the footer.
pub const FLASH_MS: u64 = 10_000;

/// One answer of the API: status, alerts and incidents, read together.
pub struct Snapshot {
    pub status: Status,
    pub alerts: Vec<Alert>,
    pub incidents: Vec<Incident>,
}

/// A replica, as the selection and the actions name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaId {
    pub service: String,
    pub index: u32,
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.service, self.index)
    }
}

/// A window over the main view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    Help,
    /// The selected replica's stderr tail (kept live by each refresh).
    Stderr(ReplicaId),
    /// "Restart this replica? y/n".
    Confirm(ReplicaId),
}

/// What a key asks for; which keys mean what is `input.rs`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Quit,
    /// Esc: closes a window, or quits when none is open.
    Back,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    /// Enter or `l`: the selected replica's stderr tail.
    Open,
    Restart,
    Help,
    Yes,
    No,
    Other,
}

/// Everything that changes the view.
pub enum Msg {
    Key(Key),
    /// A refresh answered.
    Fetched(Box<Snapshot>),
    /// A refresh failed; the next try is in `retry`.
    FetchFailed {
        error: String,
        retry: Duration,
    },
    /// The event stream (re)connected: its backlog follows, so the list starts afresh.
    StreamUp,
    /// The event stream ended or could not start; it reconnects by itself.
    StreamDown(String),
    /// One event of the stream, as the API sent it (JSON).
    Event(String),
    /// A restart asked for from the view was answered.
    Restarted {
        id: ReplicaId,
        error: Option<String>,
    },
}

/// What the model asks its driver to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Refresh soon (the driver keeps refreshes at most once a second).
    Refresh,
    /// `POST /v1/services/SERVICE/restart?replica=INDEX`.
    Restart(ReplicaId),
}

/// The API being down: since when, why, and when the next try is.
#[derive(Debug, Clone, PartialEq)]
pub struct Down {
    pub error: String,
    pub since_ms: u64,
    pub retry: Duration,
}

/// One line of the events pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub at_ms: u64,
    pub kind: String,
    pub text: String,
}

/// The whole view.
pub struct Model {
    /// Where the API is, as the header shows it (`https://127.0.0.1:7070`).
    pub api: String,
    pub services: Vec<Service>,
    /// Firing alerts only.
    pub alerts: Vec<Alert>,
    /// Open incidents only.
    pub incidents: Vec<Incident>,
    /// The newest [`EVENTS_KEPT`] events, oldest first.
    pub events: VecDeque<EventLine>,
    /// When the last refresh answered (wall clock, ms since the epoch).
    pub refreshed_ms: Option<u64>,
    pub down: Option<Down>,
    /// Why the event stream is not connected, while it is not.
    pub stream_down: Option<String>,
    pub selected: Option<ReplicaId>,
    pub overlay: Option<Overlay>,
    /// The outcome of the last action, and when.
    pub flash: Option<(u64, String)>,
    /// A terminal to drive (false for `--once`: no key hints).
    pub interactive: bool,
    pub quit: bool,
}

impl Model {
    pub fn new(api: String, interactive: bool) -> Model {
        Model {
            api,
            services: Vec::new(),
            alerts: Vec::new(),
            incidents: Vec::new(),
            events: VecDeque::new(),
            refreshed_ms: None,
            down: None,
            stream_down: None,
            selected: None,
            overlay: None,
            flash: None,
            interactive,
            quit: false,
        }
    }

    /// Applies `msg` received at `now_ms` (wall clock).
    pub fn update(&mut self, msg: Msg, now_ms: u64) -> Option<Effect> {
        match msg {
            Msg::Key(key) => return self.key(key),
            Msg::Fetched(snapshot) => self.fetched(*snapshot, now_ms),
            Msg::FetchFailed { error, retry } => {
                let since_ms = self.down.as_ref().map_or(now_ms, |d| d.since_ms);
                self.down = Some(Down {
                    error,
                    since_ms,
                    retry,
                });
            }
            Msg::StreamUp => {
                self.stream_down = None;
                self.events.clear();
            }
            Msg::StreamDown(error) => self.stream_down = Some(error),
            Msg::Event(json) => {
                if let Some(line) = event_line(&json) {
                    if self.events.len() == EVENTS_KEPT {
                        self.events.pop_front();
                    }
                    self.events.push_back(line);
                    return Some(Effect::Refresh);
                }
            }
            Msg::Restarted { id, error } => {
                let text = match error {
                    None => format!("restart of {id} requested"),
                    Some(e) => format!("restart of {id} failed: {e}"),
                };
                self.flash = Some((now_ms, text));
                return Some(Effect::Refresh);
            }
        }
        None
    }

    fn fetched(&mut self, snapshot: Snapshot, now_ms: u64) {
        let position = self.position();
        self.services = snapshot.status.services;
        self.alerts = snapshot
            .alerts
            .into_iter()
            .filter(|a| a.state == AlertState::Firing)
            .collect();
        self.incidents = snapshot
            .incidents
            .into_iter()
            .filter(|i| i.state == IncidentState::Open)
            .collect();
        self.refreshed_ms = Some(now_ms);
        self.down = None;
        // The selected replica keeps the selection; when it is gone (scaled down), the
        // replica now at its place does.
        if self.position().is_none() {
            let count = self.replicas().count();
            self.selected = (count > 0)
                .then(|| self.id_at(position.unwrap_or(0).min(count - 1)))
                .flatten();
        }
    }

    fn key(&mut self, key: Key) -> Option<Effect> {
        if key == Key::Quit {
            self.quit = true;
            return None;
        }
        match (&self.overlay, key) {
            (Some(Overlay::Confirm(id)), Key::Yes) => {
                let id = id.clone();
                self.overlay = None;
                return Some(Effect::Restart(id));
            }
            // Anything but `y` answers no.
            (Some(Overlay::Confirm(_)), _) => self.overlay = None,
            (Some(_), Key::Back | Key::No | Key::Open | Key::Help) => self.overlay = None,
            (Some(_), _) => {}
            (None, Key::Back) => self.quit = true,
            (None, Key::Up) => self.move_by(-1),
            (None, Key::Down) => self.move_by(1),
            (None, Key::PageUp) => self.move_by(-(PAGE as isize)),
            (None, Key::PageDown) => self.move_by(PAGE as isize),
            (None, Key::Home) => self.move_by(isize::MIN),
            (None, Key::End) => self.move_by(isize::MAX),
            (None, Key::Open) => self.overlay = self.selected.clone().map(Overlay::Stderr),
            (None, Key::Restart) => self.overlay = self.selected.clone().map(Overlay::Confirm),
            (None, Key::Help) => self.overlay = Some(Overlay::Help),
            (None, Key::Yes | Key::No | Key::Other | Key::Quit) => {}
        }
        None
    }

    /// Moves the selection by `delta` replicas, within the list.
    fn move_by(&mut self, delta: isize) {
        let count = self.replicas().count();
        if count == 0 {
            return;
        }
        let at = self.position().unwrap_or(0);
        let to = at.saturating_add_signed(delta).min(count - 1);
        self.selected = self.id_at(to);
    }

    /// Every replica in order, with its service.
    pub fn replicas(&self) -> impl Iterator<Item = (&Service, &Replica)> {
        self.services
            .iter()
            .flat_map(|s| s.replicas.iter().map(move |r| (s, r)))
    }

    /// The selected replica's place in [`Model::replicas`].
    pub fn position(&self) -> Option<usize> {
        let id = self.selected.as_ref()?;
        self.replicas()
            .position(|(s, r)| s.name == id.service && r.index == id.index)
    }

    pub fn replica(&self, id: &ReplicaId) -> Option<&Replica> {
        self.replicas()
            .find(|(s, r)| s.name == id.service && r.index == id.index)
            .map(|(_, r)| r)
    }

    fn id_at(&self, at: usize) -> Option<ReplicaId> {
        self.replicas().nth(at).map(|(s, r)| ReplicaId {
            service: s.name.clone(),
            index: r.index,
        })
    }
}

/// An event of the API's stream as one line: type, replica, then its other fields.
fn event_line(json: &str) -> Option<EventLine> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let obj = v.as_object()?;
    let kind = v["type"].as_str().unwrap_or("?").to_owned();
    let mut text = match (v["service"].as_str(), v["index"].as_u64()) {
        (Some(s), Some(i)) => format!("{s}/{i}"),
        (Some(s), None) => s.to_owned(),
        _ => String::new(),
    };
    for (k, val) in obj {
        if matches!(
            k.as_str(),
            "seq" | "at_ms" | "type" | "service" | "index" | "stderr_tail"
        ) {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("{k}={}", value_text(val)));
    }
    Some(EventLine {
        at_ms: v["at_ms"].as_u64().unwrap_or(0),
        kind,
        text,
    })
}

/// A field's value for people: strings bare, an exit as `exit N` or `signal N`.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) if o.contains_key("code") && o.contains_key("signal") => {
            exit_text(v["code"].as_i64(), v["signal"].as_i64())
        }
        other => other.to_string(),
    }
}

/// `exit 3`, `signal 9`, or `-`.
pub fn exit_text(code: Option<i64>, signal: Option<i64>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        (None, None) => "-".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
