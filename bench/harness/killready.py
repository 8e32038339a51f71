"""kill -9 of a quickstart replica → its replacement ready, from bulwark's own events, N
times; and bulwark's RSS while it supervises the quickstart, idle and under load.

The stack is the quickstart with `reset_after` lowered to 2 s, so that each kill (replicas
are killed in turn, 2.5 s apart) is a first failure and measures recovery rather than
crash-loop backoff. Nothing is pinned here (unlike the rest of the harness). (Formerly
bench/kill-to-ready.py, which now calls this.)"""
from __future__ import annotations

import os
import signal
import statistics
import time
from dataclasses import dataclass

from . import measure
from .context import Ctx, Log
from .procs import rss_kib
from .proxies import Bulwark
from .records import Record


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
class KillReady(Record):
    kills: int
    kill_to_ready_ms: KillToReady
    rss_kib: Rss
    load_200rps_5s: LoadBrief


def run(ctx: Ctx, kills: int, log: Log = print) -> KillReady:
    # Not pinned (like the quickstart, and like this measurement always was): where the
    # replica runs decides whether the first startup probe finds it listening.
    b = Bulwark(ctx.procs, ctx.tmp, ctx.bulwark, reset_after="2s", pin=False).start()
    try:
        assert b.p is not None
        time.sleep(1)
        idle_rss = rss_kib([b.p.pid])
        samples: list[float] = []
        for i in range(kills):
            index = i % 3
            seq = b.events()[-1]["seq"]
            victim = next(r for r in b.replicas() if r["index"] == index)
            t0 = time.time()
            os.kill(victim["pid"], signal.SIGKILL)
            ready_at = None
            while ready_at is None:
                time.sleep(0.01)
                for e in b.events(seq):
                    if e["type"] == "replica_ready" and e["index"] == index:
                        ready_at = e["at_ms"] / 1000
                if time.time() - t0 > 30:
                    raise RuntimeError(f"replica {index} not ready 30 s after kill")
            samples.append((ready_at - t0) * 1000)
            log(f"  kill {i + 1}/{kills}: replica {index} ready after {samples[-1]:.0f} ms")
            time.sleep(2.5)
        report = measure.load(ctx.procs, ctx.bulwark, b.url, 200, 5)
        loaded_rss = rss_kib([b.p.pid])
    finally:
        b.stop()
    return KillReady(kills=len(samples), kill_to_ready_ms=KillToReady.of(samples),
                     rss_kib=Rss(idle=idle_rss, after_200rps_5s=loaded_rss),
                     load_200rps_5s=LoadBrief(sent=report.sent, failed=report.failed_total,
                                              p99_ms=report.latency_ms["p99"]))
