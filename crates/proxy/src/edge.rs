//! The listeners and service proxies of a running stack. [`Listeners::apply`] creates what
//! a stack file asks for and, on reload, changes what differs: policies are swapped in
//! place and a listener whose address and protocol are unchanged is never rebound.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bus::{Endpoints, OutcomeSink};
use spec::{Protocol, Stack};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::server::{ConnLimit, serve_shared};
use crate::tcp::sni::{self, Routes};
use crate::tcp::{Terminate, serve_tcp_shared};
use crate::tls::TlsListener;
use crate::{Hooks, ProxyMetrics, ServiceProxyHandle, TcpExpose, TcpMetrics, Workers};

/// How long listeners wait for requests in flight after a stop signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Where a service's ready replicas are published (the supervisor's endpoints); `None`
/// for a service it does not know.
pub type EndpointsOf =
    Box<dyn Fn(&str) -> Option<watch::Receiver<Arc<Endpoints>>> + Send + Sync + 'static>;

/// Why [`Listeners::apply`] could not bring the edge in line with a stack.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "service {service}: cannot listen on {addr} (services.{service}.expose.listen); is \
         another program using it?"
    )]
    Bind {
        service: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The supervisor does not know the service (it must apply the stack first).
    #[error("service {service}: no endpoints")]
    NoEndpoints { service: String },
    /// The listener's certificates do not load (services.NAME.expose.tls).
    #[error("service {service}: TLS (services.{service}.expose.tls): {source}")]
    Tls {
        service: String,
        #[source]
        source: Box<crate::tls::TlsError>,
    },
}

/// A listener: where, what it speaks, and how to stop it.
struct Listening {
    addr: SocketAddr,
    protocol: Protocol,
    tls: Option<Arc<TlsListener>>,
    /// TLS passed through by SNI: the services of the address, replaced on reload.
    sni: Option<watch::Sender<Arc<Routes>>>,
    stop: watch::Sender<bool>,
}

/// What a reload must not change for a listener to stay bound: its address, protocol,
/// and TLS (none, terminated, passed through).
type ListenerKey = (SocketAddr, Protocol, Tls);

/// A listener's TLS, as far as its binding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    None,
    Terminated,
    PassedThrough,
}

impl Listening {
    fn key(&self) -> ListenerKey {
        let tls = match (&self.tls, &self.sni) {
            (Some(_), _) => Tls::Terminated,
            (None, Some(_)) => Tls::PassedThrough,
            (None, None) => Tls::None,
        };
        (self.addr, self.protocol, tls)
    }
}

/// The listener key of a service that passes TLS through: its address (shared by the
/// services that pass through on it), or for port 0 (a port of its own) its name.
fn passthrough_key(svc: &spec::Service) -> Option<(String, SocketAddr)> {
    let expose = svc.expose.as_ref()?;
    expose.passthrough.as_ref()?;
    let key = if expose.listen.port() == 0 {
        format!("{} (tls passthrough)", svc.name)
    } else {
        format!("tls passthrough on {}", expose.listen)
    };
    Some((key, expose.listen))
}

/// Every listener and service proxy of a `bulwark up`.
pub struct Listeners {
    proxies: HashMap<String, ServiceProxyHandle>,
    toxics: HashMap<String, watch::Sender<Vec<spec::Toxic>>>,
    listeners: HashMap<String, Listening>,
    tasks: JoinSet<()>,
    hooks: Arc<Hooks>,
    proxy_metrics: ProxyMetrics,
    tcp_metrics: TcpMetrics,
    outcomes: Arc<dyn OutcomeSink>,
    /// Where a preview listener's outcomes go (a rollout's analysis, not the SLOs).
    preview_outcomes: Option<Arc<dyn OutcomeSink>>,
    endpoints: EndpointsOf,
    /// The threads the listeners accept and proxy on.
    workers: Workers,
    /// The connection limit of each service that passes TLS through, with its size: kept
    /// across reloads that leave `max_connections` alone.
    sni_slots: HashMap<String, (u32, Arc<Semaphore>)>,
}

/// The key of a blue-green preview listener among the listeners.
fn preview_key(service: &str) -> String {
    format!("{service} (preview)")
}

impl Listeners {
    pub fn new(
        hooks: Arc<Hooks>,
        proxy_metrics: ProxyMetrics,
        tcp_metrics: TcpMetrics,
        outcomes: Arc<dyn OutcomeSink>,
        endpoints: EndpointsOf,
    ) -> Listeners {
        Listeners {
            workers: hooks.workers.clone(),
            proxies: HashMap::new(),
            toxics: HashMap::new(),
            listeners: HashMap::new(),
            tasks: JoinSet::new(),
            hooks,
            proxy_metrics,
            tcp_metrics,
            outcomes,
            preview_outcomes: None,
            endpoints,
            sni_slots: HashMap::new(),
        }
    }

    /// Sends the outcomes of preview listeners to `sink`.
    pub fn with_preview_outcomes(mut self, sink: Arc<dyn OutcomeSink>) -> Listeners {
        self.preview_outcomes = Some(sink);
        self
    }

    fn endpoints(&self, service: &str) -> Result<watch::Receiver<Arc<Endpoints>>, ApplyError> {
        (self.endpoints)(service).ok_or_else(|| ApplyError::NoEndpoints {
            service: service.to_owned(),
        })
    }

    /// Brings listeners and service proxies in line with `stack`. Returns a line per
    /// change.
    pub async fn apply(&mut self, stack: &Stack) -> Result<Vec<String>, ApplyError> {
        self.hooks.switches.declare(&stack.switches);
        self.apply_proxies(stack)?;
        let mut changes = self.stop_stale_listeners(stack);
        for svc in &stack.services {
            // A listener kept (and its preview) takes the `tls` table as it is now.
            if let Some(tls) = svc.expose.as_ref().and_then(|e| e.tls.as_ref()) {
                for key in [svc.name.clone(), preview_key(&svc.name)] {
                    if let Some(current) = self.listeners.get(&key).and_then(|l| l.tls.as_ref()) {
                        current.set(tls);
                    }
                }
            }
            if let Some(expose) = &svc.expose
                && expose.passthrough.is_none()
                && !self.listeners.contains_key(&svc.name)
            {
                self.listen(&svc.name, expose)?;
                changes.push(format!("{}: listening on {}", svc.name, expose.listen));
            }
            if let (Some(expose), Some(addr)) = (&svc.expose, preview_of(svc))
                && !self.listeners.contains_key(&preview_key(&svc.name))
            {
                self.listen_preview(&svc.name, expose, addr)?;
                changes.push(format!("{}: preview listening on {addr}", svc.name));
            }
        }
        changes.extend(self.apply_passthrough(stack)?);
        let names: HashSet<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        self.sni_slots
            .retain(|name, _| names.contains(name.as_str()));
        self.proxies.retain(|name, _| names.contains(name.as_str()));
        self.hooks
            .services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| names.contains(name.as_str()));
        Ok(changes)
    }

    /// Creates or reconfigures a proxy for every exposed service and for every service a
    /// route or a fallback leads to, and hands TCP listeners their current toxics.
    fn apply_proxies(&mut self, stack: &Stack) -> Result<(), ApplyError> {
        let targets: HashSet<&str> = stack
            .services
            .iter()
            .filter_map(|s| s.expose.as_ref())
            .flat_map(|e| {
                let fallback = e.fallback.as_ref().and_then(|f| match &f.answer {
                    Some(spec::FallbackAnswer::Service(s)) => Some(s.as_str()),
                    _ => None,
                });
                e.routes.iter().map(|r| r.to.as_str()).chain(fallback)
            })
            .collect();
        for svc in &stack.services {
            let expose = match &svc.expose {
                Some(e) => e.clone(),
                None if targets.contains(svc.name.as_str()) => {
                    spec::Expose::new(([127, 0, 0, 1], 0).into())
                }
                None => continue,
            };
            match self.proxies.get(&svc.name) {
                Some(proxy) => {
                    if proxy.expose() != expose {
                        proxy.reconfigure(expose.clone());
                    }
                }
                None => {
                    let endpoints = self.endpoints(&svc.name)?;
                    let handle = ServiceProxyHandle::new(
                        &svc.name,
                        expose.clone(),
                        endpoints,
                        &self.proxy_metrics,
                        Some(self.outcomes.clone()),
                        self.hooks.clone(),
                    );
                    self.proxies.insert(svc.name.clone(), handle);
                }
            }
            if let Some(tx) = self.toxics.get(&svc.name) {
                tx.send_if_modified(|t| {
                    let changed = *t != expose.toxics;
                    *t = expose.toxics.clone();
                    changed
                });
            }
        }
        Ok(())
    }

    /// Stops the listeners whose service went away or whose address or protocol changed;
    /// an unchanged listener is never rebound.
    fn stop_stale_listeners(&mut self, stack: &Stack) -> Vec<String> {
        let tls = |e: &spec::Expose| {
            if e.tls.is_some() {
                Tls::Terminated
            } else {
                Tls::None
            }
        };
        let wanted: HashMap<String, ListenerKey> = stack
            .services
            .iter()
            .filter_map(|s| {
                let e = s.expose.as_ref()?;
                Some(match passthrough_key(s) {
                    Some((key, addr)) => (key, (addr, Protocol::Tcp, Tls::PassedThrough)),
                    None => (s.name.clone(), (e.listen, e.protocol, tls(e))),
                })
            })
            .chain(stack.services.iter().filter_map(|s| {
                let tls = s.expose.as_ref().map_or(Tls::None, tls);
                preview_of(s).map(|addr| (preview_key(&s.name), (addr, Protocol::Http, tls)))
            }))
            .collect();
        let stale: Vec<String> = self
            .listeners
            .iter()
            .filter(|(name, l)| wanted.get(name.as_str()) != Some(&l.key()))
            .map(|(name, _)| name.clone())
            .collect();
        let mut changes = vec![];
        for name in stale {
            if let Some(l) = self.listeners.remove(&name) {
                l.stop.send_replace(true);
                changes.push(format!("{name}: stopped listening on {}", l.addr));
            }
        }
        changes
    }

    /// Binds `addr` on every worker for `service`.
    fn bind(
        &self,
        service: &str,
        addr: SocketAddr,
    ) -> Result<Vec<(Handle, TcpListener)>, ApplyError> {
        self.workers.bind(addr).map_err(|source| ApplyError::Bind {
            service: service.to_owned(),
            addr,
            source,
        })
    }

    /// Serves `proxy` on `sockets`, each on its worker, under one connection limit; with
    /// `tls`, its certificates follow their files until `stop`.
    fn serve_http(
        &mut self,
        sockets: Vec<(Handle, TcpListener)>,
        proxy: &ServiceProxyHandle,
        tls: Option<&Arc<TlsListener>>,
        stop: &watch::Receiver<bool>,
    ) {
        let limit = ConnLimit::new(proxy.0.policy().expose.limits.max_connections);
        for (rt, socket) in sockets {
            let (proxy, limit, stop) = (proxy.clone(), limit.clone(), stop.clone());
            let tls = tls.cloned();
            self.tasks.spawn_on(
                async move { serve_shared(socket, proxy, limit, tls, stop, DRAIN).await },
                &rt,
            );
        }
        if let Some(tls) = tls {
            self.tasks.spawn(tls.clone().follow(stop.clone()));
        }
    }

    /// The TLS of `service`'s listener, its certificates loaded.
    fn tls(
        &self,
        service: &str,
        expose: &spec::Expose,
    ) -> Result<Option<Arc<TlsListener>>, ApplyError> {
        expose
            .tls
            .as_ref()
            .map(|t| TlsListener::new(service, t, expose.protocol == Protocol::Http))
            .transpose()
            .map_err(|source| ApplyError::Tls {
                service: service.to_owned(),
                source: Box::new(source),
            })
    }

    /// Binds `expose.listen` for `service` and serves it (HTTP through its proxy, or TCP).
    fn listen(&mut self, service: &str, expose: &spec::Expose) -> Result<(), ApplyError> {
        let tls = self.tls(service, expose)?;
        let sockets = self.bind(service, expose.listen)?;
        let (stop_tx, stop) = watch::channel(false);
        if expose.protocol == Protocol::Tcp {
            let terminate = tls.as_ref().map(|tls| {
                Arc::new(Terminate {
                    tls: tls.clone(),
                    header_read: expose.timeouts.header_read,
                    failed: self.proxy_metrics.event(service, "tls_handshake_failed"),
                })
            });
            if let Some(tls) = &tls {
                self.tasks.spawn(tls.clone().follow(stop.clone()));
            }
            let (toxics_tx, toxics_rx) = watch::channel(expose.toxics.clone());
            self.toxics.insert(service.to_owned(), toxics_tx);
            let endpoints = self.endpoints(service)?;
            let slots = Arc::new(Semaphore::new(expose.limits.max_connections as usize));
            for (rt, socket) in sockets {
                let l = TcpExpose {
                    service: service.to_owned(),
                    socket,
                    endpoints: endpoints.clone(),
                    connect_timeout: expose.timeouts.connect,
                    max_connections: expose.limits.max_connections,
                    idle: expose.timeouts.idle,
                    toxics: toxics_rx.clone(),
                    faults_enabled: self.hooks.faults_on.clone(),
                    injected: self.hooks.injected.clone(),
                };
                let (m, slots, stop) = (self.tcp_metrics.clone(), slots.clone(), stop.clone());
                let terminate = terminate.clone();
                self.tasks.spawn_on(
                    async move { serve_tcp_shared(l, slots, &m, terminate, stop, DRAIN).await },
                    &rt,
                );
            }
        } else {
            let proxy = self.proxies[service].clone();
            self.serve_http(sockets, &proxy, tls.as_ref(), &stop);
        }
        tracing::info!(service = %service, listen = %expose.listen, protocol = ?expose.protocol, tls = tls.is_some(), workers = self.workers.len(), "proxy listening");
        self.listeners.insert(
            service.to_owned(),
            Listening {
                addr: expose.listen,
                protocol: expose.protocol,
                tls,
                sni: None,
                stop: stop_tx,
            },
        );
        Ok(())
    }

    /// Binds a blue-green preview listener for `service`: its new revision only.
    fn listen_preview(
        &mut self,
        service: &str,
        expose: &spec::Expose,
        addr: SocketAddr,
    ) -> Result<(), ApplyError> {
        let tls = self.tls(service, expose)?;
        let sockets = self.bind(service, addr)?;
        let (stop_tx, stop) = watch::channel(false);
        let proxy = ServiceProxyHandle::preview(
            service,
            expose.clone(),
            self.endpoints(service)?,
            &self.proxy_metrics,
            self.preview_outcomes.clone(),
            self.hooks.clone(),
        );
        self.serve_http(sockets, &proxy, tls.as_ref(), &stop);
        tracing::info!(service = %service, listen = %addr, tls = tls.is_some(), "preview listening");
        self.listeners.insert(
            preview_key(service),
            Listening {
                addr,
                protocol: Protocol::Http,
                tls,
                sni: None,
                stop: stop_tx,
            },
        );
        Ok(())
    }

    /// Binds, or hands their new routes to, the listeners of the services that pass TLS
    /// through, one per address. Returns a line per listener bound.
    fn apply_passthrough(&mut self, stack: &Stack) -> Result<Vec<String>, ApplyError> {
        let mut groups: Vec<(String, SocketAddr, Vec<&spec::Service>)> = Vec::new();
        for svc in &stack.services {
            let Some((key, addr)) = passthrough_key(svc) else {
                continue;
            };
            match groups.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, _, members)) => members.push(svc),
                None => groups.push((key, addr, vec![svc])),
            }
        }
        let mut changes = Vec::new();
        for (key, addr, services) in groups {
            let routes = Arc::new(self.routes(&services)?);
            if let Some(tx) = self.listeners.get(&key).and_then(|l| l.sni.as_ref()) {
                tx.send_replace(routes);
                continue;
            }
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            let sockets = self.bind(names[0], addr)?;
            let label = sockets
                .first()
                .and_then(|(_, s)| s.local_addr().ok())
                .unwrap_or(addr)
                .to_string();
            let event = |e| self.proxy_metrics.event(&label, e);
            let events = sni::Events {
                unclaimed: event("sni_unclaimed"),
                hello_failed: event("tls_hello_failed"),
                shed: event("shed"),
            };
            let (routes_tx, routes_rx) = watch::channel(routes);
            let (stop_tx, stop) = watch::channel(false);
            for (rt, socket) in sockets {
                let (routes, events, stop) = (routes_rx.clone(), events.clone(), stop.clone());
                self.tasks.spawn_on(
                    async move { sni::serve_sni(socket, routes, events, stop, DRAIN).await },
                    &rt,
                );
            }
            tracing::info!(services = ?names, listen = %addr, workers = self.workers.len(), "proxy passing TLS through by SNI");
            changes.push(format!(
                "{}: passing TLS through on {addr}",
                names.join(", ")
            ));
            let listening = Listening {
                addr,
                protocol: Protocol::Tcp,
                tls: None,
                sni: Some(routes_tx),
                stop: stop_tx,
            };
            self.listeners.insert(key, listening);
        }
        Ok(changes)
    }

    /// The routes of the services passing TLS through on one address.
    fn routes(&mut self, services: &[&spec::Service]) -> Result<Routes, ApplyError> {
        let mut members = Vec::with_capacity(services.len());
        for svc in services {
            let Some(expose) = svc.expose.clone() else {
                continue;
            };
            let max = expose.limits.max_connections;
            let slots = match self.sni_slots.get(&svc.name) {
                Some((m, slots)) if *m == max => slots.clone(),
                _ => {
                    let slots = Arc::new(Semaphore::new(max as usize));
                    self.sni_slots
                        .insert(svc.name.clone(), (max, slots.clone()));
                    slots
                }
            };
            let toxics = self
                .toxics
                .entry(svc.name.clone())
                .or_insert_with(|| watch::channel(expose.toxics.clone()).0)
                .subscribe();
            members.push(sni::Member {
                service: svc.name.clone(),
                endpoints: self.endpoints(&svc.name)?,
                toxics,
                slots,
                expose,
            });
        }
        Ok(Routes::new(
            members,
            &self.tcp_metrics,
            &self.hooks.faults_on,
            &self.hooks.injected,
        ))
    }

    /// Stops accepting everywhere and lets requests in flight finish.
    pub async fn shutdown(&mut self) {
        for l in self.listeners.values() {
            l.stop.send_replace(true);
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The preview address of a blue-green service (HTTP only).
fn preview_of(svc: &spec::Service) -> Option<SocketAddr> {
    let expose = svc.expose.as_ref()?;
    (svc.rollout.strategy == spec::RolloutStrategy::BlueGreen && expose.protocol == Protocol::Http)
        .then_some(svc.rollout.preview_listen)
        .flatten()
}
