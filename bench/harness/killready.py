"""kill -9 of a quickstart replica → its replacement ready, from bulwark's own events, N
times; and bulwark's RSS while it supervises the quickstart, idle and under load.

The stack is the quickstart with `reset_after` lowered to 2 s, so that each kill (replicas
are killed in turn, 2.5 s apart) is a first failure and measures recovery rather than
crash-loop backoff. Nothing is pinned here (unlike the rest of the harness). (Formerly
bench/kill-to-ready.py, which now calls this.)

Then the same kills of the same quickstart with `[services.web.container] rootfs = ...`, each
replica run through runc (the oci driver) from a rootfs made here as the integration tests
make theirs (`demo_rootfs` in crates/bulwark/tests/it/oci.rs: the binary and what `ldd`
names, at the same paths). The victim is the container's own process (its PID 1, from `runc
state`), not runc. That needs runc on PATH and root; otherwise the record says why it was
skipped.

Then warm restarts (issue 14): the quickstart's demo made slow to start (`--startup-delay 3s`),
killed the same way, once started cold and once with `[services.web.warm]`, each replica
restored from its CRIU checkpoint (taken 500 ms after it was first ready). Needs root and a
CRIU that `bulwark check` accepts (scripts/criu/install); otherwise skipped, saying why."""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import measure
from .context import Ctx, Log
from .procs import rss_kib
from .proxies import Bulwark
from .records import Record, Unavailable, optional


@dataclass
class KillToReady(Record):
    """Milliseconds from each kill to the replacement's `replica_ready`."""

    median: float
    min: float
    max: float
    all: list[float]

    @classmethod
    def of(cls, samples: list[float]) -> KillToReady:
        return cls(median=round(statistics.median(samples), 1), min=round(min(samples), 1),
                   max=round(max(samples), 1), all=[round(s, 1) for s in samples])


@dataclass
class Rss(Record):
    idle: int
    after_200rps_5s: int


@dataclass
class LoadBrief(Record):
    sent: int
    failed: int
    p99_ms: float


@dataclass
class OciKillReady(Record):
    """The same kills with each replica in a runc container."""

    kills: int
    kill_to_ready_ms: KillToReady


@dataclass
class WarmKillReady(Record):
    """Kills of a demo that takes `startup_delay` to start: cold, then restored by CRIU."""

    startup_delay: str
    cold_ms: KillToReady
    restored_ms: KillToReady
    restores: int
    checkpoint_dump_ms: list[int]


@dataclass
class KillReady(Record):
    kills: int
    kill_to_ready_ms: KillToReady
    rss_kib: Rss
    load_200rps_5s: LoadBrief
    # Replicas in containers: the figures, `{"not_supported": why}` when skipped (no runc,
    # not root), or `{"error": ...}`. Absent from results made before it existed.
    oci: OciKillReady | Unavailable | None = optional()
    # Warm restarts: the figures, or why they were skipped; absent from older results.
    warm: WarmKillReady | Unavailable | None = optional()


def oci_skip_reason(euid: int, runc: str | None, ldd: str | None) -> str | None:
    """Why replicas in containers cannot be measured here, or None when they can."""
    if runc is None:
        return "runc is not on PATH"
    if euid != 0:
        return "bulwark runs as root only for the oci driver (runc), and the harness is not root"
    if ldd is None:
        return "ldd is not on PATH (the rootfs is made from what it lists)"
    return None


def ldd_paths(ldd_output: str) -> list[str]:
    """The files `ldd` names: lines are `name => /path (addr)`, `/lib64/ld-linux-x86-64.so.2
    (addr)` or, for the vDSO, a name alone (no file)."""
    paths = []
    for line in ldd_output.splitlines():
        path = next((w for w in line.split() if w.startswith("/")), None)
        if path is not None:
            paths.append(path)
    return paths


def demo_rootfs(bulwark: str, root: str) -> str:
    """A rootfs that runs `bulwark demo`: the binary and its libraries at their own paths."""
    out = subprocess.run(["ldd", bulwark], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ldd {bulwark}: {(out.stderr or out.stdout).strip()}")
    # The stack runs `{bulwark}`, bulwark's own path: copy it under both names if a link.
    for path in {*ldd_paths(out.stdout), bulwark, os.path.realpath(bulwark)}:
        inside = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        shutil.copy2(path, inside)
    for d in ("proc", "dev", "sys", "tmp"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    return root


def running_container_pid(listing: list[dict[str, Any]], service: str, index: int) -> int | None:
    """From `runc list --format json`: the pid of replica `index`'s running container
    (ids are `SERVICE-INDEX-N`)."""
    for c in listing:
        if c.get("id", "").startswith(f"{service}-{index}-") and c.get("status") == "running" and c.get("pid"):
            return int(c["pid"])
    return None


def replacement_ready_at(events: list[dict[str, Any]], index: int) -> float | None:
    """When (s since the epoch) replica `index`'s replacement became ready: its first
    `replica_ready` after a `replica_started`. A `replica_ready` of the killed incarnation
    itself can follow the kill's `seq` (the status turns ready a moment before the event is
    written), and would give a negative time."""
    started = False
    for e in events:
        if e.get("index") != index:
            continue
        if e["type"] == "replica_started":
            started = True
        elif e["type"] == "replica_ready" and started:
            return float(e["at_ms"]) / 1000
    return None


def _kills(b: Bulwark, kills: int, victim_pid: Callable[[int], int], log: Log) -> list[float]:
    """Kills replicas 0, 1, 2, 0... in turn, 2.5 s apart; ms from each kill to the
    replacement's `replica_ready`."""
    samples: list[float] = []
    for i in range(kills):
        index = i % 3
        seq = b.events()[-1]["seq"]
        pid = victim_pid(index)
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        ready_at = None
        while ready_at is None:
            time.sleep(0.01)
            ready_at = replacement_ready_at(b.events(seq), index)
            if time.time() - t0 > 30:
                raise RuntimeError(f"replica {index} not ready 30 s after kill")
        samples.append((ready_at - t0) * 1000)
        log(f"  kill {i + 1}/{kills}: replica {index} ready after {samples[-1]:.0f} ms")
        time.sleep(2.5)
    return samples


def run(ctx: Ctx, kills: int, log: Log = print) -> KillReady:
    # Not pinned (like the quickstart, and like this measurement always was): where the
    # replica runs decides whether the first startup probe finds it listening.
    b = Bulwark(ctx.procs, ctx.tmp, ctx.bulwark, reset_after="2s", pin=False).start()
    try:
        assert b.p is not None
        time.sleep(1)
        idle_rss = rss_kib([b.p.pid])
        samples = _kills(b, kills, b.pid, log)
        report = measure.load(ctx.procs, ctx.bulwark, b.url, 200, 5)
        loaded_rss = rss_kib([b.p.pid])
    finally:
        b.stop()
    return KillReady(kills=len(samples), kill_to_ready_ms=KillToReady.of(samples),
                     rss_kib=Rss(idle=idle_rss, after_200rps_5s=loaded_rss),
                     load_200rps_5s=LoadBrief(sent=report.sent, failed=report.failed_total,
                                              p99_ms=report.latency_ms["p99"]),
                     oci=run_oci(ctx, kills, log), warm=run_warm(ctx, kills, log))


def run_oci(ctx: Ctx, kills: int, log: Log = print) -> OciKillReady | Unavailable:
    """The kills with replicas in runc containers; skipped (with why) where it cannot run,
    an error record (and an error of the run) where it fails."""
    why = oci_skip_reason(os.geteuid(), shutil.which("runc"), shutil.which("ldd"))
    if why is not None:
        log(f"kill-to-ready, oci: skipped ({why})")
        return Unavailable.not_supported(RuntimeError(why))
    log("kill-to-ready, oci: the same with each replica in a runc container")
    try:
        rootfs = demo_rootfs(ctx.bulwark, os.path.join(ctx.tmp, "oci-rootfs"))
        b = Bulwark(ctx.procs, ctx.tmp, ctx.bulwark, reset_after="2s", pin=False, rootfs=rootfs)
        runc_root = os.path.join(b.state, "oci", "runc")
        try:
            b.start()
            samples = _kills(b, kills, lambda index: _container_pid(runc_root, index), log)
        finally:
            b.stop()
            _delete_leftovers(runc_root)
        return OciKillReady(kills=len(samples), kill_to_ready_ms=KillToReady.of(samples))
    except Exception as e:  # noqa: BLE001 (the process figures stand; the run reports the error)
        ctx.errors.append(f"killready oci: {e!r}")
        return Unavailable.error(e)


def _runc_list(runc_root: str) -> list[dict[str, Any]]:
    out = subprocess.run(["runc", "--root", runc_root, "list", "--format", "json"], capture_output=True,
                         text=True, timeout=10)
    if out.returncode != 0:
        raise RuntimeError(f"runc list: {(out.stderr or out.stdout).strip()}")
    return json.loads(out.stdout or "null") or []  # runc prints `null` when there is none


def _container_pid(runc_root: str, index: int) -> int:
    deadline = time.time() + 10
    while (pid := running_container_pid(_runc_list(runc_root), "web", index)) is None:
        if time.time() > deadline:
            raise RuntimeError(f"no running container for replica {index} of web")
        time.sleep(0.05)
    return pid


def _delete_leftovers(runc_root: str) -> None:
    """`up` deletes its containers when it stops; should it not have, no container outlives
    the run (their processes do not carry the harness's marker, so its sweep misses them)."""
    if not os.path.isdir(runc_root):
        return
    for c in _runc_list(runc_root):
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", c["id"]], capture_output=True, timeout=10)


WARM_DELAY = "3s"


def run_warm(ctx: Ctx, kills: int, log: Log = print) -> WarmKillReady | Unavailable:
    """The kills of a slow-starting demo, cold and then restored from CRIU checkpoints;
    skipped (with why) when `bulwark check` refuses `[warm]` here (no CRIU, or one that
    fails `criu check`) or the harness is not root."""
    if os.geteuid() != 0:
        why = "CRIU checkpoints and restores as root only, and the harness is not root"
        log(f"kill-to-ready, warm: skipped ({why})")
        return Unavailable.not_supported(RuntimeError(why))
    log(f"kill-to-ready, warm: a demo that starts in {WARM_DELAY}, cold, then restored by CRIU")
    try:
        cold = Bulwark(ctx.procs, ctx.tmp, ctx.bulwark, reset_after="2s", pin=False, startup_delay=WARM_DELAY)
        try:
            cold.start()
            cold_samples = _kills(cold, kills, cold.pid, log)
        finally:
            cold.stop()
        warm = Bulwark(ctx.procs, ctx.tmp, ctx.bulwark, reset_after="2s", pin=False, startup_delay=WARM_DELAY,
                       warm_after="500ms")
        try:
            try:
                warm.start()
            except RuntimeError as e:
                if "[warm]" in str(e):
                    log(f"kill-to-ready, warm: skipped ({e})")
                    return Unavailable.not_supported(e)
                raise
            dumps = _checkpoints(warm, 3)
            seq = warm.events()[-1]["seq"]
            warm_samples = _kills(warm, kills, warm.pid, log)
            restores = sum(1 for e in warm.events(seq) if e["type"] == "replica_restored")
        finally:
            warm.stop()
        return WarmKillReady(startup_delay=WARM_DELAY, cold_ms=KillToReady.of(cold_samples),
                             restored_ms=KillToReady.of(warm_samples), restores=restores,
                             checkpoint_dump_ms=dumps)
    except Exception as e:  # noqa: BLE001 (the other figures stand; the run reports the error)
        ctx.errors.append(f"killready warm: {e!r}")
        return Unavailable.error(e)


def _checkpoints(b: Bulwark, replicas: int) -> list[int]:
    """Waits until every replica was checkpointed; the dumps' durations (ms)."""
    deadline = time.time() + 60
    while True:
        dumps = {e["index"]: e["dump_ms"] for e in b.events() if e["type"] == "replica_checkpointed"}
        if len(dumps) >= replicas:
            return [dumps[i] for i in sorted(dumps)]
        failed = [e for e in b.events() if e["type"] == "replica_checkpoint_failed"]
        if failed:
            raise RuntimeError(f"checkpoint failed: {failed[0]['reason']}")
        if time.time() > deadline:
            raise RuntimeError("replicas not checkpointed within 60 s")
        time.sleep(0.1)
