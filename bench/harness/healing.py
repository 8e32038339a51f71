"""Healing scenarios: one of 3 replicas breaks under a fixed open-loop load.

bulwark supervises and probes its own replicas (the quickstart's settings). HAProxy and
nginx run in front of replicas the harness supervises the naive way (restart on exit
after 100 ms, nothing else), with their best health checking (see proxies.py).

Each scenario starts from a fresh stack. kill, hang, 503 and reload run one continuous
load and break things during it (requests in flight at the moment of the fault matter);
slow measures a steady state, so its load runs in two parts, before and during.
"""
import os
import signal
import threading
import time

from . import measure
from .procs import NaiveBackends, http_get
from .proxies import HAProxy, Nginx, Bulwark, NotSupported
from .traffic import Monitor, analyse, busiest, share_timeline

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


class Stack:
    """A proxy with its 3 replicas, fresh for one scenario."""

    def __init__(self, ctx, proxy):
        self.ctx, self.proxy = ctx, proxy
        self.backends = None
        self.victim = None  # chosen at the fault: the replica with the most traffic
        if proxy == "bulwark":
            self.target = Bulwark(ctx.procs, ctx.tmp, ctx.bulwark)
        elif proxy.startswith("haproxy"):
            self.backends = NaiveBackends(ctx.procs, ctx.bulwark)
            self.target = HAProxy(ctx.procs, ctx.tmp, self.backends, retry_503=proxy == "haproxy")
        else:
            self.backends = NaiveBackends(ctx.procs, ctx.bulwark)
            self.target = Nginx(ctx.procs, ctx.tmp, self.backends)

    def start(self):
        if self.backends:
            self.backends.start()
        self.target.start()
        return self

    def victim_pid(self):
        return self.backends.pid(self.victim) if self.backends else self.target.pid(self.victim)

    def victim_port(self):
        return self.backends.ports[self.victim] if self.backends else self.target.replica_port(self.victim)

    def stop(self):
        try:
            self.target.stop()
        finally:
            if self.backends:
                self.backends.stop()


def _fault(stack, scenario, samples):
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


def _bulwark_events(target, seq0, t0, victim):
    """bulwark's own view of the victim after t0, from its events (at_ms)."""
    out = {}
    try:
        events = target.events(seq0)
    except OSError:
        return out
    for e in events:
        if e.get("index") != victim or e["at_ms"] / 1000 < t0 - 0.05:
            continue
        dt = round(e["at_ms"] / 1000 - t0, 3)
        kind = e["type"]
        key = {"replica_unready": "unready_s", "probe_failed": "probe_failed_s", "replica_exited": "exited_s",
               "replica_started": "started_s", "replica_ready": "ready_s"}.get(kind)
        if "eject" in kind or "outlier" in kind:
            key = "ejected_s"
        if key and key not in out:
            out[key] = dt
    out["events"] = [{"type": e["type"], "index": e.get("index"), "t_s": round(e["at_ms"] / 1000 - t0, 3)}
                     for e in events if e["at_ms"] / 1000 >= t0 - 1][:60]
    return out


def _haproxy_view(samples, t0, victim):
    """HAProxy's own view of the victim (its stats socket, polled every 100 ms)."""
    down = up = None
    states = []
    for s in samples:
        st = (s.get("native") or {}).get(victim)
        if st is None:
            continue
        if not states or states[-1][1] != st:
            states.append((round(s["t"] - t0, 2), st))
        if s["t"] < t0:
            continue
        if down is None and (st.startswith("DOWN") or st.startswith("MAINT")):
            down = round(s["t"] - t0, 2)
        elif down is not None and up is None and st == "UP":
            up = round(s["t"] - t0, 2)
    return {"down_s": down, "up_s": up, "transitions": states[:40]}


def _naive_view(backends, t0):
    return [{"t_s": round(t - t0, 3), "index": i, "what": what, "pid": pid}
            for t, i, what, pid in backends.log if t >= t0 - 0.05]


def _timeline(report, t0):
    """Per-second load timeline on the fault's clock (t = seconds since the fault)."""
    base = report["started_at"] - t0
    return [{"t": round(base + s["t"], 2), "sent": s["sent"], "ok": s["ok"], "failed": s["failed"],
             "p99_ms": s["p99_ms"]} for s in report["timeline"]]


def _summary(report):
    return {"sent": report["sent"], "ok": report["ok"], "failed": report["failed"]["total"],
            "failed_by_kind": {k: v for k, v in report["failed"].items() if k not in ("total", "samples") and v},
            "failure_samples": report["failed"].get("samples", [])[:3],
            "latency_ms": report["latency_ms"], "achieved_rate": report.get("achieved_rate")}


def run_one(ctx, proxy, scenario):
    p = ctx.params
    rate, before, after = p["heal_rate"], p["heal_before"], p["heal_after"]
    stack = Stack(ctx, proxy)
    if scenario == "reload" and proxy == "bulwark":
        stack.target.reload_support()  # raises NotSupported before anything starts
    stack.start()
    load = lambda secs: measure.load(ctx.procs, ctx.bulwark, stack.target.url, rate, secs,  # noqa: E731
                                     concurrency=4096, timeout="5s")
    mon = Monitor(stack.target)
    seq0 = stack.target.last_seq if proxy == "bulwark" else 0
    res = {"proxy": proxy, "scenario": scenario, "rate": rate}
    try:
        mon.start()
        time.sleep(0.3)
        if scenario == "slow":
            pre = load(before)
            t0 = time.time()
            res["fault"] = _fault(stack, scenario, list(mon.samples))
            time.sleep(0.2)
            during = load(after)
            res["before"], res["during"] = _summary(pre), _summary(during)
            res["timeline"] = _timeline(pre, t0) + _timeline(during, t0)
            t_end = time.time()
        else:
            box = {}

            def breaker():
                time.sleep(before)
                box["t0"] = time.time()
                try:
                    if scenario == "reload":
                        stack.victim = busiest(mon.samples, time.time() - 1.0)
                        n = p["reloads"]
                        gap = (after - 1.0) / n
                        box["reloads"] = []
                        for k in range(n):
                            t = time.time()
                            ok, detail = stack.target.reload()
                            box["reloads"].append({"t_s": round(t - box["t0"], 2), "ok": ok, "detail": detail})
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
            res["fault"] = box.get("fault", "reloads")
            if "reloads" in box:
                res["reloads"] = box["reloads"]
            res["during"] = _summary(run)
            res["timeline"] = _timeline(run, t0)
        time.sleep(0.3)
    finally:
        samples = mon.stop()
        native = None
        if proxy == "bulwark" and stack.target.p and stack.victim is not None:
            native = _bulwark_events(stack.target, seq0, locals().get("t0", time.time()), stack.victim)
        stack.stop()
    res["monitor_error"] = mon.error
    res["victim"] = stack.victim
    res["traffic"] = analyse(samples, stack.victim, t0, t_end)
    res["share_timeline"] = share_timeline(samples, stack.victim, t0)
    # Raw traffic view: (seconds since the fault, bytes each replica received since the last sample).
    res["traffic_samples"] = [(round(s["t"] - t0, 3), s["bytes"]) for s in samples]
    if proxy == "bulwark":
        res["bulwark_view"] = native
    elif proxy.startswith("haproxy"):
        res["haproxy_view"] = _haproxy_view(samples, t0, stack.victim)
    if stack.backends:
        res["naive_supervisor"] = _naive_view(stack.backends, t0)
    return res


def figures(r):
    """The scenario's headline figures for the tables (seconds after the fault)."""
    s, prox = r["scenario"], r["proxy"]
    tr = r["traffic"]
    bv = r.get("bulwark_view") or {}
    hv = r.get("haproxy_view") or {}
    f = {"failed": r["during"]["failed"], "sent": r["during"]["sent"]}
    if s == "kill":
        f["detect_proxy_s"] = bv.get("exited_s") if prox == "bulwark" else hv.get("down_s")
        f["full_proxy_s"] = bv.get("ready_s") if prox == "bulwark" else hv.get("up_s")
        f["full_traffic_s"] = tr["back_s"]
        f["share_before"] = tr["share_before"]
        f["share_last_3s"] = tr.get("share_last_3s")
    elif s == "hang":
        f["detect_proxy_s"] = (min(x for x in (bv.get("unready_s"), bv.get("probe_failed_s")) if x is not None)
                               if prox == "bulwark" and (bv.get("unready_s") is not None
                                                         or bv.get("probe_failed_s") is not None)
                               else hv.get("down_s"))
        f["detect_traffic_s"] = tr["out_s"]
        f["replace_proxy_s"] = bv.get("ready_s") if prox == "bulwark" else None
        f["replace_traffic_s"] = tr["back_s"]
        f["share_last_3s"] = tr.get("share_last_3s")
        f["p99_ms"] = r["during"]["latency_ms"]["p99"]
    elif s == "503":
        f["eject_proxy_s"] = bv.get("ejected_s") if prox == "bulwark" else hv.get("down_s")
        f["eject_traffic_s"] = tr["out_s"]
        f["share_during"] = tr["share_during"]
    elif s == "slow":
        f["p99_before_ms"] = r["before"]["latency_ms"]["p99"]
        f["p99_during_ms"] = r["during"]["latency_ms"]["p99"]
        f["share_during"] = tr["share_during"]
    elif s == "reload":
        f["reloads_ok"] = sum(1 for x in r.get("reloads", []) if x["ok"])
        f["reloads"] = len(r.get("reloads", []))
        f["p99_ms"] = r["during"]["latency_ms"]["p99"]
    return f


def run_all(ctx, log):
    out = {}
    for scenario in SCENARIOS:
        out[scenario] = {}
        for proxy in VARIANTS.get(scenario, PROXIES):
            log(f"healing: {scenario} / {proxy}")
            try:
                r = run_one(ctx, proxy, scenario)
                r["figures"] = figures(r)
                out[scenario][proxy] = r
                log(f"  {r['figures']}")
            except NotSupported as e:
                out[scenario][proxy] = {"not_supported": str(e)}
                log(f"  not supported: {e}")
            except Exception as e:  # noqa: BLE001 (recorded; the run goes on, exit status says so)
                out[scenario][proxy] = {"error": repr(e)}
                ctx.errors.append(f"healing {scenario}/{proxy}: {e!r}")
                log(f"  ERROR: {e!r}")
    return out
