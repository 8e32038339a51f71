//! Debian's Chromium, headless, driven by chromedriver over the W3C WebDriver protocol
//! (JSON over HTTP on a free port). Each [`Browser`] has its own chromedriver and profile;
//! dropping it ends the session and kills chromedriver and every Chromium process it
//! started (found by a marker in their environment), pass or fail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{die_with_test, eventually, free_port, processes_with_env, signal};

/// W3C's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    marker: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1400 x 1000).
    pub fn start() -> Browser {
        let port = free_port();
        let marker = format!("BULWARK_TEST_BROWSER={}-{port}", std::process::id());
        let (key, value) = marker.split_once('=').unwrap();
        sweep_orphans();
        let mut cmd = Command::new("chromedriver");
        // chromedriver dies with the test's thread even when the test is killed at its
        // timeout (no `Drop`); the Chromium it leaves is swept by the next `start`.
        die_with_test(&mut cmd);
        let driver = cmd
            .arg(format!("--port={port}"))
            .env(key, value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver (scripts/test installs Debian's chromium-driver)");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            marker,
            _profile: profile,
        };
        eventually("chromedriver to answer", Duration::from_secs(20), || {
            TcpStream::connect(addr).ok()?;
            b.raw("GET", "/status", None)
                .get("ready")?
                .as_bool()?
                .then_some(())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         format!("--user-data-dir={}", b._profile.path().display())],
            },
        }}});
        let v = b.raw("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        b
    }

    /// One WebDriver command; its `value`. Panics on a WebDriver error.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(self.addr).expect("connect to chromedriver");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let (raw, payload) = read_response(&mut s);
        let v: Value = serde_json::from_slice(&payload).unwrap_or_else(|e| {
            panic!(
                "WebDriver {method} {path}: {e}: {}",
                String::from_utf8_lossy(&raw)
            )
        });
        if v["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        self.raw(method, &format!("/session/{}/{what}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; what it returns.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs `script` asynchronously: it ends by calling `arguments[arguments.length - 1]`
    /// with its answer.
    pub fn js_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Waits until `script` returns something neither null nor false, and returns it.
    pub fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        eventually(what, timeout, || {
            let v = self.js(script, json!([]));
            (!v.is_null() && v != Value::Bool(false)).then_some(v)
        })
    }

    /// The first element matching a CSS selector, waiting for it.
    pub fn find(&self, css: &str) -> String {
        eventually(&format!("element {css}"), Duration::from_secs(20), || {
            let v = self.js(
                "return document.querySelector(arguments[0]) !== null",
                json!([css]),
            );
            (v == Value::Bool(true)).then_some(())
        });
        let v = self.cmd(
            "POST",
            "element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// A real click (WebDriver's pointer input) on the element matching `css`.
    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("element/{id}/click"), Some(json!({})));
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("element/{id}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The text of the element matching `css` (empty when there is none).
    pub fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "screenshot", None);
        base64_decode(b64.as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let session = std::mem::take(&mut self.session);
            // Closing the session ends Chromium; a failure here is swept below.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.raw("DELETE", &format!("/session/{session}"), None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        for _ in 0..50 {
            let left = processes_with_env(&self.marker);
            if left.is_empty() {
                break;
            }
            for p in left {
                signal(p, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Kills browsers left by test processes that are gone (killed before their `Drop` ran).
fn sweep_orphans() {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let owner = env
            .split(|&b| b == 0)
            .filter_map(|kv| kv.strip_prefix(b"BULWARK_TEST_BROWSER="))
            .filter_map(|v| {
                std::str::from_utf8(v)
                    .ok()?
                    .split('-')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .next();
        if let Some(owner) = owner
            && !crate::harness::alive(owner)
        {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// Reads one HTTP/1.1 response (chromedriver keeps the connection open, so the body's
/// end is found by its length or its last chunk): the raw response and its body.
fn read_response(s: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            if n == 0 {
                return (raw, Vec::new());
            }
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let body = &raw[end + 4..];
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let complete = match length {
            Some(len) => body.len() >= len,
            None => body.ends_with(b"0\r\n\r\n"),
        };
        if complete || n == 0 {
            let body = match length {
                Some(len) => body[..len.min(body.len())].to_vec(),
                None => dechunk(body),
            };
            return (raw, body);
        }
    }
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b"=\r\n".contains(b)).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(val(c)) << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + take]);
    }
    out
}
