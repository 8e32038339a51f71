//! The CLI commands that talk to a running `bulwark up` through its API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cli::Command;

struct Api {
    addr: SocketAddr,
    token: Option<String>,
}

pub async fn run(cmd: Command, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let api = Api::discover(&state_dir.unwrap_or_else(api::state_dir::default_dir))?;
    match cmd {
        Command::Status { json } => {
            let body = api.get("/v1/status").await?;
            if json {
                println!("{}", String::from_utf8_lossy(&body));
            } else {
                let status: api::json::Status = serde_json::from_slice(&body)?;
                print_status(&status);
            }
        }
        Command::Events { follow, json } => {
            let print = |line: &str| {
                if json {
                    println!("{line}");
                } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    println!("{}", describe_event(&v));
                }
            };
            if follow {
                api.stream("/v1/events?follow=true", print).await?;
            } else {
                let body = api.get("/v1/events").await?;
                let events: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
                for e in events {
                    print(&e.to_string());
                }
            }
        }
        Command::Logs { target, follow } => {
            let (service, replica) = split_target(&target)?;
            let mut path = format!("/v1/logs/{service}?follow={follow}");
            if let Some(r) = replica {
                path.push_str(&format!("&replica={r}"));
            }
            let print = |line: &str| {
                if let Ok(l) = serde_json::from_str::<api::json::LogLine>(line) {
                    println!("{service}/{} | {}", l.replica, l.text);
                }
            };
            if follow {
                api.stream(&path, print).await?;
            } else {
                let lines: Vec<serde_json::Value> = serde_json::from_slice(&api.get(&path).await?)?;
                for l in lines {
                    print(&l.to_string());
                }
            }
        }
        Command::Restart { target } => {
            let (service, replica) = split_target(&target)?;
            let mut path = format!("/v1/services/{service}/restart");
            if let Some(r) = replica {
                path.push_str(&format!("?replica={r}"));
            }
            api.post(&path).await?;
            println!("restarting {target}");
        }
        Command::Scale { service, replicas } => {
            let body = api
                .post(&format!("/v1/services/{service}/scale?replicas={replicas}"))
                .await?;
            let s: api::json::Scaled = serde_json::from_slice(&body)?;
            println!("scaled {}: {} -> {}", s.service, s.from, s.to);
        }
        Command::Up(_) | Command::Check { .. } | Command::Demo(_) | Command::Load(_) => {
            unreachable!("handled in main")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn split_target(target: &str) -> anyhow::Result<(&str, Option<u32>)> {
    match target.split_once('/') {
        None => Ok((target, None)),
        Some((s, i)) => {
            let i = i
                .parse()
                .with_context(|| format!("{target:?}: expected SERVICE or SERVICE/INDEX"))?;
            Ok((s, Some(i)))
        }
    }
}

impl Api {
    fn discover(dir: &Path) -> anyhow::Result<Api> {
        let addr_file = dir.join(api::state_dir::ADDR_FILE);
        let addr = std::fs::read_to_string(&addr_file)
            .with_context(|| {
                format!(
                    "no running `bulwark up` found: cannot read {} (start one, or pass the \
                     --state-dir it uses)",
                    addr_file.display()
                )
            })?
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold an address", addr_file.display()))?;
        let token = std::fs::read_to_string(dir.join(api::state_dir::TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_owned());
        Ok(Api { addr, token })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let stream = TcpStream::connect(self.addr).await.with_context(|| {
            format!(
                "cannot reach bulwark's API at {}; is `bulwark up` running?",
                self.addr
            )
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        Ok(sender
            .send_request(req.body(Empty::<Bytes>::new())?)
            .await?)
    }

    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Bytes> {
        let res = self.send(method, path).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{}", error_text(status, &body));
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Bytes> {
        self.call(Method::GET, path).await
    }

    async fn post(&self, path: &str) -> anyhow::Result<Bytes> {
        self.call(Method::POST, path).await
    }

    /// Follows a server-sent event stream, calling `each` with every `data:` payload.
    async fn stream(&self, path: &str, mut each: impl FnMut(&str)) -> anyhow::Result<()> {
        let res = self.send(Method::GET, path).await?;
        if !res.status().is_success() {
            let status = res.status();
            let body = res.into_body().collect().await?.to_bytes();
            bail!("{}", error_text(status, &body));
        }
        let mut body = res.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(payload) = line.trim_end().strip_prefix("data:") {
                    each(payload.trim_start());
                }
            }
        }
        Ok(())
    }
}

fn error_text(status: StatusCode, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<api::json::Error>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    format!("API answered {status}: {msg}")
}

fn print_status(status: &api::json::Status) {
    println!(
        "{:<16} {:>3}  {:<14} {:<5} {:>8} {:>6} {:>8}  LAST EXIT",
        "SERVICE", "#", "STATE", "READY", "PID", "PORT", "RESTARTS"
    );
    for s in &status.services {
        for r in &s.replicas {
            let exit = match &r.last_exit {
                Some(api::json::Exit { code: Some(c), .. }) => format!("exit {c}"),
                Some(api::json::Exit {
                    signal: Some(s), ..
                }) => format!("signal {s}"),
                _ => "-".into(),
            };
            println!(
                "{:<16} {:>3}  {:<14} {:<5} {:>8} {:>6} {:>8}  {}",
                s.name,
                r.index,
                r.state,
                if r.ready { "yes" } else { "no" },
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.port.map_or("-".into(), |p| p.to_string()),
                r.restarts,
                exit
            );
            for line in &r.stderr_tail {
                println!("{:<16}      | {line}", "");
            }
        }
        let exposed = s
            .expose
            .as_deref()
            .map(|a| format!(" on {a}"))
            .unwrap_or_default();
        println!("{:<16} {}/{} ready{exposed}", "", s.ready, s.desired);
    }
}

/// One line per event: time, type, replica, then the other fields.
fn describe_event(v: &serde_json::Value) -> String {
    let at = v["at_ms"].as_u64().unwrap_or(0);
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at),
    );
    let kind = v["type"].as_str().unwrap_or("?");
    let who = match (v["service"].as_str(), v["index"].as_u64()) {
        (Some(s), Some(i)) => format!("{s}/{i}"),
        (Some(s), None) => s.to_string(),
        _ => String::new(),
    };
    let mut rest = String::new();
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            if matches!(k.as_str(), "seq" | "at_ms" | "type" | "service" | "index") {
                continue;
            }
            rest.push_str(&format!(" {k}={val}"));
        }
    }
    format!("{time} {kind:<18} {who:<10}{rest}")
}
