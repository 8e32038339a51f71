#!/usr/bin/env python3
"""Measures how fast bulwark heals: kill -9 a replica of the quickstart, time until its
replacement is ready (from bulwark's own events), N times; and bulwark's RSS while it
supervises the quickstart, idle and under load. Then the same kills with the replicas in runc
containers (`"oci"` in the output; skipped, saying why, without runc or root).

Usage: bench/kill-to-ready.py [--kills 20] [--bulwark target/release/bulwark]

The measurement lives in bench/harness/killready.py and is also part of `bench/run`. The
stack is examples/quickstart.toml with `reset_after` lowered to 2 s and the API and proxy
on free ports, so that each kill (replicas are killed in turn, 2.5 s apart) is a first
failure and measures recovery rather than crash-loop backoff. Nothing is pinned (the
rest of `bench/run` pins proxies to CPU 0 and replicas to CPU 1).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import uuid

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from harness import killready  # noqa: E402
from harness.context import Ctx  # noqa: E402
from harness.procs import Procs  # noqa: E402
from harness.records import to_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--bulwark", default=os.path.join(os.path.dirname(BENCH), "target/release/bulwark"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bulwark-bench-")
    ctx = Ctx(procs=Procs(uuid.uuid4().hex, tmp), tmp=tmp, bulwark=args.bulwark)
    try:
        result = killready.run(ctx, args.kills, log=lambda m: print(m, file=sys.stderr))
    finally:
        ctx.procs.cleanup()
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(json.dumps(to_json(result), indent=2))


if __name__ == "__main__":
    main()
