//! What relates several keys, and the domain types built from the read tables.
//!
//! Each key's own type, range and default were checked by the reader (`schema`, from the
//! declarations in `keys`); here are the rules between keys (exactly one of, dependency
//! cycles, address clashes, TCP vs HTTP options), one module per topic. Checks record their
//! problem and go on; a check that relates two values only looks at values that are valid
//! themselves, so one typo never shows up as three errors. [`stack`] returns `None` as soon
//! as anything was reported, so stand-in values never escape.

mod alerts;
mod backup;
pub(crate) mod chaos;
mod container;
mod degrade;
mod deps;
mod env;
mod expose;
mod leader;
mod notify;
mod placement;
mod probe;
mod remedy;
mod resources;
mod rollout;
mod rules;
mod service;
mod slo;
mod tls;
mod warm;

use std::path::Path;

use crate::keys::{ApiTable, StackTable};
use crate::model::{Api, Service, Stack};
use crate::problem::Problems;
use crate::schema::{Field, Section, Table};

/// Checks the read file into a [`Stack`], recording every problem in `p`. Relative `cwd`
/// values are joined onto `base_dir` (the stack file's directory). A stack without services
/// is refused unless `services_required` is false (a cluster agent's own settings).
pub(crate) fn stack(
    raw: StackTable,
    base_dir: &Path,
    services_required: bool,
    p: &mut Problems,
) -> Option<Stack> {
    let api = raw.api.value().and_then(|a| api(a, base_dir, p));
    let journal = raw.journal.value().and_then(|j| j.build());
    let supervisor = raw.supervisor.value().and_then(|s| s.build());
    let alerts = raw.alerts.value().and_then(|a| alerts::alerts(a, p));

    let services = raw.services.value().map_or(&[][..], Vec::as_slice);
    if services_required && services.is_empty() && !matches!(raw.services, Field::Invalid) {
        p.push(
            raw.services.span().unwrap_or(raw.span.clone()),
            "no services defined; add a [services.NAME] table with at least `run = [...]`",
        );
    }
    let mut checked: Vec<service::Checked> = services
        .iter()
        .map(|(name, s)| service::service(name, s.get_ref(), base_dir, p))
        .collect();
    let switches = degrade::switches(&raw.switches, p);
    degrade::fallbacks(services, &mut checked, &switches, base_dir, p);
    let order = deps::dependency_order(&mut checked, p);
    deps::check_addresses(&checked, api.as_ref().map(|a| a.listen), p);
    deps::check_routes(&checked, p);
    placement::anti_affinity(services, p);
    let known: Vec<&Service> = checked.iter().map(|c| &c.service).collect();
    let backups = backup::backups(&raw.backups, &known, base_dir, p);
    let experiments = chaos::experiments(&raw.experiments, &known, base_dir, p);
    let remediations = remedy::remediations(&raw.remediations, &known, &switches, p);
    let remediation = raw.remediation.value().and_then(|r| r.build());
    let anomaly = raw.anomaly.value().and_then(|a| a.build());

    if !p.is_empty() {
        return None;
    }
    let mut slots: Vec<Option<_>> = checked.into_iter().map(|c| Some(c.service)).collect();
    let services = order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect();
    Some(Stack {
        backups: backups?,
        experiments: experiments?,
        switches,
        remediations: remediations?,
        remediation: remediation?,
        anomaly: anomaly?,
        services,
        api: api?,
        supervisor: supervisor?,
        alerts: alerts?,
        journal: journal?,
    })
}

/// `[api]`: off loopback the API must speak TLS, because its token (or a client
/// certificate) is all that guards it and plain HTTP would show the token to the network.
fn api(raw: &ApiTable, base_dir: &Path, p: &mut Problems) -> Option<Api> {
    let listen = raw.listen.get()?;
    if let Some(v) = raw.allow_remote.span() {
        p.warn(
            v,
            "`allow_remote` in [api] is deprecated and has no effect: a non-loopback \
             `listen` needs an [api.tls] table instead; remove `allow_remote`",
        );
    }
    let tls = tls::api_tls(raw, base_dir, p)?;
    if let Some(v) = raw.listen.given()
        && tls.is_none()
        && !listen.ip().is_loopback()
    {
        return p.fail(
            v.span(),
            format!(
                "[api] listen = \"{listen}\" is not a loopback address, and the API would \
                 speak plain HTTP, showing its bearer token to the network: add an [api.tls] \
                 table, e.g. `tls = {{ certificates = [{{ cert = \"api.pem\", key = \
                 \"api.key\" }}] }}` (with `client_ca` for mTLS), or listen on 127.0.0.1"
            ),
        );
    }
    let client_role = tls::client_role(raw, tls.as_ref(), p)?;
    Some(Api {
        listen,
        tls,
        client_role,
    })
}

impl Default for Api {
    fn default() -> Self {
        defaults("api", |raw, p| api(raw, Path::new(""), p))
    }
}

/// Reports every name given a second time, at that name, with `message(name)`.
pub(super) fn duplicate_names<'a>(
    names: impl Iterator<Item = &'a toml::Spanned<String>>,
    message: impl Fn(&str) -> String,
    p: &mut Problems,
) {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        let n = name.get_ref().as_str();
        if seen.contains(&n) {
            p.push(name.span(), message(n));
        }
        seen.push(n);
    }
}

/// Every entry built (each reports its own problems); `None` if any failed.
pub(super) fn each<T, U>(list: &Field<Vec<T>>, f: impl FnMut(&T) -> Option<U>) -> Option<Vec<U>> {
    let built: Vec<Option<U>> = list
        .value()
        .map_or(Vec::new(), |l| l.iter().map(f).collect());
    built.into_iter().collect()
}

/// What `build` makes of the table `name` left out, every key at its declared default:
/// the domain types' defaults.
pub(crate) fn defaults<S: Section, T>(
    name: &str,
    build: impl FnOnce(&S, &mut Problems) -> Option<T>,
) -> T {
    let mut p = Problems::default();
    let raw = S::read(&Table::new(None, 0..0, name.to_owned(), name), &mut p);
    build(&raw, &mut p).expect("the declared defaults are valid")
}
