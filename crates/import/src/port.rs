//! The container port, made per replica.
//!
//! In a container every replica can listen on the same port; on one host each bulwark
//! replica gets its own, substituted for `{port}` in `run`, `exec` and `env` and set in
//! `$PORT`. So wherever the container port is written in a command or an environment
//! value, the import writes `{port}` instead.

use crate::note::Notes;

/// `text` with each occurrence of `port` that stands alone, or follows `:`, `=` or a space,
/// replaced by `{port}`: `8000`, `--port=8000`, `0.0.0.0:8000`, `localhost:8000/health`, but
/// not `18000`, `8000x` or `v8000`. `None` when there is none.
pub(crate) fn substitute(text: &str, port: u16) -> Option<String> {
    let needle = port.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find(&needle) {
        let (before, tail) = rest.split_at(i);
        let after = &tail[needle.len()..];
        let prev = before
            .chars()
            .next_back()
            .or_else(|| out.chars().next_back());
        let next = after.chars().next();
        let starts = prev.is_none_or(|c| matches!(c, ':' | '=' | ' ' | '\t'));
        let ends = next.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '.' && c != '_');
        out.push_str(before);
        if starts && ends {
            out.push_str("{port}");
            changed = true;
        } else {
            out.push_str(&needle);
        }
        rest = after;
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Substitutes the container port in each of `words` (with their paths), noting each change.
/// Returns whether any word changed.
pub(crate) fn substitute_all(
    words: &mut [(String, String)],
    port: Option<u16>,
    notes: &mut Notes,
) -> bool {
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
            ("8000:8000", Some("{port}:{port}")),
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
