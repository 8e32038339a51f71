"""Where each proxy's CPU goes at max load, kernel included: `perf record -e cpu-clock`
(a software clock, so it works in VMs without hardware counters) on the proxy's processes
during one closed-loop wrk run, summarised by `perf report`.

callgrind (`instructions.py`) counts user-space instructions only; at max load most of a
proxy's CPU is the kernel's (two sockets read and written per request). This section gives
the split: user and system CPU seconds from /proc, the share of samples by object (the
kernel, the proxy's binary, libc…) and the hottest symbols. Shares are of the proxy's own
samples, so a shared machine moves them little."""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import measure
from .compare import _guard, make
from .context import Ctx, Log
from .procs import NaiveBackends
from .proxies import NotSupported
from .records import Record, Unavailable

if TYPE_CHECKING:
    from .proxies import Bulwark, HAProxy, Nginx

PROXIES = ["haproxy", "nginx", "bulwark"]
MODES = ["http", "tcp"]
# Symbols kept per profile.
TOP = 12
# Samples per second per CPU: fine enough for 10 s, light enough not to weigh on the proxy.
FREQ = 1999


@dataclass
class Symbol(Record):
    """One symbol of a profile: its share of the proxy's samples."""

    share: float
    symbol: str
    object: str
    kernel: bool


@dataclass
class CpuProfile(Record):
    """One proxy in one mode at max load."""

    requests: int
    rps: float
    user_s: float
    system_s: float
    # CPU seconds per 100k requests, user and system.
    user_per_100k: float
    system_per_100k: float
    # System calls by the proxy's threads over the window, per request (an exact count: the
    # window's few idle moments add the control plane's own, a handful).
    syscalls_per_request: float
    samples: int
    by_object: dict[str, float]
    top: list[Symbol]


REPORT_LINE = re.compile(r"^\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+?)\s*$")
SAMPLES = re.compile(r"^# Samples: (\d+)([KM]?)")


def parse_report(text: str) -> tuple[int, list[Symbol]]:
    """`perf report --stdio --sort dso,sym` output: the sample count and the symbols,
    hottest first."""
    samples = 0
    out = []
    for line in text.splitlines():
        m = SAMPLES.match(line)
        if m:
            samples = int(m.group(1)) * {"": 1, "K": 1000, "M": 1_000_000}[m.group(2)]
            continue
        if line.startswith("#"):
            continue
        m = REPORT_LINE.match(line)
        if m:
            out.append(Symbol(share=float(m.group(1)), symbol=m.group(4), object=m.group(2),
                              kernel=m.group(3) == "k"))
    return samples, out


def parse_stat(text: str) -> int:
    """The count of `perf stat -x, -e raw_syscalls:sys_enter` output."""
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter":
            if not fields[0].isdigit():
                raise NotSupported(f"perf stat counted nothing: {line}")
            return int(fields[0])
    raise RuntimeError(f"no syscall count in perf stat's output: {text[-300:]!r}")


def perf_report(data: str, sort: str, limit: float) -> str:
    r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
                        "--percent-limit", str(limit)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"perf report --sort {sort}: {(r.stderr or r.stdout).strip()[-300:]}")
    return r.stdout


OBJECT_LINE = re.compile(r"^\s+([\d.]+)%\s+(.+?)\s*$")


def parse_objects(text: str) -> tuple[int, dict[str, float]]:
    """`perf report --stdio --sort dso` output: the sample count and the share of every
    object (the kernel as "kernel"), largest first."""
    samples = 0
    shares: dict[str, float] = {}
    for line in text.splitlines():
        m = SAMPLES.match(line)
        if m:
            samples = int(m.group(1)) * {"": 1, "K": 1000, "M": 1_000_000}[m.group(2)]
        m = OBJECT_LINE.match(line) if not line.startswith("#") else None
        if m:
            name = "kernel" if m.group(2).startswith("[kernel") else os.path.basename(m.group(2))
            shares[name] = round(shares.get(name, 0.0) + float(m.group(1)), 1)
    return samples, dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def by_object(symbols: list[Symbol]) -> dict[str, float]:
    """Shares summed by object (the kernel as "kernel"), largest first."""
    sums: dict[str, float] = {}
    for s in symbols:
        name = "kernel" if s.kernel or s.object.startswith("[kernel") else os.path.basename(s.object)
        sums[name] = sums.get(name, 0.0) + s.share
    return {k: round(v, 1) for k, v in sorted(sums.items(), key=lambda kv: -kv[1])}


def user_system(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of `pids` (all their threads) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


def record(ctx: Ctx, backends: NaiveBackends, name: str, mode: str, log: Log) -> CpuProfile:
    p = ctx.params
    data = os.path.join(ctx.tmp, f"perf-{name}-{mode}.data")
    t: Bulwark | HAProxy | Nginx = make(ctx, backends, name, mode).start()  # type: ignore[assignment]
    try:
        pids = t.pids()
        measure.wrk(ctx.procs, t.url, p["warmup"], p["wrk_conns"])  # warm-up, not profiled
        secs = p["wrk_secs"]
        perf = ctx.procs.spawn(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQ), "-o", data,
                                "-p", ",".join(map(str, pids)), "--", "sleep", str(secs + 1)],
                               log=f"perf-{name}-{mode}.log")
        counted = os.path.join(ctx.tmp, f"perf-{name}-{mode}.stat")
        stat = ctx.procs.spawn(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-o", counted,
                                "-p", ",".join(map(str, pids)), "--", "sleep", str(secs + 1)])
        time.sleep(0.5)  # perf attaches before the load begins
        u0, s0 = user_system(pids)
        run = measure.wrk(ctx.procs, t.url, secs, p["wrk_conns"])
        u1, s1 = user_system(pids)
        if perf.wait(timeout=secs + 60) != 0:
            # The machine's capability (perf_event_open refused, no cpu-clock), not the harness's.
            with open(os.path.join(ctx.tmp, f"perf-{name}-{mode}.log"), errors="replace") as f:
                why = f.read().strip()[-300:]
            raise NotSupported(f"perf record exited {perf.returncode}: {why}")
        stat.wait(timeout=secs + 60)
        with open(counted) as f:
            syscalls = parse_stat(f.read())
    finally:
        t.stop()
    samples, symbols = parse_report(perf_report(data, "dso,sym", 0.3))
    _, objects = parse_objects(perf_report(data, "dso", 0.0))
    if run.requests == 0 or not symbols:
        raise RuntimeError(f"nothing to profile: {run.requests} requests, {samples} samples")
    k = 100_000 / run.requests
    out = CpuProfile(requests=run.requests, rps=round(run.ok_rps), user_s=round(u1 - u0, 2),
                     system_s=round(s1 - s0, 2), user_per_100k=round((u1 - u0) * k, 3),
                     system_per_100k=round((s1 - s0) * k, 3),
                     syscalls_per_request=round(syscalls / run.requests, 2), samples=samples,
                     by_object=objects, top=symbols[:TOP])
    log(f"  perf {name}/{mode}: {out.rps} req/s, user {out.user_per_100k} + system {out.system_per_100k} "
        f"CPU s per 100k, {out.syscalls_per_request} system calls per request, {samples} samples")
    return out


def run_all(ctx: Ctx, log: Log) -> dict[str, dict[str, CpuProfile | Unavailable]]:
    res: dict[str, dict[str, CpuProfile | Unavailable]] = {}
    backends = NaiveBackends(ctx.procs, ctx.bulwark).start()
    try:
        for mode in MODES:
            for name in PROXIES:
                log(f"cpu profile: {name} ({mode}) under perf")
                res.setdefault(name, {})[mode] = _guard(
                    ctx, log, f"cpuprofile {name}/{mode}",
                    lambda name=name, mode=mode: record(ctx, backends, name, mode, log))
    finally:
        backends.stop()
    return res
