//! `bulwark verify`: each fault kind in turn on each service under open-loop load, judged
//! against the steady-state hypothesis and scored (crate `verify`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::client::Client;
use verify::{Case, Hypothesis, Scorecard};

use crate::cli::VerifyArgs;
use crate::output::outln;

/// Load before the fault: the baseline second and the warm-up.
const LEAD: Duration = Duration::from_secs(1);
/// Load after the fault's end, while the service recovers.
const TAIL: Duration = Duration::from_secs(3);
/// How long a started stack (or a service between faults) may take to be all ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The fault kinds `verify` knows, and the experiment fault each one is.
const KINDS: &[(&str, &str)] = &[
    ("kill", r#"{ type = "kill" }"#),
    ("stop", r#"{ type = "stop" }"#),
    ("restart", r#"{ type = "restart" }"#),
    ("http-abort", r#"{ type = "http-abort", status = 503 }"#),
    ("http-reset", r#"{ type = "http-reset" }"#),
    ("http-delay", r#"{ type = "http-delay", delay = "200ms" }"#),
    ("cpu", r#"{ type = "cpu", workers = 1 }"#),
    ("memory", r#"{ type = "memory", mib = 64 }"#),
];

pub async fn run(args: VerifyArgs, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let stack = match spec::load(&args.file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    if *args.fault_duration > Duration::from_secs(3600) || args.fault_duration.is_zero() {
        bail!("--fault-duration: between 1ms and 1h");
    }
    if !(args.load.is_finite() && args.load > 0.0 && args.load <= 1e6) {
        bail!("--load: requests per second, above 0 and at most 1000000");
    }
    for kind in &args.faults {
        if !KINDS.iter().any(|(k, _)| k == kind) {
            let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            bail!(
                "--faults: unknown fault kind {kind:?}; known: {}",
                known.join(", ")
            );
        }
    }
    let targets = targets(&stack, &args.services)?;
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (client, _stack_guard) = if args.attach {
        let dir = state_dir.unwrap_or_else(api::state_dir::default_dir);
        (Client::discover(&dir)?, None)
    } else {
        let mut up = StartedStack::start(&args.file)?;
        (up.client().await?, Some(up))
    };
    // An experiment answers after its fault and the recovery that follows.
    let client = client
        .with_timeout(*args.fault_duration + chaos::RECOVERY_WINDOW + Duration::from_secs(120));
    all_ready(&client).await?;
    let mut cases = Vec::new();
    for (service, listen) in &targets {
        let url = format!("http://{listen}/");
        let baseline = run_load(url.clone(), args.load, Duration::from_secs(2)).await?;
        for kind in &args.faults {
            eprintln!("verify: {service}: {kind}");
            let case = case(&client, service, kind, &url, &args, baseline.latency_ms.p99).await?;
            cases.push(case);
            all_ready(&client).await?;
            tokio::time::sleep(*args.settle).await;
        }
    }
    let card = Scorecard::new(
        args.file.display().to_string(),
        started,
        args.load,
        cases,
        args.min_score,
    );
    if args.json {
        outln!("{}", verify::json(&card));
    } else {
        outln!("{}", verify::table(&card));
    }
    if let Some(dir) = &args.report {
        let written = verify::write_all(&card, dir)
            .with_context(|| format!("cannot write the report into {}", dir.display()))?;
        for f in written {
            eprintln!("verify: wrote {}", f.display());
        }
    }
    Ok(if card.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The services to verify, with the address their clients use: exposed over HTTP, all of
/// them or the ones named.
fn targets(stack: &spec::Stack, only: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    for name in only {
        if stack.service(name).is_none() {
            bail!("--service {name}: no such service in the stack file");
        }
    }
    let list: Vec<(String, String)> = stack
        .services
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .filter_map(|s| {
            let x = s
                .expose
                .as_ref()
                .filter(|x| x.protocol == spec::Protocol::Http)?;
            let mut addr = x.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            Some((s.name.clone(), addr.to_string()))
        })
        .collect();
    if list.is_empty() {
        bail!(
            "no service to verify: verify needs a service exposed over HTTP (`[services.NAME.expose]`)"
        );
    }
    Ok(list)
}

async fn run_load(url: String, rate: f64, duration: Duration) -> anyhow::Result<load::Report> {
    let mut cfg = load::Config::new(url.parse()?);
    cfg.rate = rate;
    cfg.duration = duration;
    Ok(load::run(cfg).await?)
}

/// One fault under load.
async fn case(
    client: &Client,
    service: &str,
    kind: &str,
    url: &str,
    args: &VerifyArgs,
    baseline_p99: f64,
) -> anyhow::Result<Case> {
    let fault = KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("", |(_, f)| f);
    let duration = *args.fault_duration;
    let experiment = format!(
        "[[experiments]]\nname = \"verify-{kind}\"\ntarget = {{ service = \"{service}\" }}\n\
         fault = {fault}\nduration = \"{}ms\"\n",
        duration.as_millis()
    );
    let before = budget(client, service).await;
    let loaded = tokio::spawn(run_load(url.to_owned(), args.load, LEAD + duration + TAIL));
    tokio::time::sleep(LEAD).await;
    let began = Instant::now();
    let path = format!("/v1/chaos/run?wait=true&trigger=verify&name=verify-{kind}");
    let ran = client
        .call(http::Method::POST, &path, experiment.into())
        .await;
    let report: Option<chaos::Report> = match &ran {
        Ok(body) => serde_json::from_slice(body).ok(),
        Err(_) => None,
    };
    let load = loaded.await??;
    let after = budget(client, service).await;
    let mut case = Case::new(
        service,
        kind,
        report
            .as_ref()
            .map_or_else(|| kind.to_owned(), |r| r.fault.clone()),
    );
    case.sent = load.sent;
    case.lost = load.failed.total;
    case.errors = errors(&load.failed);
    case.detect_ms = report.as_ref().and_then(|r| r.detect_ms);
    case.recover_ms = report.as_ref().and_then(|r| r.recover_ms);
    case.baseline_p99_ms = baseline_p99;
    // The seconds of the load's timeline from the fault to a second past its end.
    let first = LEAD.as_secs();
    let last = first + began.elapsed().as_secs().min(duration.as_secs() + 1);
    case.p99_ms = load
        .timeline
        .iter()
        .filter(|s| s.t >= first && s.t <= last)
        .map(|s| s.p99_ms)
        .fold(0.0, f64::max);
    case.budget_spent = before.zip(after).map(|(b, a)| (b - a).max(0.0));
    Hypothesis::default().judge(&mut case);
    // A fault that was never applied proves nothing: the case fails.
    let ran = match (&ran, &report) {
        (Err(e), _) => Err(e.to_string()),
        (Ok(_), None) => Err("the API's answer was not a report".to_owned()),
        (Ok(_), Some(r)) if r.outcome == chaos::Outcome::Passed => Ok(()),
        (Ok(_), Some(r)) => Err(format!(
            "{}: {}",
            r.outcome.as_str(),
            r.reason.as_deref().unwrap_or("no reason given")
        )),
    };
    case.checks.push(verify::Check {
        name: "the fault was applied and the experiment ended as planned".into(),
        passed: ran.is_ok(),
        detail: ran.err().unwrap_or_else(|| "passed".into()),
    });
    case.passed = case.checks.iter().all(|c| c.passed);
    Ok(case)
}

fn errors(f: &load::Failures) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = f.status.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    for (k, n) in [
        ("connect", f.connect),
        ("timeout", f.timeout),
        ("other", f.other),
    ] {
        if n > 0 {
            m.insert(k.into(), n);
        }
    }
    m
}

/// The smallest error budget left among the service's SLOs (a share of the budget).
async fn budget(client: &Client, service: &str) -> Option<f64> {
    let body = client.get("/v1/slo").await.ok()?;
    let reports: Vec<api::json::SloReport> = serde_json::from_slice(&body).ok()?;
    reports
        .iter()
        .filter(|r| r.service == service)
        .map(|r| r.error_budget_remaining)
        .reduce(f64::min)
}

/// Waits until every service runs all its replicas, ready.
async fn all_ready(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(body) = client.get("/v1/status").await
            && let Ok(status) = serde_json::from_slice::<api::json::Status>(&body)
            && status.services.iter().all(|s| s.ready >= s.desired)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the stack did not have every replica ready within {} s",
                READY_WITHIN.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `bulwark up` started for the verification, in a state directory of its own, stopped
/// (SIGTERM, then SIGKILL of its process group) when dropped.
struct StartedStack {
    child: std::process::Child,
    dir: PathBuf,
}

impl StartedStack {
    fn start(file: &Path) -> anyhow::Result<StartedStack> {
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("bulwark-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("up.log"))?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["--state-dir"])
            .arg(&dir)
            .args(["up", "--quiet", "-f"])
            .arg(file)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start `bulwark up`")?;
        Ok(StartedStack { child, dir })
    }

    /// Its API, once it has written its address; an `up` that exited (a port taken, a
    /// stack it refuses) is reported at once with the end of its log.
    async fn client(&mut self) -> anyhow::Result<Client> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(c) = Client::discover(&self.dir) {
                return Ok(c);
            }
            let why = match self.child.try_wait() {
                Ok(Some(status)) => format!("`bulwark up` exited ({status})"),
                _ if Instant::now() > deadline => format!(
                    "`bulwark up` did not serve its API within {} s",
                    READY_WITHIN.as_secs()
                ),
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let log = std::fs::read_to_string(self.dir.join("up.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{why}; its last lines:\n{}", tail.join("\n"));
        }
    }
}

impl Drop for StartedStack {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
