"""Load generators and meters: wrk (closed loop, max throughput), h2load (h2c), `bulwark
load` (open loop, latency), idle keep-alive connections (memory), proxy CPU time."""
import json
import os
import re
import subprocess
import sys
import time

from .procs import LOAD_CPU, cpu_seconds, rss_kib


def _run(procs, argv, timeout):
    """Run a load tool pinned to the load CPU, in its own process group (killed on timeout)."""
    p = procs.spawn(argv, cpu=LOAD_CPU, stdout=subprocess.PIPE, log=None)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.stop(p, grace=1)
        raise RuntimeError(f"{argv[0]} did not finish within {timeout} s")
    finally:
        procs.stop(p, grace=1)
    return p.returncode, out.decode(errors="replace")


def wrk(procs, url, duration, conns, pids=()):
    """One closed-loop wrk run (1 thread): req/s, requests, errors, proxy CPU seconds."""
    cpu0, t0 = cpu_seconds(pids), time.time()
    rc, out = _run(procs, ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", url], duration + 30)
    cpu = cpu_seconds(pids) - cpu0
    elapsed = time.time() - t0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if rc != 0 or not m or not n:
        raise RuntimeError(f"wrk failed (exit {rc}): {out.strip()[-400:]}")
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(n.group(1))
    bad = (int(non2xx.group(1)) if non2xx else 0)
    return {"rps": float(m.group(1)), "requests": requests, "errors": errors,
            # Throughput counts answered 2xx/3xx only: a proxy failing fast must not look fast.
            "ok_rps": round(float(m.group(1)) * (requests - bad) / requests, 1) if requests else 0.0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "proxy_cpu_s": round(cpu, 3), "proxy_cpu_util": round(cpu / elapsed, 3) if elapsed else None,
            "cpu_s_per_100k": round(cpu / requests * 1e5, 3) if pids and requests else None}


def h2load(procs, url, duration, conns, streams, pids=()):
    """One h2load run over h2c (prior knowledge): req/s and proxy CPU seconds."""
    cpu0 = cpu_seconds(pids)
    rc, out = _run(procs, ["h2load", "-t1", f"-c{conns}", f"-m{streams}", f"-D{duration}",
                           "--warm-up-time=1", url], duration + 30)
    cpu = cpu_seconds(pids) - cpu0
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    if not m or not r:
        raise RuntimeError(f"h2load failed (exit {rc}): {out.strip()[-400:]}")
    done, succeeded = int(r.group(3)), int(r.group(4))
    # h2load counts any response as done; `succeeded` is 2xx/3xx only.
    return {"rps": float(m.group(1)), "requests": done, "failed": done - succeeded,
            "ok_rps": round(float(m.group(1)) * succeeded / done, 1) if done else 0.0,
            "proxy_cpu_s": round(cpu, 3),
            "cpu_s_per_100k": round(cpu / done * 1e5, 3) if pids and done else None}


def load(procs, bulwark, url, rate, duration, concurrency=256, timeout="5s", pids=()):
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
        raise RuntimeError(f"bulwark load failed (exit {rc}): {out.strip()[-400:]}")
    report["started_at"] = started
    report["proxy_cpu_s"] = round(cpu, 3)
    report["cpu_s_per_100k"] = round(cpu / report["sent"] * 1e5, 3) if pids and report["sent"] else None
    return report


def idle_connections(procs, port, n, pids, settle=2.0):
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
        while not line.startswith(b"ready") and time.time() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                break
        if not line.startswith(b"ready"):
            raise RuntimeError(f"connection holder failed: {line!r}")
        _, opened, answered = line.split()
        time.sleep(settle)
        after = rss_kib(pids)
    finally:
        procs.stop(p, grace=2)
    opened, answered = int(opened), int(answered)
    return {"connections": opened, "answered": answered, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_conn": round((after - before) * 1024 / opened) if opened else None}
