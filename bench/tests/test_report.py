from __future__ import annotations

import glob
import json
import os
import unittest

from harness import report
from harness.healing import SCENARIOS

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def rates(**p99_by_fraction: float) -> dict:
    return {"rates": [{"fraction": float(f.replace("_", ".")), "rate": 100, "latency_ms": {"p50": 0.1, "p99": v},
                       "failed": 0, "cpu_s_per_100k": 1.0} for f, v in p99_by_fraction.items()]}


COMPARE = {
    "throughput": {"http": {"haproxy": {"rps_median": 50000.0}, "nginx": {"rps_median": 40000.0},
                            "bulwark": {"rps_median": 30000.0}},
                   "tcp": {"bulwark": {"not_supported": "no TCP mode"}}},
    "latency": {"http": {"direct": rates(**{"0_5": 1.0}), "bulwark": rates(**{"0_5": 1.25}),
                         "haproxy": rates(**{"0_5": 1.1})},
                "tcp": {"haproxy": rates(**{"0_5": 0.9})}},
}


class HelpersTest(unittest.TestCase):
    def test_ratio(self) -> None:
        self.assertEqual(report._ratio(3, 2), "1.50")
        self.assertEqual(report._ratio(0, 2), "–")
        self.assertEqual(report._ratio(1, None), "–")

    def test_added_latency_over_direct_http(self) -> None:
        self.assertEqual(report.added(COMPARE, "http", "bulwark", 0.5, "p99"), 250.0)
        # TCP mode is compared with the same (HTTP) direct baseline; a proxy can be faster.
        self.assertEqual(report.added(COMPARE, "tcp", "haproxy", 0.5, "p99"), -100.0)
        self.assertIsNone(report.added(COMPARE, "http", "nginx", 0.5, "p99"))
        self.assertIsNone(report.added(COMPARE, "http", "bulwark", 0.25, "p99"))

    def test_rate_entry(self) -> None:
        self.assertEqual(report.rate_entry(COMPARE, "http", "bulwark", 0.5)["latency_ms"]["p99"], 1.25)
        self.assertIsNone(report.rate_entry(COMPARE, "tcp", "bulwark", 0.5))

    def test_status(self) -> None:
        self.assertEqual(report._status(None), "not run")
        self.assertEqual(report._status({"not_supported": "x"}), "not supported")
        self.assertEqual(report._status({"error": "x"}), "error")
        self.assertIsNone(report._status({"rps_median": 1.0}))

    def test_cells(self) -> None:
        self.assertEqual(report._cell("detect_proxy_s", 0.126), "0.13 s")
        self.assertEqual(report._cell("p99_ms", 1234.56), "1,234.6")
        self.assertEqual(report._cell("share_during", 1 / 3), "0.333")
        self.assertEqual(report._cell("failed", 12000), "12,000")
        self.assertEqual(report._cell("out_s", None), "–")
        self.assertEqual(report._num(1234.5678, "{:.3f}"), "1234.568")

    def test_main_ratios(self) -> None:
        rows = {label: vals for label, _unit, _better, vals in report.main_ratios({"compare": COMPARE})}
        self.assertEqual(rows["max throughput, HTTP/1.1 (wrk, median)"],
                         {"bulwark": 30000.0, "haproxy": 50000.0, "nginx": 40000.0})
        self.assertEqual(rows["added p99 latency at the 50 % rate, HTTP"],
                         {"bulwark": 250.0, "haproxy": 100.0, "nginx": None})


class CommittedResultsTest(unittest.TestCase):
    """The Markdown of every committed result, regenerated from its JSON, is the committed Markdown."""

    def test_markdown_regenerates_identically(self) -> None:
        files = sorted(glob.glob(os.path.join(RESULTS, "*.json")))
        self.assertTrue(files)
        for path in files:
            base = path[:-5]
            with open(path) as f:
                res = json.load(f)
            # The plots `report.plots` would write, in its order (no matplotlib needed here).
            names = ["latency-http", "latency-tcp", "throughput"] if res.get("compare") else []
            names += [f"heal-{s}" for s in (res.get("healing") or {}) if s in SCENARIOS]
            pngs = [f"{base}-{n}.png" for n in names if os.path.exists(f"{base}-{n}.png")]
            with open(base + ".md") as f:
                committed = f.read()
            with self.subTest(path=os.path.basename(path)):
                self.assertEqual(report.markdown(res, base, pngs), committed)

    def test_a_debug_build_is_named_in_the_header(self) -> None:
        path = sorted(glob.glob(os.path.join(RESULTS, "*.json")))[-1]
        with open(path) as f:
            res = json.load(f)
        self.assertIn("(release build)", report.markdown(res, path[:-5], []))
        res["build"] = "debug"
        md = report.markdown(res, path[:-5], [])
        self.assertIn("(debug build)", md)
        self.assertNotIn("(release build)", md)


if __name__ == "__main__":
    unittest.main()
