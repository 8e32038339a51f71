"""Processes: every process the harness starts leads its own process group, carries the
run's environment marker, and is killed at the end (group first, then a sweep of /proc for
the marker, which also catches replicas that bulwark started)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from .records import Record

MARKER = "BULWARK_BENCH_RUN"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# CPU layout (2 cores): proxies on PROXY_CPU, load generators and backends on LOAD_CPU.
PROXY_CPU = 0
LOAD_CPU = 1


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if pred():
                return
        except SystemExit as e:  # the target died: no point waiting
            raise RuntimeError(str(e)) from None
        except Exception:  # noqa: BLE001 (a target that is not up yet raises anything)
            pass
        if time.time() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_http_ok(url: str, timeout: float = 20) -> None:
    wait_until(lambda: http_get(url, 1.0)[0] == 200, timeout, url)


def read_stat(pid: int) -> tuple[float, int] | None:
    """(utime+stime seconds, ppid) from /proc/PID/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime 15, ppid field 4.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[1])


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st and st[1] == pid:
                out.append(int(d))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    return sum((read_stat(p) or (0.0, 0))[0] for p in pids)


def rss_kib(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class Procs:
    """Registry of everything started. `cleanup` is idempotent and runs at exit."""

    def __init__(self, run_id: str, tmp: str) -> None:
        self.run_id = run_id
        self.tmp = tmp
        self.env = dict(os.environ, **{MARKER: run_id})
        self.live: list[subprocess.Popen[bytes]] = []
        self.lock = threading.Lock()

    def spawn(self, argv: list[str], cpu: int | None = None, env: dict[str, str] | None = None,
              log: str | None = None, stdout: int | None = None,
              stdin: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """Start argv in its own process group, pinned to `cpu` (taskset execs, so the
        pid is the program's). `log`: file name in tmp for stdout+stderr."""
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + list(argv)
        e = dict(self.env)
        if env:
            e.update(env)
        out: int | IO[bytes] = subprocess.DEVNULL
        err: int | IO[bytes] = subprocess.DEVNULL
        logfile = open(os.path.join(self.tmp, log), "ab") if log else None  # closed below
        if logfile:
            out = err = logfile
        if stdout is not None:
            out = stdout
        p = subprocess.Popen(argv, env=e, stdin=stdin, stdout=out, stderr=err, start_new_session=True)
        if logfile:
            logfile.close()
        with self.lock:
            self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        """Signal p's process group (and SIGCONT it, in case it is stopped); SIGKILL the
        group after `grace` seconds."""
        if p.poll() is None:
            for s in (sig, signal.SIGCONT):
                try:
                    os.killpg(p.pid, s)
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        with self.lock:
            if p in self.live:
                self.live.remove(p)

    def cleanup(self) -> None:
        with self.lock:
            live = list(self.live)
        for p in reversed(live):
            self.stop(p, grace=3.0)
        sweep(self.run_id)


def sweep(run_id: str) -> None:
    """SIGKILL every process (but this one and its ancestors) whose environment carries
    the run's marker: replicas of a bulwark that died, grandchildren that left their group."""
    needle = f"{MARKER}={run_id}".encode()
    keep = {os.getpid()}
    p = os.getppid()
    while p > 1:
        keep.add(p)
        st = read_stat(p)
        p = st[1] if st else 1
    for _ in range(3):
        found = False
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) in keep:
                continue
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
                os.kill(int(d), signal.SIGKILL)
                found = True
            except OSError:
                pass
        if not found:
            return
        time.sleep(0.2)


class NaiveBackends:
    """Three `bulwark demo` processes supervised the naive way: restart on exit after
    100 ms (systemd's RestartSec default), no health checks. Same arguments and
    environment as bulwark gives its replicas, so responses are byte-identical."""

    RESTART_DELAY = 0.1

    def __init__(self, procs: Procs, bulwark: str, n: int = 3, tcp: bool = False) -> None:
        self.procs = procs
        self.bulwark = bulwark
        self.tcp = tcp
        self.ports = [free_port() for _ in range(n)]
        self.p: list[subprocess.Popen[bytes] | None] = [None] * n
        self.log: list[tuple[float, int, str, int]] = []  # (wall time, index, "exited"/"started", pid)
        self.stopping = False
        self.threads: list[threading.Thread] = []

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        argv = [self.bulwark, "demo", "--port", str(self.ports[i])] + (["--tcp"] if self.tcp else [])
        env = {"BULWARK_REPLICA": f"web/{i}", "BULWARK_SERVICE": "web", "BULWARK_INDEX": str(i),
               "GREETING": "hello", "BULWARK_LOG": "warn"}
        p = self.procs.spawn(argv, cpu=LOAD_CPU, env=env)
        self.p[i] = p
        self.log.append((time.time(), i, "started", p.pid))
        return p

    def _watch(self, i: int) -> None:
        while True:
            p = self.p[i]
            assert p is not None
            p.wait()
            if self.stopping:
                return
            self.log.append((time.time(), i, "exited", p.pid))
            with self.procs.lock:
                if p in self.procs.live:
                    self.procs.live.remove(p)
            time.sleep(self.RESTART_DELAY)
            if self.stopping:
                return
            self._spawn(i)

    def start(self) -> NaiveBackends:
        for i in range(len(self.ports)):
            self._spawn(i)
        for i in range(len(self.ports)):
            t = threading.Thread(target=self._watch, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        for port in self.ports:
            if self.tcp:
                wait_until(lambda port=port: socket.create_connection(("127.0.0.1", port), 1).close() or True,
                           20, f"demo --tcp on {port}")
            else:
                wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        return self

    def pid(self, i: int) -> int:
        p = self.p[i]
        assert p is not None
        return p.pid

    def slots(self) -> dict[int, int]:
        """{port: index} for the traffic monitor (ports never change here)."""
        return {port: i for i, port in enumerate(self.ports)}

    def stop(self) -> None:
        self.stopping = True
        for p in self.p:
            if p is not None:
                self.procs.stop(p, grace=3.0)
        for t in self.threads:
            t.join(timeout=5)


class Neighbours(threading.Thread):
    """How busy the machine was with work that is not ours: every `interval` seconds, the
    CPU time used by processes that do not carry the run's marker (kernel threads and
    this harness excluded), as a share of all CPUs. Processes that start and end between
    two samples are missed, so this is a lower bound."""

    def __init__(self, run_id: str, interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.needle = f"{MARKER}={run_id}".encode()
        self.interval = interval
        self.ours: dict[int, bool] = {}  # pid -> bool (pid reuse within a run is ignored)
        # (wall time, share of all CPUs used by others over the interval)
        self.samples: list[tuple[float, float]] = []
        # (wall time, top other processes) when others used > 10 %
        self.busy: list[tuple[float, list[str]]] = []
        self.done = threading.Event()

    def _others(self) -> dict[int, tuple[float, str]]:
        """{pid: (cpu seconds, command name)} of every process that is not ours."""
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            if self._ours(pid):
                continue
            st = read_stat(pid)
            if st:
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                out[pid] = (st[0], comm)
        return out

    def _ours(self, pid: int, depth: int = 0) -> bool:
        """Marked, a kernel thread, this process, or a descendant of one of ours (nginx
        overwrites its workers' environment with their process title)."""
        if pid in self.ours:
            return self.ours[pid]
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            return True  # gone, or not readable: count nothing for it
        st = read_stat(pid)
        ppid = st[1] if st else 0
        ours = (pid == os.getpid() or self.needle in env.split(b"\0") or (not env and ppid in (0, 2))
                or (ppid > 2 and depth < 20 and self._ours(ppid, depth + 1)))
        self.ours[pid] = ours
        return ours

    def run(self) -> None:
        last_t, last = time.time(), self._others()
        while not self.done.wait(self.interval):
            t, now = time.time(), self._others()
            span = (t - last_t) * (os.cpu_count() or 1)
            used = {pid: (cpu - last[pid][0], comm) for pid, (cpu, comm) in now.items() if pid in last}
            share = sum(u for u, _ in used.values()) / span
            self.samples.append((t, max(0.0, share)))
            if share > 0.1:
                top = sorted(used.values(), reverse=True)[:3]
                self.busy.append((t, [f"{comm} {u / span * 100:.0f} %" for u, comm in top if u > 0]))
            last_t, last = t, now

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)

    def summary(self, start: float = 0.0, end: float = float("inf")) -> OtherWork | None:
        return OtherWork.of([s for t, s in self.samples if start <= t <= end])


@dataclass
class OtherWork(Record):
    """Share of all CPUs that other processes used, over the samples of a period."""

    avg: float
    max: float
    samples: int

    @classmethod
    def of(cls, xs: list[float]) -> OtherWork | None:
        if not xs:
            return None
        return cls(avg=round(sum(xs) / len(xs), 3), max=round(max(xs), 3), samples=len(xs))
