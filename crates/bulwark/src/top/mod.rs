//! `bulwark top`: the on-call view in the terminal. The model and its reducer are pure
//! (`state.rs`), drawn by `render.rs` (ratatui), fed by keys (`input.rs`) and by the API:
//! status, alerts and incidents on a pace (`pace.rs`: at most once a second, soon after an
//! event, backing off while the API is down) and the followed event stream, which
//! reconnects by itself. Requests run on tasks of their own, so a slow API never freezes
//! the keys; the loop sleeps until a key, an answer, an event or the next due time.

mod input;
mod pace;
mod render;
mod state;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use api::client::Client;
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use ratatui::widgets::TableState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::{Instant, sleep, sleep_until};

use pace::{MIN_GAP, Pacer, RETRY_MAX};
use state::{Effect, Model, Msg, ReplicaId, Snapshot};

/// How long connecting and each answer's head may take: shorter than the CLI's, so that a
/// stuck API shows as unreachable soon.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The view is drawn at least this often (ages, "since").
const TICK: Duration = Duration::from_secs(1);
/// Messages applied before the next frame is drawn (an event stream's backlog).
const BATCH: usize = 10_000;

pub async fn run(once: bool, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = state_dir.unwrap_or_else(api::state_dir::default_dir);
    if once {
        return print_once(&dir).await;
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "bulwark top needs a terminal; `bulwark top --once` prints one frame as text"
        );
    }
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            return Err(e).context("cannot set up the terminal");
        }
    };
    let (driver, rx) = Driver::new(dir);
    let result = event_loop(driver, rx, &mut terminal).await;
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

/// `--once`: one frame, as tall as its content, on standard output.
async fn print_once(dir: &Path) -> anyhow::Result<ExitCode> {
    let owned = dir.to_owned();
    let client = tokio::task::spawn_blocking(move || Client::discover(&owned)).await??;
    let client = client.with_timeout(TIMEOUT);
    let snapshot = fetch(&client).await.map_err(anyhow::Error::msg)?;
    let events: Vec<serde_json::Value> = serde_json::from_slice(
        &client
            .get(&format!("/v1/events?tail={}", state::EVENTS_KEPT))
            .await?,
    )
    .context("the API's events are not a JSON list")?;
    let now = wall_ms();
    let mut model = Model::new(client.base_url(), false);
    model.update(Msg::Fetched(Box::new(snapshot)), now);
    for e in &events {
        model.update(Msg::Event(e.to_string()), now);
    }
    let width = match crossterm::terminal::size() {
        Ok((w, _)) if std::io::stdout().is_terminal() => w,
        _ => 120,
    };
    crate::output::bytes(render::plain(&model, now, width).as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// What the loop receives from its tasks.
enum Input {
    Model(Msg),
    Refreshed(Result<(Arc<Client>, Snapshot), String>),
}

/// The interactive loop's state: the model, the pace of refreshes and the API client found
/// last (found again after a failure: a restarted `up` may listen elsewhere).
struct Driver {
    dir: PathBuf,
    model: Model,
    pacer: Pacer,
    client: Option<Arc<Client>>,
    tx: UnboundedSender<Input>,
}

impl Driver {
    fn new(dir: PathBuf) -> (Driver, UnboundedReceiver<Input>) {
        let (tx, rx) = unbounded_channel();
        let model = Model::new(format!("(from {})", dir.display()), true);
        let driver = Driver {
            dir,
            model,
            pacer: Pacer::default(),
            client: None,
            tx,
        };
        (driver, rx)
    }

    /// Applies what a task or a key brought, and starts what the model asks for.
    fn apply(&mut self, input: Input) {
        let now = wall_ms();
        let effect = match input {
            Input::Refreshed(Ok((client, snapshot))) => {
                self.pacer.finished(true);
                self.model.api = client.base_url();
                self.client = Some(client);
                self.model.update(Msg::Fetched(Box::new(snapshot)), now)
            }
            Input::Refreshed(Err(error)) => {
                self.pacer.finished(false);
                self.client = None;
                let retry = self.pacer.retry();
                self.model.update(Msg::FetchFailed { error, retry }, now)
            }
            Input::Model(msg) => self.model.update(msg, now),
        };
        match effect {
            None => {}
            Some(Effect::Refresh) => self.pacer.want(),
            Some(Effect::Restart(id)) => match &self.client {
                Some(client) => {
                    tokio::spawn(restart(client.clone(), id, self.tx.clone()));
                }
                None => {
                    let error = Some("the API is unreachable".to_owned());
                    self.model.update(Msg::Restarted { id, error }, now);
                }
            },
        }
    }
}

/// Draws, then waits for a key, an answer or the next due time; until a quit key, SIGTERM
/// or SIGHUP (the terminal went away), or the end of input.
async fn event_loop(
    mut d: Driver,
    mut rx: UnboundedReceiver<Input>,
    terminal: &mut ratatui::DefaultTerminal,
) -> anyhow::Result<()> {
    let stream = tokio::spawn(follow_events(d.dir.clone(), d.tx.clone()));
    let _stream = AbortOnDrop(stream);
    let mut keys = EventStream::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut table = TableState::default();
    loop {
        let now = Instant::now();
        if d.pacer.due(now).is_some_and(|t| t <= now) {
            d.pacer.started(now);
            tokio::spawn(refresh(d.dir.clone(), d.client.clone(), d.tx.clone()));
        }
        // Written from this thread: the terminal is the whole of this process's output, and
        // a frame is only the cells that changed since the last.
        terminal.draw(|f| {
            render::draw(&d.model, wall_ms(), &mut table, f.area(), f.buffer_mut());
        })?;
        let wake = d.pacer.due(now).map_or(now + TICK, |t| t.min(now + TICK));
        // Cancel safety: every branch loses nothing when another wins (a key stays in the
        // terminal's stream, a message in the channel, a signal is counted).
        let input = tokio::select! {
            key = keys.next() => match key {
                Some(Ok(Event::Key(k))) => input::key(k).map(|k| Input::Model(Msg::Key(k))),
                // A resize (or focus, mouse, paste): the next frame is drawn to the size.
                Some(Ok(_)) => None,
                Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                None => return Ok(()),
            },
            Some(input) = rx.recv() => Some(input),
            () = sleep_until(wake) => None,
            _ = term.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
        };
        if let Some(input) = input {
            d.apply(input);
            for _ in 0..BATCH {
                match rx.try_recv() {
                    Ok(input) => d.apply(input),
                    Err(_) => break,
                }
            }
        }
        if d.model.quit {
            return Ok(());
        }
    }
}

/// Aborts the task when dropped, however the loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client for the `up` whose state directory is `dir` (its files are read on the
/// blocking pool).
async fn discover(dir: &Path) -> Result<Arc<Client>, String> {
    let dir = dir.to_owned();
    match tokio::task::spawn_blocking(move || Client::discover(&dir)).await {
        Ok(Ok(client)) => Ok(Arc::new(client.with_timeout(TIMEOUT))),
        Ok(Err(e)) => Err(chain(&e)),
        Err(e) => Err(e.to_string()),
    }
}

/// One refresh, with the client found before or found again.
async fn refresh(dir: PathBuf, client: Option<Arc<Client>>, tx: UnboundedSender<Input>) {
    let result = async {
        let client = match client {
            Some(c) => c,
            None => discover(&dir).await?,
        };
        let snapshot = fetch(&client).await?;
        Ok((client, snapshot))
    }
    .await;
    let _ = tx.send(Input::Refreshed(result));
}

/// Status, alerts and incidents, asked for at once.
async fn fetch(client: &Client) -> Result<Snapshot, String> {
    let (status, alerts, incidents) = tokio::join!(
        client.get("/v1/status"),
        client.get("/v1/alerts"),
        client.get("/v1/incidents")
    );
    let bad = |what: &str, e: serde_json::Error| format!("the API's {what} do not parse: {e}");
    let status = status.map_err(|e| chain(&e))?;
    let alerts = alerts.map_err(|e| chain(&e))?;
    let incidents = incidents.map_err(|e| chain(&e))?;
    Ok(Snapshot {
        status: serde_json::from_slice(&status).map_err(|e| bad("status", e))?,
        alerts: serde_json::from_slice(&alerts).map_err(|e| bad("alerts", e))?,
        incidents: serde_json::from_slice::<api::json::Incidents>(&incidents)
            .map_err(|e| bad("incidents", e))?
            .incidents,
    })
}

/// Follows `/v1/events` for as long as the view is open, reconnecting (1 s, doubling to
/// 5 s) whenever the stream ends or cannot start.
async fn follow_events(dir: PathBuf, tx: UnboundedSender<Input>) {
    let mut wait = MIN_GAP;
    // Each connection sends only as many past events as the view keeps.
    let path = format!("/v1/events?follow=true&tail={}", state::EVENTS_KEPT);
    loop {
        let error = match discover(&dir).await {
            Ok(client) => {
                let mut first = true;
                let result = client
                    .stream(&path, |line| {
                        // The backlog comes first: the list starts afresh with it.
                        if first {
                            first = false;
                            let _ = tx.send(Input::Model(Msg::StreamUp));
                        }
                        let _ = tx.send(Input::Model(Msg::Event(line.to_owned())));
                    })
                    .await;
                if !first {
                    wait = MIN_GAP;
                }
                match result {
                    Ok(()) => "the API ended the stream".to_owned(),
                    Err(e) => chain(&e),
                }
            }
            Err(e) => e,
        };
        if tx.send(Input::Model(Msg::StreamDown(error))).is_err() {
            return;
        }
        sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

async fn restart(client: Arc<Client>, id: ReplicaId, tx: UnboundedSender<Input>) {
    let path = format!("/v1/services/{}/restart?replica={}", id.service, id.index);
    let error = client.post(&path).await.err().map(|e| chain(&e));
    let _ = tx.send(Input::Model(Msg::Restarted { id, error }));
}

/// An error with its causes: `cannot reach ... (Connection refused (os error 111))`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(" ({s})"));
        source = s.source();
    }
    text
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
