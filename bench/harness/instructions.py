"""Instructions per proxied request, counted by valgrind's callgrind: a figure the noise of a
shared machine cannot move, for bulwark, HAProxy and nginx in the same run.

Each proxy starts under callgrind with instrumentation off (`--instr-atstart=no`), so its start
and a warm-up (connections to the backends opened, caches and pools filled) are not counted.
Then instrumentation is switched on in every process of the proxy (`callgrind_control -i on`),
one closed-loop wrk run goes through it, instrumentation is switched off and the counters are
dumped (`callgrind_control -d`). The figure is the instructions executed by all the proxy's
processes and threads in that window (the health checks it ran meanwhile included, as they
are in its CPU time) over the requests wrk completed. The backends run natively
(valgrind does not follow an exec, and the naive backends are not its children).

Under valgrind a proxy runs 20–50× slower, so the window is a few thousand requests; wrk's
few connections are opened inside it and amortised over them."""
from __future__ import annotations

import glob
import os
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import measure
from .compare import _guard, make
from .context import Ctx, Log
from .procs import NaiveBackends
from .records import Record, Unavailable

if TYPE_CHECKING:
    from .proxies import Bulwark, HAProxy, Nginx

PROXIES = ["haproxy", "nginx", "bulwark"]
# Connections of the counted wrk run: a few, so the proxy's event loop batches a little as
# it does under load, without the connection setup weighing on the count.
CONNS = 8


@dataclass
class Instructions(Record):
    """One proxy's count: instructions over the requests of the counted window."""

    requests: int
    instructions: int
    per_request: float
    processes: int
    errors: int


def callgrind(out_dir: str) -> list[str]:
    """The command a counted proxy runs under: callgrind, instrumentation off until switched
    on. Not through an exec: bulwark's replicas are exec'd programs, not the proxy. HAProxy
    and nginx run as one process when wrapped (no master: HAProxy's re-executes itself, and
    nginx's worker drops to `nobody`, both out of callgrind's reach), so every count is of
    one process doing all of the proxy's work."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p", "--vgdb=yes", "--trace-children=no"]


def totals(path: str) -> int:
    """The instruction total of one callgrind dump: its `totals:` line (a dump requested
    while running may also carry a `summary:` line, which can read 0)."""
    with open(path) as f:
        for line in f:
            m = re.match(r"totals:\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no totals in {path}")


def control(pids: list[int], *args: str) -> None:
    """callgrind_control ARGS for each pid (vgdb reaches a process blocked in a syscall)."""
    for pid in pids:
        r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"callgrind_control {' '.join(args)} {pid}: {(r.stderr or r.stdout).strip()[-300:]}")


def count(ctx: Ctx, backends: NaiveBackends, name: str, log: Log) -> Instructions:
    p = ctx.params
    out_dir = os.path.join(ctx.tmp, f"callgrind-{name}")
    os.makedirs(out_dir, exist_ok=True)
    t: Bulwark | HAProxy | Nginx = make(ctx, backends, name, "http")  # type: ignore[assignment]
    t.under(callgrind(out_dir), patience=6).start()
    try:
        pids = t.pids()
        measure.wrk(ctx.procs, t.url, p["warmup"] * 2, CONNS)  # warm-up, not counted
        control(pids, "-i", "on")
        run = measure.wrk(ctx.procs, t.url, p["cg_secs"], CONNS)
        control(pids, "-i", "off")
        control(pids, "-d")
        dumps = [f for f in glob.glob(os.path.join(out_dir, "callgrind.out.*")) if re.search(r"\.\d+\.\d+$", f)]
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump in {out_dir}")
        ir = sum(totals(f) for f in dumps)
        if run.requests == 0:
            raise RuntimeError("no request completed in the counted window")
        out = Instructions(requests=run.requests, instructions=ir, per_request=round(ir / run.requests),
                           processes=len(dumps), errors=run.errors + run.non_2xx)
        log(f"  callgrind {name}: {out.per_request} instructions per request ({run.requests} requests, "
            f"{len(dumps)} process(es))")
        return out
    finally:
        t.stop()


def run_all(ctx: Ctx, log: Log) -> dict[str, Instructions | Unavailable]:
    res: dict[str, Instructions | Unavailable] = {}
    backends = NaiveBackends(ctx.procs, ctx.bulwark).start()
    try:
        for name in PROXIES:
            log(f"instructions: {name} under callgrind")
            res[name] = _guard(ctx, log, f"instructions {name}", lambda name=name: count(ctx, backends, name, log))
    finally:
        backends.stop()
    return res
