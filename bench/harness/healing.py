"""Healing scenarios: one of 3 replicas breaks under a fixed open-loop load.

bulwark supervises and probes its own replicas (the quickstart's settings). HAProxy and
nginx run in front of replicas the harness supervises the naive way (restart on exit
after 100 ms, nothing else), with their best health checking (see proxies.py).

Each scenario starts from a fresh stack. kill, hang, 503 and reload run one continuous
load and break things during it (requests in flight at the moment of the fault matter);
slow measures a steady state, so its load runs in two parts, before and during.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import measure
from .context import Ctx, Log
from .measure import LoadReport, LoadSecond
from .procs import NaiveBackends, http_get
from .proxies import Bulwark, HAProxy, Nginx, NotSupported
from .records import Record, Unavailable, optional
from .traffic import Monitor, Sample, TrafficView, analyse, busiest, share_timeline

SCENARIOS = ["kill", "hang", "503", "slow", "reload"]
PROXIES = ["bulwark", "haproxy", "nginx"]
# HAProxy twice in the 503 scenario: with 503 in `retry-on` (its configuration everywhere
# else) and without, where `observe layer7` can eject (see proxies.HAProxy).
VARIANTS = {"503": ["bulwark", "haproxy", "haproxy_no503retry", "nginx"]}

DESCRIPTION = {
    "kill": "kill -9 of one of 3 replicas",
    "hang": "one replica hangs (SIGSTOP)",
    "503": "one replica answers 100 % 503 (its /healthz stays healthy)",
    "slow": "one replica slowed by 200 ms",
    "reload": "configuration reload under load",
}


# ---------------------------------------------------------------------------------- records

@dataclass
class LoadSummary(Record):
    """The load generator's figures over a run (or one part of it)."""

    sent: int
    ok: int
    failed: int
    failed_by_kind: dict[str, Any]
    failure_samples: list[str]
    latency_ms: dict[str, float]
    achieved_rate: float | None


@dataclass
class Reload(Record):
    t_s: float
    ok: bool
    detail: str


@dataclass
class HAProxyView(Record):
    """HAProxy's own view of the victim: first DOWN, then UP again; state transitions."""

    down_s: float | None
    up_s: float | None
    transitions: list[tuple[float, str]]


@dataclass
class NaiveEvent(Record):
    """The naive supervisor restarting a backend (seconds since the fault)."""

    t_s: float
    index: int
    what: str
    pid: int


@dataclass
class Figures(Record):
    """A scenario's headline figures for the tables (times in seconds after the fault);
    one subclass per scenario, fields in table order."""

    failed: int
    sent: int


@dataclass
class KillFigures(Figures):
    detect_proxy_s: float | None
    full_proxy_s: float | None
    full_traffic_s: float | None
    share_before: float | None
    share_last_3s: float | None


@dataclass
class HangFigures(Figures):
    detect_proxy_s: float | None
    detect_traffic_s: float | None
    replace_proxy_s: float | None
    replace_traffic_s: float | None
    share_last_3s: float | None
    p99_ms: float


@dataclass
class Figures503(Figures):
    eject_proxy_s: float | None
    eject_traffic_s: float | None
    share_during: float | None


@dataclass
class SlowFigures(Figures):
    p99_before_ms: float
    p99_during_ms: float
    share_during: float | None


@dataclass
class ReloadFigures(Figures):
    reloads_ok: int
    reloads: int
    p99_ms: float


@dataclass
class HealingRun(Record):
    """One scenario against one proxy. `before` (slow) and `reloads` (reload) only where
    the scenario has them; `bulwark_view` for bulwark (its keys follow its events, so it
    stays a dict; None when it could not be read), `haproxy_view` for HAProxy,
    `naive_supervisor` where the harness supervises the replicas."""

    proxy: str
    scenario: str
    rate: int
    fault: str
    during: LoadSummary
    timeline: list[LoadSecond]
    monitor_error: str | None
    victim: int
    traffic: TrafficView
    share_timeline: list[tuple[float, float | None]]
    # (seconds since the fault, bytes each replica received since the last sample)
    traffic_samples: list[tuple[float, list[int]]]
    reloads: list[Reload] | None = optional()
    before: LoadSummary | None = optional()
    bulwark_view: dict[str, Any] | None = None
    haproxy_view: HAProxyView | None = optional()
    naive_supervisor: list[NaiveEvent] | None = optional()
    figures: Figures | None = optional()

    # The JSON's key order (the order in which the harness always wrote them).
    ORDER = ("proxy", "scenario", "rate", "fault", "reloads", "before", "during", "timeline", "monitor_error",
             "victim", "traffic", "share_timeline", "traffic_samples", "bulwark_view", "haproxy_view",
             "naive_supervisor", "figures")

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.proxy != "bulwark":
            del out["bulwark_view"]
        return {k: out[k] for k in self.ORDER if k in out}


# ----------------------------------------------------------------------------------- stacks

if TYPE_CHECKING:
    Target = Bulwark | HAProxy | Nginx


class Stack:
    """A proxy with its 3 replicas, fresh for one scenario."""

    def __init__(self, ctx: Ctx, proxy: str) -> None:
        self.ctx, self.proxy = ctx, proxy
        self.backends: NaiveBackends | None = None
        self.victim: int | None = None  # chosen at the fault: the replica with the most traffic
        self.target: Target
        if proxy == "bulwark":
            self.target = Bulwark(ctx.procs, ctx.tmp, ctx.bulwark)
        elif proxy.startswith("haproxy"):
            self.backends = NaiveBackends(ctx.procs, ctx.bulwark)
            self.target = HAProxy(ctx.procs, ctx.tmp, self.backends, retry_503=proxy == "haproxy")
        else:
            self.backends = NaiveBackends(ctx.procs, ctx.bulwark)
            self.target = Nginx(ctx.procs, ctx.tmp, self.backends)

    def start(self) -> Stack:
        if self.backends:
            self.backends.start()
        self.target.start()
        return self

    def _victim(self) -> int:
        assert self.victim is not None, "no victim chosen yet"
        return self.victim

    def victim_pid(self) -> int:
        if self.backends:
            return self.backends.pid(self._victim())
        assert isinstance(self.target, Bulwark)
        return self.target.pid(self._victim())

    def victim_port(self) -> int:
        if self.backends:
            return self.backends.ports[self._victim()]
        assert isinstance(self.target, Bulwark)
        return self.target.replica_port(self._victim())

    def stop(self) -> None:
        try:
            self.target.stop()
        finally:
            if self.backends:
                self.backends.stop()


def _fault(stack: Stack, scenario: str, samples: list[Sample]) -> str:
    """Break the replica that received the most traffic over the last second (balancers
    need not split evenly, and a replica that gets nothing cannot show anything); returns a
    short description of what was done."""
    stack.victim = busiest(samples, time.time() - 1.0)
    if scenario == "kill":
        pid = stack.victim_pid()
        os.kill(pid, signal.SIGKILL)
        return f"SIGKILL to pid {pid}"
    if scenario == "hang":
        pid = stack.victim_pid()
        os.kill(pid, signal.SIGSTOP)
        return f"SIGSTOP to pid {pid}"
    port = stack.victim_port()
    path = {"503": "/fault/status?code=503&ratio=1", "slow": "/fault/slow?ms=200"}[scenario]
    status, _ = http_get(f"http://127.0.0.1:{port}{path}")
    if status != 200:
        raise RuntimeError(f"fault {path} on port {port} answered {status}")
    return f"GET {path} on the replica's own port"


BULWARK_EVENT_KEYS = {"replica_unready": "unready_s", "probe_failed": "probe_failed_s",
                      "replica_exited": "exited_s", "replica_started": "started_s", "replica_ready": "ready_s"}


def _bulwark_events(target: Bulwark, seq0: int, t0: float, victim: int) -> dict[str, Any]:
    """bulwark's own view of the victim after t0, from its events (at_ms)."""
    try:
        events = target.events(seq0)
    except OSError:
        return {}
    return bulwark_view(events, t0, victim)


def bulwark_view(events: list[dict[str, Any]], t0: float, victim: int) -> dict[str, Any]:
    """The first time (s after t0) of each kind of event about the victim, in the order they
    happened ({"exited_s": ..., "ready_s": ...}), and "events": every event from 1 s before t0."""
    out: dict[str, Any] = {}
    for e in events:
        if e.get("index") != victim or e["at_ms"] / 1000 < t0 - 0.05:
            continue
        dt = round(e["at_ms"] / 1000 - t0, 3)
        kind = e["type"]
        key = BULWARK_EVENT_KEYS.get(kind)
        if "eject" in kind or "outlier" in kind:
            key = "ejected_s"
        if key and key not in out:
            out[key] = dt
    out["events"] = [{"type": e["type"], "index": e.get("index"), "t_s": round(e["at_ms"] / 1000 - t0, 3)}
                     for e in events if e["at_ms"] / 1000 >= t0 - 1][:60]
    return out


def haproxy_view(samples: list[Sample], t0: float, victim: int) -> HAProxyView:
    """HAProxy's own view of the victim (its stats socket, polled every 100 ms)."""
    down = up = None
    states: list[tuple[float, str]] = []
    for s in samples:
        st = (s.native or {}).get(victim)
        if st is None:
            continue
        if not states or states[-1][1] != st:
            states.append((round(s.t - t0, 2), st))
        if s.t < t0:
            continue
        if down is None and (st.startswith("DOWN") or st.startswith("MAINT")):
            down = round(s.t - t0, 2)
        elif down is not None and up is None and st == "UP":
            up = round(s.t - t0, 2)
    return HAProxyView(down_s=down, up_s=up, transitions=states[:40])


def _naive_view(backends: NaiveBackends, t0: float) -> list[NaiveEvent]:
    return [NaiveEvent(t_s=round(t - t0, 3), index=i, what=what, pid=pid)
            for t, i, what, pid in backends.log if t >= t0 - 0.05]


def timeline(report: LoadReport, t0: float) -> list[LoadSecond]:
    """Per-second load timeline on the fault's clock (t = seconds since the fault)."""
    base = report.started_at - t0
    return [LoadSecond(t=round(base + s.t, 2), sent=s.sent, ok=s.ok, failed=s.failed, p99_ms=s.p99_ms)
            for s in report.timeline]


def summary(report: LoadReport) -> LoadSummary:
    return LoadSummary(
        sent=report.sent, ok=report.ok, failed=report.failed_total,
        failed_by_kind={k: v for k, v in report.failed.items() if k not in ("total", "samples") and v},
        failure_samples=report.failed.get("samples", [])[:3],
        latency_ms=report.latency_ms, achieved_rate=report.achieved_rate)


def run_one(ctx: Ctx, proxy: str, scenario: str) -> HealingRun:
    p = ctx.params
    rate, before, after = p["heal_rate"], p["heal_before"], p["heal_after"]
    stack = Stack(ctx, proxy)
    if scenario == "reload" and isinstance(stack.target, Bulwark):
        stack.target.reload_support()  # raises NotSupported before anything starts
    stack.start()

    def load(secs: float) -> LoadReport:
        return measure.load(ctx.procs, ctx.bulwark, stack.target.url, rate, secs, concurrency=4096, timeout="5s")

    mon = Monitor(stack.target)
    seq0 = stack.target.last_seq if isinstance(stack.target, Bulwark) else 0
    pre_summary: LoadSummary | None = None
    reloads: list[Reload] | None = None
    try:
        mon.start()
        time.sleep(0.3)
        if scenario == "slow":
            pre = load(before)
            t0 = time.time()
            fault = _fault(stack, scenario, list(mon.samples))
            time.sleep(0.2)
            during = load(after)
            pre_summary, during_summary = summary(pre), summary(during)
            load_timeline = timeline(pre, t0) + timeline(during, t0)
            t_end = time.time()
        else:
            box: dict[str, Any] = {}

            def breaker() -> None:
                time.sleep(before)
                box["t0"] = time.time()
                try:
                    if scenario == "reload":
                        stack.victim = busiest(mon.samples, time.time() - 1.0)
                        n = p["reloads"]
                        gap = (after - 1.0) / n
                        box["reloads"] = []
                        for _ in range(n):
                            t = time.time()
                            ok, detail = stack.target.reload()
                            box["reloads"].append(Reload(t_s=round(t - box["t0"], 2), ok=ok, detail=detail))
                            time.sleep(max(0.0, gap - (time.time() - t)))
                    else:
                        box["fault"] = _fault(stack, scenario, list(mon.samples))
                except Exception as e:  # noqa: BLE001
                    box["error"] = repr(e)

            th = threading.Thread(target=breaker, daemon=True)
            th.start()
            run = load(before + after)
            th.join(timeout=60)
            t_end = time.time()
            if "error" in box:
                raise RuntimeError(f"fault injection failed: {box['error']}")
            t0 = box["t0"]
            fault = box.get("fault", "reloads")
            reloads = box.get("reloads")
            during_summary = summary(run)
            load_timeline = timeline(run, t0)
        time.sleep(0.3)
    finally:
        samples = mon.stop()
        native = None
        if isinstance(stack.target, Bulwark) and stack.target.p and stack.victim is not None:
            native = _bulwark_events(stack.target, seq0, locals().get("t0", time.time()), stack.victim)
        stack.stop()
    victim = stack._victim()
    return HealingRun(
        proxy=proxy, scenario=scenario, rate=rate, fault=fault, reloads=reloads, before=pre_summary,
        during=during_summary, timeline=load_timeline, monitor_error=mon.error, victim=victim,
        traffic=analyse(samples, victim, t0, t_end),
        share_timeline=share_timeline(samples, victim, t0),
        traffic_samples=[(round(s.t - t0, 3), s.bytes) for s in samples],
        bulwark_view=native,
        haproxy_view=haproxy_view(samples, t0, victim) if proxy.startswith("haproxy") else None,
        naive_supervisor=_naive_view(stack.backends, t0) if stack.backends else None)


def figures(r: HealingRun) -> Figures:
    """The scenario's headline figures for the tables (seconds after the fault)."""
    s, prox = r.scenario, r.proxy
    tr = r.traffic
    bv = r.bulwark_view or {}
    hv_down = r.haproxy_view.down_s if r.haproxy_view else None
    hv_up = r.haproxy_view.up_s if r.haproxy_view else None
    failed, sent = r.during.failed, r.during.sent
    if s == "kill":
        return KillFigures(failed, sent,
                           detect_proxy_s=bv.get("exited_s") if prox == "bulwark" else hv_down,
                           full_proxy_s=bv.get("ready_s") if prox == "bulwark" else hv_up,
                           full_traffic_s=tr.back_s, share_before=tr.share_before, share_last_3s=tr.share_last_3s)
    if s == "hang":
        proxy_seen = [x for x in (bv.get("unready_s"), bv.get("probe_failed_s")) if x is not None]
        return HangFigures(failed, sent,
                           detect_proxy_s=min(proxy_seen) if prox == "bulwark" and proxy_seen else hv_down,
                           detect_traffic_s=tr.out_s,
                           replace_proxy_s=bv.get("ready_s") if prox == "bulwark" else None,
                           replace_traffic_s=tr.back_s, share_last_3s=tr.share_last_3s,
                           p99_ms=r.during.latency_ms["p99"])
    if s == "503":
        return Figures503(failed, sent,
                          eject_proxy_s=bv.get("ejected_s") if prox == "bulwark" else hv_down,
                          eject_traffic_s=tr.out_s, share_during=tr.share_during)
    if s == "slow":
        assert r.before is not None
        return SlowFigures(failed, sent, p99_before_ms=r.before.latency_ms["p99"],
                           p99_during_ms=r.during.latency_ms["p99"], share_during=tr.share_during)
    if s == "reload":
        return ReloadFigures(failed, sent, reloads_ok=sum(1 for x in r.reloads or [] if x.ok),
                             reloads=len(r.reloads or []), p99_ms=r.during.latency_ms["p99"])
    return Figures(failed, sent)


def run_all(ctx: Ctx, log: Log) -> dict[str, dict[str, HealingRun | Unavailable]]:
    out: dict[str, dict[str, HealingRun | Unavailable]] = {}
    for scenario in SCENARIOS:
        out[scenario] = {}
        for proxy in VARIANTS.get(scenario, PROXIES):
            log(f"healing: {scenario} / {proxy}")
            try:
                r = run_one(ctx, proxy, scenario)
                r.figures = figures(r)
                out[scenario][proxy] = r
                log(f"  {r.figures.to_json()}")
            except NotSupported as e:
                out[scenario][proxy] = Unavailable.not_supported(e)
                log(f"  not supported: {e}")
            except Exception as e:  # noqa: BLE001 (recorded; the run goes on, exit status says so)
                out[scenario][proxy] = Unavailable.error(e)
                ctx.errors.append(f"healing {scenario}/{proxy}: {e!r}")
                log(f"  ERROR: {e!r}")
    return out
