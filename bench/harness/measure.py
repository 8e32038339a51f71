"""Load generators and meters: wrk (closed loop, max throughput), h2load (h2c), `bulwark
load` (open loop, latency), idle keep-alive connections (memory), proxy CPU time."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .procs import LOAD_CPU, Procs, cpu_seconds, rss_kib
from .records import Record


@dataclass
class WrkRun(Record):
    """One closed-loop wrk run."""

    rps: float
    requests: int
    errors: int
    # Throughput counts answered 2xx/3xx only: a proxy failing fast must not look fast.
    ok_rps: float
    non_2xx: int
    proxy_cpu_s: float
    proxy_cpu_util: float | None
    cpu_s_per_100k: float | None


@dataclass
class H2Run(Record):
    """One h2load run over h2c."""

    rps: float
    requests: int
    failed: int
    ok_rps: float
    proxy_cpu_s: float
    cpu_s_per_100k: float | None


@dataclass
class LoadSecond(Record):
    """Requests scheduled during second `t` of a `bulwark load` run, and how they ended
    (healing re-times `t` to the fault's clock)."""

    t: float
    sent: int
    ok: int
    failed: int
    p99_ms: float


@dataclass
class LoadReport:
    """The JSON report of one open-loop `bulwark load` run (the fields the harness uses),
    plus the proxy's CPU seconds and the wall-clock time the run started (for timelines)."""

    sent: int
    ok: int
    # {"total", "status": {code: n}, "connect", "timeout", "other", "samples": [...]}
    failed: dict[str, Any]
    latency_ms: dict[str, float]  # p50, p90, p99, p999, max, mean
    achieved_rate: float | None
    timeline: list[LoadSecond]
    started_at: float
    proxy_cpu_s: float
    cpu_s_per_100k: float | None

    @property
    def failed_total(self) -> int:
        return self.failed["total"]


@dataclass
class IdleMemory(Record):
    """RSS of a proxy's processes before and with N idle keep-alive connections."""

    connections: int
    answered: int
    rss_before_kib: int
    rss_after_kib: int
    bytes_per_conn: int | None


def _run(procs: Procs, argv: list[str], timeout: float) -> tuple[int | None, str]:
    """Run a load tool pinned to the load CPU, in its own process group (killed on timeout)."""
    p = procs.spawn(argv, cpu=LOAD_CPU, stdout=subprocess.PIPE, log=None)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.stop(p, grace=1)
        raise RuntimeError(f"{argv[0]} did not finish within {timeout} s") from None
    finally:
        procs.stop(p, grace=1)
    return p.returncode, out.decode(errors="replace")


def wrk(procs: Procs, url: str, duration: float, conns: int, pids: Sequence[int] = (),
        headers: Sequence[str] = ()) -> WrkRun:
    """One closed-loop wrk run (1 thread): req/s, requests, errors, proxy CPU seconds;
    `headers` ("Name: value") are sent with every request."""
    cpu0, t0 = cpu_seconds(pids), time.time()
    extra = [a for h in headers for a in ("-H", h)]
    rc, out = _run(procs, ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", *extra, url],
                   duration + 30)
    cpu = cpu_seconds(pids) - cpu0
    elapsed = time.time() - t0
    return parse_wrk(rc, out, cpu, elapsed, bool(pids))


def parse_wrk(rc: int | None, out: str, cpu: float, elapsed: float, measured: bool) -> WrkRun:
    """wrk's output as a WrkRun; `cpu`: the proxy's CPU seconds over `elapsed` wall seconds,
    `measured`: whether there were proxy processes to measure."""
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if rc != 0 or not m or not n:
        raise RuntimeError(f"wrk failed (exit {rc}): {out.strip()[-400:]}")
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(n.group(1))
    bad = (int(non2xx.group(1)) if non2xx else 0)
    return WrkRun(rps=float(m.group(1)), requests=requests, errors=errors,
                  ok_rps=round(float(m.group(1)) * (requests - bad) / requests, 1) if requests else 0.0,
                  non_2xx=int(non2xx.group(1)) if non2xx else 0,
                  proxy_cpu_s=round(cpu, 3), proxy_cpu_util=round(cpu / elapsed, 3) if elapsed else None,
                  cpu_s_per_100k=round(cpu / requests * 1e5, 3) if measured and requests else None)


def h2load(procs: Procs, url: str, duration: float, conns: int, streams: int, pids: Sequence[int] = (),
           extra: Sequence[str] = ()) -> H2Run:
    """One h2load run over h2c (prior knowledge), or h2 over TLS for an https URL: req/s and
    proxy CPU seconds; `extra`: more h2load options."""
    cpu0 = cpu_seconds(pids)
    rc, out = _run(procs, ["h2load", "-t1", f"-c{conns}", f"-m{streams}", f"-D{duration}",
                           "--warm-up-time=1", *extra, url], duration + 30)
    cpu = cpu_seconds(pids) - cpu0
    return parse_h2load(rc, out, cpu, bool(pids))


def parse_h2load(rc: int | None, out: str, cpu: float, measured: bool) -> H2Run:
    """h2load's output as an H2Run (see parse_wrk for `cpu` and `measured`)."""
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    if not m or not r:
        raise RuntimeError(f"h2load failed (exit {rc}): {out.strip()[-400:]}")
    done, succeeded = int(r.group(3)), int(r.group(4))
    # h2load counts any response as done; `succeeded` is 2xx/3xx only.
    return H2Run(rps=float(m.group(1)), requests=done, failed=done - succeeded,
                 ok_rps=round(float(m.group(1)) * succeeded / done, 1) if done else 0.0,
                 proxy_cpu_s=round(cpu, 3),
                 cpu_s_per_100k=round(cpu / done * 1e5, 3) if measured and done else None)


def load(procs: Procs, bulwark: str, url: str, rate: float, duration: float, concurrency: int = 256,
         timeout: str = "5s", pids: Sequence[int] = ()) -> LoadReport:
    """One open-loop `bulwark load` run: its JSON report, plus proxy CPU seconds and the
    wall-clock time the run started (for timelines)."""
    cpu0 = cpu_seconds(pids)
    started = time.time()
    rc, out = _run(procs, [bulwark, "load", url, "--rate", str(round(rate)), "--duration", f"{duration}s",
                           "--concurrency", str(concurrency), "--timeout", timeout, "--json"], duration + 60)
    cpu = cpu_seconds(pids) - cpu0
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"bulwark load failed (exit {rc}): {out.strip()[-400:]}") from None
    return load_report(report, started, cpu, bool(pids))


def load_report(report: dict[str, Any], started: float, cpu: float, measured: bool) -> LoadReport:
    """`bulwark load --json`'s report as a LoadReport (see parse_wrk for `cpu` and `measured`)."""
    return LoadReport(
        sent=report["sent"], ok=report["ok"], failed=report["failed"], latency_ms=report["latency_ms"],
        achieved_rate=report.get("achieved_rate"),
        timeline=[LoadSecond(t=s["t"], sent=s["sent"], ok=s["ok"], failed=s["failed"], p99_ms=s["p99_ms"])
                  for s in report["timeline"]],
        started_at=started, proxy_cpu_s=round(cpu, 3),
        cpu_s_per_100k=round(cpu / report["sent"] * 1e5, 3) if measured and report["sent"] else None)


def idle_connections(procs: Procs, port: int, n: int, pids: Sequence[int], settle: float = 2.0) -> IdleMemory:
    """Open n keep-alive connections to the proxy, one request each, then leave them idle;
    RSS delta of the proxy's processes / n."""
    holder = os.path.join(os.path.dirname(__file__), "conns.py")
    time.sleep(0.5)
    before = rss_kib(pids)
    p = procs.spawn([sys.executable, holder, str(port), str(n)], cpu=LOAD_CPU,
                    stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    try:
        line = b""
        deadline = time.time() + 120
        assert p.stdout is not None
        while not line.startswith(b"ready") and time.time() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                break
        if not line.startswith(b"ready"):
            raise RuntimeError(f"connection holder failed: {line!r}")
        _, opened_s, answered_s = line.split()
        time.sleep(settle)
        after = rss_kib(pids)
    finally:
        procs.stop(p, grace=2)
    opened, answered = int(opened_s), int(answered_s)
    return IdleMemory(connections=opened, answered=answered, rss_before_kib=before, rss_after_kib=after,
                      bytes_per_conn=round((after - before) * 1024 / opened) if opened else None)
