"""Attackers that go for the exporter's memory, and the probes that watch it, in a namespace with MTU 1500.

Each attacker is its own process inside the namespace, bound to its own 127.0.1.x source address, so
the per-address caps see several clients, as they would from a botnet. Shapes (``Attack.mode``):

* ``hold``: keep ``count`` connections open; each sends ``first`` on connect, then ``trickle`` one
  ``step`` every ``gap`` seconds, and never reads (poll waits for RDHUP/HUP only). A connection the
  server closes is opened again, so the pressure stays until the attack ends. Silent TCP clients
  (``first`` empty), stalled ClientHellos (its first 60 bytes, or all of it), slow header blocks and
  slow bodies are all this shape.
* ``churn``: open and close connections as fast as the kernel lets, ``count`` of them in flight,
  sending ``first`` (a request, or nothing) before the close.
* ``handshake``: ``count`` threads doing complete TLS handshakes in a loop, closing after each.
* ``requests``: ``count`` keep-alive connections sending ``first`` (a request) again after each answer.

The exporter's RSS is sampled from ``/proc/PID/status`` every 0.2 s by the test process itself.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.netns import Netns

ATTACKER = r"""
import base64, json, os, resource, select, socket, ssl, sys, threading, time
cfg = json.loads(sys.argv[1])
port, src, count, mode = cfg["port"], cfg["source"], cfg["count"], cfg["mode"]
first, trickle = base64.b64decode(cfg["first"]), base64.b64decode(cfg["trickle"])
step, gap = cfg["step"], cfg["gap"]
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
stats = {"opened": 0, "lost": 0, "handshakes": 0, "answers": 0}
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

def sock():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, 0))
    return s

def handshakes():
    ctx = ssl.create_default_context(cafile=cfg["ca"])
    while not stop.is_set():
        try:
            with sock() as s:
                s.settimeout(10)
                s.connect(("127.0.0.1", port))
                with ctx.wrap_socket(s, server_hostname="localhost"):
                    stats["handshakes"] += 1
        except OSError:
            stats["lost"] += 1
            time.sleep(0.01)

def requests():
    ctx = ssl.create_default_context(cafile=cfg["ca"]) if cfg["ca"] else None
    while not stop.is_set():
        try:
            with sock() as raw:
                raw.settimeout(10)
                raw.connect(("127.0.0.1", port))
                s = ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
                stats["opened"] += 1
                while not stop.is_set():
                    s.sendall(first)
                    if not s.recv(65536):
                        break
                    stats["answers"] += 1
        except OSError:
            stats["lost"] += 1
            time.sleep(0.01)

if mode in ("handshake", "requests"):
    workers = [threading.Thread(target=handshakes if mode == "handshake" else requests, daemon=True)
               for _ in range(count)]
    for w in workers:
        w.start()
    print("ready", flush=True)
    stop.wait()
    print(json.dumps(stats), flush=True)
    sys.exit(0)

poll, conns = select.poll(), {}
GONE = select.POLLHUP | select.POLLERR | select.POLLRDHUP
print("ready", flush=True)
while not stop.is_set():
    now = time.monotonic()
    while len(conns) < count:
        s = sock()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        conns[s.fileno()] = [s, -1, now]  # offset into trickle; -1: connecting
        poll.register(s, select.POLLOUT | GONE)
        stats["opened"] += 1
        if mode == "hold" and stats["opened"] % 200 == 0:
            break  # open in bursts, so the loop also trickles and notices closes while the attack builds
    for fd, ev in poll.poll(20):
        s, off, _ = conns[fd]
        if off == -1 and ev & select.POLLOUT and not ev & GONE:
            try:
                s.send(first) if first else None
            except OSError:
                ev |= select.POLLERR
            if mode == "churn" or ev & select.POLLERR:
                poll.unregister(fd); del conns[fd]; s.close()
                continue
            conns[fd][1] = 0
            poll.modify(s, GONE)
        elif ev & GONE:
            poll.unregister(fd); del conns[fd]; s.close(); stats["lost"] += 1
    if trickle:
        now = time.monotonic()
        for fd, entry in list(conns.items()):
            s, off, last = entry
            if 0 <= off < len(trickle) and now - last >= gap:
                try:
                    entry[1] += s.send(trickle[off:off + step])
                except OSError:
                    pass
                entry[2] = now
for s, _, _ in conns.values():
    s.close()
print(json.dumps(stats), flush=True)
"""


@dataclass(frozen=True)
class Attack:
    """``count`` clients of one shape (module docstring) from each of ``sources`` addresses."""

    mode: str
    count: int
    first: bytes = b""
    trickle: bytes = b""
    step: int = 1
    gap: float = 1.0
    sources: int = 4


def client_hello() -> bytes:
    """A real TLS ClientHello (TLS 1.2/1.3 offer), as Python's client would send it."""
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost")
    with suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


@contextmanager
def attacking(ns: Netns, port: int, attacks: list[Attack], ca: Path | None = None) -> Iterator[list[dict[str, int]]]:
    """Every attack's processes run while the block does; afterwards the list holds their counts."""
    results: list[dict[str, int]] = []
    procs: list[subprocess.Popen[str]] = []
    try:
        for attack in attacks:
            for i in range(attack.sources):
                cfg = {"port": port, "source": f"127.0.1.{len(procs) % 250 + 1}", "count": attack.count,
                       "mode": attack.mode, "first": base64.b64encode(attack.first).decode(),
                       "trickle": base64.b64encode(attack.trickle).decode(), "step": attack.step,
                       "gap": attack.gap, "ca": str(ca) if ca else "", "i": i}
                proc = ns.popen([sys.executable, "-c", ATTACKER, json.dumps(cfg)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
                procs.append(proc)
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield results
    finally:
        for proc in procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            proc.wait(20)
            results.append(json.loads(line) if line.startswith("{") else {"died": proc.returncode or 0})


SCRAPER = r"""
import base64, json, ssl, sys, time, urllib.error, urllib.request
port, count, gap, auth, ca = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
ctx = ssl.create_default_context(cafile=ca) if ca else None
url = f"{'https' if ca else 'http'}://127.0.0.1:{port}/metrics"
out = []
for i in range(count):
    time.sleep(gap)
    start = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10, context=ctx) as r:
            r.read()
            out.append([r.status, time.monotonic() - start])
    except urllib.error.HTTPError as e:
        out.append([e.code, time.monotonic() - start])
    except Exception as e:
        out.append([repr(e), time.monotonic() - start])
print(json.dumps(out))
"""


@contextmanager
def scraping(ns: Netns, port: int, count: int, gap: float, *, ca: Path | None = None,
             auth: str = "") -> Iterator[list[tuple[int | str, float]]]:
    """``count`` scrapes ``gap`` s apart, each on a new connection, while the block runs: [(status, s)]."""
    out: list[tuple[int | str, float]] = []
    proc = ns.popen([sys.executable, "-c", SCRAPER, str(port), str(count), str(gap), auth, str(ca or "")],
                    stdout=subprocess.PIPE, text=True)
    try:
        yield out
    finally:
        stdout, _ = proc.communicate(timeout=count * (gap + 12) + 30)
        out.extend((status, seconds) for status, seconds in json.loads(stdout))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ProcessLookupError(pid)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Watch:
    """Samples the exporter's RSS and fds every 0.2 s in a thread: ``with Watch(pid) as w: ...; w.peak``."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.peak_fds = pid, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_mb(self.pid))
            self.peak_fds = max(self.peak_fds, open_fds(self.pid))

    def __enter__(self) -> Watch:
        self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def settle(pid: int, seconds: float) -> float:
    """RSS after ``seconds`` with no attacker: what the exporter kept."""
    time.sleep(seconds)
    return rss_mb(pid)


