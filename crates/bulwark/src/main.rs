//! The `bulwark` binary: command-line parsing and the wiring of every layer. No business
//! logic lives here.

mod agent;
mod backup_cmd;
mod backups;
mod capacity;
mod chaos_cmd;
mod chaos_host;
mod cli;
mod cluster_cmd;
mod cluster_status;
mod commands;
mod containers;
mod endpoints_pub;
mod host;
mod output;
mod placed;
mod remedy_cmd;
mod remedy_host;
mod remote;
mod reports;
mod resources;
mod rollout_cmd;
mod rollout_host;
mod scheduler;
mod series_host;
mod status_view;
mod switches;
mod systemd;
mod top;
mod up;
mod verify_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use output::outln;

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("choose one allocator: the `mimalloc` or the `jemalloc` feature");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // A chaos experiment's stressor: a process of its own, not a command (see chaos_cmd).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == chaos_cmd::STRESSOR) {
        return chaos_cmd::stress(&args[2..]);
    }
    // A container's PID 1 (`init = true`): blocking, before any runtime or logging.
    if args
        .get(1)
        .is_some_and(|a| a == runtime::container_init::ARG)
    {
        return ExitCode::from(runtime::container_init::main(&args[2..]));
    }
    // The container janitor `bulwark up` leaves behind it (see containers).
    if args.get(1).is_some_and(|a| a == containers::JANITOR) {
        return containers::janitor(&args[2..]);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BULWARK_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,rustic_core=warn,rustic_backend=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Check { file, experiments } => return check(&file, experiments.as_deref()),
        Command::Completions { shell } => return completions(shell),
        Command::SystemdUnit { file } => return systemd::unit_command(&file),
        Command::Schema { markdown } => return schema(markdown),
        Command::Explain { key } => return explain(&key),
        Command::Man { out } => man(out.as_deref()),
        Command::Slo {
            cmd: Some(cli::SloCmd::Rules { file, out }),
            ..
        } => slo_rules(&file, &out),
        Command::Import { from } => import_stack(from),
        Command::Grafana { file } => grafana(file.as_deref()),
        Command::Demo(args) => tokio_runtime(Some(1), true).and_then(|rt| rt.block_on(demo(args))),
        Command::Up(args) => {
            tokio_runtime(None, false).and_then(|rt| rt.block_on(up::run(args, cli.state_dir)))
        }
        Command::Agent(args) => {
            tokio_runtime(None, false).and_then(|rt| rt.block_on(agent::run(args, cli.state_dir)))
        }
        Command::Nodes { etcd, json } => {
            tokio_runtime(Some(1), true).and_then(|rt| rt.block_on(cluster_cmd::nodes(etcd, json)))
        }
        Command::Status {
            json,
            etcd,
            cluster,
            etcd_timeout,
        } if !etcd.is_empty() => {
            let args = cli::EtcdArgs {
                etcd,
                cluster,
                etcd_timeout,
            };
            tokio_runtime(Some(1), true).and_then(|rt| rt.block_on(cluster_status::run(args, json)))
        }
        Command::Apply(args) => {
            tokio_runtime(Some(1), true).and_then(|rt| rt.block_on(cluster_cmd::apply(args)))
        }
        Command::Load(args) => tokio_runtime(None, false).and_then(|rt| rt.block_on(load(args))),
        Command::Top { once } => {
            tokio_runtime(Some(1), true).and_then(|rt| rt.block_on(top::run(once, cli.state_dir)))
        }
        Command::Verify(args) => tokio_runtime(None, false)
            .and_then(|rt| rt.block_on(verify_cmd::run(args, cli.state_dir))),
        other => tokio_runtime(Some(1), true)
            .and_then(|rt| rt.block_on(commands::run(other, cli.state_dir))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulwark: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The tokio runtime a command runs on.
fn tokio_runtime(
    workers: Option<usize>,
    current_thread: bool,
) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = workers {
            b.worker_threads(n.max(1));
        }
        b
    };
    Ok(b.enable_all().build()?)
}

/// `bulwark check`: exit 0 when valid (warnings, such as old spellings, on stderr), 2 with
/// every problem listed when not.
fn check(file: &std::path::Path, experiments: Option<&std::path::Path>) -> ExitCode {
    match spec::load_with_warnings(file) {
        Ok(spec::Loaded { stack, warnings }) => {
            for w in warnings {
                eprintln!("{w}");
            }
            // Valid, but limits this machine cannot enforce are worth knowing before `up`
            // refuses them (the file may be meant for another machine).
            if stack.services.iter().any(|s| !s.resources.is_empty()) {
                for p in resources::support(&stack, file, false).1 {
                    eprintln!("warning: {p}");
                }
            }
            if let Err(code) = check_warm(&stack) {
                return code;
            }
            outln!(
                "{}: ok ({} service{})",
                file.display(),
                stack.services.len(),
                if stack.services.len() == 1 { "" } else { "s" }
            );
            match experiments {
                Some(path) => check_experiments(path, &stack),
                None => ExitCode::SUCCESS,
            }
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

/// Services with `[warm]` need a CRIU that works here: which one was found and its
/// version, or an error naming the services (exit 2).
fn check_warm(stack: &spec::Stack) -> Result<(), ExitCode> {
    let warm: Vec<&str> = stack
        .services
        .iter()
        .filter(|s| s.warm.is_some())
        .map(|s| s.name.as_str())
        .collect();
    if warm.is_empty() {
        return Ok(());
    }
    let checked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(runtime::warm::criu_check()));
    match checked {
        Ok((criu, version)) => {
            outln!(
                "warm restarts ({}): CRIU {version} at {}",
                warm.join(", "),
                criu.display()
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("error: [warm] of service {}: {e}", warm.join(", "));
            Err(ExitCode::from(2))
        }
    }
}

/// A file of `[[experiments]]`, checked against `stack`'s services.
fn check_experiments(path: &std::path::Path, stack: &spec::Stack) -> ExitCode {
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| format!("{}:1:1: error: cannot read the file: {e}", path.display()))
        .and_then(|text| {
            spec::parse_experiments(&text, path, &stack.services).map_err(|e| e.to_string())
        });
    match parsed {
        Ok(list) => {
            outln!("{}: ok ({} experiments)", path.display(), list.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

/// `bulwark slo rules`: Prometheus rules equivalent to the engine, and a promtool test.
/// `bulwark grafana`: the dashboard on stdout.
fn grafana(file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let (title, with_slo) = match file {
        None => ("bulwark".to_owned(), true),
        Some(file) => match spec::load(file) {
            Ok(stack) => (
                format!("bulwark: {}", file.display()),
                !observe::slo::stack_slos(&stack).is_empty(),
            ),
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let dashboard = observe::grafana::dashboard(&title, with_slo);
    outln!("{}", serde_json::to_string_pretty(&dashboard)?);
    Ok(ExitCode::SUCCESS)
}

fn slo_rules(file: &std::path::Path, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let stack = match spec::load(file) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    let slos = observe::slo::stack_slos(&stack);
    if slos.is_empty() {
        anyhow::bail!(
            "{} defines no SLO: add a [[services.NAME.slo]] table",
            file.display()
        );
    }
    std::fs::create_dir_all(out)?;
    let rules = out.join("bulwark-slo.rules.yml");
    let test = out.join("bulwark-slo.rules.test.yml");
    std::fs::write(&rules, observe::slo::rules(&slos))?;
    std::fs::write(
        &test,
        observe::slo::rules_test(&slos, "bulwark-slo.rules.yml"),
    )?;
    outln!("wrote {} and {}", rules.display(), test.display());
    outln!(
        "check them with: promtool check rules {} && (cd {} && promtool test rules bulwark-slo.rules.test.yml)",
        rules.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `bulwark schema [--markdown]`: generated from the stack file's declarations.
fn schema(markdown: bool) -> ExitCode {
    if markdown {
        output::bytes(reference::reference().as_bytes());
    } else {
        let mut json = serde_json::to_string_pretty(&reference::json_schema()).unwrap_or_default();
        json.push('\n');
        output::bytes(json.as_bytes());
    }
    ExitCode::SUCCESS
}

/// `bulwark explain KEY`: exit 2 when no key (or several) match.
fn explain(key: &str) -> ExitCode {
    match reference::explain(key) {
        Ok(text) => {
            output::bytes(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulwark: {e}");
            ExitCode::from(2)
        }
    }
}

/// `bulwark completions SHELL`: the completion script, generated from the CLI definition.
fn completions(shell: cli::Shell) -> ExitCode {
    // Rendered into memory first: clap_complete panics when a write fails, and a closed
    // pipe must end the command quietly (see `output`).
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        "bulwark",
        &mut script,
    );
    output::bytes(&script);
    ExitCode::SUCCESS
}

/// `bulwark man [--out DIR]`: the man page on stdout, or every page written into DIR.
fn man(out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    // No page for clap's `help` subcommand: it only repeats `--help`, which every page covers.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    let Some(dir) = out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        output::bytes(&page);
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir)?;
    // Built first so that each subcommand's name is its full path (`bulwark-slo-rules`).
    cmd.build();
    write_man_pages(cmd, dir)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `cmd`'s man page into `dir`, then its subcommands' pages, in the CLI's order.
fn write_man_pages(cmd: clap::Command, dir: &std::path::Path) -> anyhow::Result<()> {
    let subcommands: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    let path = clap_mangen::Man::new(cmd).generate_to(dir)?;
    outln!("wrote {}", path.display());
    for sub in subcommands {
        write_man_pages(sub, dir)?;
    }
    Ok(())
}

/// `bulwark import`: the stack file on stdout (or `out`), a line per note on stderr.
fn import_stack(from: cli::ImportCmd) -> anyhow::Result<ExitCode> {
    let (compose, files, out) = match from {
        cli::ImportCmd::Compose { file, out } => (true, vec![file], out),
        cli::ImportCmd::K8s { files, out } => (false, files, out),
    };
    if let Some(out) = &out {
        // Overwriting a source with its own import would lose it.
        let same = |f: &PathBuf| matches!((f.canonicalize(), out.canonicalize()), (Ok(a), Ok(b)) if a == b);
        if files.iter().any(same) {
            anyhow::bail!(
                "{} is also an input; write the stack file elsewhere",
                out.display()
            );
        }
    }
    let mut texts = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    let sources: Vec<import::Source<'_>> = texts
        .iter()
        .map(|(name, text)| import::Source { name, text })
        .collect();
    let imported = if compose {
        import::compose(sources[0].name, sources[0].text)
    } else {
        import::kubernetes(&sources)
    };
    // Why nothing could be imported is in the notes.
    if let Err(import::Error::NothingToRun { notes, .. }) = &imported {
        for note in notes {
            eprintln!("{note}");
        }
    }
    let imported = imported?;
    for note in &imported.notes {
        eprintln!("{note}");
    }
    match out {
        Some(out) => {
            std::fs::write(&out, &imported.stack)
                .with_context(|| format!("cannot write {}", out.display()))?;
            outln!("wrote {}", out.display());
        }
        None => outln!("{}", imported.stack.trim_end()),
    }
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: cli::DemoArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = demo::Config::new((args.host, args.port).into());
    cfg.startup_delay = args.startup_delay.into();
    cfg.tcp = args.tcp;
    cfg.fail_ratio = args.fail_ratio;
    cfg.fail_status = args.fail_status;
    cfg.slow = args.slow.into();
    if !(args.leak_rate.is_finite() && (0.0..=65536.0).contains(&args.leak_rate)) {
        anyhow::bail!("--leak-rate must be between 0 and 65536 MiB per second");
    }
    cfg.leak_rate = (args.leak_rate * f64::from(1u32 << 20)) as u64;
    cfg.cost = args.cost.into();
    if args.notify_watchdog_every.is_some_and(|e| e.is_zero()) {
        anyhow::bail!("--notify-watchdog-every must be more than 0s");
    }
    cfg.notify = demo::NotifyPlan {
        ready_after: args.notify_ready_after.map(Into::into),
        watchdog_every: args.notify_watchdog_every.map(Into::into),
        stop_watchdog_after: args.notify_stop_watchdog_after.map(Into::into),
    };
    demo::run(cfg).await?;
    Ok(ExitCode::SUCCESS)
}

async fn load(args: cli::LoadArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = load::Config::new(args.url.parse()?);
    cfg.rate = args.rate;
    cfg.duration = args.duration.into();
    cfg.concurrency = args.concurrency;
    cfg.timeout = args.timeout.into();
    cfg.method = args.method.parse()?;
    cfg.body = args.body.map(Into::into);
    for h in &args.header {
        cfg.headers.push(load::parse_header(h)?);
    }
    let report = load::run(cfg).await?;
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
