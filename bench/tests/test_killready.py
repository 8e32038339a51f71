from __future__ import annotations

import unittest

from harness.killready import (
    KillReady,
    KillToReady,
    LoadBrief,
    OciKillReady,
    Rss,
    ldd_paths,
    oci_skip_reason,
    replacement_ready_at,
    running_container_pid,
)
from harness.proxies import container_table
from harness.records import Unavailable
from harness.report import oci_line


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

    def test_json_with_oci(self) -> None:
        base = dict(kills=1, kill_to_ready_ms=KillToReady.of([10.0]), rss_kib=Rss(idle=1, after_200rps_5s=2),
                    load_200rps_5s=LoadBrief(sent=1000, failed=0, p99_ms=0.5))
        measured = KillReady(**base, oci=OciKillReady(kills=2, kill_to_ready_ms=KillToReady.of([300.0, 400.0])))
        self.assertEqual(measured.to_json()["oci"], {"kills": 2, "kill_to_ready_ms": {
            "median": 350.0, "min": 300.0, "max": 400.0, "all": [300.0, 400.0]}})
        skipped = KillReady(**base, oci=Unavailable.not_supported(RuntimeError("runc is not on PATH")))
        self.assertEqual(skipped.to_json()["oci"], {"not_supported": "runc is not on PATH"})

    def test_replacement_ready_at(self) -> None:
        events = [{"type": "replica_ready", "index": 0, "at_ms": 1000},  # the victim's own, late
                  {"type": "replica_exited", "index": 0, "at_ms": 1100},
                  {"type": "replica_started", "index": 1, "at_ms": 1150},
                  {"type": "replica_ready", "index": 1, "at_ms": 1200},
                  {"type": "replica_started", "index": 0, "at_ms": 1300},
                  {"type": "replica_ready", "index": 0, "at_ms": 1500},
                  {"type": "replica_ready", "index": 0, "at_ms": 1900}]
        self.assertEqual(replacement_ready_at(events, 0), 1.5)
        self.assertEqual(replacement_ready_at(events, 1), 1.2)
        self.assertIsNone(replacement_ready_at(events[:5], 0))
        self.assertIsNone(replacement_ready_at(events, 2))


class OciTest(unittest.TestCase):
    def test_skip_reason(self) -> None:
        self.assertIsNone(oci_skip_reason(0, "/usr/sbin/runc", "/usr/bin/ldd"))
        self.assertEqual(oci_skip_reason(0, None, "/usr/bin/ldd"), "runc is not on PATH")
        self.assertIn("not root", oci_skip_reason(1000, "/usr/sbin/runc", "/usr/bin/ldd") or "")
        self.assertIn("ldd", oci_skip_reason(0, "/usr/sbin/runc", None) or "")

    def test_ldd_paths(self) -> None:
        out = ("\tlinux-vdso.so.1 (0x00007ffd6b5f0000)\n"
               "\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1c000000)\n"
               "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1be00000)\n"
               "\t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1c400000)\n")
        self.assertEqual(ldd_paths(out), ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6",
                                          "/lib64/ld-linux-x86-64.so.2"])

    def test_running_container_pid(self) -> None:
        listing = [{"id": "web-1-3", "pid": 0, "status": "stopped"},
                   {"id": "web-10-1", "pid": 77, "status": "running"},
                   {"id": "web-1-4", "pid": 42, "status": "running"}]
        self.assertEqual(running_container_pid(listing, "web", 1), 42)
        self.assertIsNone(running_container_pid(listing, "web", 2))
        self.assertIsNone(running_container_pid([], "web", 0))

    def test_container_table(self) -> None:
        self.assertEqual(container_table(None), "")
        self.assertEqual(container_table('/tmp/a "b"'), '\n[services.web.container]\nrootfs = "/tmp/a \\"b\\""\n')

    def test_markdown_line(self) -> None:
        self.assertEqual(oci_line({"not_supported": "runc is not on PATH"}), "oci: skipped (runc is not on PATH)")
        self.assertEqual(oci_line({"error": "RuntimeError('x')"}), "oci: error: RuntimeError('x')")
        line = oci_line({"kills": 3, "kill_to_ready_ms": {"median": 512.4, "min": 480.0, "max": 700.2, "all": []}})
        self.assertIn("3 kills", line)
        self.assertIn("**median 512 ms** (min 480, max 700)", line)


if __name__ == "__main__":
    unittest.main()
