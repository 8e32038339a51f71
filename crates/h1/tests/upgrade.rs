//! Upgrades: a 101 to a request that asked for one hands the connection over, with the
//! bytes the client sent after its head; anything else keeps speaking HTTP/1.1 (or closes,
//! for a 101 nobody asked for).

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ASK: &str = "Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

#[tokio::test]
async fn a_101_hands_over_the_connection_with_the_bytes_after_the_head() {
    let (mut c, task) = connect(config());
    c.write_all(format!("GET /ws HTTP/1.1\r\n{ASK}early").as_bytes())
        .await
        .unwrap();
    let want = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nearly";
    let mut got = vec![0; want.len()];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut got))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), want);
    // Not HTTP any more: a request line is echoed like any other bytes.
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut got = vec![0; 18];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_upgrade_answered_otherwise_stays_http_and_a_101_not_asked_for_closes() {
    let out =
        exchange(format!("GET /a HTTP/1.1\r\n{ASK}GET /b HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
    let bodies: Vec<_> = responses(&out).into_iter().map(|r| r.2).collect();
    assert_eq!(bodies, ["/a ", "/b "], "{out}");
    let out =
        exchange(b"GET /101 HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let got = responses(&out);
    assert_eq!(got.len(), 1, "{out}");
    assert!(got[0].1.contains("connection: close"), "{out}");
    // HTTP/1.0 cannot upgrade (RFC 9110 §7.8): no hand-over, the 101 closes.
    let out = exchange(format!("GET /ws HTTP/1.0\r\n{ASK}").as_bytes()).await;
    assert!(out.contains("connection: close"), "{out}");
}
