//! Commands: a YAML string or list as program arguments, and health checks that are an
//! HTTP GET in disguise (`curl -f http://localhost:8000/health`).

use crate::fields::index;
use crate::note::Notes;
use crate::port;
use crate::stack::ProbeAction;
use crate::yaml::Node;

/// Words of a command, each with the path of the field it came from.
pub(crate) type Words = Vec<(String, String)>;

/// The words of a command with the path of each: a list item by item, a string split as a
/// shell would split it (as Compose does; no shell runs it). `Err` says why not.
pub(crate) fn words(node: &Node, path: &str) -> Result<Words, String> {
    if let Some(items) = node.as_seq() {
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(|w| (index(path, i), w.to_owned()))
                    .ok_or_else(|| {
                        format!(
                            "item {i} must be a string, found {}; the whole command is dropped",
                            item.describe()
                        )
                    })
            })
            .collect();
    }
    let Some(text) = node.as_str() else {
        return Err(format!(
            "expected a string or a list of strings, found {}",
            node.describe()
        ));
    };
    shell_words::split(text)
        .map(|ws| ws.into_iter().map(|w| (path.to_owned(), w)).collect())
        .map_err(|e| format!("cannot split {text:?} into words: {e}"))
}

/// A container's working directory (`working_dir`, `workingDir`) as `cwd`: the command runs
/// in the same path on the host, noted. `None` (noted) when it is not a directory name.
pub(crate) fn cwd(node: &Node, path: &str, notes: &mut Notes) -> Option<String> {
    match node.as_str() {
        Some(d) if !d.is_empty() && !d.contains('\0') => {
            notes.changed(
                path,
                format!(
                    "{d:?} is a directory in the container; the command runs there on the host \
                     (`cwd`), so it must exist"
                ),
            );
            Some(d.to_owned())
        }
        _ => {
            notes.not_carried(
                path,
                format!("expected a directory, found {}", node.describe()),
            );
            None
        }
    }
}

/// A probe's command (a Compose healthcheck's `test`, a Kubernetes `exec`) as a probe: an
/// HTTP GET of the replica's port when that is all it does, else the command with the
/// container `port` made per replica. `None` (noted at `path`) when it cannot run.
pub(crate) fn exec_probe(
    mut argv: Words,
    path: &str,
    port: Option<u16>,
    notes: &mut Notes,
) -> Option<ProbeAction> {
    if argv.first().is_none_or(|(_, w)| w.is_empty()) {
        notes.not_carried(path, "the command names no program");
        return None;
    }
    let plain: Vec<String> = argv.iter().map(|(_, w)| w.clone()).collect();
    if let Some(get) = http_get_path(&plain, port) {
        notes.changed(
            path,
            format!(
                "`{}` became http = {get:?}: bulwark sends the GET itself (healthy on 200–399), \
                 no curl or wget needed on the host",
                display(&plain)
            ),
        );
        return Some(ProbeAction::Http(get));
    }
    if plain.iter().any(|w| w.contains('\0')) {
        notes.not_carried(path, "a command cannot hold a NUL character");
        return None;
    }
    port::substitute_all(&mut argv, port, notes);
    Some(ProbeAction::Exec(
        argv.into_iter().map(|(_, w)| w).collect(),
    ))
}

/// The path a probe command GETs, when the command is only a `curl -f` or `wget` of
/// `http://localhost:PORT/PATH` (or 127.0.0.1), optionally through `sh -c` and with
/// `|| exit 1`. `port` is the container port: a GET of another port is not the replica's.
fn http_get_path(argv: &[String], port: Option<u16>) -> Option<String> {
    let port = port?;
    let words = match argv {
        [sh, c, script] if is_shell(sh) && c == "-c" => shell_script_words(script)?,
        _ => argv.to_vec(),
    };
    let (program, args) = words.split_first()?;
    let name = program.rsplit('/').next().unwrap_or(program);
    let url = match name {
        "curl" => curl_url(args)?,
        "wget" => wget_url(args)?,
        _ => return None,
    };
    local_path(url, port)
}

/// A command as a user would write it: the script of `sh -c SCRIPT`, else the words quoted
/// for a shell.
fn display(argv: &[String]) -> String {
    match argv {
        [sh, c, script] if is_shell(sh) && c == "-c" => script.clone(),
        _ => shell_words::join(argv),
    }
}

fn is_shell(program: &str) -> bool {
    matches!(
        program,
        "sh" | "/bin/sh" | "bash" | "/bin/bash" | "/usr/bin/sh" | "/usr/bin/bash"
    )
}

/// A script that is one simple command, maybe followed by `|| exit 1`.
fn shell_script_words(script: &str) -> Option<Vec<String>> {
    let mut words = shell_words::split(script).ok()?;
    if let [.., or, exit] = words.as_slice()
        && or == "||"
        && exit == "exit"
    {
        words.truncate(words.len() - 2);
    } else if let [.., or, exit, code] = words.as_slice()
        && or == "||"
        && exit == "exit"
        && code.bytes().all(|b| b.is_ascii_digit())
    {
        words.truncate(words.len() - 3);
    }
    let operators = ["|", "||", "&&", ";", "&", ">", "<", ">>", "2>", "2>&1"];
    if words
        .iter()
        .any(|w| operators.contains(&w.as_str()) || w.contains(['$', '`', ';', '|', '&']))
    {
        return None;
    }
    Some(words)
}

/// The URL of `curl ARGS` when curl fails on HTTP errors (`-f`) and nothing else it is told
/// changes what a GET checks.
fn curl_url(args: &[String]) -> Option<&str> {
    let mut url = None;
    let mut fail = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" | "--fail" | "--fail-with-body" => fail = true,
            "-s" | "--silent" | "-S" | "--show-error" | "-L" | "--location" | "-q" => {}
            "-o" | "--output" | "-m" | "--max-time" | "--connect-timeout" => {
                it.next()?;
            }
            flags if flags.starts_with('-') && !flags.starts_with("--") => {
                // Combined short flags: `-fsS`, `-sf`.
                let letters = &flags[1..];
                if letters.is_empty() || !letters.chars().all(|c| "fsSLq".contains(c)) {
                    return None;
                }
                fail |= letters.contains('f');
            }
            u if url.is_none() && !u.starts_with('-') => url = Some(u),
            _ => return None,
        }
    }
    fail.then_some(url?)
}

/// The URL of `wget ARGS` (wget fails on HTTP errors by itself).
fn wget_url(args: &[String]) -> Option<&str> {
    let mut url = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-q" | "--quiet" | "--spider" | "-nv" | "--no-verbose" | "-O-" | "-qO-" => {}
            "-O" | "-qO" | "-T" => {
                it.next()?;
            }
            o if o.starts_with("--tries=")
                || o.starts_with("--timeout=")
                || o.starts_with("--output-document=") => {}
            u if url.is_none() && !u.starts_with('-') => url = Some(u),
            _ => return None,
        }
    }
    url
}

/// The path of `http://localhost:PORT/PATH` when PORT is `port`.
fn local_path(url: &str, port: u16) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, url_port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (h, p.parse::<u16>().ok()?),
        _ => (authority, 80),
    };
    let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "0.0.0.0");
    if !local || url_port != port {
        return None;
    }
    Some(match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    })
}

/// Compose's own `$$` escape undone, and whether `${VAR}` or `$VAR` remain: Compose
/// substitutes those from the shell and `.env` when it reads the file, which an import
/// cannot do.
pub(crate) fn compose_dollars(text: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut variables = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            match chars.peek() {
                Some('$') => {
                    chars.next();
                }
                Some(n) if *n == '{' || *n == '_' || n.is_ascii_alphabetic() => variables = true,
                _ => {}
            }
        }
        out.push(c);
    }
    (out, variables)
}

/// Why a Compose field read as a value (a port, a duration, a count, a signal) cannot be
/// read: it holds `${VAR}` or `$VAR`, which Compose substitutes from the shell and `.env`
/// when it reads the file. `None` when it holds no variable. A mapping (the long syntax of
/// `ports`) is looked into.
pub(crate) fn compose_variable(node: &Node) -> Option<String> {
    if let Some(entries) = node.as_map() {
        return entries.iter().find_map(|(_, v)| compose_variable(v));
    }
    let text = node.as_str()?;
    compose_dollars(text).1.then(|| {
        format!(
            "{text:?} holds a variable, which Compose substitutes from the shell and .env when it \
             reads the file; the import cannot: write the value"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn http_checks_become_paths() {
        let sh = |s: &str| argv(&["sh", "-c", s]);
        for (cmd, want) in [
            (
                argv(&["curl", "-f", "http://localhost:8000/health"]),
                Some("/health"),
            ),
            (argv(&["curl", "-fsS", "http://127.0.0.1:8000"]), Some("/")),
            (
                argv(&[
                    "/usr/bin/curl",
                    "--fail",
                    "-s",
                    "-o",
                    "/dev/null",
                    "http://localhost:8000/?x=1",
                ]),
                Some("/?x=1"),
            ),
            (
                sh("curl -f http://localhost:8000/ready || exit 1"),
                Some("/ready"),
            ),
            (sh("curl -f http://localhost:8000/ || exit"), Some("/")),
            (
                argv(&["wget", "-q", "--spider", "http://localhost:8000/healthz"]),
                Some("/healthz"),
            ),
            (
                sh("wget -qO- http://localhost:8000/healthz || exit 1"),
                Some("/healthz"),
            ),
            // curl without -f succeeds on a 500: not the same check.
            (argv(&["curl", "http://localhost:8000/"]), None),
            (argv(&["curl", "-f", "http://localhost:9000/"]), None),
            (argv(&["curl", "-f", "http://db:8000/"]), None),
            (argv(&["curl", "-f", "https://localhost:8000/"]), None),
            (
                argv(&["curl", "-f", "-H", "Host: x", "http://localhost:8000/"]),
                None,
            ),
            (sh("curl -f http://localhost:8000/ && touch /tmp/ok"), None),
            (sh("curl -f http://localhost:$PORT/"), None),
            (argv(&["redis-cli", "ping"]), None),
            (argv(&[]), None),
        ] {
            assert_eq!(http_get_path(&cmd, Some(8000)).as_deref(), want, "{cmd:?}");
        }
        assert_eq!(
            http_get_path(&argv(&["curl", "-f", "http://localhost/"]), Some(80)).as_deref(),
            Some("/")
        );
        assert_eq!(
            http_get_path(&argv(&["curl", "-f", "http://localhost/"]), None),
            None
        );
    }

    #[test]
    fn compose_dollars_are_unescaped_and_variables_reported() {
        assert_eq!(
            compose_dollars("echo $$HOME"),
            ("echo $HOME".to_owned(), false)
        );
        assert_eq!(
            compose_dollars("--port ${PORT:-8000}"),
            ("--port ${PORT:-8000}".to_owned(), true)
        );
        assert_eq!(compose_dollars("$USER"), ("$USER".to_owned(), true));
        assert_eq!(compose_dollars("costs 5$"), ("costs 5$".to_owned(), false));
    }
}
