//! `bulwark completions SHELL` and `bulwark man`: each script, loaded into the real shell,
//! completes the real CLI, and the man page renders with `man`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::harness::BULWARK;

/// `bulwark ARGS`, which must succeed; its standard output.
fn bulwark(args: &[&str]) -> String {
    let out = Command::new(BULWARK).args(args).output().unwrap();
    success(&format!("bulwark {args:?}"), &out)
}

fn success(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: {}: {stderr}", out.status);
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// What `bulwark ARGS` writes, saved as `name` in a temp dir that also serves as the
/// shells' home (fish and zsh write nothing outside it); both go when this is dropped.
struct Generated {
    dir: TempDir,
    path: PathBuf,
}

impl Generated {
    fn new(args: &[&str], name: &str) -> Generated {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bulwark(args)).unwrap();
        Generated { dir, path }
    }

    /// Runs `cmd` with its home in the temp dir; its standard output.
    fn run(&self, cmd: &mut Command) -> String {
        let home = self.dir.path();
        let out = cmd
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .output()
            .unwrap();
        success(&format!("{cmd:?}"), &out)
    }
}

/// The words bash's completion function offers with the cursor at the end of `line`.
fn bash_complete(script: &Generated, line: &str) -> Vec<String> {
    // What bash sets before it calls a completion function, then the call as `complete -F`
    // makes it: the command, the word being completed, the word before it.
    let call = r#"source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
_bulwark bulwark "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    // A trailing space leaves an empty last word: the word being completed.
    let words = line.split(' ');
    script
        .run(
            Command::new("bash")
                .args(["--norc", "--noprofile", "-c", call, "bash"])
                .arg(&script.path)
                .args(words),
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn completions_bash_completes_subcommands_and_shells() {
    let script = Generated::new(&["completions", "bash"], "bulwark.bash");
    // The stressor processes of chaos experiments are not a command anyone types.
    assert_eq!(bash_complete(&script, "bulwark ch"), ["check", "chaos"]);
    let shells = bash_complete(&script, "bulwark completions ");
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|w| w == shell), "{shell} in {shells:?}");
    }
    assert_eq!(bash_complete(&script, "bulwark slo r"), ["rules"]);
}

#[test]
fn completions_fish_completes_subcommands() {
    let script = Generated::new(&["completions", "fish"], "bulwark.fish");
    let out = script.run(
        Command::new("fish")
            .args([
                "--no-config",
                "-c",
                r#"source $argv[1]; complete -C "bulwark ch""#,
            ])
            .arg(&script.path),
    );
    // Each candidate is printed as `word<TAB>description`.
    let words: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(words, ["chaos", "check"], "{out}");
}

#[test]
fn completions_zsh_parses_and_registers_with_compinit() {
    // compinit finds `_bulwark` on $fpath by its `#compdef bulwark` line; -D writes no dump.
    let script = Generated::new(&["completions", "zsh"], "_bulwark");
    script.run(Command::new("zsh").arg("-n").arg(&script.path));
    let load = r#"fpath=("$1" $fpath); autoload -Uz compinit && compinit -u -D &&
autoload +X _bulwark && print -r -- "$_comps[bulwark] / $(whence -w _bulwark)""#;
    let out = script.run(
        Command::new("zsh")
            .args(["-f", "-c", load, "zsh"])
            .arg(script.dir.path()),
    );
    assert_eq!(out.trim(), "_bulwark / _bulwark: function");
}

#[test]
fn completions_for_an_unknown_shell_name_the_accepted_ones() {
    let out = Command::new(BULWARK)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
    assert!(
        stderr.contains("[possible values: bash, zsh, fish]"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// `man -l FILE`, wide enough that no line wraps.
fn render_man(page: &Generated, file: &Path) -> String {
    page.run(
        Command::new("man")
            .arg("-l")
            .arg(file)
            .env("MANWIDTH", "250")
            .env("MANPAGER", "cat"),
    )
}

#[test]
fn completions_man_page_renders_with_every_subcommand() {
    let page = Generated::new(&["man"], "bulwark.1");
    let text = render_man(&page, &page.path);
    assert!(
        text.contains("NAME\n       bulwark - A self-healing runtime"),
        "{text}"
    );
    for sub in ["up", "check", "status", "slo", "completions", "man"] {
        assert!(text.contains(&format!("bulwark-{sub}(1)")), "{sub}: {text}");
    }
    assert!(!text.contains("bulwark-help"), "{text}");

    // --out DIR: the main page and one per subcommand, nested ones included.
    let dir = page.dir.path().join("man1");
    let wrote = bulwark(&["man", "--out", dir.to_str().unwrap()]);
    for name in ["bulwark.1", "bulwark-check.1", "bulwark-slo-rules.1"] {
        let file = dir.join(name);
        assert!(
            wrote.contains(&format!("wrote {}\n", file.display())),
            "{wrote}"
        );
        assert!(render_man(&page, &file).contains("NAME\n"), "{name}");
    }
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(pages, wrote.lines().count());
    assert_eq!(
        std::fs::read_to_string(dir.join("bulwark.1")).unwrap(),
        std::fs::read_to_string(&page.path).unwrap()
    );
}

/// `bulwark completions bash | head -1`: the output helper ends quietly, as other commands do.
#[test]
fn completions_and_man_to_a_closed_pipe_end_quietly() {
    for args in [&["completions", "bash"][..], &["man"]] {
        let mut child = Command::new(BULWARK)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the command has printed anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {}: {stderr}", out.status);
    }
}
