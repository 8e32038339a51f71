//! `bulwark up`: wires spec → runtime → proxy/observe/api and runs until a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bus::Bus;
use observe::notify::Routing;
use observe::plane::{Plane, PlaneConfig};
use observe::slo::{SloEngine, Window};
use prometheus_client::registry::Registry;
use proxy::{Listeners, ProxyMetrics};
use runtime::{Options, Supervisor};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::UpArgs;

/// Remediation, anomaly detection and autoscaling, as `up` runs them.
struct Repair {
    remedy: remedy::Remedy,
    detector: Arc<remedy::Detector>,
    measures: Arc<remedy::Measures>,
    autoscaling: remedy::Autoscaling,
    inputs: remedy::Inputs,
    /// The autoscale settings the autoscalers run with.
    autoscale: Vec<(String, Option<spec::Autoscale>)>,
}

impl Repair {
    fn apply(&mut self, stack: &spec::Stack) {
        self.measures.track(exposed(stack));
        self.remedy.reload(stack);
        self.detector.reload(stack);
        let autoscale = autoscale_of(stack);
        // Restarted only when they changed: an autoscaler's windows are its memory.
        if autoscale != self.autoscale {
            self.autoscaling.start(stack, &self.inputs);
            self.autoscale = autoscale;
        }
    }
}

fn exposed(stack: &spec::Stack) -> impl Iterator<Item = &str> {
    stack
        .services
        .iter()
        .filter(|s| s.expose.is_some())
        .map(|s| s.name.as_str())
}

fn autoscale_of(stack: &spec::Stack) -> Vec<(String, Option<spec::Autoscale>)> {
    stack
        .services
        .iter()
        .map(|s| (s.name.clone(), s.autoscale))
        .collect()
}

/// Reads the stack file on the blocking pool: it reads `env_files`, `secrets` and
/// fallback bodies too, and must not stall a runtime worker on a slow disk.
async fn load(file: &std::path::Path) -> Result<spec::Loaded, spec::Errors> {
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || spec::load_with_warnings(&file))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Reads the stack file again and applies it; on a bad file nothing changes and the
/// diagnostics come back.
#[allow(clippy::too_many_arguments)]
async fn reload(
    file: &std::path::Path,
    supervisor: &Supervisor,
    rollouts: &rollout::Rollouts,
    listeners: &mut Listeners,
    bus: &Arc<Bus>,
    backups: &[spec::Backup],
    experiments: &[spec::Experiment],
    repair: &mut Repair,
) -> Result<Vec<String>, String> {
    let spec::Loaded { stack, warnings } = load(file).await.map_err(|e| e.to_string())?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let reloaded = supervisor.reload(&stack).map_err(|e| e.to_string())?;
    let mut changes = reloaded.changes;
    for svc in &stack.services {
        if !reloaded.rollouts.iter().any(|r| r.name == svc.name) {
            rollouts.clear_drift(&svc.name);
        }
    }
    for svc in reloaded.rollouts {
        let name = svc.name.clone();
        match rollouts.start(svc, "reload") {
            Ok(revision) => changes.push(format!(
                "{name}: revision {revision} rolling out (`bulwark rollout status {name}`)"
            )),
            Err(e) => changes.push(format!("{name}: rollout not started: {e}")),
        }
    }
    let edited = listeners.apply(&stack).await;
    changes.extend(edited.map_err(|e| format!("{:#}", anyhow::Error::new(e)))?);
    repair.apply(&stack);
    if stack.backups != backups {
        // Said rather than applied: schedules and repositories are fixed while `up` runs.
        changes.push(
            "[[backups]] changed: the backups keep running as they started until `up` restarts"
                .to_owned(),
        );
    }
    if stack.experiments != experiments {
        changes.push(
            "[[experiments]] changed: the experiments and their schedules stay as they started \
             until `up` restarts"
                .to_owned(),
        );
    }
    bus.publish(bus::EventKind::Reloaded {
        changed: changes.clone(),
    });
    Ok(changes)
}
/// How long a stop waits for a backup, verification or drill under way to end.
const BACKUP_GRACE: Duration = Duration::from_secs(60);

/// How long a stop waits for running experiments to undo their faults and roll back.
const CHAOS_GRACE: Duration = Duration::from_secs(30);

/// How long a cluster agent's leaders have to step down (resign in etcd, run `demote`)
/// before it leaves the cluster.
const STEP_DOWN: Duration = Duration::from_secs(20);

/// Events kept in memory (and read back from the journal at start).
const EVENT_HISTORY: usize = 10_000;

/// The stack's alert routing, in the plane's terms.
fn routing(stack: &spec::Stack) -> Routing {
    Routing {
        group_wait: stack.alerts.group_wait,
        sinks: stack.alerts.sinks.clone(),
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

/// `bulwark up`.
pub async fn run(args: UpArgs, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let stack = match load(&args.file).await {
        Ok(spec::Loaded { stack, warnings }) => {
            for w in warnings {
                eprintln!("{w}");
            }
            stack
        }
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    serve(args, stack, state_dir, None).await
}

// Long on purpose: the wiring of `bulwark up`, in the order the layers must start.
/// Runs `stack` until a signal; as a cluster agent when `agent` is given (`args.file` is
/// then the agent's copy of the cluster's stack, written anew for each applied revision).
#[allow(clippy::too_many_lines)]
pub async fn serve(
    args: UpArgs,
    stack: spec::Stack,
    state_dir: Option<PathBuf>,
    agent: Option<crate::agent::Agent>,
) -> anyhow::Result<ExitCode> {
    crate::host::prepare(&stack);
    let cgroups = {
        let (stack, file) = (stack.clone(), args.file.clone());
        tokio::task::spawn_blocking(move || {
            crate::resources::protect_self(&stack);
            crate::resources::support(&stack, &file, true)
        })
        .await
        .context("preparing cgroups")?
    };
    if !cgroups.1.is_empty() {
        for p in &cgroups.1 {
            eprintln!("{p}");
        }
        return Ok(ExitCode::from(2));
    }
    let cgroups = cgroups.0;
    let own_cgroups = cgroups.clone();
    let state_dir = state_dir.unwrap_or_else(api::state_dir::default_dir);
    // The lock comes before anything is written: a second `up` on the same directory must
    // leave the running one (its token, its address file) alone.
    let state_lock = api::state_dir::lock(&state_dir)?;
    let token = api::state_dir::create(&state_lock)
        .with_context(|| format!("cannot write the API token into {}", state_dir.display()))?;
    let workers = proxy::Workers::start(args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    ))
    .context("cannot start the proxy's worker threads")?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    // The journal comes first: a corrupt or foreign file stops us before anything runs.
    let journal_path = state_dir.join("journal.redb");
    let (journal, mut restored) = observe::journal::Journal::open(
        &journal_path,
        EVENT_HISTORY,
        observe::journal::Options::new(&stack.journal),
    )
    .with_context(|| format!("cannot open the journal {}", journal_path.display()))?;
    let events = std::mem::take(&mut restored.events);
    let bus = Arc::new(Bus::with_history(EVENT_HISTORY, events));
    if let Some(agent) = &agent {
        bus.set_origin(agent.node());
    }
    let persisted = journal.persisted();
    let journal_watermark = journal.persisted();
    let _journal_writer = journal.spawn_event_writer(bus.clone());
    let mut registry = Registry::default();
    journal.register(&mut registry);
    let journal_health = journal.health();
    let journal_handle = journal.clone();
    let journal_store = journal.store();
    let rollout_store = journal_store.clone();
    let switch_store = journal_store.clone();
    let audit = Arc::new(api::audit::Audit::new(Some(journal_store.clone())));
    audit.register(&mut registry);
    // bulwark's own actions (restarts, ejections, remediations, chaos...) from the bus.
    let own_actions = api::audit::actions::Follower::start(&bus, audit.clone());
    let audit_log = audit.clone();
    let tokens = {
        let store = journal_store.clone();
        // Reads the journal: off the async workers.
        tokio::task::spawn_blocking(move || api::tokens::Tokens::new(&token, Some(store)))
            .await
            .map(Arc::new)
            .context("cannot read the API tokens")?
    };
    let bulwark = std::env::current_exe().context("cannot find this program's path")?;
    let oci = runtime::oci::OciDirs::new(&state_dir);
    // Held until `up` returns: its end releases the janitor (see containers).
    let _janitor = crate::containers::prepare(&stack, &oci).await?;
    let supervisor = Supervisor::new(
        &stack,
        bus.clone(),
        &mut registry,
        Options {
            bulwark: bulwark.clone(),
            echo_logs: !args.quiet,
            log_lines: 2000,
            oci,
            cgroups,
            notify_dir: Some(state_dir.join("notify")),
            leader_dir: Some(state_dir.join("leader")),
            warm_dir: Some(state_dir.join("warm")),
            // Fencing tokens are ids of a journal log: never reused across restarts. An
            // agent's come from etcd, one leader cluster-wide.
            election: Some(match &agent {
                Some(a) => a.election(),
                None => Arc::new(store::LocalElection::new(journal_store.clone())),
            }),
        },
    );
    let proxy_metrics = ProxyMetrics::register(&mut registry);
    let tcp_metrics = proxy::TcpMetrics::register(&mut registry);
    let _events = observe::count_events(&bus, &mut registry);
    let engine = Arc::new(SloEngine::new(&stack, std::time::Instant::now()));
    engine.register_on_node(&mut registry, bus.origin());
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
    plane.register(&mut registry);

    let versions = Arc::new(rollout::Versions::default());
    let rollouts = rollout::Rollouts::new(
        supervisor.clone(),
        bus.clone(),
        Arc::new(crate::rollout_host::RolloutHost {
            plane: plane.clone(),
        }),
        versions.clone(),
        Some(rollout_store),
    );
    {
        // Revision numbers go on from the journal's: a read, off the runtime's workers.
        let (rollouts, stack) = (rollouts.clone(), stack.clone());
        tokio::task::spawn_blocking(move || rollouts.init(&stack))
            .await
            .context("reading the revisions")?;
    }

    let backups = {
        let host = Arc::new(crate::backups::BackupHost::new(
            &stack,
            supervisor.clone(),
            plane.clone(),
            journal_store.clone(),
            bulwark,
        ));
        let (specs, work) = (stack.backups.clone(), state_dir.join("backups"));
        // Reading the backups' records is a journal read: off the runtime's workers.
        tokio::task::spawn_blocking(move || {
            backup::Backups::new(&specs, host, Some(journal_store), work)
        })
        .await
        .context("reading the backups' records")?
    };
    backups.register_metrics(&mut registry);

    // Bind every listener before starting a replica, so a taken port fails fast.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (faults_tx, faults_rx) = watch::channel(true);
    let injected = Arc::new(proxy::Injected::default());
    let (restart_tx, mut restart_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u32)>();
    let switches = {
        let (store, bus) = (switch_store, bus.clone());
        // Reading the switches set in earlier runs is a journal read: off the workers.
        Arc::new(
            tokio::task::spawn_blocking(move || crate::switches::board(store, bus))
                .await
                .context("reading the switches from the journal")?,
        )
    };
    let hooks = Arc::new(proxy::Hooks {
        bus: Some(bus.clone()),
        faults_on: faults_rx,
        restart: Some(restart_tx),
        services: Default::default(),
        injected: injected.clone(),
        switches: switches.clone(),
        workers,
    });
    let endpoints = {
        let supervisor = supervisor.clone();
        // A cluster agent's proxies also balance over the other nodes' replicas.
        let merger = agent.as_ref().map(crate::agent::Agent::merger);
        Box::new(move |service: &str| match &merger {
            Some(m) => m.endpoints(service, supervisor.endpoints(service)),
            None => supervisor.endpoints(service),
        })
    };
    // The proxy's outcomes go to the SLO engine and, per second, to the experiments'
    // probes.
    let outcomes = Arc::new(chaos::Outcomes::new(
        stack
            .services
            .iter()
            .filter(|s| s.expose.is_some())
            .map(|s| s.name.as_str()),
    ));
    {
        let experiments = stack.experiments.clone();
        tokio::task::spawn_blocking(move || chaos::remove_leftover_fills(&experiments))
            .await
            .context("removing leftover disk-fill files")?;
    }
    let chaos = chaos::Chaos::new(
        stack.experiments.clone(),
        Arc::new(crate::chaos_host::ChaosHost {
            supervisor: supervisor.clone(),
            plane: plane.clone(),
            bulwark: std::env::current_exe().context("cannot find this program's path")?,
        }),
        bus.clone(),
        injected,
        outcomes.clone(),
        faults_tx.subscribe(),
    );
    // Remediation acts through the supervisor, the rollouts, the switches and the plane;
    // it measures from the proxy's outcomes and the resource sampler.
    let measures = Arc::new(remedy::Measures::default());
    measures.track(exposed(&stack));
    let remedy_host: Arc<dyn remedy::Host> = Arc::new(crate::remedy_host::RemedyHost {
        supervisor: supervisor.clone(),
        rollouts: rollouts.clone(),
        switches: switches.clone(),
        plane: plane.clone(),
    });
    let remedy = remedy::Remedy::new(&stack, bus.clone(), remedy_host.clone(), &mut registry);
    let detector = Arc::new(remedy::Detector::new(
        &stack,
        bus.clone(),
        measures.clone(),
        &remedy,
    ));
    // The resource samples go to the anomaly detector and, the latest of each replica, to
    // the dashboard's time series.
    let usage = Arc::new(observe::series::Resources::default());
    let _resources = observe::resources::spawn(
        &bus,
        &mut registry,
        stack.anomaly.sample_every,
        Some(Arc::new(observe::resources::Both(
            detector.clone(),
            usage.clone(),
        ))),
    );
    let mut repair = Repair {
        inputs: remedy::Inputs::new(
            remedy_host,
            bus.clone(),
            measures.clone(),
            detector.clone(),
            &remedy,
        ),
        remedy: remedy.clone(),
        detector,
        measures: measures.clone(),
        autoscaling: remedy::Autoscaling::default(),
        autoscale: autoscale_of(&stack),
    };
    let series = Arc::new(observe::series::Series::default());
    let _series = observe::series::spawn(
        series.clone(),
        Arc::new(crate::series_host::SeriesHost {
            supervisor: supervisor.clone(),
            hooks: hooks.clone(),
            measures: measures.clone(),
            resources: usage,
            plane: plane.clone(),
        }),
    );
    let mut listeners = Listeners::new(
        hooks,
        proxy_metrics,
        tcp_metrics,
        Arc::new(chaos::Tee(
            Arc::new(chaos::Tee(
                Arc::new(chaos::Tee(plane.outcome_sink(), outcomes)),
                versions.clone(),
            )),
            measures,
        )),
        endpoints,
    )
    .with_preview_outcomes(versions);
    listeners.apply(&stack).await?;
    // The proxy asks, the supervisor acts: restart replicas whose ejection says so.
    {
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            while let Some((service, index)) = restart_rx.recv().await {
                // Another node's replica: its own agent restarts it.
                if index >= bus::REMOTE_REPLICA {
                    continue;
                }
                tracing::warn!(%service, index, "restarting an ejected replica");
                let _ = supervisor.restart(&service, Some(index));
            }
        });
    }
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<api::ReloadRequest>(4);
    let api_socket = TcpListener::bind(stack.api.listen).await.with_context(|| {
        format!(
            "cannot serve the API on {} ([api] listen); is another bulwark running?",
            stack.api.listen
        )
    })?;
    let api_addr = api_socket.local_addr()?;
    let api_tls = api_tls(&stack.api, &stop_rx).await?;
    api::state_dir::write_addr(&state_dir, api_addr, api_tls.is_some())?;
    let app = api::router(Arc::new(api::AppState {
        supervisor: supervisor.clone(),
        bus: bus.clone(),
        registry: Arc::new(registry),
        tokens,
        audit,
        plane: plane.clone(),
        persisted,
        faults: faults_tx,
        reload: reload_tx,
        journal_health,
        any_host: api_tls.is_some(),
        backups: backups.clone(),
        chaos: chaos.clone(),
        rollouts: rollouts.clone(),
        stack_file: args.file.clone(),
        switches,
        remedy: remedy.clone(),
        autoscaling: repair.autoscaling.clone(),
        series,
    }));
    let api_task = tokio::spawn(api::server::serve(
        api_socket,
        app,
        api::server::Limits::default(),
        api_tls,
        stop_rx.clone(),
    ));
    tracing::info!(api = %api_addr, state_dir = %state_dir.display(), "bulwark up");
    // A cluster agent joins once its API answers, so the address it registers works.
    let mut membership = match agent {
        Some(a) => Some(a.join(bus.clone(), api_addr).await?),
        None => None,
    };
    let mut stack_changes = membership.as_mut().map(|m| m.stack_changes());
    if let Some(m) = membership.as_mut() {
        m.publish_endpoints(supervisor.clone(), &bus);
    }
    supervisor.start();
    // Ready for systemd once the API and every listener are bound and every replica is
    // under way; replicas' own readiness is in STATUS= (a stack whose service never gets
    // ready must not keep its supervisor from starting).
    let notifier = crate::systemd::Notifier::from_env().map(Arc::new);
    let watchdog = notifier.as_ref().map(|n| {
        n.send(&format!(
            "READY=1\nSTATUS={}",
            crate::systemd::summary(&supervisor.status())
        ));
        crate::systemd::spawn_watchdog(n.clone(), supervisor.clone())
    });
    let backup_tasks = backups.start();
    repair.autoscaling.start(&stack, &repair.inputs);
    let remedy_task = remedy.spawn(repair.measures.clone(), repair.detector.clone());
    let chaos_tasks: Vec<_> = std::iter::once(chaos.spawn_kill_switch())
        .chain(chaos.spawn_schedules())
        .collect();

    let mut sighup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = sigint.recv() => { tracing::info!("interrupted: stopping"); break }
            Some(revision) = crate::agent::next_revision(&mut stack_changes) => {
                let Some(m) = &membership else { continue };
                match m.fetch_stack(&args.file).await {
                    Ok(()) => match reload(&args.file, &supervisor, &rollouts, &mut listeners, &bus, &stack.backups, &stack.experiments, &mut repair).await {
                        Ok(changes) => tracing::info!(revision, ?changes, "running the cluster's stack revision"),
                        Err(e) => tracing::error!(revision, "the cluster's stack revision cannot run here, still running the previous one:\n{e}"),
                    },
                    Err(e) => tracing::error!(revision, "cannot read the cluster's stack revision: {e:#}"),
                }
            }
            _ = sighup.recv() => {
                let notify = |msg: &str| if let Some(n) = &notifier { n.send(msg) };
                notify("RELOADING=1");
                match reload(&args.file, &supervisor, &rollouts, &mut listeners, &bus, &stack.backups, &stack.experiments, &mut repair).await {
                    Ok(changes) => tracing::info!(?changes, "reloaded on SIGHUP"),
                    Err(e) => tracing::error!("reload refused, still running the previous stack:\n{e}"),
                }
                notify("READY=1");
            }
            Some(reply) = reload_rx.recv() => {
                let _ = reply.send(reload(&args.file, &supervisor, &rollouts, &mut listeners, &bus, &stack.backups, &stack.experiments, &mut repair).await);
            }
        }
    }
    if let Some(n) = &notifier {
        n.send("STOPPING=1\nSTATUS=stopping");
    }
    // Out of the cluster first: the others see this node leave at once, not a lease expire.
    // Its leaders step down before: leaving revokes the lease their terms are under, and
    // another node's replica may be elected at once.
    if let Some(m) = membership {
        if !supervisor.step_down(STEP_DOWN).await {
            tracing::warn!("a leader was still stepping down when the node left the cluster");
        }
        m.leave().await;
    }
    // The watchdog stays: stopping takes up to TimeoutStopSec, and a stall there is a
    // stall too.
    // No backup, verification or drill starts while the stack stops; one under way ends
    // first (bounded), so its post-hook runs while the service still does and no later
    // `up` finds a writer in the repository.
    for t in backup_tasks.into_iter().chain(chaos_tasks) {
        t.abort();
    }
    // No remediation or autoscaling decision while the stack stops.
    remedy_task.abort();
    repair.autoscaling.close();
    // Every fault undone and every rollback run before the replicas stop; nothing starts
    // again.
    chaos.close(CHAOS_GRACE).await;
    rollouts.close();
    backups.shutdown(BACKUP_GRACE).await;
    // Listeners stop accepting and finish what they carry while replicas drain and stop.
    stop_tx.send_replace(true);
    let (_, ()) = tokio::join!(supervisor.shutdown(), listeners.shutdown());
    // Everything that happened is in the journal before the API (and its followers) go.
    let last = bus.last_seq();
    let mut written = journal_watermark;
    let _ = tokio::time::timeout(Duration::from_secs(5), written.wait_for(|p| *p >= last)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), journal_handle.flush()).await;
    own_actions.finish(last, Duration::from_secs(2)).await;
    audit_log.flush(Duration::from_secs(5)).await;
    // Followers of event or log streams would keep the API open forever: cut them off.
    let _ = tokio::time::timeout(Duration::from_secs(1), api_task).await;
    let _ = std::fs::remove_file(state_dir.join(api::state_dir::ADDR_FILE));
    let _ = std::fs::remove_file(state_dir.join(api::state_dir::SCHEME_FILE));
    // Every replica's cgroups went with it; bulwark's own parents go last.
    if let Ok(c) = own_cgroups {
        let _ = tokio::task::spawn_blocking(move || c.remove_own()).await;
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("stopped; no replica is running");
    drop(state_lock);
    Ok(ExitCode::SUCCESS)
}

/// The API's TLS (`[api.tls]`), its files followed for changes until `stop`. Changes to
/// the table itself take a restart of `up`, like `[api] listen`.
async fn api_tls(
    api: &spec::Api,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<api::server::Tls>> {
    let Some(tls) = &api.tls else {
        return Ok(None);
    };
    // Reads the files: off the async workers.
    let tls = tls.clone();
    let listener = tokio::task::spawn_blocking(move || proxy::TlsListener::new("api", &tls, true))
        .await?
        .context("cannot serve the API over TLS ([api.tls])")?;
    tokio::spawn(listener.clone().follow(stop.clone()));
    let client_role = match api.client_role {
        spec::ClientRole::Viewer => api::tokens::Role::Viewer,
        spec::ClientRole::Operator => api::tokens::Role::Operator,
        spec::ClientRole::Admin => api::tokens::Role::Admin,
    };
    Ok(Some(api::server::Tls {
        listener,
        client_role,
    }))
}
