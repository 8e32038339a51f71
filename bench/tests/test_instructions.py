from __future__ import annotations

import os
import tempfile
import unittest

from harness import instructions, report

# The head of a callgrind dump as valgrind 3.19 writes it with --dump-instr=no.
DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  haproxy -W -db -f haproxy.cfg
part: 1

desc: I1 cache:
desc: Trigger: Client Request: Dump

positions: line
events: Ir
summary: 0

fl=(1) ???
fn=(1) 0x0000000000001000
0 10
totals: 123456789
"""


class InstructionsTest(unittest.TestCase):
    def test_totals_reads_the_dump(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".1", delete=False) as f:
            f.write(DUMP)
        try:
            self.assertEqual(instructions.totals(f.name), 123456789)
        finally:
            os.unlink(f.name)

    def test_a_dump_without_totals_is_an_error(self) -> None:
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("# callgrind format\nevents: Ir\nsummary: 5\n")
        try:
            with self.assertRaises(RuntimeError):
                instructions.totals(f.name)
        finally:
            os.unlink(f.name)

    def test_counted_under_callgrind_with_collection_off(self) -> None:
        argv = instructions.callgrind("/tmp/x")
        self.assertEqual(argv[:2], ["valgrind", "--tool=callgrind"])
        self.assertIn("--instr-atstart=no", argv)
        self.assertIn("--callgrind-out-file=/tmp/x/callgrind.out.%p", argv)
        self.assertIn("--trace-children=no", argv)  # bulwark's replicas are not the proxy

    def test_the_report_gives_the_ratio_row_and_the_table(self) -> None:
        res = {"instructions": {"haproxy": {"requests": 1000, "instructions": 20_000_000, "per_request": 20000,
                                            "processes": 2},
                                "nginx": {"error": "RuntimeError('x')"},
                                "bulwark": {"requests": 1000, "instructions": 40_000_000, "per_request": 40000,
                                            "processes": 1}}}
        rows = {label: vals for label, _u, _b, vals in report.main_ratios(res)}
        self.assertEqual(rows["instructions per proxied request (callgrind)"],
                         {"haproxy": 20000, "nginx": None, "bulwark": 40000})
        lines: list[str] = []
        report._md_instructions(lines.append, res["instructions"])
        text = "\n".join(lines)
        self.assertIn("| bulwark | 1,000 | 40,000,000 | 40,000 | 1 |", text)
        self.assertIn("| nginx | error |", text)


if __name__ == "__main__":
    unittest.main()
