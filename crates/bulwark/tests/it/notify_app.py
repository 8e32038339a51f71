"""A replica that speaks systemd's notify protocol by hand, for sdnotify.rs.

notify_app.py READY_AFTER WATCHDOG_EVERY STOP_WATCHDOG_AFTER

Serves HTTP on $PORT from the start; says STATUS=starting, then READY=1 (and
STATUS=serving) READY_AFTER seconds after its start (never when negative); sends
WATCHDOG=1 every WATCHDOG_EVERY seconds (never when 0) until STOP_WATCHDOG_AFTER
seconds after its start. Each SIGUSR1 sends STATUS=signalled N; from the second one
on, READY=1 with it. SIGHUP sends RELOADING=1, SIGUSR2 STOPPING=1 (and it keeps
running).
"""

import http.server
import os
import signal
import socket
import sys
import threading
import time

ready_after, watchdog_every, stop_watchdog_after = map(float, sys.argv[1:4])
path = os.environ["NOTIFY_SOCKET"]
address = "\0" + path[1:] if path.startswith("@") else path
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def notify(message):
    sock.sendto(message.encode(), address)


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the notify app\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Hello)
threading.Thread(target=server.serve_forever, daemon=True).start()

signals = 0


def on_usr1(*_):
    global signals
    signals += 1
    ready = "READY=1\n" if signals >= 2 else ""
    notify(f"{ready}STATUS=signalled {signals}")


signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGHUP, lambda *_: notify("RELOADING=1\nSTATUS=reloading"))
signal.signal(signal.SIGUSR2, lambda *_: notify("STOPPING=1\nSTATUS=stopping"))
notify("STATUS=starting")
start = time.monotonic()
ready = False
while True:
    t = time.monotonic() - start
    if not ready and 0 <= ready_after <= t:
        notify("READY=1\nSTATUS=serving")
        ready = True
    if watchdog_every > 0 and t < stop_watchdog_after:
        notify("WATCHDOG=1")
    time.sleep(watchdog_every if watchdog_every > 0 else 0.1)
