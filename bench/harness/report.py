"""The results: a Markdown file with the tables, PNG plots, from the JSON the run wrote.
`python3 -m harness.report RESULT.json` regenerates the Markdown and plots from a JSON.

Everything here reads the JSON document (plain dicts and lists, as json.load returns it),
whether the run just produced it or it comes from a file: both give the same report."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .records import JsonDict

Write = Callable[[str], None]
# (figure, unit, which is better, {proxy: value})
Ratio = tuple[str, str, str, dict[str, Any]]

COLORS = {"bulwark": "tab:blue", "haproxy": "tab:orange", "nginx": "tab:green", "direct": "tab:gray",
          "haproxy_no503retry": "tab:brown"}
NAMES = {"bulwark": "bulwark", "haproxy": "HAProxy", "nginx": "nginx", "direct": "direct",
         "haproxy_no503retry": "HAProxy, 503 not retried"}
PCTS = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9")]
PROXIES = ["bulwark", "haproxy", "nginx"]


# --------------------------------------------------------------------------------- helpers

def _get(d: Any, *keys: str) -> Any:  # any JSON value
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _status(entry: JsonDict | None) -> str | None:
    if entry is None:
        return "not run"
    if "not_supported" in entry:
        return "not supported"
    if "error" in entry:
        return "error"
    return None


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} s"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or a <= 0 or b <= 0:
        return "–"
    return f"{a / b:.2f}"


def added(compare: JsonDict, mode: str, name: str, frac: float, pct: str) -> float | None:
    """Latency added over the direct baseline at the same rate, in µs."""
    def at(m: str, target: str) -> float | None:
        for r in _get(compare, "latency", m, target, "rates") or []:
            if r["fraction"] == frac:
                return r["latency_ms"][pct]
        return None
    own, base = at(mode, name), at("http", "direct")
    if own is None or base is None:
        return None
    return round((own - base) * 1000, 1)


def rate_entry(compare: JsonDict, mode: str, name: str, frac: float) -> JsonDict | None:
    for r in _get(compare, "latency", mode, name, "rates") or []:
        if r["fraction"] == frac:
            return r
    return None


def main_ratios(res: JsonDict) -> list[Ratio]:
    """[(figure, unit, better, {proxy: value})] for the summary table and the final reply."""
    c = res.get("compare") or {}
    rows: list[Ratio] = []

    def per(fn: Callable[[str], Any]) -> dict[str, Any]:
        return {p: fn(p) for p in PROXIES}
    rows.append(("max throughput, HTTP/1.1 (wrk, median)", "req/s", "higher",
                 per(lambda p: _get(c, "throughput", "http", p, "rps_median"))))
    rows.append(("max throughput, h2c (h2load, median)", "req/s", "higher",
                 per(lambda p: _get(c, "throughput", "http", p, "h2c", "rps_median"))))
    rows.append(("max throughput, TCP mode (wrk, median)", "req/s", "higher",
                 per(lambda p: _get(c, "throughput", "tcp", p, "rps_median"))))
    for frac in (0.25, 0.5):
        for pct, label in (("p50", "p50"), ("p99", "p99")):
            rows.append((f"added {label} latency at the {int(frac * 100)} % rate, HTTP", "µs", "lower",
                         per(lambda p, pct=pct, frac=frac: added(c, "http", p, frac, pct))))
    for pct, label in (("p50", "p50"), ("p99", "p99")):
        rows.append((f"added {label} latency at the 50 % rate, TCP mode", "µs", "lower",
                     per(lambda p, pct=pct: added(c, "tcp", p, 0.5, pct))))
    rows.append(("memory per idle keep-alive connection", "bytes", "lower",
                 per(lambda p: _get(c, "memory", p, "bytes_per_conn"))))
    rows.append(("proxy CPU per 100k requests at the 50 % rate", "CPU s", "lower",
                 per(lambda p: _get(rate_entry(c, "http", p, 0.5) or {}, "cpu_s_per_100k"))))
    rows.append(("proxy CPU per 100k requests at max throughput", "CPU s", "lower",
                 per(lambda p: _get(c, "throughput", "http", p, "cpu_s_per_100k_at_max"))))
    ins = res.get("instructions") or {}
    if ins:
        rows.append(("instructions per proxied request (callgrind)", "instructions", "lower",
                     per(lambda p: _get(ins, p, "per_request"))))
    if res.get("tls"):
        from .tls import ratio_rows
        rows += ratio_rows(res["tls"])
    return rows


# -------------------------------------------------------------------------------- markdown

def _shared_note(res: JsonDict) -> tuple[list[float], list[float]]:
    before = _get(res, "load_before", "loadavg") or [0]
    after = _get(res, "load_after", "loadavg") or [0]
    return before, after


def markdown(res: JsonDict, base: str, pngs: list[str]) -> str:
    m = res["machine"]
    v = res["versions"]
    lines: list[str] = []
    w: Write = lines.append
    w(f"# bulwark, HAProxy and nginx side by side — {res['date'][:10]}, {m['short']}\n")
    quick = res["mode"] == "quick"
    w(f"Produced by `bench/run{' --quick' if quick else ''}` in {res['duration_s']:.0f} s "
      f"({res['mode']} mode{'; quick mode proves the harness works, its figures mean nothing' if quick else ''}). "
      "Method, fairness rules and how to read every figure: [bench/README.md](../README.md). "
      f"Raw figures: [`{os.path.basename(base)}.json`]({os.path.basename(base)}.json).\n")
    w(f"- machine: {m['cpus']} vCPU ({m['cpu_model']}), {m['mem_gib']} GiB, {m['os']}, kernel {m['kernel']}")
    build = res.get("build", "release")
    w(f"- bulwark: `{v['bulwark']}` ({build} build); HAProxy: `{v['haproxy']}`; nginx: `{v['nginx']}`; "
      f"wrk: `{v['wrk']}`; h2load: `{v['h2load']}`")
    before, after = _shared_note(res)
    ow = res.get("other_work") or {}
    whole = ow.get("whole_run")
    w(f"- load average (1, 5, 15 min) before the run: {before}, after: {after}.")
    if whole:
        parts = ", ".join(f"{k} {v['avg'] * 100:.0f} % (max {v['max'] * 100:.0f} %)"
                          for k, v in ow.items() if k not in ("whole_run", "timeline", "busiest") and v)
        shared = whole["avg"] > 0.05
        w(f"- other work on the machine (CPU used by processes that are not the harness's, sampled every "
          f"2 s, share of all CPUs): {whole['avg'] * 100:.0f} % on average, {whole['max'] * 100:.0f} % at most"
          + (f"; by section: {parts}" if parts else "") + "."
          + (" **The machine was shared with other work during this run**: figures are noisier and lower "
             "than on a quiet machine; the ratios, measured side by side, suffer less." if shared else ""))
    if res.get("shared_note"):
        w(f"- {res['shared_note']}")
    if res.get("errors"):
        w(f"- **the harness hit errors**: {'; '.join(res['errors'])}")
    w("")

    c = res.get("compare")
    if c or res.get("instructions") or res.get("cpuprofile") or res.get("tls"):
        w("## Main ratios (measured in the same run)\n")
        w("Ratios are bulwark's figure divided by the other proxy's. Throughput: above 1 means bulwark "
          "is faster. Latency, memory and CPU: below 1 means bulwark adds, holds or burns less.\n")
        w("| figure | bulwark | HAProxy | nginx | bulwark/HAProxy | bulwark/nginx |")
        w("|---|---:|---:|---:|---:|---:|")
        for label, unit, _better, vals in main_ratios(res):
            if not c and all(v is None for v in vals.values()):
                continue  # a run without the comparison (`--only instructions`)
            fmt = "{:,.3f}" if unit == "CPU s" else ("{:,.1f}" if unit == "µs" else "{:,.0f}")
            cells = []
            for p in PROXIES:
                st = None
                for mode in ("tcp",) if "TCP" in label else ("http",):
                    st = _status(_get(c, "throughput", mode, p))
                if "TLS" in label or "HTTPS" in label:
                    st = _status(_get(res, "tls", "proxies", p))
                cells.append(st if vals[p] is None and st else _num(vals[p], fmt))
            w(f"| {label} ({unit}) | {' | '.join(cells)} | {_ratio(vals['bulwark'], vals['haproxy'])} | "
              f"{_ratio(vals['bulwark'], vals['nginx'])} |")
        w("")
        if res.get("observations"):
            w("## Observations on this run\n")
            for o in res["observations"]:
                w(f"- {o}")
            w("")
    if c:
        _md_throughput(w, c)
        _md_latency(w, c, "http")
        _md_latency(w, c, "tcp")
        _md_memory(w, c)
    if res.get("instructions"):
        _md_instructions(w, res["instructions"])
    if res.get("cpuprofile"):
        _md_cpuprofile(w, res["cpuprofile"])
    if res.get("tls"):
        from .tls import markdown_section
        markdown_section(w, res["tls"])
    h = res.get("healing")
    if h:
        _md_healing(w, res, h)
    k = res.get("killready")
    if k:
        w("## bulwark alone: kill -9 → replacement ready\n")
        if "error" in k:
            w(f"error: {k['error']}\n")
        else:
            kr = k["kill_to_ready_ms"]
            w(f"{k['kills']} kills of a quickstart replica (one every 2.5 s, in turn), from the kill to the "
              f"replacement's `replica_ready` event: **median {kr['median']:.0f} ms** (min {kr['min']:.0f}, "
              f"max {kr['max']:.0f}). bulwark's RSS supervising the quickstart: "
              f"{k['rss_kib']['idle'] / 1024:.1f} MiB idle, {k['rss_kib']['after_200rps_5s'] / 1024:.1f} MiB "
              f"after 5 s at 200 req/s ({k['load_200rps_5s']['failed']} failed of "
              f"{k['load_200rps_5s']['sent']}).\n")
            if "oci" in k:
                w(oci_line(k["oci"]) + "\n")
            if "warm" in k:
                w(warm_line(k["warm"]) + "\n")
    if pngs:
        w("## Plots\n")
        for p in pngs:
            w(f"![{os.path.basename(p)}]({os.path.basename(p)})\n")
    return "\n".join(lines) + "\n"


def warm_line(warm: JsonDict) -> str:
    """The kill-to-ready line for warm restarts (skipped, failed or measured)."""
    if "not_supported" in warm:
        return f"warm restarts: skipped ({warm['not_supported']})"
    if "error" in warm:
        return f"warm restarts: error: {warm['error']}"
    c, r = warm["cold_ms"], warm["restored_ms"]
    return (f"Warm restarts, a demo that starts in {warm['startup_delay']}: cold **median {c['median']:.0f} ms** "
            f"(min {c['min']:.0f}, max {c['max']:.0f}); restored from a CRIU checkpoint "
            f"(`[services.web.warm]`, {warm['restores']} restores) **median {r['median']:.0f} ms** "
            f"(min {r['min']:.0f}, max {r['max']:.0f}); checkpoints took {warm['checkpoint_dump_ms']} ms.")


def oci_line(oci: JsonDict) -> str:
    """The kill-to-ready line for replicas in runc containers (skipped, failed or measured)."""
    if "not_supported" in oci:
        return f"oci: skipped ({oci['not_supported']})"
    if "error" in oci:
        return f"oci: error: {oci['error']}"
    kr = oci["kill_to_ready_ms"]
    return (f"The same {oci['kills']} kills with each replica in a runc container (`[services.web.container]`, "
            f"the container's PID 1 killed): **median {kr['median']:.0f} ms** (min {kr['min']:.0f}, "
            f"max {kr['max']:.0f}).")


def _md_throughput(w: Write, c: JsonDict) -> None:
    w("## Max throughput (closed loop)\n")
    for mode, title in (("http", "HTTP/1.1"), ("tcp", "TCP mode (HTTP/1.1 through an L4 proxy)")):
        t = _get(c, "throughput", mode) or {}
        if not t:
            continue
        w(f"### {title}\n")
        w("| target | req/s (median) | runs | proxy core busy | CPU s / 100k req | errors |")
        w("|---|---:|---|---:|---:|---:|")
        for name in ["direct", "haproxy", "nginx", "bulwark"]:
            e = t.get(name)
            if e is None:
                continue
            st = _status(e)
            if st:
                w(f"| {NAMES[name]} | {st}: {e.get('not_supported') or e.get('error')} | | | | |")
                continue
            util = "–" if name == "direct" else f"{e['proxy_cpu_util_median'] * 100:.0f} %"
            runs = ", ".join(format(r["ok_rps"], ",.0f") for r in e["runs"])
            w(f"| {NAMES[name]} | {e['rps_median']:,.0f} | {runs} | "
              f"{util} | {_num(e.get('cpu_s_per_100k_at_max'), '{:.3f}')} | {e['errors']} |")
        w("")
        if mode == "http" and any(_get(t, n, "h2c") for n in t):
            w("h2c (HTTP/2 prior knowledge, h2load, 50 connections × 10 streams; backends stay HTTP/1.1):\n")
            w("| target | req/s (median) | runs | failed |")
            w("|---|---:|---|---:|")
            for name in ["direct", "haproxy", "nginx", "bulwark"]:
                e = _get(t, name, "h2c")
                if e:
                    w(f"| {NAMES[name]} | {e['rps_median']:,.0f} | "
                      f"{', '.join(format(r['ok_rps'], ',.0f') for r in e['runs'])} | {e['failed']} |")
            w("")
    w("`proxy core busy`: the proxy's CPU time over the run's wall time; near 100 % means the proxy "
      "was the bottleneck, lower means the other core (load generator + backends) was.\n")


def _md_latency(w: Write, c: JsonDict, mode: str) -> None:
    lat = _get(c, "latency", mode) or {}
    if not lat:
        return
    rates = _get(c, "rates") or {}
    title = "HTTP/1.1" if mode == "http" else "TCP mode"
    w(f"## Latency at fixed rates, {title} (open loop, `bulwark load`)\n")
    knee = rates.get("knee") or {}
    if rates.get("capped"):
        through = ", ".join(f"{NAMES.get(n, n)} {v['rate']:,.0f}" for n, v in (knee.get("through") or {}).items())
        w(f"Rates in the ratio 25 : 50 : 75, the highest capped at the knee ({_num(knee.get('rate'))} req/s: "
          f"the highest rate at which the direct path and the weakest proxy keep a per-second p99 under "
          f"2 ms — {through}), instead of 25/50/75 % of the weakest proxy's HTTP max "
          f"({_num(rates.get('weakest_max_rps'))} req/s; 75 % = {_num((rates.get('weakest_max_rps') or 0) * 0.75)}). "
          "On 2 cores the open-loop generator and the backends share CPU 1 and reach their limit long "
          "before the proxies reach their max; above the knee every target measures CPU 1's queue. ")
    else:
        w(f"Rates: 25, 50 and 75 % of the weakest proxy's HTTP max ({_num(rates.get('weakest_max_rps'))} "
          "req/s). ")
    w("Each cell: latency in ms, and in brackets what the proxy adds over the direct-to-backend baseline "
      "at the same rate, in µs. Latency, p50, p99: lower is better.\n")
    for frac in (0.25, 0.5, 0.75):
        label = f"{int(frac * 100)} %" + (" of the capped range" if rates.get("capped") else "")
        w(f"**{label}** ({_num(_get(rate_entry(c, 'http', 'direct', frac) or {}, 'rate'))} req/s)\n")
        w("| target | p50 | p90 | p99 | p99.9 | failed | CPU s / 100k |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        names = (["direct"] if mode == "http" else []) + PROXIES
        for name in names:
            e = lat.get(name) if name != "direct" or mode == "http" else None
            st = _status(e)
            if st:
                w(f"| {NAMES[name]} | {st} | | | | | |")
                continue
            r = rate_entry(c, mode, name, frac)
            if not r:
                continue
            cells = []
            for pct, _ in PCTS:
                val = r["latency_ms"][pct]
                a = added(c, mode, name, frac, pct) if name != "direct" else None
                cells.append(f"{val:.3f}" + (f" (+{a:.0f})" if a is not None and a >= 0 else
                                             f" ({a:.0f})" if a is not None else ""))
            w(f"| {NAMES[name]} | {' | '.join(cells)} | {r['failed']} | {_num(r['cpu_s_per_100k'], '{:.3f}')} |")
        w("")


def _md_per_proxy(w: Write, title: str, columns: list[str], entry: Callable[[str], JsonDict | None],
                  cells: Callable[[JsonDict], list[str]], note: str) -> None:
    """A section with one row per proxy; a proxy not measured gets its status instead."""
    w(f"## {title}\n")
    w("| proxy | " + " | ".join(columns) + " |")
    w("|---|" + "---:|" * len(columns))
    for name in PROXIES:
        m = entry(name)
        if not m or _status(m):
            w(f"| {NAMES[name]} | {_status(m) or 'not measured'} |" + " |" * (len(columns) - 1))
            continue
        w(f"| {NAMES[name]} | " + " | ".join(cells(m)) + " |")
    w(note)


def _md_memory(w: Write, c: JsonDict) -> None:
    _md_per_proxy(
        w, "Memory per idle keep-alive connection",
        ["RSS idle", "connections", "RSS with them open", "bytes per connection"],
        lambda name: _get(c, "memory", name),
        lambda m: [f"{m['rss_before_kib'] / 1024:.1f} MiB", f"{m['connections']:,}",
                   f"{m['rss_after_kib'] / 1024:.1f} MiB", _num(m["bytes_per_conn"])],
        "\nA fresh instance of each proxy, one request to warm it, then N connections that each make one "
        "request and stay open, idle. RSS of the proxy's processes (HAProxy and nginx: master + worker; "
        "bulwark: the `up` process, which also supervises; its replicas are separate processes and not "
        "counted), before and 2 s after the last connection opened.\n")


def _md_instructions(w: Write, ins: JsonDict) -> None:
    _md_per_proxy(
        w, "Instructions per proxied request (callgrind)",
        ["requests counted", "instructions", "per request", "processes"],
        ins.get,
        lambda m: [f"{m['requests']:,}", f"{m['instructions']:,}", _num(m["per_request"]), str(m["processes"])],
        "\nEach proxy under `valgrind --tool=callgrind` with instrumentation off until a warm-up is done, then "
        "one `wrk -t1 -c8` run counted: every instruction of the proxy's processes and threads (health checks "
        "included) over the requests completed. Noise-free: a shared machine slows valgrind down but does not "
        "change the count.\n")
    _md_profiles(w, ins)


def _md_profiles(w: Write, ins: JsonDict) -> None:
    """Where each proxy's counted instructions go: by component, then bulwark's hottest
    functions."""
    measured = [n for n in PROXIES if (ins.get(n) or {}).get("components")]
    if not measured:
        return
    w("### Where the instructions go\n")
    w("Share of each proxy's counted instructions executed by the functions of a component themselves "
      "(`callgrind_annotate --inclusive=no` on the same dump; user space only, the system calls' own work "
      "is the kernel's and not counted).\n")
    for name in measured:
        m = ins[name]
        w(f"**{NAMES[name]}** ({_num(m['per_request'])} instructions per request):\n")
        w("| component | share | instructions per request |")
        w("|---|---:|---:|")
        for label, share in m["components"].items():
            w(f"| {label} | {share:.1f} % | {_num(round(m['per_request'] * share / 100))} |")
        w("")
    top = (ins.get("bulwark") or {}).get("top")
    if top:
        w("bulwark's hottest functions (instructions executed in the function itself):\n")
        w("| share | function | object |")
        w("|---:|---|---|")
        for h in top:
            fn = h["function"] if len(h["function"]) <= 110 else h["function"][:107] + "..."
            w(f"| {h['share']:.2f} % | `{fn}` | {h['object']} |")
        w("")


def _md_cpuprofile(w: Write, prof: JsonDict) -> None:
    """User and system CPU per request at max load, and where the samples fall."""
    w("## Where the CPU goes at max load (perf)\n")
    w("Each proxy at max load (`wrk -t1 -c50`, one run) under `perf record -e cpu-clock` (a software clock: "
      "this VM has no hardware counters). User and system: CPU seconds per 100k requests from /proc over the "
      "run. System calls: counted by `perf stat -e raw_syscalls:sys_enter` over the same window. "
      "Objects and symbols: shares of the proxy's own samples, the kernel's work for its system calls "
      "included; symbols under 0.3 % are not listed.\n")
    w("| proxy | mode | req/s | user CPU s / 100k | system CPU s / 100k | system calls per request | "
      "samples by object |")
    w("|---|---|---:|---:|---:|---:|---|")
    for name in PROXIES:
        for mode, m in (prof.get(name) or {}).items():
            if _status(m):
                w(f"| {NAMES[name]} | {mode} | {_status(m)} | | | | |")
                continue
            objs = ", ".join(f"{o} {v:.0f} %" for o, v in list(m["by_object"].items())[:4])
            w(f"| {NAMES[name]} | {mode} | {_num(m['rps'])} | {m['user_per_100k']:.3f} | "
              f"{m['system_per_100k']:.3f} | {m['syscalls_per_request']:.2f} | {objs} |")
    w("")
    for name in PROXIES:
        m = (prof.get(name) or {}).get("http")
        if not m or _status(m):
            continue
        w(f"{NAMES[name]}'s hottest symbols, HTTP/1.1 (k: kernel):\n")
        w("| share | symbol | object |")
        w("|---:|---|---|")
        for s in m["top"]:
            sym = s["symbol"] if len(s["symbol"]) <= 100 else s["symbol"][:97] + "..."
            w(f"| {s['share']:.2f} % | {'k ' if s['kernel'] else ''}`{sym}` | {os.path.basename(s['object'])} |")
        w("")


HEAL_COLUMNS = {
    "kill": [("failed", "failed requests"), ("detect_proxy_s", "seen by the proxy"),
             ("full_proxy_s", "full capacity (proxy's view)"), ("full_traffic_s", "full capacity (traffic)"),
             ("share_before", "its share before"), ("share_last_3s", "its slot's share, last 3 s")],
    "hang": [("failed", "failed requests"), ("p99_ms", "p99 (ms)"), ("detect_proxy_s", "detected (proxy's view)"),
             ("detect_traffic_s", "out of rotation (traffic)"), ("replace_proxy_s", "replaced (proxy's view)"),
             ("replace_traffic_s", "replaced (traffic)"), ("share_last_3s", "its slot's share, last 3 s")],
    "503": [("failed", "failed requests"), ("eject_proxy_s", "ejected (proxy's view)"),
            ("eject_traffic_s", "out of rotation (traffic)"), ("share_during", "its share of traffic after")],
    "slow": [("p99_before_ms", "p99 before (ms)"), ("p99_during_ms", "p99 during (ms)"),
             ("share_during", "its share of traffic during")],
    "reload": [("failed", "failed requests"), ("reloads_ok", "reloads applied"), ("p99_ms", "p99 (ms)")],
}

HEAL_NOTES = {
    "kill": "Seen by the proxy: bulwark's `replica_exited` event, HAProxy's server DOWN (stats socket); nginx "
            "exposes nothing. Full capacity, proxy's view: the replacement's `replica_ready` (bulwark), the "
            "server UP again (HAProxy). Traffic: the killed replica's slot receives ≥ 25 % of its traffic "
            "before the fault again (two 100 ms samples in a row). Shares: of the bytes sent to the 3 "
            "replicas (even split 0.333); a latency-aware balancer may send a cold replacement little.",
    "hang": "Detected, proxy's view: bulwark's first `replica_unready`/`probe_failed` event, HAProxy's server "
            "DOWN. Out of rotation (traffic): the replica receives < 10 % of its traffic before the fault, over "
            "0.5 s. Replaced: the replacement's `replica_ready` (bulwark); the naive supervisor restarts on exit "
            "only, so behind HAProxy and nginx a hung replica is never replaced (–): they run on 2 replicas.",
    "503": "The replica's `/healthz` stays healthy: only a proxy that watches live responses can eject it. "
           "Ejected, proxy's view: bulwark's `replica_ejected` event, HAProxy's server DOWN (`observe layer7`). "
           "Out of rotation (traffic): it receives < 10 % of its traffic before the fault, over 0.5 s. Share: "
           "its share of the bytes sent to the 3 replicas after the fault (even split 0.333; a request retried "
           "elsewhere counts at both).",
    "slow": "The load runs in two parts, before the fault and with it; p99 of each part. Share: the slow "
            "replica's share of the bytes sent to the 3 replicas during the fault (even split 0.333).",
    "reload": "Reloads during the load, evenly spaced, each applying a small change to the file: HAProxy "
              "master-worker SIGUSR2, nginx SIGHUP (applied = a new worker process appeared), `bulwark reload` "
              "(applied = exit 0).",
}


def _cell(key: str, v: float | None) -> str:
    if v is None:
        return "–"
    if key.endswith("_s"):
        return f"{v:.2f} s"
    if key.endswith("_ms"):
        return f"{v:,.1f}"
    if key.startswith("share"):
        return f"{v:.3f}"
    return f"{v:,}"


def _md_healing(w: Write, res: JsonDict, h: JsonDict) -> None:
    p = res["params"]
    w("## Healing\n")
    w(f"One of 3 replicas breaks under an open-loop load of {p['heal_rate']} req/s ({p['heal_before']} s "
      f"before the fault, {p['heal_after']} s after; requests time out after 5 s). Times are seconds "
      "after the fault. bulwark supervises its replicas itself (the quickstart's probes and backoff); "
      "HAProxy and nginx run in front of replicas the harness restarts on exit (after 100 ms), with their "
      "best health checking. – means it did not happen within the window.\n")
    from .healing import DESCRIPTION, SCENARIOS
    for s in SCENARIOS:
        if s not in h:
            continue
        cols = HEAL_COLUMNS[s]
        w(f"### {DESCRIPTION[s]}\n")
        w("| proxy | " + " | ".join(label for _, label in cols) + " |")
        w("|---|" + "---:|" * len(cols))
        for proxy in h[s]:
            e = h[s].get(proxy)
            st = _status(e)
            if st:
                why = e.get("not_supported") or e.get("error") or ""
                w(f"| {NAMES[proxy]} | {st}: {why} |" + " |" * (len(cols) - 1))
                continue
            f = e["figures"]
            cells = []
            for key, _ in cols:
                val = f.get(key)
                if key == "failed":
                    cells.append(f"{val:,} of {f['sent']:,}")
                elif key == "reloads_ok":
                    cells.append(f"{val} of {f['reloads']}")
                else:
                    cells.append(_cell(key, val))
            w(f"| {NAMES[proxy]} | {' | '.join(cells)} |")
        w(f"\n{HEAL_NOTES[s]}\n")


# ----------------------------------------------------------------------------------- plots

def _plain_log_axis(ax: Any) -> None:  # a matplotlib Axes
    from matplotlib import ticker
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def plots(res: JsonDict, base: str) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out: list[str] = []
    c = res.get("compare")
    if c:
        for mode in ("http", "tcp"):
            p = _plot_latency(plt, c, mode, f"{base}-latency-{mode}.png")
            if p:
                out.append(p)
        p = _plot_throughput(plt, c, f"{base}-throughput.png")
        if p:
            out.append(p)
    h = res.get("healing")
    if h:
        for s, by_proxy in h.items():
            p = _plot_healing(plt, res, s, by_proxy, f"{base}-heal-{s}.png")
            if p:
                out.append(p)
    return out


def _plot_latency(plt: Any, c: JsonDict, mode: str, path: str) -> str | None:
    names = [n for n in (["direct"] + PROXIES) if _get(c, "latency", "http" if n == "direct" else mode, n, "rates")]
    if len(names) < 2:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    for ax, frac in zip(axes, (0.25, 0.5, 0.75)):
        for name in names:
            r = rate_entry(c, "http" if name == "direct" else mode, name, frac)
            if not r:
                continue
            ys = [r["latency_ms"][k] for k, _ in PCTS]
            ax.plot(range(len(PCTS)), ys, marker="o", color=COLORS[name], label=NAMES[name],
                    linestyle="--" if name == "direct" else "-")
        ax.set_xticks(range(len(PCTS)), [lbl for _, lbl in PCTS])
        ax.set_yscale("log")
        _plain_log_axis(ax)
        ax.grid(True, which="both", alpha=0.3)
        rate = _get(rate_entry(c, "http", "direct", frac) or {}, "rate") or 0
        ax.set_title(f"{int(frac * 100)} % rate ({rate:,} req/s)")
    axes[0].set_ylabel("latency (ms, log scale)")
    axes[0].legend()
    fig.suptitle(f"Latency percentiles, {'HTTP/1.1' if mode == 'http' else 'TCP mode'}, open loop "
                 f"(lower is better; direct = no proxy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_throughput(plt: Any, c: JsonDict, path: str) -> str:
    groups = [("http", "HTTP/1.1", None), ("http", "h2c", "h2c"), ("tcp", "TCP mode", None)]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.2
    names = ["direct"] + PROXIES
    for gi, (mode, _label, sub) in enumerate(groups):
        for ni, name in enumerate(names):
            e = _get(c, "throughput", mode, name)
            val = _get(e, sub, "rps_median") if sub else _get(e, "rps_median")
            if val:
                ax.bar(gi + (ni - 1.5) * width, val, width, color=COLORS[name], label=NAMES[name] if gi == 0 else None)
                ax.text(gi + (ni - 1.5) * width, val, f"{val / 1000:.0f}k", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(groups)), [g[1] for g in groups])
    ax.set_ylabel("requests/s (median of runs)")
    ax.set_title("Max throughput, one proxy core (higher is better)")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_healing(plt: Any, res: JsonDict, scenario: str, by_proxy: JsonDict,
                  path: str) -> str | None:
    from .healing import DESCRIPTION
    runs = {p: e for p, e in by_proxy.items() if e and "timeline" in e}
    if not runs:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for proxy, e in runs.items():
        tl = e["timeline"]
        xs = [s["t"] + 0.5 for s in tl]
        axes[0].plot(xs, [s["failed"] for s in tl], marker=".", color=COLORS[proxy], label=NAMES[proxy])
        axes[1].plot(xs, [max(s["p99_ms"], 0.01) for s in tl], marker=".", color=COLORS[proxy], label=NAMES[proxy])
        sh = [(t, v) for t, v in e.get("share_timeline", []) if v is not None]
        axes[2].plot([t for t, _ in sh], [v * 100 for _, v in sh], color=COLORS[proxy], label=NAMES[proxy])
        f = e.get("figures") or {}
        for key, mk in (("detect_proxy_s", "v"), ("eject_proxy_s", "v"), ("full_proxy_s", "^"),
                        ("replace_proxy_s", "^")):
            if f.get(key) is not None:
                axes[2].plot([f[key]], [92], marker=mk, color=COLORS[proxy], markersize=9, linestyle="none")
        for rl in e.get("reloads", []):
            for ax in axes:
                ax.axvline(rl["t_s"], color=COLORS[proxy], alpha=0.3, linestyle=":")
    for ax in axes:
        ax.axvline(0, color="red", alpha=0.6)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("failed requests / s")
    axes[1].set_ylabel("p99 per second (ms, log)")
    axes[1].set_yscale("log")
    _plain_log_axis(axes[1])
    axes[2].set_ylabel("broken replica's share\nof traffic (%, trailing 0.5 s)")
    axes[2].axhline(100 / 3, color="black", alpha=0.3, linestyle="--")
    axes[2].set_ylim(0, 100)
    axes[2].set_xlabel("seconds since the fault (red line)" + ("; dotted: reloads" if scenario == "reload" else
                       "; ▼ the proxy saw it / ejected it, ▲ back in rotation (the proxy's own view)"))
    axes[0].legend(loc="upper right")
    fig.suptitle(f"Healing: {DESCRIPTION[scenario]}, {res['params']['heal_rate']} req/s open loop")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(src: str) -> None:
    with open(src) as f:
        data = json.load(f)
    b = src[:-5] if src.endswith(".json") else src
    pngs = plots(data, b)
    with open(b + ".md", "w") as f:
        f.write(markdown(data, b, pngs))
    print(f"wrote {b}.md and {len(pngs)} plots")


if __name__ == "__main__":
    main(sys.argv[1])
