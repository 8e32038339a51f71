"""The records write exactly the JSON the harness always wrote: every section of the committed
results, rebuilt as records, serializes back to the same keys, order and values."""
from __future__ import annotations

import glob
import json
import os
import unittest
from typing import Any

from harness.__main__ import Machine
from harness.compare import (
    Comparison,
    H2Throughput,
    Knee,
    KneeInfo,
    KneeProbe,
    LatencyRuns,
    RatePoint,
    Rates,
    Throughput,
)
from harness.healing import (
    Figures503,
    HangFigures,
    HAProxyView,
    HealingRun,
    KillFigures,
    LoadSummary,
    NaiveEvent,
    Reload,
    ReloadFigures,
    SlowFigures,
    figures,
)
from harness.killready import KillReady, KillToReady, LoadBrief, OciKillReady, Rss, WarmKillReady
from harness.measure import H2Run, IdleMemory, LoadSecond, WrkRun
from harness.procs import OtherWork
from harness.records import Unavailable, to_json
from harness.tls import Negotiated, TlsComparison, TlsFigures
from harness.traffic import TrafficView

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
FIGURES = {"kill": KillFigures, "hang": HangFigures, "503": Figures503, "slow": SlowFigures,
           "reload": ReloadFigures}


def unavailable(d: dict[str, Any]) -> Unavailable | None:
    for kind in ("not_supported", "error"):
        if kind in d:
            return Unavailable(kind, d[kind])  # type: ignore[arg-type]
    return None


def throughput(d: dict[str, Any]) -> Any:
    t = Throughput(**{**d, "runs": [WrkRun(**r) for r in d["runs"]], "h2c": None})
    if "h2c" in d:
        t.h2c = H2Throughput(**{**d["h2c"], "runs": [H2Run(**r) for r in d["h2c"]["runs"]]})
    return unavailable(d) or t


def latency(d: dict[str, Any]) -> Any:
    return unavailable(d) or LatencyRuns([RatePoint(**r) for r in d["rates"]])


def knee(d: dict[str, Any]) -> Knee:
    return Knee(d["rate"], [KneeProbe(**p) for p in d["probes"]])


def comparison(c: dict[str, Any]) -> Comparison:
    r = c["rates"]
    return Comparison(
        throughput={m: {n: throughput(e) for n, e in by.items()} for m, by in c["throughput"].items()},
        latency={m: {n: latency(e) for n, e in by.items()} for m, by in c["latency"].items()},
        memory={n: unavailable(e) or IdleMemory(**e) for n, e in c["memory"].items()},
        rates=Rates(**{**r, "knee": KneeInfo(r["knee"]["rate"],
                                             {n: knee(k) for n, k in r["knee"]["through"].items()})}))


def healing_run(d: dict[str, Any]) -> Any:
    if unavailable(d):
        return unavailable(d)
    r = HealingRun(
        proxy=d["proxy"], scenario=d["scenario"], rate=d["rate"], fault=d["fault"],
        during=LoadSummary(**d["during"]), timeline=[LoadSecond(**s) for s in d["timeline"]],
        monitor_error=d["monitor_error"], victim=d["victim"], traffic=TrafficView(**d["traffic"]),
        share_timeline=d["share_timeline"], traffic_samples=d["traffic_samples"],
        reloads=[Reload(**x) for x in d["reloads"]] if "reloads" in d else None,
        before=LoadSummary(**d["before"]) if "before" in d else None,
        bulwark_view=d.get("bulwark_view"),
        haproxy_view=HAProxyView(**d["haproxy_view"]) if "haproxy_view" in d else None,
        naive_supervisor=[NaiveEvent(**x) for x in d["naive_supervisor"]] if "naive_supervisor" in d else None,
        figures=FIGURES[d["scenario"]](**d["figures"]))
    return r


def kill_ready(d: dict[str, Any]) -> Any:
    oci = d.get("oci")
    if oci is not None:
        oci = unavailable(oci) or OciKillReady(kills=oci["kills"],
                                               kill_to_ready_ms=KillToReady(**oci["kill_to_ready_ms"]))
    warm = d.get("warm")
    if warm is not None:
        warm = unavailable(warm) or WarmKillReady(**{**warm, "cold_ms": KillToReady(**warm["cold_ms"]),
                                                     "restored_ms": KillToReady(**warm["restored_ms"])})
    return unavailable(d) or KillReady(kills=d["kills"], kill_to_ready_ms=KillToReady(**d["kill_to_ready_ms"]),
                                       rss_kib=Rss(**d["rss_kib"]), load_200rps_5s=LoadBrief(**d["load_200rps_5s"]),
                                       oci=oci, warm=warm)


def tls_figures(d: dict[str, Any]) -> Any:
    if unavailable(d):
        return unavailable(d)
    n, h2 = d["negotiated"], d["h2"]
    return TlsFigures(negotiated=unavailable(n) or Negotiated(**n), keepalive=throughput(d["keepalive"]),
                      new_connection=throughput(d["new_connection"]), full_handshake=throughput(d["full_handshake"]),
                      h2=H2Throughput(**{**h2, "runs": [H2Run(**r) for r in h2["runs"]]}) if h2 else None)


def tls_comparison(d: dict[str, Any]) -> TlsComparison:
    return TlsComparison(certificate=d["certificate"], openssl=d["openssl"], rounds=d["rounds"],
                         proxies={n: tls_figures(e) for n, e in d["proxies"].items()})


def dumped(x: Any) -> str:
    return json.dumps(x, indent=1)  # as the harness writes it: order matters


class CommittedJsonTest(unittest.TestCase):
    def setUp(self) -> None:
        self.files = sorted(glob.glob(os.path.join(RESULTS, "*.json")))
        self.assertTrue(self.files)

    def each(self) -> Any:
        for path in self.files:
            with open(path) as f:
                yield os.path.basename(path), json.load(f)

    def test_sections_round_trip(self) -> None:
        for name, res in self.each():
            with self.subTest(path=name):
                self.assertEqual(dumped(to_json(Machine(**res["machine"]))), dumped(res["machine"]))
                if "compare" in res:
                    self.assertEqual(dumped(to_json(comparison(res["compare"]))), dumped(res["compare"]))
                if "healing" in res:
                    rebuilt = {s: {p: healing_run(e) for p, e in by.items()} for s, by in res["healing"].items()}
                    self.assertEqual(dumped(to_json(rebuilt)), dumped(res["healing"]))
                if "killready" in res:
                    self.assertEqual(dumped(to_json(kill_ready(res["killready"]))), dumped(res["killready"]))
                if "tls" in res:
                    self.assertEqual(dumped(to_json(tls_comparison(res["tls"]))), dumped(res["tls"]))
                ow = res["other_work"]
                for key in ("whole_run", "compare", "tls", "healing", "killready"):
                    if key in ow:
                        rebuilt_ow = None if ow[key] is None else OtherWork(**ow[key])
                        self.assertEqual(dumped(to_json(rebuilt_ow)), dumped(ow[key]))

    def test_figures_recomputed_from_the_run(self) -> None:
        """`figures` of each committed healing run, recomputed from the run's other fields."""
        for name, res in self.each():
            for s, by in (res.get("healing") or {}).items():
                for p, e in by.items():
                    if "figures" not in e:
                        continue
                    with self.subTest(path=name, scenario=s, proxy=p):
                        self.assertEqual(figures(healing_run(e)).to_json(), e["figures"])


if __name__ == "__main__":
    unittest.main()
