//! N keep-alive GET requests through the engine over an in-memory pipe on one
//! current-thread runtime, for counting instructions per request:
//! `valgrind --tool=callgrind target/release/examples/requests 10000`.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn answer(_: Request<h1::RequestBody>) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"hello")))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let engine = tokio::spawn(h1::serve(server, answer, Default::default()));
        let request =
            b"GET /a HTTP/1.1\r\nHost: example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
        // With a `date` field, whose value is always 29 bytes.
        let answer_len = b"HTTP/1.1 200 OK\r\ndate: \r\ncontent-length: 5\r\n\r\nhello".len() + 29;
        let mut got = vec![0; answer_len];
        for _ in 0..n {
            client.write_all(request).await.unwrap();
            client.read_exact(&mut got).await.unwrap();
        }
        assert!(got.ends_with(b"hello"), "{}", String::from_utf8_lossy(&got));
        drop(client);
        let _: Result<(), h1::Error> = engine.await.unwrap();
    });
}
