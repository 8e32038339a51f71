//! A service's environment: `env_files`, then `env`, and `secrets` apart. The files are
//! read here, when the stack is loaded, so a missing or unsafe file is a located error of
//! `bulwark check` and of `up`/`reload` rather than a replica that fails to start.
//!
//! Nothing here puts a secret's value into a message: errors name the variable and the
//! file, never the content (an env file's lines are cited by number for the same reason:
//! people keep passwords in `.env` files too).

use std::collections::BTreeMap;

use std::path::Path;

use toml::Spanned;

use crate::file::{FileError, read_bounded};
use crate::keys::ServiceTable;
use crate::model::{MIN_REDACTED, Secret};
use crate::problem::Problems;
use crate::schema::Field;

/// An env file is held in memory while it is parsed.
const MAX_ENV_FILE: u64 = 1024 * 1024;
/// Linux refuses an environment string over 128 KiB (`MAX_ARG_STRLEN`) at exec, so a
/// larger secret could never reach the replica.
const MAX_SECRET: u64 = 64 * 1024;

/// The service's environment (`env_files` then `env`) and its secrets.
pub(super) fn environment(
    raw: &ServiceTable,
    base_dir: &Path,
    p: &mut Problems,
) -> (BTreeMap<String, String>, BTreeMap<String, Secret>) {
    let mut env = BTreeMap::new();
    for file in raw.env_files.value().into_iter().flatten() {
        env.extend(env_file(file, base_dir, p));
    }
    let from_files: Vec<String> = env.keys().cloned().collect();
    env.extend(explicit(&raw.env, p));
    let mut secrets = BTreeMap::new();
    for (name, file) in raw.secrets.value().into_iter().flatten() {
        let n = name.get_ref();
        if let Err(why) = valid_name(n) {
            p.push(name.span(), format!("invalid secret name {n:?}: {why}"));
            continue;
        }
        if env.contains_key(n) {
            let from = if from_files.contains(n) && !has_key(&raw.env, n) {
                "a file of `env_files`"
            } else {
                "`env`"
            };
            p.push(
                name.span(),
                format!(
                    "`secrets.{n}` is also set by {from}: a variable comes from one place; \
                     remove one of them"
                ),
            );
            continue;
        }
        if let Some(value) = secret(n, file, base_dir, p) {
            if value.len() < MIN_REDACTED && p.reads_files() {
                p.warn(
                    name.span(),
                    format!(
                        "`secrets.{n}` is shorter than {MIN_REDACTED} bytes: too short to tell \
                         apart from ordinary text, so it is not redacted from replica output"
                    ),
                );
            }
            secrets.insert(n.clone(), Secret::new(value));
        }
    }
    (env, secrets)
}

fn has_key(field: &Field<Vec<(Spanned<String>, Spanned<String>)>>, name: &str) -> bool {
    field
        .value()
        .is_some_and(|v| v.iter().any(|(n, _)| n.get_ref() == name))
}

fn valid_name(n: &str) -> Result<(), &'static str> {
    if n.is_empty() || n.contains(['=', '\0']) {
        Err("it must be non-empty and contain neither `=` nor a NUL character")
    } else {
        Ok(())
    }
}

/// `env`: names must be non-empty and hold neither `=` nor NUL (the reader refused a NUL
/// in a value, as in every string).
fn explicit(
    field: &Field<Vec<(Spanned<String>, Spanned<String>)>>,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in field.value().into_iter().flatten() {
        let n = name.get_ref();
        if let Err(why) = valid_name(n) {
            p.push(
                name.span(),
                format!("invalid environment variable name {n:?}: {why}"),
            );
        } else {
            out.insert(n.clone(), value.get_ref().clone());
        }
    }
    out
}

/// The variables of one env file; problems point at its entry in `env_files`.
fn env_file(file: &Spanned<String>, base_dir: &Path, p: &mut Problems) -> Vec<(String, String)> {
    if !p.reads_files() {
        return Vec::new();
    }
    let path = base_dir.join(file.get_ref());
    let text = read(&path, MAX_ENV_FILE, false).and_then(|bytes| {
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
    });
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            p.push(file.span(), format!("`env_files`: {e}"));
            return Vec::new();
        }
    };
    match dotenv(&text) {
        Ok(vars) => vars,
        Err((line, why)) => {
            p.push(
                file.span(),
                format!("`env_files`: {} line {line}: {why}", path.display()),
            );
            Vec::new()
        }
    }
}

/// A secret's value: the file's content without trailing newlines.
fn secret(name: &str, file: &Spanned<String>, base_dir: &Path, p: &mut Problems) -> Option<String> {
    if !p.reads_files() {
        return Some(String::new());
    }
    let path = base_dir.join(file.get_ref());
    let value = read(&path, MAX_SECRET, true).and_then(|bytes| {
        let mut text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        text.truncate(text.trim_end_matches(['\n', '\r']).len());
        if text.is_empty() {
            Err(format!("{} is empty", path.display()))
        } else if text.contains('\0') {
            Err(format!(
                "{} holds a NUL character, which an environment variable cannot carry",
                path.display()
            ))
        } else {
            Ok(text)
        }
    });
    value
        .map_err(|e| p.push(file.span(), format!("`secrets.{name}`: {e}")))
        .ok()
}

/// Reads a regular file of at most `limit` bytes ([`read_bounded`]), each refusal said
/// with the file's name. `private`: a secret, readable by its owner only.
fn read(path: &Path, limit: u64, private: bool) -> Result<Vec<u8>, String> {
    let shown = path.display();
    read_bounded(path, limit, private).map_err(|e| match e {
        FileError::Io(e) => format!("cannot read {shown}: {e}"),
        FileError::NotRegular(what) => format!("{shown} is {what}, not a regular file"),
        FileError::OpenToOthers(mode) => format!(
            "{shown} is open to its group or others (mode {mode:03o}); a secret must be \
             readable by its owner only: run `chmod 600 {shown}`"
        ),
        FileError::TooLarge(len) => format!(
            "{shown} holds {len} bytes, more than the {} KiB allowed",
            limit / 1024
        ),
        FileError::Grew => format!("{shown} grew past {} KiB while read", limit / 1024),
    })
}

/// The dotenv format as Docker Compose reads it, one variable a line: `KEY=VALUE`, blank
/// lines and `#` comments skipped, an optional `export ` before the key. A value in double
/// quotes knows `\n`, `\t`, `\"` and `\\`; in single quotes it is taken as written;
/// unquoted, it is trimmed and a ` #` starts a comment. The error is (line, why).
pub(super) fn dotenv(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let at = |why: &str| (i + 1, why.to_owned());
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| at("expected KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '\0') {
            return Err(at("the name before `=` must be non-empty, without spaces"));
        }
        let value = dotenv_value(value.trim_start()).map_err(at)?;
        if value.contains('\0') {
            return Err(at("a value must not contain a NUL character"));
        }
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn dotenv_value(v: &str) -> Result<String, &'static str> {
    let (value, rest) = if let Some(body) = v.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("a double quote is not closed on its line"),
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, c)) => value.push(c),
                    None => return Err("a double quote is not closed on its line"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        (value, &body[end..])
    } else if let Some(body) = v.strip_prefix('\'') {
        let end = body
            .find('\'')
            .ok_or("a single quote is not closed on its line")?;
        (body[..end].to_owned(), &body[end + 1..])
    } else {
        let value = match v.find(" #").or_else(|| v.find("\t#")) {
            Some(i) => &v[..i],
            None => v,
        };
        return Ok(value.trim_end().to_owned());
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(value)
    } else {
        Err("only a `#` comment may follow a quoted value")
    }
}

#[cfg(test)]
mod tests {
    use super::dotenv;

    #[test]
    fn dotenv_reads_what_compose_reads() {
        let text = "# a comment\n\nA=1\nexport B = two words \nC=\"x\\ny # not a comment\"  # one\n\
                    D='lit\\n'\nE=a #comment\nF=\nG=p#q\n";
        let vars = dotenv(text).unwrap();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("x\ny # not a comment"));
        assert_eq!(get("D"), Some("lit\\n"));
        assert_eq!(get("E"), Some("a"));
        assert_eq!(get("F"), Some(""));
        assert_eq!(get("G"), Some("p#q"));
    }

    #[test]
    fn dotenv_errors_name_the_line() {
        assert_eq!(dotenv("A=1\nnope\n").unwrap_err().0, 2);
        assert_eq!(dotenv("\n\nA=\"open\n").unwrap_err().0, 3);
        assert_eq!(dotenv("A='x' y\n").unwrap_err().0, 1);
        assert_eq!(dotenv("=x\n").unwrap_err().0, 1);
    }
}
