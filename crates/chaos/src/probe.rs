//! Steady-state probes: each check passes, or says why not.

use std::time::{Duration, Instant};

use spec::{SteadyCheck, SteadyProbe};

use crate::{Host, Outcomes};

/// Output kept from a probe command for its failure message.
const CAPTURE: usize = 2048;

/// Runs one check of `probe`.
pub(crate) async fn check(
    probe: &SteadyProbe,
    host: &dyn Host,
    outcomes: &Outcomes,
) -> Result<(), String> {
    let svc = probe.service.as_str();
    let now = Instant::now();
    match &probe.check {
        SteadyCheck::Http {
            url,
            status,
            timeout,
        } => http(url, *status, *timeout).await,
        SteadyCheck::ErrorRatio {
            max,
            window,
            min_requests,
        } => {
            let t = outcomes.tally(svc, *window, now);
            if t.total < *min_requests || t.ratio() <= *max {
                return Ok(());
            }
            Err(format!(
                "{svc}: error ratio {:.2} % over {} ({} of {} failed), above {:.2} %",
                t.ratio() * 100.0,
                humantime::format_duration(*window),
                t.failed,
                t.total,
                max * 100.0
            ))
        }
        SteadyCheck::Latency {
            percentile,
            max,
            window,
            min_requests,
        } => {
            if outcomes.tally(svc, *window, now).total < *min_requests {
                return Ok(());
            }
            match outcomes.percentile(svc, *window, *percentile, now) {
                Some(p) if p > *max => Err(format!(
                    "{svc}: p{percentile} latency {} ms over {}, above {} ms",
                    p.as_millis(),
                    humantime::format_duration(*window),
                    max.as_millis()
                )),
                _ => Ok(()),
            }
        }
        SteadyCheck::BurnRate { slo, max } => match host.burn_rate(svc, slo) {
            Some(rate) if rate <= *max => Ok(()),
            Some(rate) => Err(format!(
                "{svc}: SLO {slo} burns at {rate:.1}x, above {max}x"
            )),
            None => Err(format!("{svc}: SLO {slo} is not measured")),
        },
        SteadyCheck::Ready { min } => {
            let ready = host
                .replicas(svc)
                .map_or(0, |r| r.iter().filter(|r| r.ready).count());
            if ready >= *min as usize {
                Ok(())
            } else {
                Err(format!("{svc}: {ready} replicas ready, fewer than {min}"))
            }
        }
        SteadyCheck::Command { run, timeout } => command(run, *timeout).await,
    }
}

/// The most of a probe's response body that is read.
const BODY_LIMIT: usize = 1 << 20;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// One client for every HTTP probe (its connection pool is reused).
fn client() -> &'static HttpClient {
    static CLIENT: std::sync::OnceLock<HttpClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http()
    })
}

async fn http(url: &http::Uri, status: u16, timeout: Duration) -> Result<(), String> {
    use http_body_util::BodyExt;
    let shown = spec::redacted_url(url);
    let attempt = async {
        let res = client()
            .get(url.clone())
            .await
            .map_err(|e| format!("GET {shown}: {e}"))?;
        let got = res.status().as_u16();
        // The body is read (bounded) so that the answer is whole, as a client needs it.
        http_body_util::Limited::new(res.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("GET {shown}: the body: {e}"))?;
        if got == status {
            Ok(())
        } else {
            Err(format!("GET {shown} answered {got}, expected {status}"))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "GET {shown}: no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
}

/// Runs `argv` (not through a shell); exit 0 within `timeout` passes.
pub(crate) async fn command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    launch::run_exec(cmd, None, timeout, CAPTURE)
        .await
        .map_err(|e| format!("cannot start {program:?}: {e}"))?
        .passed(timeout)
        .map_err(|e| format!("{program:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_server_that_stalls_or_floods_fails_the_check_in_time() {
        // Accepts and never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: http::Uri = format!("http://{}/", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let held = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(s);
        });
        let t = Instant::now();
        let err = http(&url, 200, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.contains("no answer within"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        held.abort();

        // Answers 200 with a body that never ends.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: http::Uri = format!("http://{}/", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let flood = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = [b'x'; 65536];
            loop {
                if s.write_all(b"10000\r\n").await.is_err()
                    || s.write_all(&chunk).await.is_err()
                    || s.write_all(b"\r\n").await.is_err()
                {
                    break;
                }
            }
        });
        let t = Instant::now();
        let err = http(&url, 200, Duration::from_secs(20)).await.unwrap_err();
        assert!(err.contains("the body"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        flood.abort();
    }
}
