//! Over real loopback sockets: a refused request whose body the client is still sending
//! gets its answer, not a reset (the engine's lingering close).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends the head of a 413-bound request, reads the answer to its end (the engine's FIN),
/// then sends the body the client had meant to send: 50 writes of 400 B, 10 ms apart.
/// Without a lingering close the socket is gone by then: a write draws a reset and a later
/// one fails (what a client still sending when the answer comes sees as a lost answer).
/// The pauses are not waits for an event: the FIN comes before the socket is closed, and
/// nothing tells a client when that happens; they spread the writes past that moment.
fn refused_then_body(addr: SocketAddr) -> (String, std::io::Result<()>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n";
    c.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let sent = (0..50).try_for_each(|_| {
        std::thread::sleep(Duration::from_millis(10));
        c.write_all(&[b'a'; 400])
    });
    (out, sent)
}

#[test]
fn after_a_refusal_the_engine_keeps_reading_what_the_client_still_sends() {
    let config = |linger| h1::Config {
        linger,
        max_body_bytes: Some(1024),
        ..h1::Config::default()
    };
    let lingering = common::server(config(Some(Duration::from_secs(5))));
    let (out, sent) = refused_then_body(lingering);
    assert!(
        out.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{out:?}"
    );
    sent.expect("the client's writes after the answer failed: no lingering close");
    // The same without lingering: the writes fail (so the check above can fail).
    let abrupt = common::server(config(None));
    let (out, sent) = refused_then_body(abrupt);
    assert!(out.starts_with("HTTP/1.1 413 "), "{out:?}");
    assert!(sent.is_err(), "writes to a closed socket succeeded");
}
