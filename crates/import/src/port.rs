//! The container port, made per replica.
//!
//! In a container every replica can listen on the same port; on one host each bulwark
//! replica gets its own, substituted for `{port}` in `run`, `exec` and `env` and set in
//! `$PORT`. So wherever the container port is written in a command or an environment
//! value, the import writes `{port}` instead.

use crate::note::Notes;

/// `text` with each occurrence of `port` that stands alone, follows `=` or a space, or
/// follows `:` after a host that is this one, replaced by `{port}`: `8000`, `--port=8000`,
/// `0.0.0.0:8000`, `localhost:8000/health`, `:8000`, but not `18000`, `8000x`, `v8000` or
/// another host's port, `http://api:8000`. `None` when there is none.
pub(crate) fn substitute(text: &str, port: u16) -> Option<String> {
    let needle = port.to_string();
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for (i, _) in text.match_indices(&needle) {
        let (before, after) = (&text[..i], &text[i + needle.len()..]);
        let starts = match before.chars().next_back() {
            None | Some('=' | ' ' | '\t') => true,
            Some(':') => {
                // `:8000` alone or after `=`, else after a host that is this one.
                let before_colon = &before[..before.len() - 1];
                match host_before(before_colon) {
                    "" => before_colon
                        .chars()
                        .next_back()
                        .is_none_or(|c| c == '=' || c.is_whitespace()),
                    host => is_local(host),
                }
            }
            Some(_) => false,
        };
        let ends = after
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '.' && c != '_');
        if starts && ends {
            out.push_str(&text[done..i]);
            out.push_str("{port}");
            done = i + needle.len();
        }
    }
    if done == 0 {
        return None;
    }
    out.push_str(&text[done..]);
    Some(out)
}

/// The host name or address that `text` ends with: `localhost` of `http://localhost`,
/// `[::]` of `--bind=[::]`.
fn host_before(text: &str) -> &str {
    let is_host =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':');
    let start = text
        .char_indices()
        .rev()
        .find(|(_, c)| !is_host(*c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &text[start..]
}

/// This host, in an address to listen on or to reach the replica at: `localhost`, the
/// loopback or every interface.
fn is_local(host: &str) -> bool {
    matches!(
        host,
        "localhost" | "127.0.0.1" | "0.0.0.0" | "[::]" | "::" | "[::1]" | "::1"
    )
}

/// Whether `text` names `host` followed by `:` and a port: `db:5432`, `postgres://u@db:5432`.
pub(crate) fn names_host_port(text: &str, host: &str) -> bool {
    text.match_indices(host).any(|(i, _)| {
        let (before, after) = (&text[..i], &text[i + host.len()..]);
        host_before(before).is_empty()
            && after
                .strip_prefix(':')
                .is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Bulwark's placeholders, which it substitutes in `run`, `exec` and `env` when it starts a
/// replica; there is no escape for them.
const PLACEHOLDERS: [&str; 4] = ["{port}", "{index}", "{service}", "{bulwark}"];

/// Substitutes the container port in each of `words` (with their paths), noting each change.
/// Returns whether any word changed. A word that holds one of bulwark's placeholders as
/// written in the source is noted first: bulwark would substitute it.
pub(crate) fn substitute_all(
    words: &mut [(String, String)],
    port: Option<u16>,
    notes: &mut Notes,
) -> bool {
    for (path, word) in words.iter() {
        let found: Vec<&str> = PLACEHOLDERS
            .into_iter()
            .filter(|p| word.contains(p))
            .collect();
        if !found.is_empty() {
            notes.changed(
                path.clone(),
                format!(
                    "`{word}` holds {}, which bulwark substitutes when it starts a replica (there \
                     is no escape)",
                    found.join(" and ")
                ),
            );
        }
    }
    let Some(port) = port else { return false };
    let mut any = false;
    for (path, word) in words.iter_mut() {
        if let Some(new) = substitute(word, port) {
            notes.changed(
                path.clone(),
                format!(
                    "`{word}` became `{new}`: each replica listens on its own port (also in $PORT)"
                ),
            );
            *word = new;
            any = true;
        }
    }
    any
}

/// [`substitute_all`] for one value: the value, and whether it changed.
pub(crate) fn substitute_one(
    path: String,
    value: String,
    port: Option<u16>,
    notes: &mut Notes,
) -> (String, bool) {
    let mut one = [(path, value)];
    let used = substitute_all(&mut one, port, notes);
    let [(_, value)] = one;
    (value, used)
}

#[cfg(test)]
mod tests {
    use super::substitute;

    #[test]
    fn the_port_is_replaced_where_it_stands_alone_or_after_a_separator() {
        for (text, want) in [
            ("8000", Some("{port}")),
            ("--port=8000", Some("--port={port}")),
            ("0.0.0.0:8000", Some("0.0.0.0:{port}")),
            (
                "http://localhost:8000/health",
                Some("http://localhost:{port}/health"),
            ),
            (
                "python3 -m http.server 8000",
                Some("python3 -m http.server {port}"),
            ),
            ("8000:8000", Some("{port}:8000")),
            (":8000", Some(":{port}")),
            ("--bind=:8000", Some("--bind=:{port}")),
            ("[::]:8000", Some("[::]:{port}")),
            (":::8000", Some(":::{port}")),
            ("--listen=[::1]:8000", Some("--listen=[::1]:{port}")),
            (
                "http://0.0.0.0:8000 and http://localhost:8000/",
                Some("http://0.0.0.0:{port} and http://localhost:{port}/"),
            ),
            ("http://api:8000", None),
            ("API_URL=http://api:8000/v1", None),
            ("postgres://u:p@db:8000/x", None),
            ("db.internal:8000", None),
            ("10.0.0.5:8000", None),
            ("http://$(HOST):8000", None),
            ("${HOST}:8000", None),
            ("18000", None),
            ("80001", None),
            ("8000x", None),
            ("v8000", None),
            ("8000.5", None),
            ("/data/8000", None),
            ("", None),
        ] {
            assert_eq!(substitute(text, 8000).as_deref(), want, "{text}");
        }
    }
}
