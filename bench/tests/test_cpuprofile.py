from __future__ import annotations

import unittest

from harness import cpuprofile, report

# `perf report --stdio --no-children --sort dso,sym` as perf 6.1 prints it (shortened).
REPORT = """# To display the perf.data header info, please use --header/--header-only options.
#
# Total Lost Samples: 0
#
# Samples: 19K of event 'cpu-clock'
# Event count (approx.): 9577750000
#
# Overhead  Shared Object         Symbol
# ........  ....................  ............................
#
    40.50%  [kernel.kallsyms]     [k] _raw_spin_unlock_irqrestore
    20.00%  bulwark               [.] h1::conn::serve::{{closure}}
    10.25%  libc.so.6             [.] __memcpy_avx_unaligned_erms
     9.25%  [kernel.kallsyms]     [k] tcp_sendmsg_locked
     0.81%  bulwark               [.] 0x0000000000002e4c
"""


class CpuProfileTest(unittest.TestCase):
    def test_a_report_is_read_and_summed_by_object(self) -> None:
        samples, syms = cpuprofile.parse_report(REPORT)
        self.assertEqual(samples, 19000)
        self.assertEqual([s.share for s in syms], [40.5, 20.0, 10.25, 9.25, 0.81])
        self.assertTrue(syms[0].kernel)
        self.assertFalse(syms[1].kernel)
        self.assertEqual(syms[1].symbol, "h1::conn::serve::{{closure}}")
        self.assertEqual(syms[2].object, "libc.so.6")
        self.assertEqual(cpuprofile.by_object(syms), {"kernel": 49.8, "bulwark": 20.8, "libc.so.6": 10.2})

    def test_the_report_gives_the_split_and_the_hottest_symbols(self) -> None:
        _, syms = cpuprofile.parse_report(REPORT)
        prof = {"bulwark": {"http": {"requests": 100000, "rps": 40000, "user_s": 1.0, "system_s": 2.0,
                                     "user_per_100k": 1.0, "system_per_100k": 2.0,
                                     "syscalls_per_request": 4.02, "samples": 19000,
                                     "by_object": cpuprofile.by_object(syms), "top": [s.to_json() for s in syms]},
                            "tcp": {"not_supported": "perf record exited 255: no access"}},
                "nginx": {"http": {"error": "RuntimeError('x')"}}}
        lines: list[str] = []
        report._md_cpuprofile(lines.append, prof)
        text = "\n".join(lines)
        self.assertIn("| bulwark | http | 40,000 | 1.000 | 2.000 | 4.02 | kernel 50 %, bulwark 21 %, libc.so.6 10 % |",
                      text)
        self.assertIn("| bulwark | tcp | not supported", text)
        self.assertIn("| nginx | http | error", text)
        self.assertIn("| 40.50 % | k `_raw_spin_unlock_irqrestore` | [kernel.kallsyms] |", text)

    def test_objects_are_read_from_a_report_by_object(self) -> None:
        text = "# Samples: 618  of event 'cpu-clock'\n#\n    70.23%  [kernel.kallsyms]\n    20.50%  bulwark\n" \
               "     9.27%  /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        self.assertEqual(cpuprofile.parse_objects(text),
                         (618, {"kernel": 70.2, "bulwark": 20.5, "libc.so.6": 9.3}))

    def test_the_syscall_count_is_read(self) -> None:
        text = "# started on Sun Dec  6 01:22:39 2026\n\n109,,raw_syscalls:sys_enter,807997,100.00,,\n"
        self.assertEqual(cpuprofile.parse_stat(text), 109)
        with self.assertRaises(cpuprofile.NotSupported):
            cpuprofile.parse_stat("<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n")

    def test_user_and_system_seconds_of_this_process(self) -> None:
        import os
        user, system = cpuprofile.user_system([os.getpid()])
        self.assertGreater(user + system, 0.0)


if __name__ == "__main__":
    unittest.main()
