//! `[services.NAME.container]`: the paths it names exist, and a directory rootfs holds
//! the program `run` names.

use std::path::Path;

use crate::keys::ServiceTable;
use crate::keys::container::{Container, Mount, Network, is_tarball, parse_user, program_in};
use crate::problem::Problems;

pub(super) fn container(
    raw: &ServiceTable,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Container> {
    let table = raw.container.given()?;
    // Absolute: runc reads a relative rootfs or mount source against the bundle's
    // directory, not the one `up` started in (`up -f stack.toml`, `rootfs = "rootfs"`).
    // (`base_dir` is empty for a file named without a directory.)
    let base_dir =
        &std::env::current_dir().map_or_else(|_| base_dir.to_owned(), |d| d.join(base_dir));
    let t = table.get_ref();
    let rootfs = t
        .rootfs
        .given()
        .map(|r| (r.span(), base_dir.join(r.get_ref())));
    if let Some((span, path)) = &rootfs
        && p.reads_files()
        && let Err(why) = rootfs_problem(path, raw)
    {
        p.push(
            span.clone(),
            format!("container rootfs {}: {why}", path.display()),
        );
    }
    // Resolved against the stack file's directory, a relative `cwd` would name a host path.
    if let Some(cwd) = raw.cwd.given()
        && !cwd.get_ref().starts_with('/')
    {
        p.push(
            cwd.span(),
            format!(
                "`cwd` {:?} is relative, but with [container] it is a path inside the \
                 container: write it absolute (e.g. \"/app\")",
                cwd.get_ref()
            ),
        );
    }
    let mounts = t
        .mounts
        .value()
        .map(|list| {
            list.iter()
                .filter_map(|m| {
                    let source = base_dir.join(m.source.value()?);
                    if p.reads_files() && !source.exists() {
                        p.push(
                            m.source.span().unwrap_or_default(),
                            format!(
                                "mount source {} does not exist: create it, or fix the path \
                                 (relative to the stack file's directory)",
                                source.display()
                            ),
                        );
                    }
                    Some(Mount {
                        source,
                        target: m.target.get()?,
                        read_only: m.read_only.get().unwrap_or(true),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Container {
        rootfs: rootfs?.1,
        read_only: t.read_only.get().unwrap_or(true),
        mounts,
        user: t.user.value().and_then(|u| parse_user(u)),
        capabilities: t.capabilities.get().unwrap_or_default(),
        network: t.network.get().unwrap_or(Network::Host),
        init: t.init.get().unwrap_or(true),
    })
}

/// What is wrong with `rootfs` for running `run`'s program, in words that say what to do.
fn rootfs_problem(rootfs: &Path, raw: &ServiceTable) -> Result<(), String> {
    let text = rootfs.to_string_lossy();
    if is_tarball(&text) {
        return if rootfs.is_file() {
            Ok(())
        } else {
            Err("no such file: build the tarball first (README, \"Containers and resources\") or fix the path".into())
        };
    }
    if !rootfs.is_dir() {
        return Err(if rootfs.exists() {
            "is neither a directory nor a .tar, .tar.gz or .tgz file".into()
        } else {
            "no such directory: make a root file system there (README, \"Containers and \
             resources\": copy the program and the libraries `ldd` names, or `podman export`, \
             or debootstrap) or fix the path (relative to the stack file's directory)"
                .into()
        });
    }
    let Some(program) = raw.run.value().and_then(|r| r.first()) else {
        return Ok(());
    };
    // A substituted program (`{bulwark}`) names a host path; it cannot be checked here.
    if program.contains('{') || program_in(rootfs, program).is_some() {
        return Ok(());
    }
    Err(format!(
        "has no program {program:?} (`run`'s first word, looked up inside the rootfs{}): \
         copy it (and the libraries `ldd` names) into the rootfs",
        if program.contains('/') {
            ""
        } else {
            " in /usr/local/bin, /usr/bin, /bin and the sbin directories"
        }
    ))
}
