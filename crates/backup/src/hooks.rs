//! Hooks: a command run before or after a backup in the service's context.

use std::path::Path;

use spec::Hook;

use crate::{Error, Host};

/// Output kept from a hook for its error message.
const CAPTURE: usize = 4096;

/// Runs `hook` for backup source `service` (the stack's directory context when `None`).
/// `Ok(Some(warning))` is a failure that `on_error = "continue"` lets through.
pub(crate) async fn run(
    which: &'static str,
    hook: &Hook,
    service: Option<&str>,
    host: &dyn Host,
) -> Result<Option<String>, Error> {
    let failure = match attempt(hook, service, host).await {
        Ok(()) => return Ok(None),
        Err(detail) => detail,
    };
    match hook.on_error {
        spec::OnError::Fail => Err(Error::Hook {
            which,
            detail: failure,
        }),
        spec::OnError::Continue => Ok(Some(format!("the {which} hook failed: {failure}"))),
    }
}

async fn attempt(hook: &Hook, service: Option<&str>, host: &dyn Host) -> Result<(), String> {
    let bulwark = host.bulwark();
    // A hook in a service's context runs with its secrets: its output, quoted in the
    // failure, is redacted as the service's own output is.
    let mut redactor: std::sync::Arc<runtime::Redactor> = Default::default();
    let cmd = match service {
        Some(name) => {
            let (svc, replica) = host
                .service(name)
                .ok_or_else(|| format!("service `{name}` is not in the stack"))?;
            let needs = |k: &str| hook.run.iter().any(|a| a.contains(k));
            if replica.is_none() && (needs("{port}") || needs("{addr}")) {
                return Err(format!(
                    "it needs {{port}} or {{addr}} and no replica of `{name}` is running"
                ));
            }
            let id = runtime::Identity {
                service: name,
                index: 0,
                addr: replica.map_or(std::net::Ipv4Addr::LOCALHOST.into(), |r| r.ip()),
                port: replica.map_or(0, |r| r.port()),
                bulwark: &bulwark,
            };
            redactor = runtime::Redactor::of(&svc);
            runtime::command(&svc, &hook.run, &id).map_err(|e| e.to_string())?
        }
        None => plain(&hook.run, &bulwark)?,
    };
    launch::run_exec(cmd, None, hook.timeout, CAPTURE)
        .await
        .map_err(|e| format!("cannot start {:?}: {e}", hook.run[0]))?
        .passed(hook.timeout)
        .map_err(|e| redactor.text(&e))
}

/// A command outside any service (backups of bulwark's own state).
fn plain(argv: &[String], bulwark: &Path) -> Result<tokio::process::Command, String> {
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.replace("{bulwark}", &bulwark.to_string_lossy()))
        .collect();
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    Ok(cmd)
}
