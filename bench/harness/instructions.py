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
few connections are opened inside it and amortised over them.

The same dump gives each proxy's profile (`callgrind_annotate --inclusive=no`): the share of
the counted instructions each function executed itself, and those shares summed by the
component the function belongs to (a Rust function by its crate, a C function by its
library), so the report can say where the remaining instructions go. callgrind counts user
space only: the kernel's share of a request (the system calls themselves) is not in it."""
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
from .records import Record, Unavailable, optional

if TYPE_CHECKING:
    from .proxies import Bulwark, HAProxy, Nginx

PROXIES = ["haproxy", "nginx", "bulwark"]
# Connections of the counted wrk run: a few, so the proxy's event loop batches a little as
# it does under load, without the connection setup weighing on the count.
CONNS = 8


# The functions of a profile kept in the results (the components add up everything listed).
TOP = 15

# Components of a profile, first match wins: (name, pattern on the function, pattern on the
# object file). A Rust function is matched by the crate its path starts with.
COMPONENTS: list[tuple[str, str, str]] = [
    ("memory allocation (malloc, free)", r"^(_int_)?(malloc|free|realloc|calloc|cfree)|^tcache|^__libc_(malloc|free)"
     r"|^mi_|^_?mi_|^je_|^__rust_(alloc|dealloc|realloc)|^alloc::alloc::", ""),
    ("memory copy and compare (memcpy, memmove, memset, memcmp)", r"^_*(mem(cpy|move|set|cmp)|bcmp)", ""),
    ("bulwark: HTTP/1 engine (h1)", r"^h1::", ""),
    ("bulwark: proxy", r"^proxy::", ""),
    ("bulwark: policy", r"^policy::", ""),
    ("bulwark: other crates", r"^(runtime|observe|bulwark|spec|store|api)::", ""),
    ("httparse", r"^httparse::", ""),
    ("tokio and mio (async runtime, I/O readiness)", r"^(tokio|mio)::", ""),
    ("hyper and h2", r"^(hyper|hyper_util|h2)::", ""),
    ("http, bytes (request types and buffers)", r"^(http|bytes)::", ""),
    ("Rust core and std", r"^(core|std|alloc)::", ""),
    ("other Rust crates", r"^[a-z_][a-z0-9_]*::", ""),
    ("libc (system call wrappers, other)", "", r"libc[.-]"),
    ("OpenSSL", "", r"lib(ssl|crypto)"),
    ("the proxy's own code (C)", "", r"haproxy|nginx"),
    ("dynamic loader, vDSO", "", r"ld-linux|vdso"),
]


@dataclass
class Hot(Record):
    """One function of a profile: the share of the counted instructions it executed itself."""

    function: str
    object: str
    share: float


@dataclass
class Instructions(Record):
    """One proxy's count: instructions over the requests of the counted window."""

    requests: int
    instructions: int
    per_request: float
    processes: int
    errors: int
    # Where they went: shares (percent) by component, and the top functions.
    components: dict[str, float] | None = optional()
    top: list[Hot] | None = optional()


ANNOTATED = re.compile(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(\S+?):(.+?)(?:\s+\[([^\]]*)\])?\s*$")


def profile_lines(text: str) -> list[Hot]:
    """The functions of `callgrind_annotate --inclusive=no` output, hottest first (the
    program totals line is not a function)."""
    out = []
    for line in text.splitlines():
        m = ANNOTATED.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        obj = os.path.basename(m.group(5) or "")
        out.append(Hot(function=m.group(4).strip(), object=obj, share=float(m.group(2))))
    return out


def component(hot: Hot) -> str:
    """The component a function belongs to (see COMPONENTS)."""
    name = hot.function.lstrip("<&*").removeprefix("mut ").removeprefix("dyn ")
    for label, fn_pat, obj_pat in COMPONENTS:
        if fn_pat and re.search(fn_pat, name):
            return label
        if obj_pat and re.search(obj_pat, hot.object):
            return label
    return "other"


def components(hots: list[Hot]) -> dict[str, float]:
    """Shares summed by component, largest first; what no listed function covers
    (callgrind_annotate lists the hottest functions up to 99 % of the total) is "the rest"."""
    sums: dict[str, float] = {}
    for h in hots:
        sums[component(h)] = sums.get(component(h), 0.0) + h.share
    rest = 100.0 - sum(sums.values())
    if rest > 0.05:
        sums["the rest (the smallest functions, unlisted)"] = rest
    return {k: round(v, 1) for k, v in sorted(sums.items(), key=lambda kv: -kv[1])}


def profile(dump: str) -> list[Hot]:
    """The functions of one dump by instructions executed themselves."""
    r = subprocess.run(["callgrind_annotate", "--inclusive=no", dump], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"callgrind_annotate {dump}: {(r.stderr or r.stdout).strip()[-300:]}")
    return profile_lines(r.stdout)


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
        # The profile of the process that did most of the work (HAProxy and nginx run as one).
        hots = profile(max(dumps, key=totals))
        out = Instructions(requests=run.requests, instructions=ir, per_request=round(ir / run.requests),
                           processes=len(dumps), errors=run.errors + run.non_2xx,
                           components=components(hots), top=hots[:TOP])
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
