from __future__ import annotations

import unittest

from harness.killready import KillReady, KillToReady, LoadBrief, Rss


class KillToReadyTest(unittest.TestCase):
    def test_summary(self) -> None:
        k = KillToReady.of([250.04, 270.0, 255.26])
        self.assertEqual((k.median, k.min, k.max), (255.3, 250.0, 270.0))
        self.assertEqual(k.all, [250.0, 270.0, 255.3])

    def test_json(self) -> None:
        r = KillReady(kills=1, kill_to_ready_ms=KillToReady.of([10.0]), rss_kib=Rss(idle=1, after_200rps_5s=2),
                      load_200rps_5s=LoadBrief(sent=1000, failed=0, p99_ms=0.5))
        self.assertEqual(r.to_json(), {"kills": 1, "kill_to_ready_ms": {"median": 10.0, "min": 10.0, "max": 10.0,
                                                                        "all": [10.0]},
                                       "rss_kib": {"idle": 1, "after_200rps_5s": 2},
                                       "load_200rps_5s": {"sent": 1000, "failed": 0, "p99_ms": 0.5}})


if __name__ == "__main__":
    unittest.main()
