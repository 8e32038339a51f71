from __future__ import annotations

import unittest

from harness.compare import (
    RATE_FRACTIONS,
    Throughput,
    bisect_knee,
    h2_throughput_of,
    latency_rates,
    probe_p99s,
    rps_median,
    throughput_of,
)
from harness.measure import H2Run, LoadSecond, WrkRun, load_report
from harness.records import Unavailable


def wrk_run(ok_rps: float, util: float | None, per_100k: float | None, errors: int = 0, non_2xx: int = 0) -> WrkRun:
    return WrkRun(rps=ok_rps, requests=1000, errors=errors, ok_rps=ok_rps, non_2xx=non_2xx, proxy_cpu_s=1.0,
                  proxy_cpu_util=util, cpu_s_per_100k=per_100k)


class KneeTest(unittest.TestCase):
    def test_bisection_finds_highest_good_rate(self) -> None:
        probed: list[float] = []

        def ok(rate: float) -> bool:
            probed.append(rate)
            return rate <= 500

        self.assertEqual(bisect_knee(ok, 800, 3), 450)
        self.assertEqual(probed, [800, 450, 625, 537.5])

    def test_good_at_the_top_probes_once(self) -> None:
        probed: list[float] = []
        self.assertEqual(bisect_knee(lambda r: probed.append(r) or True, 800, 5), 800)
        self.assertEqual(probed, [800])

    def test_all_bad_falls_to_an_eighth(self) -> None:
        self.assertEqual(bisect_knee(lambda r: False, 800, 4), 100)

    def test_probe_p99s_skip_the_first_second(self) -> None:
        r = load_report({"sent": 30, "ok": 30, "failed": {"total": 0}, "latency_ms": {"p99": 9.0},
                         "timeline": [{"t": i, "sent": 10, "ok": 10, "failed": 0, "p99_ms": p}
                                      for i, p in enumerate([5.0, 1.0, 1.5])]}, 0.0, 0.0, False)
        self.assertEqual(probe_p99s(r), [1.0, 1.5])
        r.timeline = r.timeline[:1]
        self.assertEqual(probe_p99s(r), [9.0])


class RatesTest(unittest.TestCase):
    def test_capped_at_the_knee(self) -> None:
        rates, capped = latency_rates(10000, 6000)
        self.assertTrue(capped)
        for got, want in zip(rates, [2000, 4000, 6000]):
            self.assertAlmostEqual(got, want)

    def test_below_the_knee_unchanged(self) -> None:
        rates, capped = latency_rates(10000, 9000)
        self.assertFalse(capped)
        for got, frac in zip(rates, RATE_FRACTIONS):
            self.assertAlmostEqual(got, 10000 * frac)


class ThroughputTest(unittest.TestCase):
    def test_medians_and_sums(self) -> None:
        runs = [wrk_run(100.0, 0.9, 2.0, errors=1), wrk_run(300.0, None, 4.0, non_2xx=2), wrk_run(200.0, 0.5, 3.0)]
        t = throughput_of(runs, measured=True)
        self.assertEqual(t.rps_median, 200.0)
        self.assertEqual(t.errors, 3)
        self.assertEqual(t.proxy_cpu_util_median, 0.5)  # None counts as 0
        self.assertEqual(t.cpu_s_per_100k_at_max, 3.0)
        self.assertIsNone(throughput_of(runs, measured=False).cpu_s_per_100k_at_max)

    def test_json_leaves_out_h2c_until_measured(self) -> None:
        t = throughput_of([wrk_run(100.0, 0.9, 2.0)], measured=True)
        self.assertNotIn("h2c", t.to_json())
        t.h2c = h2_throughput_of([H2Run(rps=10.0, requests=40, failed=1, ok_rps=9.8, proxy_cpu_s=0.1,
                                        cpu_s_per_100k=None)])
        self.assertEqual(t.to_json()["h2c"]["requests"], 40)
        self.assertEqual(list(t.to_json()), ["runs", "rps_median", "errors", "proxy_cpu_util_median",
                                             "cpu_s_per_100k_at_max", "h2c"])

    def test_rps_median_of_entries(self) -> None:
        self.assertEqual(rps_median(Throughput([], 5.0, 0, 0.0, None)), 5.0)
        self.assertIsNone(rps_median(Unavailable("error", "boom")))
        self.assertIsNone(rps_median(None))
        self.assertEqual(Unavailable("not_supported", "no tcp").to_json(), {"not_supported": "no tcp"})


class LoadReportTest(unittest.TestCase):
    def test_cpu_per_100k(self) -> None:
        raw = {"sent": 2000, "ok": 1990, "failed": {"total": 10}, "latency_ms": {"p99": 1.0},
               "achieved_rate": 199.5, "timeline": [{"t": 0, "sent": 2000, "ok": 1990, "failed": 10, "p99_ms": 1.0}]}
        r = load_report(raw, started=5.0, cpu=0.5, measured=True)
        self.assertEqual(r.cpu_s_per_100k, 25.0)
        self.assertEqual(r.failed_total, 10)
        self.assertEqual(r.timeline, [LoadSecond(t=0, sent=2000, ok=1990, failed=10, p99_ms=1.0)])
        self.assertIsNone(load_report(raw, 5.0, 0.5, measured=False).cpu_s_per_100k)


if __name__ == "__main__":
    unittest.main()
