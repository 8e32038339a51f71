//! `bulwark chaos`: asks the running `up`; and the stressor processes experiments start.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api::client::Client;
use chaos::Report;

use crate::cli::ChaosCmd;
use crate::output::outln;

/// An experiment runs for its duration plus recovery before `run` answers; a day bounds
/// the wait (durations are at most a day), Ctrl-C ends it sooner.
const OPERATION: Duration = Duration::from_secs(24 * 3600 + 120);

pub async fn run(client: Client, cmd: ChaosCmd) -> anyhow::Result<ExitCode> {
    let client = client.with_timeout(OPERATION);
    match cmd {
        ChaosCmd::List { json } => {
            let body = client.get("/v1/chaos").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
                return Ok(ExitCode::SUCCESS);
            }
            let list: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
            for e in list {
                outln!(
                    "{:<24} {:<12} {:<12} {}",
                    e["name"].as_str().unwrap_or("?"),
                    e["service"].as_str().unwrap_or("?"),
                    e["fault"].as_str().unwrap_or("?"),
                    e["schedule"].as_str().unwrap_or("?")
                );
            }
        }
        ChaosCmd::Run {
            name,
            file,
            no_wait,
            json,
        } => return run_one(&client, &name, file, !no_wait, json).await,
        ChaosCmd::Status { json } => {
            let body = client.get("/v1/chaos/status").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
                return Ok(ExitCode::SUCCESS);
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let on = v["faults_on"].as_bool().unwrap_or(true);
            outln!(
                "faults {}",
                if on {
                    "on"
                } else {
                    "off: no experiment starts"
                }
            );
            for r in v["running"].as_array().into_iter().flatten() {
                outln!(
                    "running  {:<24} {:<12} replicas {}",
                    r["name"].as_str().unwrap_or("?"),
                    r["service"].as_str().unwrap_or("?"),
                    r["replicas"]
                );
            }
            let recent: Vec<Report> = serde_json::from_value(v["recent"].clone())?;
            for r in &recent {
                outln!(
                    "{:<8} {:<24} {:<12} {}",
                    r.outcome.as_str(),
                    r.name,
                    r.service,
                    r.fault
                );
            }
        }
        ChaosCmd::Halt { json } => {
            let body = client.post("/v1/chaos/halt").await?;
            if json {
                outln!("{}", String::from_utf8_lossy(&body));
            } else {
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                outln!(
                    "{} experiment(s) halted; faults are off until `bulwark faults on`",
                    v["halted"]
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bulwark chaos run`: the report, printed; exit status 1 unless the steady state held.
async fn run_one(
    client: &Client,
    name: &str,
    file: Option<std::path::PathBuf>,
    wait: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let body = match file {
        Some(f) => {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let shown = std::path::absolute(&f).unwrap_or_else(|_| f.clone());
            let path = format!(
                "/v1/chaos/run?wait={wait}&name={}&file={}",
                encode(name),
                encode(&shown.display().to_string())
            );
            client.call(http::Method::POST, &path, text.into()).await?
        }
        None => {
            let path = format!("/v1/chaos/run/{}?wait={wait}", encode(name));
            client.post(&path).await?
        }
    };
    if !wait {
        outln!("{}", String::from_utf8_lossy(&body));
        return Ok(ExitCode::SUCCESS);
    }
    let report: Report = serde_json::from_slice(&body)?;
    if json {
        outln!("{}", String::from_utf8_lossy(&body));
    } else {
        print_report(&report);
    }
    if report.outcome != chaos::Outcome::Passed {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |m| format!("{m} ms"))
}

fn print_report(r: &Report) {
    outln!(
        "experiment {} on {} ({}): {}",
        r.name,
        r.service,
        r.trigger.as_str(),
        r.outcome.as_str()
    );
    outln!("  fault      {}", r.fault);
    outln!(
        "  detected   {}{}",
        ms(r.detect_ms),
        r.detected_by
            .as_deref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default()
    );
    outln!("  recovered  {}", ms(r.recover_ms));
    outln!(
        "  requests   {} answered, {} failed",
        r.requests,
        r.failed_requests
    );
    if let Some(why) = &r.reason {
        outln!("  reason     {why}");
    }
    for rb in &r.rollbacks {
        let state = if rb.ok {
            "ok".to_owned()
        } else {
            format!("FAILED: {}", rb.detail)
        };
        outln!("  rollback   {} {state}", rb.command.join(" "));
    }
}

/// Percent-encodes a name for a path segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The first argument that makes `bulwark` a stressor process: `bulwark chaos-stress cpu N`
/// or `memory MIB` (kept out of the CLI: nobody types it, completions do not offer it).
pub const STRESSOR: &str = "chaos-stress";

/// A stressor: burns or holds until killed (the experiment that started it kills its
/// process group; it dies with bulwark too).
pub fn stress(args: &[std::ffi::OsString]) -> ExitCode {
    let arg = |i: usize| args.get(i).and_then(|a| a.to_str()).unwrap_or("");
    let (kind, amount) = (arg(0), arg(1).parse::<u64>());
    let Ok(amount) = amount else {
        eprintln!("usage: bulwark {STRESSOR} cpu THREADS | memory MIB");
        return ExitCode::from(2);
    };
    if kind != "cpu" && kind != "memory" {
        eprintln!("usage: bulwark {STRESSOR} cpu THREADS | memory MIB");
        return ExitCode::from(2);
    }
    if kind == "memory" {
        let bytes = usize::try_from(amount.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let mut held = Vec::<u8>::new();
        if held.try_reserve_exact(bytes).is_err() {
            eprintln!("bulwark chaos-stress: cannot allocate {amount} MiB");
            return ExitCode::FAILURE;
        }
        // Touch every page so the memory is resident, not just reserved.
        held.resize(bytes, 1);
        loop {
            std::thread::park();
            std::hint::black_box(&held);
        }
    }
    let workers = amount.clamp(1, 256);
    for _ in 1..workers {
        std::thread::spawn(burn);
    }
    burn()
}

fn burn() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
