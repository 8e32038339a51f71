//! `bulwark up`: wires spec → runtime → proxy/observe/api and runs until a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bus::Bus;
use observe::notify::{Routing, Sink};
use observe::plane::{Plane, PlaneConfig};
use observe::slo::{SloEngine, Window};
use prometheus_client::registry::Registry;
use proxy::ProxyMetrics;
use runtime::{Options, Supervisor};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::UpArgs;

/// How long listeners wait for requests in flight after a stop signal.
const PROXY_DRAIN: Duration = Duration::from_secs(10);
/// Events kept in memory (and read back from the journal at start).
const EVENT_HISTORY: usize = 10_000;

/// The stack's alert routing, in the plane's terms.
fn routing(stack: &spec::Stack) -> Routing {
    Routing {
        group_wait: stack.alerts.group_wait,
        sinks: stack
            .alerts
            .sinks
            .iter()
            .map(|s| match s {
                spec::AlertSink::Log => Sink::Log,
                spec::AlertSink::Webhook {
                    url,
                    timeout,
                    attempts,
                } => Sink::Webhook {
                    url: url.clone(),
                    timeout: *timeout,
                    attempts: *attempts,
                },
                spec::AlertSink::Exec { command, timeout } => Sink::Exec {
                    command: command.clone(),
                    timeout: *timeout,
                },
            })
            .collect(),
    }
}

/// Evaluate often enough to see the shortest alert window move: a quarter of the
/// shortest page window, between 50 ms and 5 s.
fn eval_every(stack: &spec::Stack) -> Duration {
    stack
        .services
        .iter()
        .flat_map(|s| &s.slos)
        .map(|slo| Window::M5.length(slo.period) / 4)
        .min()
        .unwrap_or(Duration::from_secs(5))
        .clamp(Duration::from_millis(50), Duration::from_secs(5))
}

pub async fn run(args: UpArgs, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let stack = match spec::load(&args.file) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    let state_dir = state_dir.unwrap_or_else(api::state_dir::default_dir);
    let token = api::state_dir::create(&state_dir)
        .with_context(|| format!("cannot prepare state directory {}", state_dir.display()))?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    // The journal comes first: a corrupt or foreign file stops us before anything runs.
    let journal_path = state_dir.join("journal.redb");
    let (journal, mut restored) = observe::journal::Journal::open(&journal_path, EVENT_HISTORY)
        .with_context(|| format!("cannot open the journal {}", journal_path.display()))?;
    let events = std::mem::take(&mut restored.events);
    let bus = Arc::new(Bus::with_history(EVENT_HISTORY, events));
    let persisted = journal.persisted();
    let journal_watermark = journal.persisted();
    let _journal_writer = journal.spawn_event_writer(bus.clone());
    let mut registry = Registry::default();
    let supervisor = Supervisor::new(
        &stack,
        bus.clone(),
        &mut registry,
        Options {
            bulwark: std::env::current_exe().context("cannot find this program's path")?,
            echo_logs: !args.quiet,
            log_lines: 2000,
        },
    );
    let proxy_metrics = ProxyMetrics::register(&mut registry);
    let tcp_metrics = proxy::TcpMetrics::register(&mut registry);
    let _events = observe::count_events(&bus, &mut registry);
    let _resources = observe::resources::spawn(&bus, &mut registry, Duration::from_secs(5));
    let engine = Arc::new(SloEngine::new(&stack, std::time::Instant::now()));
    engine.register(&mut registry);
    let plane = Plane::start(
        bus.clone(),
        engine,
        Some((journal, restored)),
        PlaneConfig {
            routing: routing(&stack),
            repeat_interval: stack.alerts.repeat_interval,
            eval_every: eval_every(&stack),
        },
    );

    // Bind every listener before starting a replica, so a taken port fails fast.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (faults_tx, faults_rx) = watch::channel(true);
    let (restart_tx, mut restart_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u32)>();
    let hooks = Arc::new(proxy::Hooks {
        bus: Some(bus.clone()),
        faults_on: faults_rx,
        restart: Some(restart_tx),
        mesh: Default::default(),
    });
    // Routes exist for exposed services and for every service a route leads to.
    let targets: std::collections::HashSet<&str> = stack
        .services
        .iter()
        .filter_map(|s| s.expose.as_ref())
        .flat_map(|e| e.routes.iter().map(|r| r.to.as_str()))
        .collect();
    let mut routes = std::collections::HashMap::new();
    for svc in &stack.services {
        let expose = match &svc.expose {
            Some(e) => e.clone(),
            None if targets.contains(svc.name.as_str()) => {
                spec::Expose::new(([127, 0, 0, 1], 0).into())
            }
            None => continue,
        };
        let endpoints = supervisor.endpoints(&svc.name).context("endpoints")?;
        let handle = proxy::RouteHandle::new(
            &svc.name,
            expose,
            endpoints,
            &proxy_metrics,
            Some(plane.outcome_sink()),
            hooks.clone(),
        );
        routes.insert(svc.name.clone(), handle);
    }
    let mut proxies = JoinSet::new();
    let mut toxics = std::collections::HashMap::new();
    for svc in &stack.services {
        let Some(expose) = &svc.expose else { continue };
        let socket = TcpListener::bind(expose.listen).await.with_context(|| {
            format!(
                "service {}: cannot listen on {} (services.{}.expose.listen); is another \
                 program using it?",
                svc.name, expose.listen, svc.name
            )
        })?;
        let stop = stop_rx.clone();
        if expose.protocol == spec::Protocol::Tcp {
            let (toxics_tx, toxics_rx) = watch::channel(expose.toxics.clone());
            toxics.insert(svc.name.clone(), toxics_tx);
            let l = proxy::TcpExpose {
                service: svc.name.clone(),
                socket,
                endpoints: supervisor.endpoints(&svc.name).context("endpoints")?,
                connect_timeout: expose.timeouts.connect,
                toxics: toxics_rx,
                faults_enabled: hooks.faults_on.clone(),
            };
            let m = tcp_metrics.clone();
            proxies.spawn(async move { proxy::serve_tcp(l, &m, stop, PROXY_DRAIN).await });
        } else {
            let route = routes[&svc.name].clone();
            proxies.spawn(async move { proxy::serve(socket, route, stop, PROXY_DRAIN).await });
        }
        tracing::info!(service = %svc.name, listen = %expose.listen, "proxy listening");
    }
    // The proxy asks, the supervisor acts: restart replicas whose ejection says so.
    {
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            while let Some((service, index)) = restart_rx.recv().await {
                tracing::warn!(%service, index, "restarting an ejected replica");
                let _ = supervisor.restart(&service, Some(index));
            }
        });
    }
    let api_socket = TcpListener::bind(stack.api.listen).await.with_context(|| {
        format!(
            "cannot serve the API on {} ([api] listen); is another bulwark running?",
            stack.api.listen
        )
    })?;
    let api_addr = api_socket.local_addr()?;
    api::state_dir::write_addr(&state_dir, api_addr)?;
    let app = api::router(Arc::new(api::AppState {
        supervisor: supervisor.clone(),
        bus: bus.clone(),
        registry: Arc::new(registry),
        token,
        plane: plane.clone(),
        persisted,
        faults: faults_tx,
    }));
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(async move {
        axum::serve(api_socket, app)
            .with_graceful_shutdown(async move {
                let _ = api_stop.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(api = %api_addr, state_dir = %state_dir.display(), "bulwark up");
    supervisor.start();

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = sigint.recv() => tracing::info!("interrupted: stopping"),
    }
    // Listeners stop accepting and finish what they carry while replicas drain and stop.
    stop_tx.send_replace(true);
    supervisor.shutdown().await;
    while proxies.join_next().await.is_some() {}
    // Everything that happened is in the journal before the API (and its followers) go.
    let last = bus.history().last().map_or(0, |e| e.seq);
    let mut written = journal_watermark;
    let _ = tokio::time::timeout(Duration::from_secs(5), written.wait_for(|p| *p >= last)).await;
    // Followers of event or log streams would keep the API open forever: cut them off.
    let _ = tokio::time::timeout(Duration::from_secs(1), api_task).await;
    let _ = std::fs::remove_file(state_dir.join(api::state_dir::ADDR_FILE));
    tracing::info!("stopped; no replica is running");
    Ok(ExitCode::SUCCESS)
}
