//! `ports` as `[services.NAME.expose] listen`, and the container port that each replica
//! gets its own copy of: from `ports`, else from `expose`.

use std::net::IpAddr;

use crate::command::compose_variable;
use crate::fields::{Fields, index};
use crate::note::Notes;
use crate::stack::Service;
use crate::yaml::Node;

/// One entry of `ports`.
#[derive(Debug, PartialEq)]
struct Mapping {
    host_ip: Option<IpAddr>,
    published: Option<u16>,
    target: u16,
    tcp: bool,
}

/// Sets `s.listen` from the first TCP entry with a published port (else the first TCP entry,
/// which Compose publishes on a random port) and returns its container port; notes the rest.
pub(super) fn convert(
    node: &Node,
    path: &str,
    name: &str,
    s: &mut Service,
    notes: &mut Notes,
) -> Option<u16> {
    let Some(items) = node.as_seq() else {
        notes.not_carried(path, format!("expected a list, found {}", node.describe()));
        return None;
    };
    let mut tcp: Vec<(String, Mapping)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        match mapping(item, &p, notes) {
            Ok(m) if m.tcp => tcp.push((p, m)),
            Ok(_) => notes.not_carried(p, "bulwark proxies TCP only"),
            Err(why) => notes.not_carried(p, why),
        }
    }
    let main = tcp
        .iter()
        .position(|(_, m)| m.published.is_some())
        .unwrap_or(0);
    let published = tcp.get(main)?.1.published.is_some();
    for (i, (p, m)) in tcp.iter().enumerate() {
        if i == main {
            s.listen = listen(m, p, name, notes);
        } else if published {
            notes.not_carried(
                p.clone(),
                "each replica gets one port, and only the first published entry of `ports` is \
                 proxied",
            );
        } else {
            notes.not_carried(
                p.clone(),
                "each replica gets one port, and only the first entry of `ports` is made per \
                 replica",
            );
        }
    }
    Some(tcp[main].1.target)
}

/// The `listen` address of the entry that is proxied; `None` (noted) when it has no host
/// port.
fn listen(m: &Mapping, path: &str, name: &str, notes: &mut Notes) -> Option<String> {
    let Some(published) = m.published else {
        notes.not_carried(
            path,
            format!(
                "no host port: Compose publishes it on a random one; bulwark's proxy needs a \
                 fixed address: add [services.{name}.expose] with `listen`"
            ),
        );
        return None;
    };
    let ip = m.host_ip.unwrap_or_else(|| {
        notes.changed(
            path,
            format!(
                "bulwark listens on 127.0.0.1:{published}, Compose on every interface; write \
                 listen = \"0.0.0.0:{published}\" to serve other hosts"
            ),
        );
        IpAddr::from([127, 0, 0, 1])
    });
    Some(std::net::SocketAddr::new(ip, published).to_string())
}

/// `expose`: container ports that Compose does not publish. `main` is the container port of
/// `ports`; without one, the first port here is made per replica, unproxied as in Compose,
/// and returned. The others are noted.
pub(super) fn expose(
    node: &Node,
    path: &str,
    main: Option<u16>,
    name: &str,
    notes: &mut Notes,
) -> Option<u16> {
    let Some(items) = node.as_seq() else {
        notes.not_carried(path, format!("expected a list, found {}", node.describe()));
        return None;
    };
    let mut chosen = None;
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let port = match exposed(item) {
            Ok(port) => port,
            Err(why) => {
                notes.not_carried(p, why);
                continue;
            }
        };
        match main.or(chosen) {
            Some(m) if m == port => {}
            Some(m) => notes.not_carried(
                p,
                format!("each replica gets one port, and it is the container port {m}"),
            ),
            None => {
                chosen = Some(port);
                notes.changed(
                    p,
                    format!(
                        "the container port {port} is made per replica ({{port}}, $PORT); Compose \
                         does not publish it, so it is not proxied: add [services.{name}.expose] \
                         with `listen` to proxy it"
                    ),
                );
            }
        }
    }
    chosen
}

/// One entry of `expose`: `"8000"`, `8000` or `"8000/tcp"`.
fn exposed(node: &Node) -> Result<u16, String> {
    if let Some(why) = compose_variable(node) {
        return Err(why);
    }
    let text = node.as_str().ok_or_else(|| {
        format!(
            "expected a port such as \"8000\", found {}",
            node.describe()
        )
    })?;
    match text.rsplit_once('/') {
        None | Some((_, "tcp")) => number(text.strip_suffix("/tcp").unwrap_or(text)),
        Some(_) => Err("only a TCP port is made per replica".to_owned()),
    }
}

/// `"8080:8000"`, `"127.0.0.1:8080:8000/tcp"`, `8000`, or the long syntax.
fn mapping(node: &Node, path: &str, notes: &mut Notes) -> Result<Mapping, String> {
    if let Some(why) = compose_variable(node) {
        return Err(why);
    }
    if let Some(entries) = node.as_map() {
        return long(&mut Fields::new(path, entries), notes);
    }
    let text = node.as_str().ok_or_else(|| {
        format!(
            "expected a port such as \"8080:8000\", found {}",
            node.describe()
        )
    })?;
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, proto)) => (spec, proto),
        None => (text, "tcp"),
    };
    // An IPv6 host address is bracketed: `[::1]:8080:8000`.
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(r) => {
            let (ip, rest) = r
                .split_once("]:")
                .ok_or_else(|| format!("cannot read {text:?} as a port"))?;
            (Some(ip), rest)
        }
        None => (None, spec),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, published, target) = match (host_ip, parts.as_slice()) {
        (None, [target]) => (None, None, *target),
        (None, [published, target]) => (None, Some(*published), *target),
        (None, [ip, published, target]) => (Some(*ip), Some(*published), *target),
        (Some(ip), [published, target]) => (Some(ip), Some(*published), *target),
        _ => return Err(format!("cannot read {text:?} as a port")),
    };
    Ok(Mapping {
        host_ip: host_ip.filter(|ip| !ip.is_empty()).map(ip_of).transpose()?,
        published: published
            .filter(|p| !p.is_empty())
            .map(number)
            .transpose()?,
        target: number(target)?,
        tcp: protocol == "tcp",
    })
}

/// `{target: 8000, published: 8080, host_ip: 127.0.0.1, protocol: tcp}`.
fn long(f: &mut Fields<'_>, notes: &mut Notes) -> Result<Mapping, String> {
    let target = f
        .take("target")
        .ok_or("the long syntax needs `target`, the container port")?;
    let target = number(target.as_str().unwrap_or_default())?;
    let published = match f.take("published") {
        Some(p) if !p.is_null() => Some(number(p.as_str().unwrap_or_default())?),
        _ => None,
    };
    let host_ip = match f.take("host_ip").and_then(Node::as_str) {
        Some(ip) => Some(ip_of(ip)?),
        None => None,
    };
    let tcp = f
        .take("protocol")
        .and_then(Node::as_str)
        .is_none_or(|p| p == "tcp");
    f.note_rest(notes, |key, _| match key {
        "mode" => "bulwark runs on one host".to_owned(),
        "app_protocol" | "name" => "the proxy speaks HTTP unless `protocol = \"tcp\"`".to_owned(),
        _ => "not a port setting bulwark knows".to_owned(),
    });
    Ok(Mapping {
        host_ip,
        published,
        target,
        tcp,
    })
}

fn number(text: &str) -> Result<u16, String> {
    if text.contains('-') {
        return Err(format!(
            "the port range {text:?} cannot be proxied; list one port"
        ));
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{text:?} is not a port number (1 to 65535)")),
        Ok(p) => Ok(p),
    }
}

fn ip_of(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}
