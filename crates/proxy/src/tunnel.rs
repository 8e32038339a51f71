//! WebSocket and other `Upgrade` tunnels: once the replica has answered 101, the client's
//! connection and the replica's are spliced and bytes copied both ways.

use std::sync::Arc;

use http::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::{Activity, Conn, Touching};

/// The client's side of an upgrade, from whichever engine read its request.
pub(crate) enum ClientUpgrade {
    Hyper(hyper::upgrade::OnUpgrade),
    H1(h1::OnUpgrade),
}

impl ClientUpgrade {
    /// Takes the upgrade handle out of a request that asks for one.
    pub fn take<B>(req: &mut Request<B>) -> ClientUpgrade {
        match req.extensions_mut().remove::<h1::OnUpgrade>() {
            Some(on) => ClientUpgrade::H1(on),
            None => ClientUpgrade::Hyper(hyper::upgrade::on(req)),
        }
    }
}

/// Copies bytes both ways between an upgraded client connection and the replica.
///
/// The client connection's [`Conn`] is kept for the tunnel's life (so is its listener's
/// connection permit, inside the upgraded socket). The tunnel is closed after
/// `timeouts.idle` without a byte either way, and when the listener closes what is left
/// after its drain period.
pub(crate) async fn tunnel(
    client: ClientUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _guard: bus::LoadGuard,
    conn: Arc<Conn>,
) {
    match client {
        ClientUpgrade::Hyper(client) => {
            let (Ok(c), Ok(u)) = (client.await, upstream.await) else {
                return;
            };
            relay(TokioIo::new(c), TokioIo::new(u), &conn).await;
        }
        ClientUpgrade::H1(client) => {
            let (Ok(c), Ok(u)) = (client.await, upstream.await) else {
                return;
            };
            relay(c, TokioIo::new(u), &conn).await;
        }
    }
}

async fn relay<C, U>(client: C, mut upstream: U, conn: &Conn)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut c = Touching {
        io: client,
        activity: &activity,
    };
    let mut closing = conn.closing.clone();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut c, &mut upstream) => {}
        () = activity.idle_for(conn.idle) => {
            tracing::debug!(peer = %conn.peer, "closing an idle tunnel");
        }
        () = async { let _ = closing.wait_for(|c| *c).await; } => {}
    }
}
