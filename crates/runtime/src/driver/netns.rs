//! A container replica's private network (`network = "private"`): a network namespace of
//! its own, with its loopback up and one veth link to the host, each end addressed from
//! a /30 of [`SUBNET`].
//!
//! The namespace is made before runc runs, kept alive by a bind mount on a file under
//! bulwark's state directory (`oci/netns/<container id>`, what `unshare --net=FILE`
//! makes), and named in `config.json` as the container's network namespace (runc joins it
//! instead of making one). So it outlives nothing by accident: no process holds it but
//! the container, and bulwark's file, which [`NetNs::remove`] unmounts once the container
//! is deleted. A kill -9 of bulwark leaves the files mounted; the janitor, or the next
//! `up` on the same state directory, removes them ([`remove_all`]).
//!
//! **The /30 of a replica** is its *slot* (0 to 16 383): slot `s` is
//! `10.213.0.0 + 4s`, the host's end `+1`, the container's `+2`. A slot is claimed by
//! creating the host's end of the veth pair, named `bwnet<s>`: the kernel refuses a second
//! link of that name, so two bulwarks on one machine (or two replicas starting at once)
//! can never hold the same /30, without a lock file shared between them. The container's
//! end is `eth0` inside the namespace. Deleting it (from inside the namespace, where it is
//! surely ours) deletes the pair and frees the slot.
//!
//! Why the `ip` and `unshare` commands rather than netlink in process: joining a namespace
//! (`setns`) is per thread, so configuring `eth0` in process would take a thread parked
//! in the namespace, or unsafe code around tokio's threads; the commands are iproute2's
//! and util-linux's, already on any host that runs runc, each a few ms, spawned through
//! the launcher like every other child (crate `launch`'s invariant). The I/O stays here;
//! which address a slot has, and which slot is free, are pure functions.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// The private networks' addresses: one /30 per slot.
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 213, 0, 0), 16);

/// How many /30 slots [`SUBNET`] holds.
const SLOTS: u32 = 1 << (32 - 16 - 2);

/// The host's end of slot `s` is named `bwnet<s>`.
pub const LINK_PREFIX: &str = "bwnet";

/// How long one `ip`, `nsenter` or `unshare` may take.
const LIMIT: Duration = Duration::from_secs(10);

/// How many times a slot is chosen again when another claimed it first.
const CLAIM_TRIES: u32 = 8;

/// Replicas of this process claim slots one at a time (another bulwark may still race:
/// the kernel's refusal of a taken name settles that).
static CLAIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The host's and the container's address of slot `slot`, or `None` past the last slot.
pub fn slot_addresses(slot: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if slot >= SLOTS {
        return None;
    }
    let base = u32::from(SUBNET.0) + 4 * slot;
    Some((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
}

/// The slot a host-side link name claims (`bwnet12` → 12).
fn slot_of(link: &str) -> Option<u32> {
    let digits = link.strip_prefix(LINK_PREFIX)?;
    (!digits.starts_with('+')).then(|| digits.parse().ok())?
}

/// The lowest slot none of `links` (the host's link names) claims.
pub fn free_slot<'a>(links: impl IntoIterator<Item = &'a str>) -> Option<u32> {
    let mut taken: Vec<u32> = links.into_iter().filter_map(slot_of).collect();
    taken.sort_unstable();
    taken.dedup();
    let free = taken
        .iter()
        .enumerate()
        .find(|(i, s)| *i as u32 != **s)
        .map_or(taken.len() as u32, |(i, _)| i as u32);
    (free < SLOTS).then_some(free)
}

/// A replica's network namespace: the file that holds it, and the container's address.
#[derive(Debug)]
pub(crate) struct NetNs {
    file: PathBuf,
    addr: Ipv4Addr,
}

impl NetNs {
    /// The file to name in `config.json` (`{"type": "network", "path": ...}`).
    pub(crate) fn path(&self) -> &Path {
        &self.file
    }

    /// The container's address: where the proxy and the probes reach the replica.
    pub(crate) fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Makes the namespace of container `name` under `dir`, links it to the host and
    /// brings its loopback and link up. Whatever was made is removed when a step fails.
    pub(crate) async fn create(dir: &Path, name: &str) -> std::io::Result<NetNs> {
        let file = dir.join(name);
        let mut made = Made::None;
        match build(&file, &mut made).await {
            Ok(addr) => Ok(NetNs { file, addr }),
            Err(e) => {
                if made != Made::None {
                    remove_file(&file, made == Made::Namespace).await;
                }
                Err(std::io::Error::other(format!(
                    "cannot make the private network namespace {}: {e}",
                    file.display()
                )))
            }
        }
    }

    /// Deletes the veth pair and the namespace's file (the namespace goes with its last
    /// process). Call it once the container is deleted.
    pub(crate) async fn remove(self) {
        remove_file(&self.file, true).await;
    }
}

/// How far [`build`] got, for what its failure must undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    None,
    File,
    Namespace,
}

async fn build(file: &Path, made: &mut Made) -> Result<Ipv4Addr, String> {
    let f = file.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(f.parent().unwrap_or(Path::new("/")))?;
        std::fs::File::create(&f).map(drop)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    *made = Made::File;
    let mut unshare = Command::new("unshare");
    unshare.arg(format!("--net={}", file.display())).arg("true");
    run(unshare, None).await?;
    *made = Made::Namespace;
    let (_host, inside) = claim(file).await?;
    let mut ip = Command::new("nsenter");
    ip.arg(format!("--net={}", file.display()))
        .args(["ip", "-batch", "-"]);
    let batch = format!("link set lo up\naddr add {inside}/30 dev eth0\nlink set eth0 up\n");
    run(ip, Some(batch.as_bytes())).await?;
    Ok(inside)
}

/// Claims a free slot for the namespace in `file`: creates the veth pair (`eth0` inside),
/// then addresses the host's end and brings it up. Returns the host's and the
/// container's address.
async fn claim(file: &Path) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let _one = CLAIMING.lock().await;
    for _ in 0..CLAIM_TRIES {
        let links = host_links().await?;
        let slot = free_slot(links.iter().map(String::as_str))
            .ok_or_else(|| format!("every /30 of {}/{} is taken", SUBNET.0, SUBNET.1))?;
        let (host, inside) = slot_addresses(slot).ok_or("no such slot")?;
        let link = format!("{LINK_PREFIX}{slot}");
        let mut add = Command::new("ip");
        add.args([
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
        ])
        .arg(file);
        match run(add, None).await {
            Ok(()) => {}
            // Another bulwark took it since the listing.
            Err(e) if e.contains("File exists") => continue,
            Err(e) => return Err(e),
        }
        let batch = format!("addr add {host}/30 dev {link}\nlink set {link} up\n");
        let mut up = Command::new("ip");
        up.args(["-batch", "-"]);
        return run(up, Some(batch.as_bytes()))
            .await
            .map(|()| (host, inside));
    }
    Err("other processes kept taking the free /30 slots".into())
}

/// The names of the host's links.
async fn host_links() -> Result<Vec<String>, String> {
    let mut cmd = Command::new("ip");
    cmd.args(["-o", "link", "show"]);
    let out = launch::run_exec(cmd, None, LIMIT, 1 << 20)
        .await
        .map_err(|e| format!("cannot run ip: {e} (install iproute2)"))?;
    out.passed(LIMIT)
        .map_err(|e| format!("ip link show: {e}"))?;
    // `7: bwnet3@if2: <BROADCAST,...` : the name ends at `@` or `:`.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split(['@', ':']).next().unwrap_or(n).to_owned())
        .collect())
}

/// Runs `cmd` (with `stdin`), an error with its stderr unless it succeeds.
async fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Result<(), String> {
    let what = format!("{:?}", cmd.as_std().get_program());
    cmd.kill_on_drop(true);
    let out = launch::run_exec(cmd, stdin, LIMIT, 4096)
        .await
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    out.passed(LIMIT).map_err(|e| format!("{what}: {e}"))
}

/// Deletes the veth pair of the namespace in `file` (its `eth0`, from inside, where it is
/// surely this namespace's) when `mounted`, then unmounts and removes the file.
async fn remove_file(file: &Path, mounted: bool) {
    if mounted {
        let mut del = Command::new("nsenter");
        del.arg(format!("--net={}", file.display()))
            .args(["ip", "link", "del", "eth0"]);
        if let Err(e) = run(del, None).await
            && !e.contains("Cannot find device")
        {
            tracing::warn!(netns = %file.display(), error = e, "cannot delete a veth pair");
        }
    }
    let f = file.to_owned();
    let removed = tokio::task::spawn_blocking(move || {
        // EINVAL: not a mount point (any more, or never was: made but not yet bound).
        let _ = nix::mount::umount2(&f, nix::mount::MntFlags::MNT_DETACH);
        std::fs::remove_file(&f)
    })
    .await;
    if let Ok(Err(e)) = removed
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(netns = %file.display(), error = %e, "cannot remove a netns file");
    }
}

/// Removes the namespaces under `dir` (with their veth pairs): every one, or with
/// `owner`, those of containers bulwark process `owner` made. Returns their names.
pub async fn remove_all(dir: &Path, owner: Option<u32>) -> std::io::Result<Vec<String>> {
    let d = dir.to_owned();
    let names = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| owner.is_none_or(|pid| super::oci::made_by(n, pid)))
            .collect())
    })
    .await
    .map_err(std::io::Error::other)??;
    for name in &names {
        let file = dir.join(name);
        let mounted = is_namespace(&file).await;
        remove_file(&file, mounted).await;
    }
    Ok(names)
}

/// Whether `file` is a namespace's bind mount (nsfs), rather than a file left unmounted
/// (a reboot, or a failure before `unshare`).
async fn is_namespace(file: &Path) -> bool {
    use nix::sys::statfs::{NSFS_MAGIC, statfs};
    let f = file.to_owned();
    tokio::task::spawn_blocking(move || statfs(&f).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_a_slash_30_of_the_subnet_host_first() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(slot_addresses(0), Some((a("10.213.0.1"), a("10.213.0.2"))));
        assert_eq!(slot_addresses(1), Some((a("10.213.0.5"), a("10.213.0.6"))));
        assert_eq!(slot_addresses(64), Some((a("10.213.1.1"), a("10.213.1.2"))));
        assert_eq!(
            slot_addresses(16_383),
            Some((a("10.213.255.253"), a("10.213.255.254")))
        );
        assert_eq!(slot_addresses(16_384), None);
    }

    #[test]
    fn the_lowest_slot_no_link_claims_is_free() {
        assert_eq!(free_slot([]), Some(0));
        assert_eq!(free_slot(["lo", "eth0", "bwnet0", "bwnet1"]), Some(2));
        assert_eq!(free_slot(["bwnet1", "bwnet0", "bwnet3", "bwnet1"]), Some(2));
        assert_eq!(free_slot(["bwnet1"]), Some(0));
        // Not ours: other prefixes, signs, non-digits.
        assert_eq!(
            free_slot(["bwnetx", "bwnet+0", "xbwnet0", "bwnet"]),
            Some(0)
        );
        let all: Vec<String> = (0..SLOTS).map(|s| format!("{LINK_PREFIX}{s}")).collect();
        assert_eq!(free_slot(all.iter().map(String::as_str)), None);
    }
}
