from __future__ import annotations

import unittest

from harness.measure import parse_h2load, parse_wrk

WRK = """Running 4s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.00ms  200.00us   5.00ms   90.00%
  1000 requests in 4.00s, 120.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 250
Requests/sec:    100.00
Transfer/sec:     30.00KB
"""

H2LOAD = """finished in 4.00s, 1000.00 req/s, 1.00MB/s
requests: 4000 total, 4000 started, 4000 done, 3900 succeeded, 100 failed, 0 errored, 0 timeout
"""


class WrkTest(unittest.TestCase):
    def test_counts_only_good_answers(self) -> None:
        r = parse_wrk(0, WRK, cpu=2.0, elapsed=4.0, measured=True)
        self.assertEqual(r.requests, 1000)
        self.assertEqual(r.errors, 5)
        self.assertEqual(r.non_2xx, 250)
        self.assertEqual(r.ok_rps, 75.0)
        self.assertEqual(r.proxy_cpu_util, 0.5)
        self.assertEqual(r.cpu_s_per_100k, 200.0)
        self.assertIsNone(parse_wrk(0, WRK, 2.0, 4.0, measured=False).cpu_s_per_100k)

    def test_failure_raises(self) -> None:
        with self.assertRaises(RuntimeError):
            parse_wrk(1, WRK, 0.0, 1.0, True)
        with self.assertRaises(RuntimeError):
            parse_wrk(0, "unable to connect", 0.0, 1.0, True)


class H2loadTest(unittest.TestCase):
    def test_failed_and_ok_rate(self) -> None:
        r = parse_h2load(0, H2LOAD, cpu=1.0, measured=True)
        self.assertEqual((r.requests, r.failed, r.ok_rps), (4000, 100, 975.0))
        self.assertEqual(r.cpu_s_per_100k, 25.0)


if __name__ == "__main__":
    unittest.main()
