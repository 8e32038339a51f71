use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};

use crate::Error;

/// A connection to an etcd cluster, with the URLs it was made from and the timeout every
/// call is bounded by. Cheap to clone: clones share one gRPC channel.
#[derive(Clone)]
pub struct Etcd {
    pub(crate) client: Client,
    urls: String,
    pub(crate) timeout: Duration,
}

impl Etcd {
    /// The client, for the calls this crate does not wrap.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The URLs, comma-separated, as errors name them.
    pub fn urls(&self) -> &str {
        &self.urls
    }

    /// The timeout every call is bounded by.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Connects to etcd at `urls` and checks that it answers a read within `timeout` (a
/// cluster without quorum does not: every call here asks for a leader). The error names
/// the URLs and what to do.
pub async fn connect(urls: &[String], timeout: Duration) -> Result<Etcd, Error> {
    if urls.is_empty() {
        return Err(Error::BadUrl {
            url: String::new(),
            detail: "no URL given".into(),
        });
    }
    let endpoints = urls
        .iter()
        .map(|u| endpoint(u))
        .collect::<Result<Vec<_>, _>>()?;
    let joined = urls.join(",");
    let unreachable = |detail: String| Error::Unreachable {
        urls: joined.clone(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        detail,
    };
    let options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        // An isolated member answers "no leader" at once instead of serving stale reads or
        // holding a watch that will never see an event.
        .with_require_leader(true)
        .with_keep_alive(Duration::from_secs(2), timeout);
    let connecting = Client::connect(endpoints, Some(options));
    let client = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable("no answer".into())),
    };
    // Tried again within the timeout: a leader election or one member down is not the
    // user's problem.
    let probe = crate::error::bounded_read("connect", timeout, || {
        let mut client = client.clone();
        async move {
            client
                .get("/bulwark/", Some(GetOptions::new().with_count_only()))
                .await
        }
    });
    match probe.await {
        Ok(_) => Ok(Etcd {
            client,
            urls: joined,
            timeout,
        }),
        Err(crate::Error::Etcd(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("no answer".into())),
    }
}

/// `url` as etcd-client takes it: `http://host:port` (https needs TLS, not wired yet).
fn endpoint(url: &str) -> Result<String, Error> {
    let bad = |detail: &str| Error::BadUrl {
        url: url.to_owned(),
        detail: detail.to_owned(),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported for now"))?;
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') {
        return Err(bad("expected http://HOST:PORT"));
    }
    if !hostport
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return Err(bad("the port is missing or not a number"));
    }
    Ok(format!("http://{hostport}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_connecting() {
        assert_eq!(
            endpoint("http://10.0.0.1:2379/").unwrap(),
            "http://10.0.0.1:2379"
        );
        for bad in [
            "10.0.0.1:2379",
            "https://a:2379",
            "http://a",
            "http://a:x",
            "http://",
        ] {
            let e = endpoint(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("http://HOST:2379"), "{e}");
        }
    }
}
