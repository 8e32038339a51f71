//! Set-up shared by the fuzz targets that run a proxy on a tokio runtime.

use tokio::runtime::Runtime;

/// Makes every panic abort the process (tokio catches panics in spawned tasks; a fuzzer
/// must see them), and builds the two-thread runtime a target runs on.
pub fn runtime() -> Runtime {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info}");
        std::process::abort();
    }));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
