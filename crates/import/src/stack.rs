//! The stack file an import writes: the few keys it can fill in, and their TOML.
//!
//! Values are formatted by the `toml` crate (strings, arrays, tables), never escaped here;
//! keys are either fixed words or service names already made bare-key safe by [`Names`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use toml::Value;

use crate::Error;

/// A `[services.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Service {
    pub name: String,
    pub run: Vec<String>,
    pub replicas: Option<u32>,
    pub restart: Option<Restart>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub stop_signal: Option<String>,
    pub stop_grace: Option<Duration>,
    pub depends_on: Vec<String>,
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    /// `[services.NAME.expose] listen`.
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

/// A `[services.NAME.readiness]` (or startup, liveness) table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    pub action: ProbeAction,
    pub period: Option<Duration>,
    pub timeout: Option<Duration>,
    pub initial_delay: Option<Duration>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
}

impl Probe {
    pub fn new(action: ProbeAction) -> Probe {
        Probe {
            action,
            period: None,
            timeout: None,
            initial_delay: None,
            failure_threshold: None,
            success_threshold: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ProbeAction {
    Http(String),
    Tcp,
    Exec(Vec<String>),
}

/// The stack file's text: `header` as comment lines, then one table per service.
pub(crate) fn render(header: &[String], services: &[Service]) -> Result<String, Error> {
    let mut out = String::new();
    for line in header {
        // A file name may hold anything; a comment must stay on its line.
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    for s in services {
        service(&mut out, s)?;
    }
    Ok(out)
}

fn service(out: &mut String, s: &Service) -> Result<(), Error> {
    let name = &s.name;
    let _ = writeln!(out, "\n[services.{name}]");
    key(out, "run", strings(&s.run));
    if let Some(n) = s.replicas {
        key(out, "replicas", Value::Integer(n.into()));
    }
    if let Some(r) = s.restart {
        key(out, "restart", Value::String(r.as_str().to_owned()));
    }
    if !s.depends_on.is_empty() {
        key(out, "depends_on", strings(&s.depends_on));
    }
    if let Some(cwd) = &s.cwd {
        key(out, "cwd", Value::String(cwd.clone()));
    }
    if let Some(sig) = &s.stop_signal {
        key(out, "stop_signal", Value::String(sig.clone()));
    }
    if let Some(d) = s.stop_grace {
        key(out, "stop_grace", duration(d));
    }
    if !s.env.is_empty() {
        let _ = writeln!(out, "[services.{name}.env]");
        let table: toml::Table = s
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        out.push_str(&toml::to_string(&table).map_err(|e| Error::Toml(e.to_string()))?);
    }
    for (kind, probe) in [
        ("startup", &s.startup),
        ("liveness", &s.liveness),
        ("readiness", &s.readiness),
    ] {
        if let Some(p) = probe {
            let _ = writeln!(out, "[services.{name}.{kind}]");
            self::probe(out, p);
        }
    }
    if let Some(listen) = &s.listen {
        let _ = writeln!(out, "[services.{name}.expose]");
        key(out, "listen", Value::String(listen.clone()));
    }
    Ok(())
}

fn probe(out: &mut String, p: &Probe) {
    match &p.action {
        ProbeAction::Http(path) => key(out, "http", Value::String(path.clone())),
        ProbeAction::Tcp => key(out, "tcp", Value::Boolean(true)),
        ProbeAction::Exec(cmd) => key(out, "exec", strings(cmd)),
    }
    for (k, d) in [
        ("period", p.period),
        ("timeout", p.timeout),
        ("initial_delay", p.initial_delay),
    ] {
        if let Some(d) = d {
            key(out, k, duration(d));
        }
    }
    for (k, n) in [
        ("failure_threshold", p.failure_threshold),
        ("success_threshold", p.success_threshold),
    ] {
        if let Some(n) = n {
            key(out, k, Value::Integer(n.into()));
        }
    }
}

/// `key = value`; `key` is one of this module's fixed words.
fn key(out: &mut String, key: &str, value: Value) {
    let _ = writeln!(out, "{key} = {value}");
}

fn strings(list: &[String]) -> Value {
    Value::Array(list.iter().cloned().map(Value::String).collect())
}

/// `"1m 30s"`: humantime's spelling, which the stack file's loader reads back.
fn duration(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

/// Service names as bulwark accepts them (an ASCII letter, then ASCII letters, digits, `-`
/// and `_`), unique within the stack.
#[derive(Debug, Default)]
pub(crate) struct Names {
    used: HashSet<String>,
}

impl Names {
    /// A valid, unused name for `wanted`; `wanted` itself when it is both.
    pub fn claim(&mut self, wanted: &str) -> String {
        let mut base: String = wanted
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if !base.starts_with(|c: char| c.is_ascii_alphabetic()) {
            base.insert(0, 's');
        }
        let mut name = base.clone();
        let mut n = 2;
        while !self.used.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }
}

#[cfg(test)]
mod tests;
