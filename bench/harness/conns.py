"""Hold N idle keep-alive HTTP connections to 127.0.0.1:PORT, each after one request.

Usage: conns.py PORT N. Prints "ready OPENED ANSWERED" once every connection has had its
response, then keeps them open until stdin closes (or 10 minutes pass)."""
from __future__ import annotations

import resource
import select
import socket
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def read_response(s: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return False
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns: list[socket.socket] = []
    answered = 0
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(REQUEST)
            answered += read_response(s)
            conns.append(s)
        except OSError as e:
            print(f"error after {len(conns)} connections: {e}", file=sys.stderr)
            break
    print(f"ready {len(conns)} {answered}", flush=True)
    select.select([sys.stdin], [], [], 600)


if __name__ == "__main__":
    main()
