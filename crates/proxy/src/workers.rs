//! The proxy's data plane: worker threads of its own, each running a current-thread Tokio
//! runtime and accepting on a listening socket of its own (`SO_REUSEPORT`, so the kernel
//! spreads new connections over the workers). A connection lives on the worker that
//! accepted it, with no work stealing or cross-thread wake-ups; the control plane
//! (supervisor, probes, SLOs, journal, API) runs on the process's other runtime, so its
//! work never waits in a request's queue (on a machine with cores to spare, it does not
//! take the workers' CPU either).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Pending connections queued per socket before the kernel refuses more (Tokio's and
/// Go's default; nginx uses 511).
const BACKLOG: u32 = 1024;

thread_local! {
    /// This thread's worker index; 0 off the data plane.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running on this thread (0 off the data plane, e.g. in tests
/// that serve on their own runtime).
pub(crate) fn index() -> usize {
    INDEX.get()
}

/// The worker threads. Cheap to clone; the threads end when the last clone is dropped
/// (tasks still on them are cancelled).
#[derive(Clone)]
pub struct Workers(Arc<Inner>);

struct Inner {
    handles: Vec<Handle>,
    /// Dropping these ends each worker's runtime.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` workers (at least one), threads named `proxy-worker-N`. Each runtime is
    /// built and dropped on its own thread, so this may be called from async code (a
    /// runtime dropped there, as on a failed thread spawn, would panic).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::new();
        let mut stop = Vec::new();
        for i in 0..n.max(1) {
            let (tx, rx) = oneshot::channel::<()>();
            let (built_tx, built) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("proxy-worker-{i}"))
                .spawn(move || {
                    INDEX.set(i);
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => return drop(built_tx.send(Err(e))),
                    };
                    let _ = built_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = rx.await;
                    });
                })?;
            let handle = built
                .recv()
                .map_err(|_| std::io::Error::other("a proxy worker ended before it started"))??;
            handles.push(handle);
            stop.push(tx);
        }
        Ok(Workers(Arc::new(Inner {
            handles,
            _stop: stop,
        })))
    }

    /// The calling runtime as the only worker (for tests and embedding).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn current() -> Workers {
        Workers(Arc::new(Inner {
            handles: vec![Handle::current()],
            _stop: Vec::new(),
        }))
    }

    /// Each worker's runtime, by index.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.0.handles
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.0.handles.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.0.handles.is_empty()
    }

    /// Binds `addr` once per worker, each socket registered with its worker's runtime.
    /// Port 0 picks one free port for all of them.
    ///
    /// `SO_REUSEPORT` would also let another program of the same user bind the port and
    /// take a share of the connections; so the address is first bound without it, which
    /// fails if anyone (another bulwark included) holds it.
    pub(crate) fn bind(&self, addr: SocketAddr) -> std::io::Result<Vec<(Handle, TcpListener)>> {
        let addr = {
            let probe = socket(addr)?;
            probe.bind(addr)?;
            probe.local_addr()?
        };
        let mut bound = Vec::with_capacity(self.len());
        for handle in &self.0.handles {
            let _in_worker = handle.enter();
            let s = socket(addr)?;
            if self.len() > 1 {
                s.set_reuseport(true)?;
            }
            s.bind(addr)?;
            bound.push((handle.clone(), s.listen(BACKLOG)?));
        }
        Ok(bound)
    }
}

/// A TCP socket for `addr`'s family with `SO_REUSEADDR` (as `TcpListener::bind` sets it:
/// a restart need not wait out the last run's TIME_WAIT connections).
fn socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    Ok(s)
}
