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

    def test_a_profile_is_read_and_summed_by_component(self) -> None:
        hots = instructions.profile_lines(ANNOTATE)
        self.assertEqual([h.share for h in hots], [20.0, 15.5, 12.25, 10.0, 8.0, 6.0, 4.0, 3.0, 2.0])
        self.assertEqual(hots[0].function, "h1::conn::Conn::poll_read_head")
        self.assertEqual(hots[1].object, "libc.so.6")
        self.assertEqual(hots[3].function, "<proxy::conn::Io as tokio::io::AsyncRead>::poll_read")
        self.assertEqual(hots[8].object, "")
        self.assertEqual(instructions.components(hots), {
            "bulwark: HTTP/1 engine (h1)": 20.0,
            "memory allocation (malloc, free)": 15.5,
            "memory copy and compare (memcpy, memmove, memset, memcmp)": 12.2,
            "bulwark: proxy": 10.0,
            "tokio and mio (async runtime, I/O readiness)": 8.0,
            "the rest (the smallest functions, unlisted)": 19.2,
            "httparse": 6.0,
            "libc (system call wrappers, other)": 4.0,
            "Rust core and std": 3.0,
            "other": 2.0,
        })
        res = {"bulwark": {"requests": 10, "instructions": 1000, "per_request": 100, "processes": 1,
                           "components": instructions.components(hots),
                           "top": [h.to_json() for h in hots[:2]]}}
        lines: list[str] = []
        report._md_profiles(lines.append, res)
        text = "\n".join(lines)
        self.assertIn("| bulwark: HTTP/1 engine (h1) | 20.0 % | 20 |", text)
        self.assertIn("| 15.50 % | `_int_malloc` | libc.so.6 |", text)

    def test_no_profile_no_section(self) -> None:
        lines: list[str] = []
        report._md_profiles(lines.append, {"bulwark": {"error": "x"}})
        self.assertEqual(lines, [])


# callgrind_annotate --inclusive=no output as valgrind 3.19 prints it (shortened).
ANNOTATE = """--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir               file:function
--------------------------------------------------------------------------------
200,000 (20.00%)  crates/h1/src/conn.rs:h1::conn::Conn::poll_read_head [/w/bulwark]
155,000 (15.50%)  ./malloc/./malloc/malloc.c:_int_malloc [/lib/libc.so.6]
122,500 (12.25%)  ./string/memmove-vec-unaligned-erms.S:__memcpy_avx_unaligned_erms [/lib/libc.so.6]
100,000 (10.00%)  crates/proxy/src/conn.rs:<proxy::conn::Io as tokio::io::AsyncRead>::poll_read [/w/bulwark]
 80,000 ( 8.00%)  ???:tokio::runtime::scheduler::current_thread::Context::park [/w/bulwark]
 60,000 ( 6.00%)  ???:httparse::parse_headers_iter_uninit [/w/bulwark]
 40,000 ( 4.00%)  ./socket/../sysdeps/unix/sysv/linux/send.c:send [/lib/libc.so.6]
 30,000 ( 3.00%)  ???:core::ptr::drop_in_place<proxy::forward::Try> [/w/bulwark]
 20,000 ( 2.00%)  ./elf/../sysdeps/generic/dl-new-hash.h:_dl_lookup_symbol_x
"""


if __name__ == "__main__":
    unittest.main()
