"""Per-replica traffic, seen the same way for every proxy: the kernel's `bytes_received`
counter of each backend-side TCP socket (`ss -ti`), sampled every 100 ms. The bytes a
replica's sockets receive grow with the requests the proxy sends it, whether the replica
answers or not (a stopped process's kernel still receives), so a replica's share of the
bytes is its share of the traffic. Health checks are counted too (a few per second)."""
from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .records import Record

SOCK = re.compile(r"^\S+\s+\S+\s+\S+:(\d+)\s+\S+:(\d+)")
BYTES = re.compile(r"bytes_received:(\d+)")


@dataclass
class Sample:
    """One sample of the monitor: wall time, bytes each replica received since the previous
    sample, and the proxy's own view of its servers where it has one ({index: state})."""

    t: float
    bytes: list[int]
    native: dict[int, str] | None = None


class Monitored(Protocol):
    """What the monitor needs of a target."""

    def slots(self) -> dict[int, int]: ...  # {replica port: replica index}

    def native_poll(self) -> dict[int, str] | None: ...


@dataclass
class TrafficView(Record):
    """The traffic-view figures of one fault (see `analyse`)."""

    victim_bytes_per_s_before: int
    out_s: float | None
    back_s: float | None
    share_before: float | None
    share_during: float | None
    share_last_3s: float | None


def ss_bytes(ports: list[int]) -> dict[tuple[int, int], int]:
    """{(local port, peer port): bytes_received} for established sockets on `ports`."""
    if not ports:
        return {}
    filt = "( " + " or ".join(f"sport = :{p}" for p in ports) + " )"
    out = subprocess.run(["ss", "-tinH", "state", "established", filt], capture_output=True, text=True).stdout
    return parse_ss(out)


def parse_ss(out: str) -> dict[tuple[int, int], int]:
    """`ss -tinH` output as {(local port, peer port): bytes_received}."""
    res: dict[tuple[int, int], int] = {}
    key: tuple[int, int] | None = None
    for line in out.splitlines():
        if line and not line[0].isspace():
            m = SOCK.match(line)
            key = (int(m.group(1)), int(m.group(2))) if m else None
            if key:
                res[key] = 0
        elif key:
            b = BYTES.search(line)
            if b:
                res[key] = int(b.group(1))
    return res


class Monitor(threading.Thread):
    """Samples per-replica bytes (and the proxy's own view of its servers, where it has
    one) every `interval` seconds until stopped."""

    def __init__(self, target: Monitored, replicas: int = 3, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.target, self.n, self.interval = target, replicas, interval
        self.samples: list[Sample] = []
        self.done = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        last: dict[tuple[int, int], int] = {}
        try:
            while not self.done.is_set():
                t = time.time()
                slots = self.target.slots()
                now = ss_bytes(sorted(slots))
                per = [0] * self.n
                for key, b in now.items():
                    idx = slots.get(key[0])
                    if idx is not None and idx < self.n:
                        per[idx] += max(0, b - last.get(key, 0))
                last = now
                native = self.target.native_poll() if hasattr(self.target, "native_poll") else None
                self.samples.append(Sample(t=t, bytes=per, native=native))
                self.done.wait(max(0.0, self.interval - (time.time() - t)))
        except Exception as e:  # noqa: BLE001 (reported by the scenario)
            self.error = repr(e)

    def stop(self) -> list[Sample]:
        self.done.set()
        self.join(timeout=10)
        return self.samples


def window_share(samples: Iterable[Sample], victim: int, start: float, width: float) -> float | None:
    """Victim's share of all replicas' bytes received in (start, start + width]; None when
    no replica received anything."""
    v = tot = 0
    for s in samples:
        if start < s.t <= start + width:
            v += s.bytes[victim]
            tot += sum(s.bytes)
    return v / tot if tot else None


def busiest(samples: Iterable[Sample], since: float) -> int:
    """The replica that received the most bytes in samples with t >= since."""
    tot = [0, 0, 0]
    for s in samples:
        if s.t >= since:
            tot = [a + b for a, b in zip(tot, s.bytes)]
    return max(range(len(tot)), key=lambda i: tot[i])


def _bytes(samples: Iterable[Sample], victim: int, start: float, width: float) -> int:
    """Bytes the victim received in (start, start + width] (a sample at t covers the
    interval since the previous one)."""
    return sum(s.bytes[victim] for s in samples if start < s.t <= start + width)


def analyse(samples: list[Sample], victim: int, t0: float, t_end: float, interval: float = 0.1) -> TrafficView:
    """Traffic-view figures for one fault on replica `victim` at wall time t0, relative to
    the victim's own traffic in the 2 s before the fault (balancers need not split evenly):
    - out_s: first sample time t after which it receives < 10 % of that rate over 0.5 s
      (out of the proxy's rotation, or dead);
    - back_s: after that, the end of the first two consecutive 100 ms samples in which its
      slot receives >= 25 % of that rate each (a replica in that slot serves again);
    - share_before / share_during / share_last_3s: its (slot's) share of all replicas'
      bytes in the 2 s before t0 / from t0 to t_end / in the last 3 s sampled (an even
      split is 0.333)."""
    first = samples[0].t if samples else t0
    pre_start = max(first, t0 - 2.0)
    rate = _bytes(samples, victim, pre_start, t0 - pre_start) / max(t0 - pre_start, interval)
    end = samples[-1].t if samples else t0
    out_s = back_s = None
    if rate > 0:
        for i, s in enumerate(samples):
            t = s.t
            if t < t0:
                continue
            if out_s is None:
                if t + 0.5 <= end and _bytes(samples, victim, t, 0.5) < 0.1 * rate * 0.5:
                    out_s = round(t - t0, 2)
            elif i + 1 < len(samples):
                a, b = s, samples[i + 1]
                if min(a.bytes[victim] / max(a.t - samples[i - 1].t, 1e-3),
                       b.bytes[victim] / max(b.t - a.t, 1e-3)) >= 0.25 * rate:
                    back_s = round(b.t - t0, 2)
                    break
    during = window_share(samples, victim, t0, t_end - t0)
    before = window_share(samples, victim, pre_start, t0 - pre_start)
    last = window_share(samples, victim, end - 3.0, 3.0)
    return TrafficView(victim_bytes_per_s_before=round(rate), out_s=out_s, back_s=back_s,
                       share_before=None if before is None else round(before, 3),
                       share_during=None if during is None else round(during, 3),
                       share_last_3s=None if last is None else round(last, 3))


def share_timeline(samples: list[Sample], victim: int, t0: float,
                   width: float = 0.5) -> list[tuple[float, float | None]]:
    """[(t - t0, victim share over the trailing (t - width, t])] every sample, for plots."""
    out = []
    for s in samples:
        sh = window_share(samples, victim, s.t - width, width)
        out.append((round(s.t - t0, 2), None if sh is None else round(sh, 3)))
    return out
