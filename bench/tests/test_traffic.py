from __future__ import annotations

import unittest

from harness.traffic import Sample, analyse, busiest, parse_ss, share_timeline, window_share

T0 = 10.0
STEP = 0.125  # exact in binary: window edges fall exactly on samples


def victim_bytes(k: int) -> int:
    """Replica 0: 100 bytes a sample up to t = 10.25, nothing in (10.25, 11.0], 100 again after."""
    return 0 if 19 <= k <= 24 else 100


# t = 8.0, 8.125, ..., 12.0; replicas 1 and 2 receive 50 bytes a sample throughout.
SAMPLES = [Sample(t=8.0 + STEP * k, bytes=[victim_bytes(k), 50, 50]) for k in range(33)]


class AnalyseTest(unittest.TestCase):
    def test_out_back_and_shares(self) -> None:
        v = analyse(SAMPLES, 0, T0, 12.0)
        # 16 samples of 100 bytes in (8, 10]: 800 B/s.
        self.assertEqual(v.victim_bytes_per_s_before, 800)
        # From t = 10.25 the next 0.5 s carry nothing (< 10 % of 800 * 0.5).
        self.assertEqual(v.out_s, 0.25)
        # Samples at 11.125 and 11.25 both run at 800 B/s >= 25 % of 800: back at the end of the second.
        self.assertEqual(v.back_s, 1.25)
        self.assertEqual(v.share_before, 0.5)  # 1600 of 3200
        self.assertEqual(v.share_during, 0.385)  # 1000 of 2600
        self.assertEqual(v.share_last_3s, 0.429)  # 1800 of 4200

    def test_never_out(self) -> None:
        steady = [Sample(t=8.0 + STEP * k, bytes=[100, 50, 50]) for k in range(33)]
        v = analyse(steady, 0, T0, 12.0)
        self.assertIsNone(v.out_s)
        self.assertIsNone(v.back_s)
        self.assertEqual(v.share_during, 0.5)

    def test_victim_without_traffic_before(self) -> None:
        idle = [Sample(t=8.0 + STEP * k, bytes=[0, 50, 50]) for k in range(33)]
        v = analyse(idle, 0, T0, 12.0)
        self.assertEqual(v.victim_bytes_per_s_before, 0)
        self.assertIsNone(v.out_s)
        self.assertEqual(v.share_before, 0.0)

    def test_json_shape(self) -> None:
        self.assertEqual(list(analyse(SAMPLES, 0, T0, 12.0).to_json()),
                         ["victim_bytes_per_s_before", "out_s", "back_s", "share_before", "share_during",
                          "share_last_3s"])


class WindowTest(unittest.TestCase):
    def test_window_share_is_half_open(self) -> None:
        s = [Sample(1.0, [10, 30, 0]), Sample(2.0, [30, 10, 0]), Sample(3.0, [0, 0, 100])]
        self.assertEqual(window_share(s, 0, 1.0, 1.0), 0.75)  # (1, 2]: only the sample at 2
        self.assertEqual(window_share(s, 0, 0.0, 2.0), 0.5)
        self.assertIsNone(window_share(s, 0, 5.0, 1.0))

    def test_busiest(self) -> None:
        s = [Sample(1.0, [500, 0, 0]), Sample(2.0, [10, 20, 30]), Sample(3.0, [10, 20, 5])]
        self.assertEqual(busiest(s, 0.0), 0)
        self.assertEqual(busiest(s, 2.0), 1)  # 20 + 20 against 10 + 10 and 30 + 5

    def test_share_timeline(self) -> None:
        s = [Sample(10.0, [1, 1, 2]), Sample(10.25, [3, 1, 0]), Sample(10.75, [0, 0, 0])]
        self.assertEqual(share_timeline(s, 0, 10.0, width=0.5), [(0.0, 0.25), (0.25, 0.5), (0.75, None)])


class ParseSsTest(unittest.TestCase):
    def test_bytes_per_socket(self) -> None:
        out = ("0      0      127.0.0.1:8081   127.0.0.1:54321\n"
               "\t cubic wscale:7,7 rto:204 bytes_sent:10 bytes_acked:11 bytes_received:1234 segs_out:3\n"
               "0      0      127.0.0.1:8082   127.0.0.1:54400\n"
               "\t cubic wscale:7,7 rto:204\n")
        self.assertEqual(parse_ss(out), {(8081, 54321): 1234, (8082, 54400): 0})

    def test_empty(self) -> None:
        self.assertEqual(parse_ss(""), {})


if __name__ == "__main__":
    unittest.main()
