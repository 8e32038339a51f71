//! The raw layer: the stack file as spanned, shape-checked data.
//!
//! Why not `#[derive(Deserialize)]` with `deny_unknown_fields`: serde stops at the first
//! problem, and the user should be able to fix the whole file in one go. So toml parses
//! into its generic spanned tree ([`DeTable`]), and this module walks it: every unknown
//! key and every value of the wrong TOML type is recorded, and the walk goes on.
//!
//! Only *shape* is checked here (which keys exist, which TOML types their values have).
//! Meaning — ranges, durations, addresses, references between services, defaults — is
//! `validate`'s job. Every value keeps its span so `validate` can point at it.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::problem::{Problems, Span, hint};

/// A key after reading.
///
/// `Invalid` (present, but already reported as the wrong type) is kept apart from
/// `Absent` so that `validate` neither reports it a second time as missing nor silently
/// replaces it with a default, and so that cross-field checks skip it.
#[derive(Debug)]
pub(crate) enum Field<T> {
    Absent,
    Invalid,
    Given(Spanned<T>),
}

impl<T> Field<T> {
    pub fn given(&self) -> Option<&Spanned<T>> {
        match self {
            Field::Given(v) => Some(v),
            Field::Absent | Field::Invalid => None,
        }
    }

    /// Present in the file, valid or not.
    pub fn is_present(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Field::Given(v) => {
                let span = v.span();
                Field::Given(Spanned::new(span, f(v.into_inner())))
            }
            Field::Absent => Field::Absent,
            Field::Invalid => Field::Invalid,
        }
    }
}

#[derive(Debug)]
pub(crate) struct RawStack {
    /// In file order (toml's map is sorted by key; the order is recovered from spans).
    pub services: Vec<RawService>,
    /// Where to point when there is no service at all: the `services` key if any.
    pub services_span: Span,
    pub api: Field<RawApi>,
    pub supervisor: Field<RawSupervisor>,
    pub alerts: Field<RawAlerts>,
    pub journal: Field<RawJournal>,
}

#[derive(Debug)]
pub(crate) struct RawJournal {
    pub retention: Field<String>,
}

#[derive(Debug)]
pub(crate) struct RawAlerts {
    pub group_wait: Field<String>,
    pub repeat_interval: Field<String>,
    pub sinks: Field<Vec<RawSink>>,
}

#[derive(Debug)]
pub(crate) struct RawSink {
    pub span: Span,
    /// `[[alerts.sinks]]`, for messages.
    pub label: String,
    pub log: Field<bool>,
    pub webhook: Field<String>,
    pub exec: Field<Vec<Spanned<String>>>,
    pub timeout: Field<String>,
    pub attempts: Field<i64>,
}

#[derive(Debug)]
pub(crate) struct RawApi {
    pub listen: Field<String>,
    pub allow_remote: Field<bool>,
}

#[derive(Debug)]
pub(crate) struct RawSupervisor {
    pub max_concurrent_restarts: Field<i64>,
}

#[derive(Debug)]
pub(crate) struct RawService {
    /// The table's key, spanned at the key itself.
    pub name: Spanned<String>,
    /// The table's header (`[services.web]`), where missing keys are reported.
    pub span: Span,
    pub run: Field<Vec<Spanned<String>>>,
    pub replicas: Field<i64>,
    pub restart: Field<String>,
    pub restart_rules: Field<Vec<RawRestartRule>>,
    pub env: Field<Vec<(Spanned<String>, Spanned<String>)>>,
    pub cwd: Field<String>,
    pub stop_signal: Field<String>,
    pub stop_grace: Field<String>,
    pub depends_on: Field<Vec<Spanned<String>>>,
    pub backoff: Field<RawBackoff>,
    pub startup: Field<RawProbe>,
    pub liveness: Field<RawProbe>,
    pub readiness: Field<RawProbe>,
    pub expose: Field<RawExpose>,
    pub slo: Field<Vec<RawSlo>>,
}

#[derive(Debug)]
pub(crate) struct RawRestartRule {
    pub span: Span,
    /// `[[services.web.restart_rules]]`, for messages.
    pub label: String,
    pub exit_codes: Field<Vec<Spanned<i64>>>,
    pub action: Field<String>,
}

#[derive(Debug)]
pub(crate) struct RawBackoff {
    pub initial: Field<String>,
    pub max: Field<String>,
    pub reset_after: Field<String>,
    pub multiplier: Field<f64>,
    pub jitter: Field<f64>,
}

#[derive(Debug)]
pub(crate) struct RawProbe {
    /// `[services.web.liveness]`, for messages.
    pub label: String,
    pub http: Field<String>,
    pub tcp: Field<bool>,
    pub exec: Field<Vec<Spanned<String>>>,
    /// Keys of the action fields in file order, so "two actions" can point at the second.
    pub action_keys: Vec<Spanned<String>>,
    pub period: Field<String>,
    pub timeout: Field<String>,
    pub initial_delay: Field<String>,
    pub failure_threshold: Field<i64>,
    pub success_threshold: Field<i64>,
}

#[derive(Debug)]
pub(crate) struct RawExpose {
    pub label: String,
    pub listen: Field<String>,
    /// Every other key of `[services.NAME.expose]`, and its policy tables.
    pub rest: RawTable,
    pub tables: Vec<(&'static str, RawTable)>,
    pub arrays: Vec<(&'static str, Vec<RawTable>)>,
}

/// A value whose type is checked by `validate` (used for the proxy's many policy keys,
/// where one generic walk beats a field per key).
#[derive(Debug, Clone)]
pub(crate) enum RawValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Spanned<RawValue>>),
    /// A table where a plain value was expected (reported by `validate`).
    Table,
}

impl RawValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            RawValue::Str(_) => "a string",
            RawValue::Int(_) => "an integer",
            RawValue::Float(_) => "a float",
            RawValue::Bool(_) => "a boolean",
            RawValue::Array(_) => "an array",
            RawValue::Table => "a table",
        }
    }
}

/// A table read generically: its keys were checked against the known ones already.
#[derive(Debug, Clone)]
pub(crate) struct RawTable {
    /// `[services.web.expose.retries]`, for messages.
    pub label: String,
    pub span: Span,
    pub fields: Vec<(String, Spanned<RawValue>)>,
}

impl RawTable {
    pub fn get(&self, key: &str) -> Option<&Spanned<RawValue>> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

#[derive(Debug)]
pub(crate) struct RawSlo {
    pub span: Span,
    /// `[[services.web.slo]]`, for messages.
    pub label: String,
    pub name: Field<String>,
    pub kind: Field<String>,
    pub objective: Field<f64>,
    pub period: Field<String>,
    pub count_429_as_error: Field<bool>,
    pub threshold: Field<String>,
    pub alerts: Field<RawSloAlerts>,
}

#[derive(Debug)]
pub(crate) struct RawSloAlerts {
    pub page: Field<bool>,
    pub ticket: Field<bool>,
    pub min_requests: Field<i64>,
    pub no_data: Field<String>,
}

const TOP_KEYS: &[&str] = &["services", "api", "supervisor", "alerts", "journal"];
const JOURNAL_KEYS: &[&str] = &["retention"];
const ALERTS_KEYS: &[&str] = &["group_wait", "repeat_interval", "sinks"];
const SINK_KEYS: &[&str] = &["log", "webhook", "exec", "timeout", "attempts"];
const API_KEYS: &[&str] = &["listen", "allow_remote"];
const SUPERVISOR_KEYS: &[&str] = &["max_concurrent_restarts"];
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "run",
    "replicas",
    "restart",
    "restart_rules",
    "env",
    "cwd",
    "stop_signal",
    "stop_grace",
    "depends_on",
    "backoff",
    "startup",
    "liveness",
    "readiness",
    "expose",
    "slo",
];
const RULE_KEYS: &[&str] = &["exit_codes", "action"];
const BACKOFF_KEYS: &[&str] = &["initial", "max", "reset_after", "multiplier", "jitter"];
pub(crate) const PROBE_ACTIONS: &[&str] = &["http", "tcp", "exec"];
const PROBE_KEYS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "period",
    "timeout",
    "initial_delay",
    "failure_threshold",
    "success_threshold",
];
const EXPOSE_KEYS: &[&str] = &[
    "listen",
    "protocol",
    "balance",
    "hash_on",
    "weights",
    "slow_start",
    "upstream",
    "request_id_header",
    "timeouts",
    "retries",
    "hedge",
    "outlier",
    "breaker",
    "limits",
    "rate_limit",
    "faults",
    "toxics",
    "routes",
];
/// The policy tables of `[services.NAME.expose]` and their keys.
pub(crate) const EXPOSE_TABLES: &[(&str, &[&str])] = &[
    ("timeouts", &["connect", "request", "idle", "header_read"]),
    (
        "retries",
        &[
            "attempts",
            "on",
            "statuses",
            "per_try_timeout",
            "backoff",
            "budget_percent",
            "budget_min_per_second",
            "methods",
            "max_body",
        ],
    ),
    ("hedge", &["percentile", "min_delay"]),
    (
        "outlier",
        &[
            "enabled",
            "consecutive_5xx",
            "consecutive_gateway_errors",
            "success_rate",
            "success_rate_min_requests",
            "success_rate_window",
            "base_ejection",
            "max_ejection",
            "max_ejection_percent",
            "panic_threshold",
            "restart_ejected",
        ],
    ),
    (
        "breaker",
        &["consecutive_failures", "cooldown", "max_cooldown"],
    ),
    (
        "limits",
        &["max_connections", "max_inflight", "queue", "queue_timeout"],
    ),
    ("rate_limit", &["rate", "burst", "key", "max_keys"]),
];
/// The arrays of tables of `[services.NAME.expose]` and their keys.
pub(crate) const EXPOSE_ARRAYS: &[(&str, &[&str])] = &[
    ("faults", &["percent", "header", "delay", "abort", "reset"]),
    (
        "toxics",
        &[
            "type",
            "toxicity",
            "direction",
            "latency",
            "jitter",
            "rate",
            "timeout",
            "delay",
            "average_size",
            "size_variation",
            "bytes",
        ],
    ),
    ("routes", &["to", "weight", "header"]),
];
const SLO_KEYS: &[&str] = &[
    "name",
    "kind",
    "objective",
    "period",
    "count_429_as_error",
    "threshold",
    "alerts",
];
const SLO_ALERTS_KEYS: &[&str] = &["page", "ticket", "min_requests", "no_data"];

const DURATION: &str = "a duration string such as \"250ms\" or \"5s\"";

/// Reads the whole document. Never fails: problems go to `p`, and whatever could be
/// read is returned so that `validate` can find the remaining problems too.
pub(crate) fn read(doc: &Spanned<DeTable<'_>>, p: &mut Problems) -> RawStack {
    let root = Table {
        map: doc.get_ref(),
        span: doc.span(),
        path: String::new(),
        label: "at the top level".to_owned(),
    };
    root.check_keys(TOP_KEYS, p);

    let mut services = Vec::new();
    let mut services_span = doc.span();
    if let Some(value) = root.map.get("services") {
        services_span = value.span();
        match value.get_ref() {
            DeValue::Table(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by_key(|(k, _)| k.span().start);
                for (key, value) in entries {
                    let name = Spanned::new(key.span(), key.get_ref().to_string());
                    let path = format!("services.{}", name.get_ref());
                    match value.get_ref() {
                        DeValue::Table(map) => {
                            let table = Table::new(map, value.span(), path);
                            services.push(read_service(name, &table, p));
                        }
                        other => p.push(
                            value.span(),
                            format!(
                                "service `{}` must be a table ([{path}]), found {}",
                                name.get_ref(),
                                article(other)
                            ),
                        ),
                    }
                }
            }
            other => p.push(
                value.span(),
                format!(
                    "`services` must be a table of services ([services.NAME]), found {}",
                    article(other)
                ),
            ),
        }
    }

    let api = root.table("api", p).map(|t| {
        t.check_keys(API_KEYS, p);
        RawApi {
            listen: t.string("listen", p),
            allow_remote: t.boolean("allow_remote", p),
        }
    });
    let supervisor = root.table("supervisor", p).map(|t| {
        t.check_keys(SUPERVISOR_KEYS, p);
        RawSupervisor {
            max_concurrent_restarts: t.integer("max_concurrent_restarts", p),
        }
    });

    let alerts = root.table("alerts", p).map(|t| {
        t.check_keys(ALERTS_KEYS, p);
        RawAlerts {
            group_wait: t.duration("group_wait", p),
            repeat_interval: t.duration("repeat_interval", p),
            sinks: read_sinks(&t, p),
        }
    });

    let journal = root.table("journal", p).map(|t| {
        t.check_keys(JOURNAL_KEYS, p);
        RawJournal {
            retention: t.duration("retention", p),
        }
    });

    RawStack {
        services,
        services_span,
        api,
        supervisor,
        alerts,
        journal,
    }
}

fn read_expose(e: &Table<'_, '_>, p: &mut Problems) -> RawExpose {
    e.check_keys(EXPOSE_KEYS, p);
    let nested: Vec<&str> = EXPOSE_TABLES
        .iter()
        .chain(EXPOSE_ARRAYS)
        .map(|(k, _)| *k)
        .chain(["listen"])
        .collect();
    let rest = generic(e, &nested);
    let tables = EXPOSE_TABLES
        .iter()
        .filter_map(|(key, known)| {
            let t = e.table(key, p);
            match t {
                Field::Given(t) => {
                    let t = t.into_inner();
                    t.check_keys(known, p);
                    Some((*key, generic(&t, &[])))
                }
                _ => None,
            }
        })
        .collect();
    let arrays = EXPOSE_ARRAYS
        .iter()
        .filter_map(|(key, known)| {
            let value = e.map.get(*key)?;
            let path = format!("{}.{key}", e.path);
            let DeValue::Array(items) = value.get_ref() else {
                e.wrong_type(key, &format!("an array of tables ([[{path}]])"), value, p);
                return None;
            };
            let mut list = Vec::new();
            for item in items.iter() {
                let DeValue::Table(map) = item.get_ref() else {
                    p.push(
                        item.span(),
                        format!(
                            "each entry of `{key}` must be a table ([[{path}]]), found {}",
                            article(item.get_ref())
                        ),
                    );
                    continue;
                };
                let t = Table {
                    map,
                    span: item.span(),
                    label: format!("[[{path}]]"),
                    path: path.clone(),
                };
                t.check_keys(known, p);
                list.push(generic(&t, &[]));
            }
            Some((*key, list))
        })
        .collect();
    RawExpose {
        listen: e.string("listen", p),
        label: e.label.clone(),
        rest,
        tables,
        arrays,
    }
}

/// Reads every key of `t` except `skip` as a [`RawValue`].
fn generic(t: &Table<'_, '_>, skip: &[&str]) -> RawTable {
    let mut fields: Vec<(String, Spanned<RawValue>)> = t
        .map
        .iter()
        .filter(|(k, _)| !skip.contains(&k.get_ref().as_ref()))
        .map(|(k, v)| {
            (
                k.get_ref().to_string(),
                Spanned::new(v.span(), raw_value(v)),
            )
        })
        .collect();
    fields.sort_by_key(|(_, v)| v.span().start);
    RawTable {
        label: t.label.clone(),
        span: t.span.clone(),
        fields,
    }
}

fn raw_value(v: &Spanned<DeValue<'_>>) -> RawValue {
    match v.get_ref() {
        DeValue::String(s) => RawValue::Str(s.to_string()),
        DeValue::Integer(_) => match integer(v) {
            Some(Ok(i)) => RawValue::Int(i),
            _ => RawValue::Float(f64::NAN),
        },
        DeValue::Float(f) => RawValue::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => RawValue::Bool(*b),
        DeValue::Array(items) => RawValue::Array(
            items
                .iter()
                .map(|i| Spanned::new(i.span(), raw_value(i)))
                .collect(),
        ),
        _ => RawValue::Table,
    }
}

fn read_sinks(t: &Table<'_, '_>, p: &mut Problems) -> Field<Vec<RawSink>> {
    let Some(value) = t.map.get("sinks") else {
        return Field::Absent;
    };
    let DeValue::Array(items) = value.get_ref() else {
        t.wrong_type("sinks", "an array of tables ([[alerts.sinks]])", value, p);
        return Field::Invalid;
    };
    let mut sinks = Vec::new();
    for item in items.iter() {
        let DeValue::Table(map) = item.get_ref() else {
            p.push(
                item.span(),
                format!(
                    "each entry of `sinks` must be a table such as \
                     {{ webhook = \"http://127.0.0.1:9000/hook\" }}, found {}",
                    article(item.get_ref())
                ),
            );
            continue;
        };
        let sink = Table {
            map,
            span: item.span(),
            label: "[[alerts.sinks]]".to_owned(),
            path: "alerts.sinks".to_owned(),
        };
        sink.check_keys(SINK_KEYS, p);
        sinks.push(RawSink {
            span: sink.span.clone(),
            log: sink.boolean("log", p),
            webhook: sink.string("webhook", p),
            exec: sink.string_array("exec", p),
            timeout: sink.duration("timeout", p),
            attempts: sink.integer("attempts", p),
            label: sink.label,
        });
    }
    Field::Given(Spanned::new(value.span(), sinks))
}

fn read_service(name: Spanned<String>, t: &Table<'_, '_>, p: &mut Problems) -> RawService {
    t.check_keys(SERVICE_KEYS, p);
    RawService {
        span: t.span.clone(),
        run: t.string_array("run", p),
        replicas: t.integer("replicas", p),
        restart: t.string("restart", p),
        restart_rules: read_restart_rules(t, p),
        env: read_env(t, p),
        cwd: t.string("cwd", p),
        stop_signal: t.string("stop_signal", p),
        stop_grace: t.duration("stop_grace", p),
        depends_on: t.string_array("depends_on", p),
        backoff: t.table("backoff", p).map(|b| {
            b.check_keys(BACKOFF_KEYS, p);
            RawBackoff {
                initial: b.duration("initial", p),
                max: b.duration("max", p),
                reset_after: b.duration("reset_after", p),
                multiplier: b.number("multiplier", p),
                jitter: b.number("jitter", p),
            }
        }),
        startup: t.table("startup", p).map(|t| read_probe(&t, p)),
        liveness: t.table("liveness", p).map(|t| read_probe(&t, p)),
        readiness: t.table("readiness", p).map(|t| read_probe(&t, p)),
        expose: t.table("expose", p).map(|e| read_expose(&e, p)),
        slo: read_slos(t, p),
        name,
    }
}

/// `[[services.NAME.slo]]`: an array of tables, like `restart_rules`.
fn read_slos(t: &Table<'_, '_>, p: &mut Problems) -> Field<Vec<RawSlo>> {
    let Some(value) = t.map.get("slo") else {
        return Field::Absent;
    };
    let path = format!("{}.slo", t.path);
    let DeValue::Array(items) = value.get_ref() else {
        // `[services.web.slo]` (one table) is the likely slip: say how to write it.
        t.wrong_type("slo", &format!("an array of tables ([[{path}]])"), value, p);
        return Field::Invalid;
    };
    let mut slos = Vec::new();
    for item in items.iter() {
        let DeValue::Table(map) = item.get_ref() else {
            p.push(
                item.span(),
                format!(
                    "each entry of `slo` must be a table ([[{path}]]), found {}",
                    article(item.get_ref())
                ),
            );
            continue;
        };
        let slo = Table {
            map,
            span: item.span(),
            label: format!("[[{path}]]"),
            path: path.clone(),
        };
        slo.check_keys(SLO_KEYS, p);
        slos.push(RawSlo {
            span: slo.span.clone(),
            name: slo.string("name", p),
            kind: slo.string("kind", p),
            objective: slo.number("objective", p),
            period: slo.duration("period", p),
            count_429_as_error: slo.boolean("count_429_as_error", p),
            threshold: slo.duration("threshold", p),
            alerts: slo.table("alerts", p).map(|a| {
                a.check_keys(SLO_ALERTS_KEYS, p);
                RawSloAlerts {
                    page: a.boolean("page", p),
                    ticket: a.boolean("ticket", p),
                    min_requests: a.integer("min_requests", p),
                    no_data: a.duration("no_data", p),
                }
            }),
            label: slo.label,
        });
    }
    Field::Given(Spanned::new(value.span(), slos))
}

fn read_restart_rules(t: &Table<'_, '_>, p: &mut Problems) -> Field<Vec<RawRestartRule>> {
    let Some(value) = t.map.get("restart_rules") else {
        return Field::Absent;
    };
    let DeValue::Array(items) = value.get_ref() else {
        t.wrong_type("restart_rules", "an array of tables", value, p);
        return Field::Invalid;
    };
    let path = format!("{}.restart_rules", t.path);
    let mut rules = Vec::new();
    for item in items.iter() {
        let DeValue::Table(map) = item.get_ref() else {
            p.push(
                item.span(),
                format!(
                    "each entry of `restart_rules` must be a table such as \
                     {{ exit_codes = [1], action = \"restart\" }}, found {}",
                    article(item.get_ref())
                ),
            );
            continue;
        };
        let rule = Table {
            map,
            span: item.span(),
            label: format!("[[{path}]]"),
            path: path.clone(),
        };
        rule.check_keys(RULE_KEYS, p);
        rules.push(RawRestartRule {
            span: rule.span.clone(),
            exit_codes: rule.integer_array("exit_codes", p),
            action: rule.string("action", p),
            label: rule.label,
        });
    }
    Field::Given(Spanned::new(value.span(), rules))
}

/// `env` values must be strings: environment variables are strings, and silently
/// turning `PORT = 8080` into `"8080"` would hide the `1e3` → `"1000.0"` surprises.
fn read_env(t: &Table<'_, '_>, p: &mut Problems) -> Field<Vec<(Spanned<String>, Spanned<String>)>> {
    let Some(value) = t.map.get("env") else {
        return Field::Absent;
    };
    let DeValue::Table(map) = value.get_ref() else {
        t.wrong_type("env", "a table of strings", value, p);
        return Field::Invalid;
    };
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut vars = Vec::new();
    for (key, v) in entries {
        let name = key.get_ref();
        match v.get_ref() {
            DeValue::String(s) => vars.push((
                Spanned::new(key.span(), name.to_string()),
                Spanned::new(v.span(), s.to_string()),
            )),
            scalar @ (DeValue::Integer(_)
            | DeValue::Float(_)
            | DeValue::Boolean(_)
            | DeValue::Datetime(_)) => {
                let shown = match scalar {
                    DeValue::Integer(i) => i.to_string(),
                    DeValue::Float(f) => f.to_string(),
                    DeValue::Boolean(b) => b.to_string(),
                    other => other
                        .as_datetime()
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                };
                p.push(
                    v.span(),
                    format!(
                        "`env.{name}` must be a string, found {}; quote it: {name} = \"{shown}\"",
                        article(scalar)
                    ),
                );
            }
            other => p.push(
                v.span(),
                format!("`env.{name}` must be a string, found {}", article(other)),
            ),
        }
    }
    Field::Given(Spanned::new(value.span(), vars))
}

fn read_probe(t: &Table<'_, '_>, p: &mut Problems) -> RawProbe {
    t.check_keys(PROBE_KEYS, p);
    let mut action_keys: Vec<Spanned<String>> = t
        .map
        .iter()
        .filter(|(k, _)| PROBE_ACTIONS.contains(&k.get_ref().as_ref()))
        .map(|(k, _)| Spanned::new(k.span(), k.get_ref().to_string()))
        .collect();
    action_keys.sort_by_key(|k| k.span().start);
    RawProbe {
        http: t.string("http", p),
        tcp: t.boolean("tcp", p),
        exec: t.string_array("exec", p),
        action_keys,
        period: t.duration("period", p),
        timeout: t.duration("timeout", p),
        initial_delay: t.duration("initial_delay", p),
        failure_threshold: t.integer("failure_threshold", p),
        success_threshold: t.integer("success_threshold", p),
        label: t.label.clone(),
    }
}

/// A TOML table being read, with what messages need to name it.
struct Table<'a, 'i> {
    map: &'a DeTable<'i>,
    span: Span,
    /// Dotted path, e.g. `services.web`; empty at the top level.
    path: String,
    /// How messages name it: `[services.web]`, `at the top level`.
    label: String,
}

impl<'a, 'i> Table<'a, 'i> {
    fn new(map: &'a DeTable<'i>, span: Span, path: String) -> Self {
        Table {
            map,
            span,
            label: format!("[{path}]"),
            path,
        }
    }

    /// Reports every key not in `known` (not just the first), at the key.
    fn check_keys(&self, known: &[&str], p: &mut Problems) {
        for key in self.map.keys() {
            let key_str: &str = key.get_ref();
            if known.contains(&key_str) {
                continue;
            }
            let place = if self.path.is_empty() {
                self.label.clone()
            } else {
                format!("in {}", self.label)
            };
            p.push(
                key.span(),
                format!(
                    "unknown field `{key_str}` {place}{}",
                    hint(key_str, known, "expected one of")
                ),
            );
        }
    }

    fn wrong_type(
        &self,
        key: &str,
        expected: &str,
        value: &Spanned<DeValue<'_>>,
        p: &mut Problems,
    ) {
        p.push(
            value.span(),
            format!(
                "`{key}` must be {expected}, found {}",
                article(value.get_ref())
            ),
        );
    }

    fn table(&self, key: &str, p: &mut Problems) -> Field<Table<'a, 'i>> {
        let Some(value) = self.map.get(key) else {
            return Field::Absent;
        };
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        match value.get_ref() {
            DeValue::Table(map) => Field::Given(Spanned::new(
                value.span(),
                Table::new(map, value.span(), path),
            )),
            _ => {
                self.wrong_type(key, &format!("a table ([{path}])"), value, p);
                Field::Invalid
            }
        }
    }

    fn string(&self, key: &str, p: &mut Problems) -> Field<String> {
        self.scalar(key, "a string", p, |v| v.as_str().map(str::to_owned))
    }

    /// Durations are strings in the file; parsing them is `validate`'s job, but the
    /// wrong-type message should already say what a duration looks like.
    fn duration(&self, key: &str, p: &mut Problems) -> Field<String> {
        self.scalar(key, DURATION, p, |v| v.as_str().map(str::to_owned))
    }

    fn boolean(&self, key: &str, p: &mut Problems) -> Field<bool> {
        self.scalar(key, "a boolean", p, |v| v.as_bool())
    }

    fn integer(&self, key: &str, p: &mut Problems) -> Field<i64> {
        let Some(value) = self.map.get(key) else {
            return Field::Absent;
        };
        match integer(value) {
            Some(Ok(i)) => Field::Given(Spanned::new(value.span(), i)),
            Some(Err(text)) => {
                p.push(
                    value.span(),
                    format!("`{key}` is out of range, found {text}"),
                );
                Field::Invalid
            }
            None => {
                self.wrong_type(key, "an integer", value, p);
                Field::Invalid
            }
        }
    }

    /// A float, or an integer taken as one (`multiplier = 2` means 2.0).
    fn number(&self, key: &str, p: &mut Problems) -> Field<f64> {
        let Some(value) = self.map.get(key) else {
            return Field::Absent;
        };
        let n = match value.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            // Precision loss above 2^53 is irrelevant: such a value fails range checks.
            DeValue::Integer(_) => match integer(value) {
                Some(Ok(i)) => Some(i as f64),
                _ => None,
            },
            _ => {
                self.wrong_type(key, "a number", value, p);
                return Field::Invalid;
            }
        };
        match n {
            Some(n) => Field::Given(Spanned::new(value.span(), n)),
            None => {
                p.push(value.span(), format!("`{key}` is not a valid number"));
                Field::Invalid
            }
        }
    }

    fn string_array(&self, key: &str, p: &mut Problems) -> Field<Vec<Spanned<String>>> {
        let Some(value) = self.map.get(key) else {
            return Field::Absent;
        };
        let DeValue::Array(items) = value.get_ref() else {
            let mut message = format!(
                "`{key}` must be an array of strings, found {}",
                article(value.get_ref())
            );
            // The most common slip: a command line written as one string.
            if let Some(s) = value.get_ref().as_str() {
                let words: Vec<String> = s.split_whitespace().map(|w| format!("{w:?}")).collect();
                if !words.is_empty() {
                    message.push_str(&format!("; write it as {key} = [{}]", words.join(", ")));
                }
            }
            p.push(value.span(), message);
            return Field::Invalid;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(s) => out.push(Spanned::new(item.span(), s.to_owned())),
                None => {
                    ok = false;
                    p.push(
                        item.span(),
                        format!(
                            "elements of `{key}` must be strings, found {}",
                            article(item.get_ref())
                        ),
                    );
                }
            }
        }
        if ok {
            Field::Given(Spanned::new(value.span(), out))
        } else {
            Field::Invalid
        }
    }

    fn integer_array(&self, key: &str, p: &mut Problems) -> Field<Vec<Spanned<i64>>> {
        let Some(value) = self.map.get(key) else {
            return Field::Absent;
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, "an array of integers", value, p);
            return Field::Invalid;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match integer(item) {
                Some(Ok(i)) => out.push(Spanned::new(item.span(), i)),
                Some(Err(text)) => {
                    ok = false;
                    p.push(
                        item.span(),
                        format!("element of `{key}` is out of range, found {text}"),
                    );
                }
                None => {
                    ok = false;
                    p.push(
                        item.span(),
                        format!(
                            "elements of `{key}` must be integers, found {}",
                            article(item.get_ref())
                        ),
                    );
                }
            }
        }
        if ok {
            Field::Given(Spanned::new(value.span(), out))
        } else {
            Field::Invalid
        }
    }

    fn scalar<T>(
        &self,
        key: &str,
        expected: &str,
        p: &mut Problems,
        get: impl FnOnce(&DeValue<'_>) -> Option<T>,
    ) -> Field<T> {
        let Some(value) = self.map.get(key) else {
            return Field::Absent;
        };
        match get(value.get_ref()) {
            Some(v) => Field::Given(Spanned::new(value.span(), v)),
            None => {
                self.wrong_type(key, expected, value, p);
                Field::Invalid
            }
        }
    }
}

/// `None` if not an integer; `Err(text)` if it does not fit an `i64` (toml leaves
/// that to the reader).
fn integer(value: &Spanned<DeValue<'_>>) -> Option<Result<i64, String>> {
    let i = value.get_ref().as_integer()?;
    Some(i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| i.to_string()))
}

/// "a string", "an integer", ...: the TOML type of a value, as a message says it.
pub(crate) fn article(value: &DeValue<'_>) -> String {
    let t = value.type_str();
    let an = t.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {t}", if an { "an" } else { "a" })
}

#[cfg(test)]
mod docs {
    use super::*;

    /// The README's key tables are the user's guide: every key the parser accepts must be
    /// in them, so the guide cannot fall behind the code.
    #[test]
    fn every_key_is_documented_in_the_readme() {
        let readme = include_str!("../../../README.md");
        let mut keys: Vec<&str> = vec![];
        keys.extend(SERVICE_KEYS);
        keys.extend(BACKOFF_KEYS);
        keys.extend(PROBE_KEYS);
        keys.extend(EXPOSE_KEYS);
        keys.extend(SLO_KEYS);
        keys.extend(SLO_ALERTS_KEYS);
        keys.extend(ALERTS_KEYS);
        keys.extend(SINK_KEYS);
        keys.extend(RULE_KEYS);
        keys.extend(API_KEYS);
        keys.extend(JOURNAL_KEYS);
        keys.extend(SUPERVISOR_KEYS);
        for (_, ks) in EXPOSE_TABLES.iter().chain(EXPOSE_ARRAYS) {
            keys.extend(*ks);
        }
        // A key counts as documented where it stands as a whole word next to the
        // punctuation the tables use: `key`, `table.key`, [services.NAME.table], key = ...
        let documented = |k: &str| {
            readme.match_indices(k).any(|(at, _)| {
                let before = readme[..at].chars().next_back().unwrap_or(' ');
                let after = readme[at + k.len()..].chars().next().unwrap_or(' ');
                "`.[ ".contains(before) && "`.] =".contains(after)
            })
        };
        let missing: Vec<&str> = keys.into_iter().filter(|k| !documented(k)).collect();
        assert!(
            missing.is_empty(),
            "README.md does not document: {missing:?}"
        );
    }
}
