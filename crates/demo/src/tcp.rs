//! TCP mode: a banner line with the replica's name, then every byte echoed back.

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, copy};
use tokio::net::{TcpListener, TcpStream};

use crate::accept;

pub(crate) async fn serve_tcp(listener: TcpListener, name: Arc<str>) -> std::io::Result<()> {
    loop {
        let stream = accept(&listener).await;
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = echo_tcp(stream, &name).await {
                tracing::debug!(error = %e, "tcp echo connection ended");
            }
        });
    }
}

async fn echo_tcp(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.write_all(format!("{name}\n").as_bytes()).await?;
    let (mut rd, mut wr) = stream.split();
    copy(&mut rd, &mut wr).await?;
    wr.shutdown().await
}
