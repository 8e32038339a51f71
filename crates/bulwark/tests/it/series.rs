//! `GET /v1/series`: the dashboard's ten minutes of per-second points, read from a real
//! stack under load.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// The series of `service` (after `since`, if given), as JSON.
fn series(stack: &Stack, query: &str) -> Value {
    let (code, body) = stack.call("GET", &format!("/v1/series{query}"), "127.0.0.1", true);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

/// Every column of `obj` (an object of arrays) has as many values as `t`.
fn assert_columns(obj: &Value, names: &[&str]) {
    let n = obj["t"].as_array().unwrap().len();
    for name in names {
        let col = obj[*name]
            .as_array()
            .unwrap_or_else(|| panic!("no column {name} in {obj}"));
        assert_eq!(col.len(), n, "{name} in {obj}");
    }
}

const SERVICE: [&str; 7] = [
    "rps",
    "error_ratio",
    "p50_ms",
    "p99_ms",
    "inflight",
    "ready",
    "budget_left",
];
const REPLICA: [&str; 12] = [
    "rps",
    "error_ratio",
    "p50_ms",
    "p99_ms",
    "inflight",
    "ewma_ms",
    "cpu",
    "rss_bytes",
    "restarts",
    "ready",
    "ejected",
    "breaker_open",
];

/// Two demo replicas of `web` behind `port`, an availability SLO and resources sampled
/// every second: every figure of the series has something to show.
pub(crate) fn watched_web(port: u16) -> String {
    Demo::new("web")
        .replicas(2)
        .quickstart_probes()
        .expose(port)
        .availability_slo()
        .with("[anomaly]\nsample_every = \"1s\"")
        .build()
}

#[test]
fn the_series_show_each_replicas_load_latency_memory_and_restarts() {
    let port = free_port();
    let toml = watched_web(port);
    let stack = Stack::start(&toml);
    let svc = stack.wait_ready("web", 2);
    let load = Load::start(&format!("http://127.0.0.1:{port}/"), 100, "30s");

    let busy = eventually(
        "both replicas serving in the series, with latency and memory",
        Duration::from_secs(30),
        || {
            let s = series(&stack, "?service=web");
            let replicas = s["replicas"].as_object()?;
            let both = ["0", "1"].iter().all(|i| {
                let r = &replicas.get(*i).unwrap_or(&Value::Null);
                r.is_object()
                    && numbers(&r["rps"]).iter().any(|x| *x > 0.0)
                    && numbers(&r["p99_ms"]).iter().any(|x| *x > 0.0)
                    && numbers(&r["rss_bytes"]).iter().any(|x| *x > 0.0)
                    && numbers(&r["ewma_ms"]).iter().any(|x| *x > 0.0)
            });
            let service = numbers(&s["rps"]).iter().any(|x| *x > 50.0)
                && numbers(&s["p50_ms"]).iter().any(|x| *x > 0.0)
                && numbers(&s["budget_left"]).iter().any(|x| *x > 0.0);
            (both && service && s["t"].as_array()?.len() >= 5).then_some(s)
        },
    );
    assert_eq!(busy["interval_ms"], 1000);
    assert_eq!(busy["capacity"], 600);
    assert_eq!(busy["service"], "web");
    assert_columns(&busy, &SERVICE);
    let t = numbers(&busy["t"]);
    assert!(t.len() <= 600);
    assert!(
        t.windows(2).all(|w| w[1] >= w[0] + 900.0),
        "a second apart: {t:?}"
    );
    assert_eq!(numbers(&busy["ready"]).last(), Some(&2.0));
    assert!(
        numbers(&busy["error_ratio"]).iter().all(|e| *e < 0.05),
        "{busy}"
    );
    for r in busy["replicas"].as_object().unwrap().values() {
        assert_columns(r, &REPLICA);
        assert_eq!(numbers(&r["ready"]).last(), Some(&1.0));
        assert_eq!(numbers(&r["ejected"]).last(), Some(&0.0));
        assert_eq!(numbers(&r["breaker_open"]).last(), Some(&0.0), "{r}");
    }

    // `since` gives what came after, a page's cheap poll.
    let since = t[t.len() - 3] as u64;
    let newer = series(&stack, &format!("?service=web&since={since}"));
    let newer_t = numbers(&newer["t"]);
    assert!(
        !newer_t.is_empty() && newer_t.len() < t.len(),
        "{newer_t:?}"
    );
    assert!(newer_t.iter().all(|x| *x as u64 > since));
    for r in newer["replicas"].as_object().unwrap().values() {
        assert!(numbers(&r["t"]).iter().all(|x| *x as u64 > since));
    }

    // The overview: every service's own columns, no replicas.
    let all = series(&stack, "");
    let web = &all["services"]["web"];
    assert_columns(web, &SERVICE);
    assert!(web.get("replicas").is_none(), "{web}");
    assert_eq!(all["capacity"], 600);

    // A killed replica shows in its restarts series.
    let pid = replica_pids(&svc)[0];
    let index = replicas_in(&svc).iter().find(|r| r["pid"] == pid).unwrap()["index"].to_string();
    signal(pid, libc::SIGKILL);
    eventually(
        "the killed replica's restarts go up in its series",
        Duration::from_secs(30),
        || {
            let s = series(&stack, "?service=web");
            let restarts = numbers(&s["replicas"][index.as_str()]["restarts"]);
            (restarts.first() == Some(&0.0) && restarts.last() == Some(&1.0)).then_some(())
        },
    );

    // Scaled down: the removed replica's series go with it.
    let out = stack.cli(&["scale", "web", "1"]);
    assert!(out.status.success(), "{}", output_text(&out));
    eventually(
        "only replica 0 left in the series",
        Duration::from_secs(30),
        || {
            let s = series(&stack, "?service=web");
            let keys: Vec<&String> = s["replicas"].as_object()?.keys().collect();
            (keys == ["0"]).then_some(())
        },
    );
    drop(load);
}

/// Figures are `f32`s and written as such: at most 9 significant digits, not the 17 of
/// an `f64` made from one (a page at 1000 replicas reads a lot of them).
#[test]
fn figures_are_written_short() {
    let port = free_port();
    let toml = Demo::new("web")
        .expose(port)
        .with("[anomaly]\nsample_every = \"1s\"")
        .build();
    let stack = Stack::start(&toml);
    stack.wait_ready("web", 1);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let body = eventually(
        "CPU, latency and EWMA figures",
        Duration::from_secs(30),
        || {
            get(addr, "/");
            let (code, body) = stack.call("GET", "/v1/series?service=web", "127.0.0.1", true);
            let v: Value = serde_json::from_str(&body).ok()?;
            let r = &v["replicas"]["0"];
            // The replica's columns appear with its first sample: until then `r` is null.
            let known = |col: &str| {
                r[col]
                    .as_array()
                    .is_some_and(|c| c.iter().any(Value::is_f64))
            };
            (code == 200 && known("cpu") && known("p50_ms") && known("ewma_ms")).then_some(body)
        },
    );
    let numbers = body
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
        .filter(|n| n.contains('.'));
    for n in numbers {
        let mantissa: String = n
            .split('e')
            .next()
            .unwrap()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let significant = mantissa.trim_start_matches('0').trim_end_matches('0');
        assert!(significant.len() <= 9, "{n} in {body}");
    }
}

#[test]
fn the_series_refuse_an_unknown_service_a_bad_since_and_a_missing_token() {
    let stack = Stack::start(&Demo::new("web").build());
    stack.wait_ready("web", 1);
    let (code, body) = stack.call("GET", "/v1/series?service=nope", "127.0.0.1", true);
    assert_eq!(code, 404, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );

    let (code, body) = stack.call(
        "GET",
        "/v1/series?service=web&since=yesterday",
        "127.0.0.1",
        true,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("since"), "{body}");

    let (code, body) = stack.call("GET", "/v1/series?service=web", "127.0.0.1", false);
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("\"t\""), "{body}");

    // A service without an exposed port still has its replicas' figures; what the proxy
    // would count is unknown, not zero.
    let s = eventually("two points", Duration::from_secs(20), || {
        let s = series(&stack, "?service=web");
        (s["t"].as_array()?.len() >= 2).then_some(s)
    });
    assert!(
        s["rps"].as_array().unwrap().iter().all(Value::is_null),
        "{s}"
    );
    assert!(s["inflight"].as_array().unwrap().iter().all(Value::is_null));
    assert!(
        s["budget_left"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_null)
    );
    assert_eq!(numbers(&s["ready"]).last(), Some(&1.0));
    let r = &s["replicas"]["0"];
    assert_eq!(numbers(&r["restarts"]).last(), Some(&0.0));
    assert!(r["ejected"].as_array().unwrap().iter().all(Value::is_null));
}
