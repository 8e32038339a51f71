"""bench/run's Python side: `python3 -m harness [--quick] [--only SECTIONS] [--out DIR]`
(run from bench/, after bench/run installed the tools and built bulwark)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from . import compare, cpuprofile, healing, instructions, killready, report, tls
from .context import Ctx
from .procs import MARKER, Neighbours, Procs, loadavg
from .proxies import tool_versions
from .records import Record, Unavailable, to_json

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)

FULL = dict(warmup=2, wrk_runs=3, wrk_secs=10, wrk_conns=50, h2_runs=3, h2_secs=4, lat_secs=10,
            mem_conns=10000, heal_rate=1000, heal_before=3, heal_after=10, reloads=4, kills=20,
            knee_secs=4, knee_steps=5, cg_secs=10, tls_rounds=5)
QUICK = dict(warmup=1, wrk_runs=1, wrk_secs=2, wrk_conns=50, h2_runs=1, h2_secs=2, lat_secs=2,
             mem_conns=500, heal_rate=200, heal_before=1, heal_after=5, reloads=2, kills=3,
             knee_secs=2, knee_steps=2, cg_secs=8, tls_rounds=1)
SECTIONS = ["compare", "instructions", "cpuprofile", "tls", "healing", "killready"]


@dataclass
class Machine(Record):
    short: str
    cpu_model: str
    cpus: int | None
    mem_gib: int
    os: str
    kernel: str


def machine() -> Machine:
    model = "cpu"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    osname = "linux"
    try:
        rel = dict(line.rstrip().split("=", 1) for line in open("/etc/os-release") if "=" in line)
        osname = f"{rel.get('ID', 'linux')}{rel.get('VERSION_ID', '').strip(chr(34))}"
    except OSError:
        pass
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    short = f"{os.cpu_count()}vcpu-{'-'.join(model.lower().split()[:2])}-{osname}"
    short = "".join(c if c.isalnum() or c == "-" else "-" for c in short)
    return Machine(short=short, cpu_model=model, cpus=os.cpu_count(), mem_gib=mem_gib, os=osname,
                   kernel=platform.release())


def busy_processes() -> list[str]:
    """Top CPU users that are not ours (to see whether the machine was shared)."""
    out = subprocess.run(["ps", "-eo", "pid,pcpu,etimes,comm", "--sort=-pcpu"], capture_output=True,
                         text=True).stdout.splitlines()[1:12]
    return [line.strip() for line in out]


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/run")
    ap.add_argument("--quick", action="store_true", help="every scenario for a few seconds (CI)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument("--out", help="output directory (default bench/results, or bench/results/quick)")
    ap.add_argument("--bulwark", default=os.path.join(ROOT, "target/release/bulwark"))
    args = ap.parse_args()
    sections = [s for s in args.only.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            ap.error(f"unknown section {s!r}; choose from {SECTIONS}")
    params = QUICK if args.quick else FULL
    out_dir = args.out or os.path.join(BENCH, "results", "quick" if args.quick else "")
    os.makedirs(out_dir, exist_ok=True)

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the proxies
    params = dict(params, mem_conns=min(params["mem_conns"], hard - 1000))
    run_id = os.environ.get(MARKER) or uuid.uuid4().hex
    tmp = tempfile.mkdtemp(prefix=f"bulwark-bench-{run_id}-")  # bench/run removes it if we cannot
    procs = Procs(run_id, tmp)
    ctx = Ctx(procs, tmp, args.bulwark, params, args.quick)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    started = time.time()
    neighbours = Neighbours(run_id)
    neighbours.start()
    marks: dict[str, tuple[float, float]] = {}

    def log(msg: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {msg}", flush=True)

    m = machine()
    # The JSON document, section by section; the sections are records (see records.py).
    result: dict[str, Any] = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": m,
        "versions": tool_versions(args.bulwark),
        # Cargo's output directory names the profile: target/debug or target/release.
        "build": os.path.basename(os.path.dirname(os.path.abspath(args.bulwark))),
        "params": params,
        "load_before": {"loadavg": loadavg(), "busy": busy_processes()},
    }
    try:
        log(f"bench: {result['mode']} run on {m.short}; load average {result['load_before']['loadavg']}")
        # Each timed section: what it runs, and the tools it needs (missing: an error).
        timed: list[tuple[str, Callable[[], Any], list[str], str]] = [
            ("compare", lambda: compare.run_all(ctx, log), [], ""),
            ("instructions", lambda: instructions.run_all(ctx, log), ["valgrind", "callgrind_control"],
             "valgrind is not installed"),
            ("cpuprofile", lambda: cpuprofile.run_all(ctx, log), ["perf"],
             "perf is not installed (Debian: linux-perf)"),
            ("tls", lambda: tls.run_all(ctx, log), ["openssl"], "openssl is not installed"),
            ("healing", lambda: healing.run_all(ctx, log), [], ""),
        ]
        for name, run, tools, missing in timed:
            if name not in sections:
                continue
            t = time.time()
            if all(shutil.which(tool) for tool in tools):
                result[name] = run()
            else:
                ctx.errors.append(f"{name}: {missing}")
            marks[name] = (t, time.time())
        if "killready" in sections:
            log("kill-to-ready: bulwark, kill -9 → replacement ready")
            try:
                result["killready"] = killready.run(ctx, params["kills"], log)
            except Exception as e:  # noqa: BLE001
                ctx.errors.append(f"killready: {e!r}")
                result["killready"] = Unavailable.error(e)
    finally:
        procs.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    neighbours.stop()
    result["load_after"] = {"loadavg": loadavg(), "busy": busy_processes()}
    result["other_work"] = {"whole_run": neighbours.summary(),
                            **{k: neighbours.summary(a, b) for k, (a, b) in marks.items()},
                            "timeline": [(round(t - started, 1), s) for t, s in neighbours.samples],
                            "busiest": [(round(t - started, 1), top) for t, top in neighbours.busy][:100]}
    result["duration_s"] = round(time.time() - started, 1)
    result["errors"] = ctx.errors
    base = os.path.join(out_dir, f"{result['date'][:10]}-{m.short}")
    doc = to_json(result)  # what the JSON file holds, and what the report reads
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    pngs = report.plots(doc, base)
    with open(base + ".md", "w") as f:
        f.write(report.markdown(doc, base, pngs))
    log(f"wrote {base}.md, {base}.json and {len(pngs)} plots ({result['duration_s']} s)")
    if ctx.errors:
        log("the harness hit errors:\n  " + "\n  ".join(ctx.errors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
