"""TLS termination compared (`--only tls`): bulwark, HAProxy and nginx terminate TLS with one
certificate in front of the same 3 backends, with the pinning and fairness rules of the plain
HTTP comparison (harness/compare.py, bench/README.md).

One CA and one server certificate, ECDSA P-256 (the common choice for a new certificate, and
each proxy's fast path), made with `openssl` in the run's temporary directory; each proxy
serves the leaf alone. TLS 1.2 and 1.3 accepted, ALPN h2 and http/1.1, session resumption as
each ships (HAProxy's cache and tickets, nginx's tickets, bulwark's rustls session cache).

Three figures per proxy, in rounds: each round starts each proxy in turn (the order rotates
from round to round), measures it and stops it, so the slow drift of a shared machine falls
on all three alike and the spread between rounds shows how much to trust a ratio:
- keep-alive: `wrk` over https, 50 connections (the bulk cipher path: one handshake per
  connection, in the warm-up);
- new connection per request: `wrk -H "Connection: close"`: a TCP connection and a TLS
  handshake per request. wrk keeps the TLS session across its reconnects and every proxy
  resumes it (checked with HAProxy's `SslFrontendSessionReuse_pct`: 100 %), so these are
  resumed TLS 1.3 handshakes (PSK with an X25519 exchange, no certificate or signature);
- full handshake per request: the same with a client that never resumes (harness/handshakes.py,
  Python's ssl, 16 threads): the certificate sent and signed for each request;
- h2 over TLS: `h2load` (ALPN h2, 50 connections × 10 streams).
What each proxy negotiates (version, cipher, key exchange, ALPN) is read once with
`openssl s_client`, verifying the certificate against the CA."""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import measure
from .compare import H2Throughput, Throughput, h2_throughput_of, throughput_of
from .context import Ctx, Log
from .measure import H2Run, WrkRun
from .procs import NaiveBackends, cpu_seconds
from .proxies import Bulwark, HAProxy, Nginx, NotSupported
from .records import JsonDict, Record, Unavailable
from .report import NAMES, Ratio, Write, _get, _num, _ratio, _status

PROXIES = ["haproxy", "nginx", "bulwark"]  # the first round's order
REPORT_ORDER = ["bulwark", "haproxy", "nginx"]
SERVER_NAME = "bench.test"
CERTIFICATE = "ECDSA P-256 (prime256v1), signed by a CA of its own, leaf served alone"
ALPN = "h2,http/1.1"
# OpenSSL 3's default TLS 1.3 order, which wrk and s_client offer; h2load puts AES-128 first,
# and a proxy that follows the client's order would then use another cipher than in the
# other runs.
H2LOAD_CIPHERS = ["--tls13-ciphers=TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"]
# Threads of the full-handshake client (harness/handshakes.py): enough to keep the proxy
# busy while each waits for its handshake.
HANDSHAKE_THREADS = 16


# ---------------------------------------------------------------------------------- records

@dataclass
class Negotiated(Record):
    """What `openssl s_client` negotiated with a proxy."""

    protocol: str | None
    cipher: str | None
    key_exchange: str | None
    alpn: str | None
    verified: bool


@dataclass
class TlsFigures(Record):
    """One proxy's runs over TLS, one of each kind per round."""

    negotiated: Negotiated | Unavailable
    keepalive: Throughput
    new_connection: Throughput
    full_handshake: Throughput
    h2: H2Throughput | None


@dataclass
class TlsComparison(Record):
    certificate: str
    openssl: str
    rounds: list[list[str]] = field(default_factory=list)  # the proxies' order in each round
    proxies: dict[str, TlsFigures | Unavailable] = field(default_factory=dict)


# ----------------------------------------------------------------------------- certificates

def openssl(cwd: str, *args: str) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])}: {r.stderr.strip()[-300:]}")


@dataclass
class Certs:
    ca: str
    cert: str
    key: str
    combined: str  # cert then key, as HAProxy's `crt` takes them


def make_certs(tmp: str) -> Certs:
    """A CA and a server certificate for bench.test and 127.0.0.1, ECDSA P-256, in tmp/tls."""
    d = os.path.join(tmp, "tls")
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(d, "req", "-x509", *ec, "-days", "2", "-subj", "/CN=bulwark bench CA", "-keyout", "ca.key",
            "-out", "ca.pem")
    openssl(d, "req", *ec, "-subj", f"/CN={SERVER_NAME}", "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", "server.pem", "-extfile", "server.ext")
    c = Certs(*(os.path.join(d, n) for n in ("ca.pem", "server.pem", "server.key", "server.crt")))
    with open(c.combined, "w") as out:
        for part in (c.cert, c.key):
            with open(part) as f:
                out.write(f.read())
    return c


# ---------------------------------------------------------------------------------- targets

class HAProxyTLS(HAProxy):
    """HAProxy's configuration of the comparison, its listener terminating TLS (h2 by ALPN
    on the same port instead of an h2c one)."""

    def __init__(self, ctx: Ctx, backends: NaiveBackends, certs: Certs) -> None:
        super().__init__(ctx.procs, ctx.tmp, backends, "http")
        self.h2_port = None
        self.bind_options = f" ssl crt {certs.combined} alpn {ALPN}"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"


class NginxTLS(Nginx):
    """nginx's configuration of the comparison, its server terminating TLS (h2 by ALPN)."""

    def __init__(self, ctx: Ctx, backends: NaiveBackends, certs: Certs) -> None:
        super().__init__(ctx.procs, ctx.tmp, backends, "http")
        self.certs = certs

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def listen(self) -> str:
        return (f"        listen 127.0.0.1:{self.port} ssl http2;\n"
                f"        ssl_certificate {self.certs.cert};\n"
                f"        ssl_certificate_key {self.certs.key};\n"
                "        ssl_protocols TLSv1.2 TLSv1.3;\n")


class BulwarkTLS(Bulwark):
    """bulwark's stack of the comparison, its listener terminating TLS (`expose.tls`)."""

    def __init__(self, ctx: Ctx, certs: Certs) -> None:
        super().__init__(ctx.procs, ctx.tmp, ctx.bulwark, "http")
        self.certs = certs

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def config(self) -> str:
        return super().config() + (
            "\n[services.web.expose.tls]\n"
            f'certificates = [{{ cert = "{self.certs.cert}", key = "{self.certs.key}" }}]\n')

    def start(self) -> Bulwark:
        with open(self.stack, "w") as f:
            f.write(self.config())
        check = subprocess.run([self.bin, "check", "-f", self.stack], capture_output=True, text=True)
        if check.returncode != 0 and "tls" in (check.stderr + check.stdout):
            msg = (check.stderr or check.stdout).strip().splitlines()
            raise NotSupported("TLS listeners: `bulwark check` rejects `expose.tls`: "
                               + " / ".join(m.strip() for m in msg[:3]))
        return super().start()


Target = HAProxyTLS | NginxTLS | BulwarkTLS


def make(ctx: Ctx, backends: NaiveBackends, certs: Certs, name: str) -> Target:
    if name == "haproxy":
        return HAProxyTLS(ctx, backends, certs)
    if name == "nginx":
        return NginxTLS(ctx, backends, certs)
    return BulwarkTLS(ctx, certs)


# ------------------------------------------------------------------------------ negotiation

def parse_s_client(out: str) -> Negotiated:
    """What `openssl s_client` printed of the handshake (OpenSSL 3's wording)."""
    def first(pattern: str) -> str | None:
        m = re.search(pattern, out, re.MULTILINE)
        return m.group(1).strip() if m else None
    def known(x: str | None) -> str | None:  # a failed handshake prints "(NONE)"
        return None if x in (None, "(NONE)", "0000") else x
    proto_cipher = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.MULTILINE)
    alpn = first(r"^ALPN protocol: (.+)$")
    return Negotiated(protocol=known(proto_cipher.group(1) if proto_cipher else first(r"^\s*Protocol\s*:\s*(\S+)")),
                      cipher=known(proto_cipher.group(2) if proto_cipher else first(r"^\s*Cipher\s*:\s*(\S+)")),
                      key_exchange=first(r"^(?:Server|Peer) Temp Key: (.+)$"),
                      alpn=None if alpn is None or alpn.startswith("No ALPN") else alpn,
                      verified=bool(re.search(r"^\s*Verify return code: 0 \(ok\)", out, re.MULTILINE)))


def negotiate(port: int, certs: Certs) -> Negotiated:
    # errors="replace": with h2 negotiated, a server's SETTINGS frame may reach s_client
    # before it exits, and it prints those bytes raw (nginx does, now and then).
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME,
                        "-alpn", ALPN, "-CAfile", certs.ca], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, errors="replace", timeout=20)
    n = parse_s_client(r.stdout)
    if n.protocol is None:
        raise RuntimeError(f"openssl s_client found no TLS session: {(r.stderr or r.stdout).strip()[-300:]}")
    return n


def describe(n: Negotiated | Unavailable) -> str:
    if isinstance(n, Unavailable):
        return n.detail
    return (f"{n.protocol}, {n.cipher}, key exchange {n.key_exchange}, ALPN {n.alpn}, "
            f"certificate {'verified' if n.verified else 'NOT verified'}")


# ----------------------------------------------------------------------------- measurement

@dataclass
class Runs:
    """One proxy's runs so far (one of each kind per round)."""

    negotiated: Negotiated | Unavailable | None = None
    keepalive: list[WrkRun] = field(default_factory=list)
    new_connection: list[WrkRun] = field(default_factory=list)
    full_handshake: list[WrkRun] = field(default_factory=list)
    h2: list[H2Run] = field(default_factory=list)

    def figures(self) -> TlsFigures:
        assert self.negotiated is not None
        return TlsFigures(negotiated=self.negotiated, keepalive=throughput_of(self.keepalive, True),
                          new_connection=throughput_of(self.new_connection, True),
                          full_handshake=throughput_of(self.full_handshake, True),
                          h2=h2_throughput_of(self.h2) if self.h2 else None)


def one_round(ctx: Ctx, backends: NaiveBackends, certs: Certs, name: str, runs: Runs, log: Log) -> None:
    p = ctx.params
    t = make(ctx, backends, certs, name).start()
    try:
        if runs.negotiated is None:
            try:
                runs.negotiated = negotiate(t.port, certs)
            except Exception as e:  # noqa: BLE001 (the figures stand without it)
                ctx.errors.append(f"tls {name}: s_client: {e!r}")
                runs.negotiated = Unavailable.error(e)
            log(f"  {name} negotiates: {describe(runs.negotiated)}")
        pids = t.pids()
        measure.wrk(ctx.procs, t.url, p["warmup"], p["wrk_conns"])  # warm-up, discarded
        r = measure.wrk(ctx.procs, t.url, p["wrk_secs"], p["wrk_conns"], pids)
        runs.keepalive.append(r)
        c = measure.wrk(ctx.procs, t.url, p["wrk_secs"], p["wrk_conns"], pids, headers=["Connection: close"])
        runs.new_connection.append(c)
        f = full_handshakes(ctx, t.port, p["wrk_secs"], pids)
        runs.full_handshake.append(f)
        h = measure.h2load(ctx.procs, t.url, p["h2_secs"], p["wrk_conns"], 10, pids, extra=H2LOAD_CIPHERS)
        runs.h2.append(h)
        log(f"  {name}: keep-alive {r.ok_rps:.0f} req/s (proxy CPU {r.proxy_cpu_util}), new connection "
            f"{c.ok_rps:.0f} req/s (proxy CPU {c.proxy_cpu_util}), full handshake {f.ok_rps:.0f} req/s "
            f"(proxy CPU {f.proxy_cpu_util}, failed {f.errors}), h2 {h.ok_rps:.0f} req/s")
    finally:
        t.stop()


def full_handshakes(ctx: Ctx, port: int, duration: float, pids: Sequence[int]) -> WrkRun:
    """A run of harness/handshakes.py (a full TLS handshake per request), as a wrk run."""
    script = os.path.join(os.path.dirname(__file__), "handshakes.py")
    cpu0, t0 = cpu_seconds(pids), time.time()
    rc, out = measure._run(ctx.procs, [sys.executable, script, str(port), str(duration), str(HANDSHAKE_THREADS)],
                           duration + 30)
    return parse_handshakes(rc, out, cpu_seconds(pids) - cpu0, time.time() - t0)


def parse_handshakes(rc: int | None, out: str, cpu: float, elapsed: float) -> WrkRun:
    """handshakes.py's report as a WrkRun; `cpu`: the proxy's CPU seconds over `elapsed`."""
    try:
        r = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"handshakes.py failed (exit {rc}): {out.strip()[-400:]}") from None
    done = r["ok"] + r["failed"]
    return WrkRun(rps=round(done / r["elapsed"], 1), requests=done, errors=r["failed"],
                  ok_rps=round(r["ok"] / r["elapsed"], 1), non_2xx=0, proxy_cpu_s=round(cpu, 3),
                  proxy_cpu_util=round(cpu / elapsed, 3) if elapsed else None,
                  cpu_s_per_100k=round(cpu / done * 1e5, 3) if done else None)


def order(round_no: int) -> list[str]:
    """The proxies' order in a round: rotated by one each round."""
    k = round_no % len(PROXIES)
    return PROXIES[k:] + PROXIES[:k]


def openssl_version() -> str:
    """"OpenSSL 3.0.19": the library HAProxy, nginx and the clients use (Debian's libssl)."""
    r = subprocess.run(["openssl", "version"], capture_output=True, text=True)
    return " ".join(r.stdout.split()[:2]) or "?"


def run_all(ctx: Ctx, log: Log) -> TlsComparison:
    certs = make_certs(ctx.tmp)
    res = TlsComparison(certificate=CERTIFICATE, openssl=openssl_version())
    runs = {n: Runs() for n in PROXIES}
    failed: dict[str, Unavailable] = {}
    backends = NaiveBackends(ctx.procs, ctx.bulwark).start()
    try:
        for i in range(ctx.params["tls_rounds"]):
            res.rounds.append(order(i))
            for name in order(i):
                if name in failed:
                    continue
                log(f"tls round {i + 1}: {name}")
                try:
                    one_round(ctx, backends, certs, name, runs[name], log)
                except NotSupported as e:
                    log(f"  not supported: {e}")
                    failed[name] = Unavailable.not_supported(e)
                except Exception as e:  # noqa: BLE001 (recorded; the exit status says so)
                    log(f"  ERROR: {e!r}")
                    ctx.errors.append(f"tls {name}: {e!r}")
                    failed[name] = Unavailable.error(e)
    finally:
        backends.stop()
    for name in PROXIES:
        res.proxies[name] = failed.get(name) or runs[name].figures()
    return res


# ---------------------------------------------------------------------------------- report
# These read the JSON document (plain dicts), as report.py does.

KINDS = [("keepalive", "HTTPS keep-alive (wrk)"),
         ("new_connection", "HTTPS, new connection per request, session resumed (wrk)"),
         ("full_handshake", "HTTPS, new connection per request, full handshake (handshakes.py)"),
         ("h2", "h2 over TLS (h2load)")]


def round_ratios(a: list[float], b: list[float]) -> list[float]:
    """a / b within each round (the runs of one round are side by side in time)."""
    return [round(x / y, 3) for x, y in zip(a, b) if x > 0 and y > 0]


def median_cpu(runs: list[JsonDict]) -> float | None:
    """The median CPU seconds per 100k requests of some runs (None if none has it)."""
    xs = [r["cpu_s_per_100k"] for r in runs if r.get("cpu_s_per_100k") is not None]
    return round(statistics.median(xs), 3) if xs else None


def ok_rps(tls: JsonDict, proxy: str, kind: str) -> list[float]:
    return [r["ok_rps"] for r in (_get(tls, "proxies", proxy, kind, "runs") or [])]


def ratio_rows(tls: JsonDict) -> list[Ratio]:
    """The TLS rows of the main ratio table."""
    def per(kind: str, key: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for p in REPORT_ORDER:
            e = _get(tls, "proxies", p, kind)
            out[p] = None if e is None else (e.get(key) if key != "cpu" else median_cpu(e["runs"]))
        return out
    return [("max throughput, HTTPS keep-alive (wrk, median)", "req/s", "higher", per("keepalive", "rps_median")),
            ("throughput, HTTPS, new connection per request, resumed (wrk, median)", "req/s", "higher",
             per("new_connection", "rps_median")),
            ("throughput, HTTPS, new connection per request, full handshake (median)", "req/s", "higher",
             per("full_handshake", "rps_median")),
            ("max throughput, h2 over TLS (h2load, median)", "req/s", "higher", per("h2", "rps_median")),
            ("proxy CPU per 100k requests, HTTPS keep-alive", "CPU s", "lower", per("keepalive", "cpu")),
            ("proxy CPU per 100k requests, HTTPS, new connection, resumed", "CPU s", "lower",
             per("new_connection", "cpu")),
            ("proxy CPU per 100k requests, HTTPS, new connection, full handshake", "CPU s", "lower",
             per("full_handshake", "cpu"))]


def _spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}–{max(xs):.2f}" if xs else "–"


def markdown_section(w: Write, tls: JsonDict) -> None:
    rounds = tls.get("rounds") or []
    w("## TLS termination\n")
    w(f"bulwark (rustls on ring), HAProxy and nginx (both on the system's {tls['openssl']}, as are wrk, "
      "h2load and the full-handshake client) terminate TLS with one "
      f"certificate, {tls['certificate']}, in front of the same 3 backends (plain HTTP/1.1 behind the proxy), "
      "with the configurations and pinning of the HTTP comparison plus TLS on the listener: TLS 1.2 and 1.3, "
      "ALPN h2 and http/1.1, each proxy's default ciphers and session resumption. "
      f"{len(rounds)} round(s); in each, every proxy is started, measured and stopped in turn, the order "
      "rotating from round to round (runs below are in round order). *Keep-alive*: `wrk -t1 -c50` over "
      "https, the bulk cipher path. *New connection per request*: the same with `Connection: close`, a TCP "
      "connection and a TLS handshake per request; wrk keeps its TLS session across reconnects and every "
      "proxy resumes it, so these are resumed TLS 1.3 handshakes (PSK with an X25519 exchange, no "
      f"certificate sent or signed). *Full handshake*: the same with a client that never resumes "
      f"(`harness/handshakes.py`, Python's ssl, {HANDSHAKE_THREADS} threads; slower than wrk, so the proxy's "
      "CPU per request is its figure). *h2*: `h2load -c50 -m10`, ALPN h2. Every client offers OpenSSL's "
      "default TLS 1.3 cipher order.\n")
    w("Negotiated with `openssl s_client -alpn h2,http/1.1`, verifying against the CA:\n")
    w("| proxy | protocol | cipher | key exchange | ALPN | certificate |")
    w("|---|---|---|---|---|---|")
    for p in REPORT_ORDER:
        n = _get(tls, "proxies", p, "negotiated")
        st = _status(_get(tls, "proxies", p))
        if st or n is None or _status(n):
            w(f"| {NAMES[p]} | {st or _status(n) or 'not measured'} | | | | |")
            continue
        w(f"| {NAMES[p]} | {n['protocol']} | {n['cipher']} | {n['key_exchange']} | {n['alpn']} | "
          f"{'verified' if n['verified'] else 'NOT verified'} |")
    w("")
    for kind, title in KINDS:
        w(f"### {title}\n")
        w("| proxy | req/s (median) | runs | proxy core busy | CPU s / 100k req | errors |")
        w("|---|---:|---|---:|---:|---:|")
        for p in REPORT_ORDER:
            e = _get(tls, "proxies", p)
            st = _status(e)
            if st:
                w(f"| {NAMES[p]} | {st}: {e.get('not_supported') or e.get('error')} | | | | |")
                continue
            k = e.get(kind)
            if not k:
                continue
            runs = ", ".join(format(r["ok_rps"], ",.0f") for r in k["runs"])
            busy = [r["proxy_cpu_util"] for r in k["runs"] if r.get("proxy_cpu_util") is not None]
            w(f"| {NAMES[p]} | {k['rps_median']:,.0f} | {runs} | "
              f"{_num(statistics.median(busy) * 100 if busy else None, '{:.0f} %')} | "
              f"{_num(median_cpu(k['runs']), '{:.3f}')} | {k.get('errors', k.get('failed', 0))} |")
        w("")
    w("Ratios of the medians, and the spread of the ratio within each round (the proxies of one round run "
      "one after the other, within a minute or two; above 1: bulwark serves more):\n")
    w("| figure | bulwark/HAProxy | per round | bulwark/nginx | per round |")
    w("|---|---:|---:|---:|---:|")
    for kind, title in KINDS:
        b = ok_rps(tls, "bulwark", kind)
        cells = []
        for other in ("haproxy", "nginx"):
            o = ok_rps(tls, other, kind)
            med = _ratio(statistics.median(b) if b else None, statistics.median(o) if o else None)
            cells += [med, _spread(round_ratios(b, o))]
        w(f"| {title} | {' | '.join(cells)} |")
    w("")
    w("`proxy core busy`: the proxy's CPU time over the run's wall time; well below 100 % means the other "
      "core (wrk and the backends; with TLS, wrk's own cipher and handshake work) was the bottleneck, and "
      "CPU per request is the figure to compare.\n")
