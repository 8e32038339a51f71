#!/usr/bin/env python3
"""Measures how fast bulwark heals: kill -9 a replica of the quickstart, time until its
replacement is ready (from bulwark's own events), N times; and bulwark's RSS while it
supervises the quickstart, idle and under load.

Usage: bench/kill-to-ready.py [--kills 20] [--bulwark target/release/bulwark]

The stack is examples/quickstart.toml with `reset_after` lowered to 2 s and the API and
proxy on free ports, so that each kill (replicas are killed in turn, 2.5 s apart) is a
first failure and measures recovery rather than crash-loop backoff.
"""
import argparse, json, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def api_get(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as r:
        return json.loads(r.read())


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--bulwark", default=os.path.join(ROOT, "target/release/bulwark"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bulwark-bench-")
    port = free_port()
    src = open(os.path.join(ROOT, "examples/quickstart.toml")).read()
    src = src.replace('reset_after = "60s"', 'reset_after = "2s"').replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    src += '\n[api]\nlisten = "127.0.0.1:0"\n'
    stack = os.path.join(tmp, "stack.toml")
    open(stack, "w").write(src)
    env = dict(os.environ, BULWARK_STATE_DIR=os.path.join(tmp, "state"))
    up = subprocess.Popen([args.bulwark, "up", "--quiet", "-f", stack], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        addr_file = os.path.join(tmp, "state", "api.addr")
        deadline = time.time() + 30
        while not os.path.exists(addr_file):
            if time.time() > deadline:
                sys.exit("bulwark up did not start")
            time.sleep(0.05)
        addr = open(addr_file).read().strip()

        def ready_count():
            return sum(r["ready"] for r in api_get(addr, "/v1/status")["services"][0]["replicas"])

        while ready_count() < 3:
            time.sleep(0.05)
        time.sleep(1)
        idle_rss = rss_kib(up.pid)

        samples = []
        for i in range(args.kills):
            index = i % 3
            seq = api_get(addr, "/v1/events")[-1]["seq"]
            victim = api_get(addr, "/v1/status")["services"][0]["replicas"][index]
            t0 = time.time()
            os.kill(victim["pid"], signal.SIGKILL)
            ready_at = None
            while ready_at is None:
                time.sleep(0.01)
                for e in api_get(addr, f"/v1/events?since={seq}"):
                    if e["type"] == "replica_ready" and e["index"] == index:
                        ready_at = e["at_ms"] / 1000
                if time.time() - t0 > 30:
                    sys.exit(f"replica {index} not ready 30 s after kill")
            samples.append((ready_at - t0) * 1000)
            time.sleep(2.5)

        load = subprocess.run([args.bulwark, "load", f"http://127.0.0.1:{port}/", "--rate", "200",
                               "--duration", "5s", "--json"], capture_output=True, text=True, env=env)
        loaded_rss = rss_kib(up.pid)
        report = json.loads(load.stdout)
        result = {
            "kills": len(samples),
            "kill_to_ready_ms": {
                "median": round(statistics.median(samples), 1),
                "min": round(min(samples), 1),
                "max": round(max(samples), 1),
                "all": [round(s, 1) for s in samples],
            },
            "rss_kib": {"idle": idle_rss, "after_200rps_5s": loaded_rss},
            "load_200rps_5s": {"sent": report["sent"], "failed": report["failed"]["total"],
                               "p99_ms": report["latency_ms"]["p99"]},
        }
        print(json.dumps(result, indent=2))
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
