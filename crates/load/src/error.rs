//! Why a run could not start.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rate must be a positive number of requests per second, got {0}")]
    Rate(f64),
    #[error("duration must be greater than zero")]
    Duration,
    #[error("concurrency must be at least 1")]
    Concurrency,
    #[error("timeout must be greater than zero")]
    Timeout,
    #[error("duration plus timeout is too long")]
    TooLong,
    #[error("bad URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("bad header {header:?}: {reason}")]
    Header { header: String, reason: String },
    /// A generator task died; only a bug can cause this.
    #[error("load generator failed: {0}")]
    Internal(String),
}
