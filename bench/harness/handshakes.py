"""A full TLS handshake per request: `python3 handshakes.py PORT SECONDS THREADS`.

Each thread, until SECONDS have passed, opens a TCP connection to 127.0.0.1:PORT, makes a
TLS handshake without a session to resume (a fresh session every time: wrk and h2load resume
theirs on reconnect), sends one `GET /` with `Connection: close`, reads the answer to the end
and counts it as ok if its status is 2xx or 3xx. The certificate is not verified (the client's
work stays the handshake itself; the proxy signs either way). Prints one JSON line:
{"ok", "failed", "elapsed", "errors": {kind: n}}. Run by the harness (harness/tls.py),
pinned to the load CPU; the ssl module releases the GIL during handshakes and I/O."""
from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from collections import Counter

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n"


def one(ctx: ssl.SSLContext, port: int) -> str | None:
    """One request on a new connection: None if it was answered 2xx/3xx, else what failed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="bench.test") as s:
            s.sendall(REQUEST)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    status = data.split(b" ", 2)[1:2]
    return None if status and status[0][:1] in (b"2", b"3") else f"status {status[0].decode() if status else '?'}"


def main() -> None:
    port, seconds, threads = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    ok = 0
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def worker() -> None:
        nonlocal ok
        while time.monotonic() < deadline:
            try:
                err = one(ctx, port)
            except (OSError, ssl.SSLError) as e:
                err = type(e).__name__
            with lock:
                if err is None:
                    ok += 1
                else:
                    errors[err] += 1

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"ok": ok, "failed": sum(errors.values()), "elapsed": round(time.monotonic() - start, 3),
                      "errors": dict(errors)}), flush=True)


if __name__ == "__main__":
    main()
