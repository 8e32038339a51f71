//! `[services.NAME.expose.fallback]` and `[switches]`: what a fallback answers with (its
//! body file read here, at load time), that its service exists, and that every switch a
//! route names is declared.

use std::path::Path;

use toml::Spanned;

use super::service::Checked;
use crate::keys::{FallbackTable, MAX_FALLBACK_BODY, ServiceTable, SwitchTable};
use crate::model::{Fallback, FallbackAnswer, Protocol, Stale, Switch};
use crate::problem::{Problems, suggest};
use crate::schema::Field;

type Named<T> = (Spanned<String>, Spanned<T>);

/// `[switches.NAME]`, in file order.
pub(super) fn switches(raw: &Field<Vec<Named<SwitchTable>>>, p: &mut Problems) -> Vec<Switch> {
    let mut out = Vec::new();
    for (name, table) in raw.value().into_iter().flatten() {
        let n = name.get_ref();
        if !super::service::valid_name(n) {
            p.push(
                name.span(),
                format!(
                    "invalid switch name `{n}`: a name starts with an ASCII letter and \
                     contains only ASCII letters, digits, `-` and `_`"
                ),
            );
            continue;
        }
        let t = table.get_ref();
        if let (Some(default), Some(doc)) = (t.default.get(), t.doc.get().or(Some(String::new()))) {
            out.push(Switch {
                name: n.clone(),
                default,
                doc,
            });
        }
    }
    out
}

/// Builds each exposed service's fallback into `checked` (same order as `services`) and
/// checks the switches its routes name.
pub(super) fn fallbacks(
    services: &[Named<ServiceTable>],
    checked: &mut [Checked],
    switches: &[Switch],
    base_dir: &Path,
    p: &mut Problems,
) {
    let names: Vec<String> = services.iter().map(|(n, _)| n.get_ref().clone()).collect();
    for ((name, raw), c) in services.iter().zip(checked.iter_mut()) {
        let Some(expose) = raw.get_ref().expose.value() else {
            continue;
        };
        let fallback = expose.fallback.given().and_then(|f| {
            if expose.protocol.get() == Some(Protocol::Tcp) {
                return p.fail(
                    f.span(),
                    format!(
                        "{} applies to HTTP only (protocol = \"tcp\")",
                        f.get_ref().label
                    ),
                );
            }
            fallback(f.get_ref(), name.get_ref(), &names, base_dir, p)
        });
        for route in expose.routes.value().into_iter().flatten() {
            let Some(switch) = route.switch.given() else {
                continue;
            };
            let s = switch.get_ref();
            if !switches.iter().any(|w| w.name == *s) {
                let hint = suggest(s, switches.iter().map(|w| w.name.as_str()))
                    .map(|m| format!("did you mean `{m}`? Or "))
                    .unwrap_or_default();
                p.push(
                    switch.span(),
                    format!(
                        "{}: unknown switch `{s}`; {hint}declare it with a [switches.{s}] table",
                        route.label
                    ),
                );
            } else if !expose.fallback.is_present() {
                p.push(
                    switch.span(),
                    format!(
                        "{}: a route with `switch` sends the requests it turns away to the \
                         service's fallback; add [services.{}.expose.fallback]",
                        route.label,
                        name.get_ref()
                    ),
                );
            }
        }
        if let Some(e) = c.service.expose.as_mut() {
            e.fallback = fallback;
        }
    }
}

/// One fallback: exactly one of a static answer and `service`, or neither with `stale`.
fn fallback(
    raw: &FallbackTable,
    own: &str,
    names: &[String],
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Fallback> {
    let statics = raw.status.is_present()
        || raw.headers.is_present()
        || raw.body.is_present()
        || raw.body_file.is_present();
    if raw.service.is_present() && statics {
        return p.fail(
            raw.span.clone(),
            format!(
                "{}: `service` forwards elsewhere, so `status`, `headers`, `body` and \
                 `body_file` would never be sent; keep one or the other",
                raw.label
            ),
        );
    }
    let answer = match raw.service.given() {
        Some(s) => Some(FallbackAnswer::Service(target(s, own, names, raw, p)?)),
        None if statics => Some(static_answer(raw, base_dir, p)?),
        None => None,
    };
    let stale = match raw.stale.get()? {
        true => Some(Stale {
            max_entries: raw.stale_max_entries.get()?,
            max_bytes: raw.stale_max_bytes.get()?,
            max_entry_bytes: raw
                .stale_max_entry_bytes
                .get()?
                .min(raw.stale_max_bytes.get()?),
            max_age: raw.stale_max_age.get()?,
        }),
        false => None,
    };
    if answer.is_none() && stale.is_none() {
        return p.fail(
            raw.span.clone(),
            format!(
                "{} gives no answer: add a static one (`status`, `body` or `body_file`), \
                 `service = \"NAME\"`, or `stale = true`",
                raw.label
            ),
        );
    }
    Some(Fallback { answer, stale })
}

/// `service` names another service of the stack.
fn target(
    s: &Spanned<String>,
    own: &str,
    names: &[String],
    raw: &FallbackTable,
    p: &mut Problems,
) -> Option<String> {
    let name = s.get_ref();
    if name == own {
        return p.fail(
            s.span(),
            format!("{}: a service cannot be its own fallback", raw.label),
        );
    }
    if !names.contains(name) {
        let hint = suggest(name, names.iter().map(String::as_str))
            .map(|m| format!("; did you mean `{m}`?"))
            .unwrap_or_default();
        return p.fail(
            s.span(),
            format!(
                "{}: service = \"{name}\" is not a service of this stack{hint}",
                raw.label
            ),
        );
    }
    Some(name.clone())
}

/// `status`, `headers` and one of `body` and `body_file` (read now, bounded).
fn static_answer(raw: &FallbackTable, base_dir: &Path, p: &mut Problems) -> Option<FallbackAnswer> {
    let body = match (&raw.body, &raw.body_file) {
        (Field::Given(_), Field::Given(f)) => {
            return p.fail(
                f.span(),
                format!("{}: give `body` or `body_file`, not both", raw.label),
            );
        }
        (_, Field::Given(f)) => read_body_file(f, base_dir, &raw.label, p)?,
        (Field::Given(b), _) => {
            if b.get_ref().len() as u64 > MAX_FALLBACK_BODY {
                return p.fail(
                    b.span(),
                    format!("{}: `body` is larger than 1 MiB", raw.label),
                );
            }
            b.get_ref().clone().into_bytes()
        }
        (Field::Invalid, _) | (_, Field::Invalid) => return None,
        _ => Vec::new(),
    };
    let mut headers = Vec::new();
    for (name, value) in raw.headers.value().into_iter().flatten() {
        let n = name.get_ref().to_ascii_lowercase();
        if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
            p.push(
                name.span(),
                format!("{}: `{n}` is not a valid header name", raw.label),
            );
        } else if http::HeaderValue::from_str(value.get_ref()).is_err() {
            p.push(
                value.span(),
                format!(
                    "{}: the value of header `{n}` holds characters a header cannot carry",
                    raw.label
                ),
            );
        } else {
            headers.push((n, value.get_ref().clone()));
        }
    }
    Some(FallbackAnswer::Static {
        status: match &raw.status {
            Field::Absent => 503,
            s => s.get()?,
        },
        headers,
        body,
    })
}

/// The file's bytes; a missing, unreadable or too large file is a problem naming it.
fn read_body_file(
    file: &Spanned<String>,
    base_dir: &Path,
    label: &str,
    p: &mut Problems,
) -> Option<Vec<u8>> {
    use crate::file::FileError;
    if !p.reads_files() {
        return Some(Vec::new());
    }
    let path = base_dir.join(file.get_ref());
    let shown = path.display();
    let why = match crate::file::read_bounded(&path, MAX_FALLBACK_BODY, false) {
        Ok(bytes) => return Some(bytes),
        Err(FileError::Grew) => format!("{label}: body_file {shown} grew past 1 MiB"),
        Err(FileError::Io(e)) => format!("{label}: cannot read body_file {shown}: {e}"),
        Err(FileError::NotRegular(what)) => {
            format!("{label}: cannot read body_file {shown}: it is {what}, not a regular file")
        }
        Err(FileError::TooLarge(len)) => format!(
            "{label}: cannot read body_file {shown}: it holds {len} bytes, more than the 1 MiB \
             a fallback body may have"
        ),
        Err(FileError::OpenToOthers(mode)) => {
            format!("{label}: cannot read body_file {shown}: mode {mode:03o} is refused")
        }
    };
    p.fail(file.span(), why)
}
