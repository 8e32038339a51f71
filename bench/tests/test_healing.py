from __future__ import annotations

import unittest
from typing import Any

from harness.healing import (
    HAProxyView,
    HealingRun,
    LoadSummary,
    NaiveEvent,
    Reload,
    bulwark_view,
    figures,
    haproxy_view,
    summary,
    timeline,
)
from harness.measure import LoadSecond, load_report
from harness.traffic import Sample, TrafficView


def load_summary(p99: float, failed: int = 0) -> LoadSummary:
    return LoadSummary(sent=100, ok=100 - failed, failed=failed, failed_by_kind={}, failure_samples=[],
                       latency_ms={"p50": 0.2, "p99": p99}, achieved_rate=100.0)


def run(proxy: str, scenario: str, **kw: Any) -> HealingRun:
    args: dict[str, Any] = dict(
        proxy=proxy, scenario=scenario, rate=1000, fault="f", during=load_summary(3.0, failed=7), timeline=[],
        monitor_error=None, victim=1,
        traffic=TrafficView(victim_bytes_per_s_before=800, out_s=0.2, back_s=1.5, share_before=0.4,
                            share_during=0.1, share_last_3s=0.3),
        share_timeline=[], traffic_samples=[])
    args.update(kw)
    return HealingRun(**args)


class FiguresTest(unittest.TestCase):
    def test_kill_bulwark_uses_its_events(self) -> None:
        f = figures(run("bulwark", "kill", bulwark_view={"exited_s": 0.001, "ready_s": 0.28}))
        self.assertEqual(f.to_json(), {"failed": 7, "sent": 100, "detect_proxy_s": 0.001, "full_proxy_s": 0.28,
                                       "full_traffic_s": 1.5, "share_before": 0.4, "share_last_3s": 0.3})

    def test_kill_haproxy_uses_its_stats(self) -> None:
        f = figures(run("haproxy", "kill", haproxy_view=HAProxyView(down_s=0.1, up_s=1.4, transitions=[])))
        self.assertEqual((f.to_json()["detect_proxy_s"], f.to_json()["full_proxy_s"]), (0.1, 1.4))

    def test_kill_nginx_has_no_view(self) -> None:
        f = figures(run("nginx", "kill")).to_json()
        self.assertIsNone(f["detect_proxy_s"])
        self.assertIsNone(f["full_proxy_s"])

    def test_hang_bulwark_earliest_of_unready_and_probe_failed(self) -> None:
        f = figures(run("bulwark", "hang", bulwark_view={"probe_failed_s": 3.2, "unready_s": 2.9, "ready_s": 3.5}))
        self.assertEqual(f.to_json(), {"failed": 7, "sent": 100, "detect_proxy_s": 2.9, "detect_traffic_s": 0.2,
                                       "replace_proxy_s": 3.5, "replace_traffic_s": 1.5, "share_last_3s": 0.3,
                                       "p99_ms": 3.0})

    def test_hang_bulwark_without_events(self) -> None:
        self.assertIsNone(figures(run("bulwark", "hang", bulwark_view=None)).to_json()["detect_proxy_s"])

    def test_503_slow_reload(self) -> None:
        self.assertEqual(figures(run("bulwark", "503", bulwark_view={"ejected_s": 0.015})).to_json(),
                         {"failed": 7, "sent": 100, "eject_proxy_s": 0.015, "eject_traffic_s": 0.2,
                          "share_during": 0.1})
        self.assertEqual(figures(run("nginx", "slow", before=load_summary(1.5))).to_json(),
                         {"failed": 7, "sent": 100, "p99_before_ms": 1.5, "p99_during_ms": 3.0, "share_during": 0.1})
        reloads = [Reload(0.0, True, "ok"), Reload(2.0, False, "no new worker"), Reload(4.0, True, "ok")]
        self.assertEqual(figures(run("nginx", "reload", reloads=reloads)).to_json(),
                         {"failed": 7, "sent": 100, "reloads_ok": 2, "reloads": 3, "p99_ms": 3.0})


class ViewsTest(unittest.TestCase):
    def test_haproxy_first_down_then_up(self) -> None:
        s = [Sample(9.9, [0, 0, 0], {1: "UP"}), Sample(10.0, [0, 0, 0], {1: "UP"}),
             Sample(10.1, [0, 0, 0], {1: "DOWN"}), Sample(10.2, [0, 0, 0], None),
             Sample(10.5, [0, 0, 0], {1: "UP 1/2"}), Sample(11.0, [0, 0, 0], {1: "UP"})]
        v = haproxy_view(s, 10.0, 1)
        self.assertEqual((v.down_s, v.up_s), (0.1, 1.0))
        self.assertEqual(v.transitions, [(-0.1, "UP"), (0.1, "DOWN"), (0.5, "UP 1/2"), (1.0, "UP")])

    def test_bulwark_first_of_each_kind_in_order(self) -> None:
        events = [{"type": "replica_ready", "index": 1, "at_ms": 8900},  # > 1 s before the fault: left out
                  {"type": "replica_exited", "index": 1, "at_ms": 10001},
                  {"type": "replica_exited", "index": 0, "at_ms": 10002},  # another replica
                  {"type": "replica_started", "index": 1, "at_ms": 10250},
                  {"type": "replica_ready", "index": 1, "at_ms": 10280},
                  {"type": "outlier_ejected", "index": 1, "at_ms": 10300},
                  {"type": "replica_ready", "index": 1, "at_ms": 12000}]
        v = bulwark_view(events, 10.0, 1)
        self.assertEqual(list(v), ["exited_s", "started_s", "ready_s", "ejected_s", "events"])
        self.assertEqual((v["exited_s"], v["started_s"], v["ready_s"], v["ejected_s"]), (0.001, 0.25, 0.28, 0.3))
        self.assertEqual(len(v["events"]), 6)  # from 1 s before the fault
        self.assertEqual(v["events"][0], {"type": "replica_exited", "index": 1, "t_s": 0.001})


class LoadTest(unittest.TestCase):
    def test_summary_and_timeline_on_the_fault_clock(self) -> None:
        raw = {"sent": 20, "ok": 17, "achieved_rate": 10.0, "latency_ms": {"p99": 4.0},
               "failed": {"total": 3, "status": {"503": 2}, "connect": 1, "timeout": 0, "other": 0,
                          "samples": ["refused", "reset", "x", "y"]},
               "timeline": [{"t": 0, "sent": 10, "ok": 10, "failed": 0, "p99_ms": 1.0},
                            {"t": 1, "sent": 10, "ok": 7, "failed": 3, "p99_ms": 4.0}]}
        r = load_report(raw, started=100.0, cpu=0.0, measured=False)
        s = summary(r)
        self.assertEqual(s.failed, 3)
        self.assertEqual(s.failed_by_kind, {"status": {"503": 2}, "connect": 1})
        self.assertEqual(s.failure_samples, ["refused", "reset", "x"])
        self.assertEqual([x.t for x in timeline(r, t0=101.5)], [-1.5, -0.5])
        self.assertEqual(timeline(r, 101.5)[1], LoadSecond(t=-0.5, sent=10, ok=7, failed=3, p99_ms=4.0))


class HealingRunJsonTest(unittest.TestCase):
    def test_key_order_and_optional_keys(self) -> None:
        nginx = run("nginx", "reload", reloads=[Reload(0.0, True, "ok")], naive_supervisor=[])
        self.assertEqual(list(nginx.to_json()),
                         ["proxy", "scenario", "rate", "fault", "reloads", "during", "timeline", "monitor_error",
                          "victim", "traffic", "share_timeline", "traffic_samples", "naive_supervisor"])
        bulwark = run("bulwark", "slow", before=load_summary(1.0), bulwark_view=None)
        bulwark.figures = figures(bulwark)
        j = bulwark.to_json()
        self.assertEqual(list(j), ["proxy", "scenario", "rate", "fault", "before", "during", "timeline",
                                   "monitor_error", "victim", "traffic", "share_timeline", "traffic_samples",
                                   "bulwark_view", "figures"])
        self.assertIsNone(j["bulwark_view"])  # written as null for bulwark, even when unread
        haproxy = run("haproxy", "kill", haproxy_view=HAProxyView(0.0, 1.4, [(0.0, "DOWN")]),
                      naive_supervisor=[NaiveEvent(0.001, 1, "exited", 42)])
        j = haproxy.to_json()
        self.assertEqual(j["haproxy_view"], {"down_s": 0.0, "up_s": 1.4, "transitions": [[0.0, "DOWN"]]})
        self.assertEqual(j["naive_supervisor"], [{"t_s": 0.001, "index": 1, "what": "exited", "pid": 42}])
        self.assertNotIn("bulwark_view", j)


if __name__ == "__main__":
    unittest.main()
