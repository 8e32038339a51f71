//! The `bulwark` binary: command-line parsing and the wiring of every layer. No business
//! logic lives here.

mod cli;
mod commands;
mod host;
mod output;
mod up;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use output::outln;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BULWARK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Check { file } => return check(&file),
        Command::Slo {
            cmd: Some(cli::SloCmd::Rules { file, out }),
            ..
        } => slo_rules(&file, &out),
        Command::Demo(args) => tokio_runtime(Some(1), true).and_then(|rt| rt.block_on(demo(args))),
        Command::Up(args) => tokio_runtime(args.workers, false)
            .and_then(|rt| rt.block_on(up::run(args, cli.state_dir))),
        Command::Load(args) => tokio_runtime(None, false).and_then(|rt| rt.block_on(load(args))),
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

/// `bulwark check`: exit 0 when valid, 2 with every problem listed when not.
fn check(file: &std::path::Path) -> ExitCode {
    match spec::load(file) {
        Ok(stack) => {
            outln!(
                "{}: ok ({} service{})",
                file.display(),
                stack.services.len(),
                if stack.services.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

/// `bulwark slo rules`: Prometheus rules equivalent to the engine, and a promtool test.
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

async fn demo(args: cli::DemoArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = demo::Config::new(([127, 0, 0, 1], args.port).into());
    cfg.startup_delay = args.startup_delay.into();
    cfg.tcp = args.tcp;
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
