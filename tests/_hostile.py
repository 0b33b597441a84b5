"""Hostile clients against the real server in a namespace whose ``lo`` has MTU 1500, as on a real NIC.

Why MTU 1500: loopback's default 64 KiB MTU moves a whole scrape per segment, so socket buffers fill
in a way no network does; with 1500 the kernel buffers what it would between two hosts. Each script
runs inside the namespace as its own process (its own GIL, its own descriptors): the server (the
exporter's registry on a fixture procfs, with ``ServerLimits`` from JSON), a flood of connections
that pipeline requests and never read, and a scraper that records each answer.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests._http import FIXTURE_PROCFS
from tests._served import listening
from tests.netns import Netns

PORT = 9731
SERVE = r"""
import json, sys
from exporter.cli import build_parser, resolve_config
from exporter.exposition.registry import build_registry
from exporter.reload import Reloader
from exporter.web.config import load_web_config
from exporter.web.server import ExporterHTTPServer, ServerLimits
limits, argv = json.loads(sys.argv[1]), sys.argv[2:]
args = build_parser().parse_args(argv)
config = resolve_config(args)
web = load_web_config(args.web_config_file) if args.web_config_file else None
server = ExporterHTTPServer(("127.0.0.1", PORT), build_registry(Reloader(None, {}, config)), config.telemetry_path,
                            web_config=web, limits=ServerLimits(**limits))
server.serve_forever()
""".replace("PORT", str(PORT))

# Opens connections at `rate` per second up to `target` open, each sending `requests` pipelined at once and
# never reading; a connection the server closes or resets is replaced. Runs until stdin closes.
FLOOD = r"""
import json, os, resource, select, socket, sys, time
port, rate, target, requests = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
resource.setrlimit(resource.RLIMIT_NOFILE, (target + 256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
poll, socks, opened, lost = select.poll(), {}, 0, 0
poll.register(0, select.POLLIN)
GONE = select.POLLHUP | select.POLLERR | select.POLLRDHUP
next_open = time.monotonic()
print("ready", flush=True)
while True:
    now = time.monotonic()
    if len(socks) < target:
        next_open = max(next_open, now - 1 / rate)
        while len(socks) < target and next_open <= now:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks[s.fileno()] = [s, False]
            poll.register(s, select.POLLOUT | GONE)
            opened += 1
            next_open += 1 / rate
    for fd, ev in poll.poll(10):
        if fd == 0:
            print(json.dumps({"opened": opened, "lost": lost, "open": len(socks)}), flush=True)
            sys.exit(0)
        s, sent = socks[fd]
        if ev & GONE:
            poll.unregister(fd); del socks[fd]; s.close(); lost += 1
        elif ev & select.POLLOUT and not sent:
            s.send(requests)
            socks[fd][1] = True
            poll.modify(s, GONE)
"""

SCRAPE = r"""
import base64, json, sys, time, urllib.error, urllib.request
port, count, gap, auth = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
out = []
for i in range(count):
    time.sleep(gap)
    start = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers),
                                    timeout=10) as r:
            out.append([r.status, time.monotonic() - start, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, time.monotonic() - start, e.read().decode()])
    except Exception as e:
        out.append([repr(e), time.monotonic() - start, ""])
print(json.dumps(out))
"""


# Sends raw bytes (optionally half-closing after them), reads until the server closes or `wait` s pass.
RAW = r"""
import base64, json, socket, sys, time
port, data, half_close, wait = int(sys.argv[1]), base64.b64decode(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
start, chunks = time.monotonic(), []
with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
    s.sendall(data)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError) as exc:
        chunks.append(f"<{type(exc).__name__}>".encode())
print(json.dumps([base64.b64encode(b"".join(chunks)).decode(), time.monotonic() - start]))
"""


def raw(ns: Netns, data: bytes, *, half_close: bool = False, wait: float = 15.0) -> tuple[bytes, float]:
    """Raw bytes to the server in ``ns``: (everything it answered until it closed, seconds that took)."""
    proc = ns.run([sys.executable, "-c", RAW, str(PORT), base64.b64encode(data).decode(), str(int(half_close)),
                   str(wait)], timeout=wait + 30)
    answer, seconds = json.loads(proc.stdout)
    return base64.b64decode(answer), seconds


def busy_procfs(root: Path, owners: int = 120, per_owner: int = 8) -> Path:
    """The fixture procfs plus ``owners`` processes holding TCP sockets in several states.

    Why: the fixture's scrape is ~10 KB, so 8 pipelined answers fit in the kernel's socket buffers and
    an attacker ends up idle, not stuck writing; a host with a hundred socket owners (~60 KB a scrape)
    is what the issue's attack met."""
    procfs = root / "procfs"
    shutil.copytree(FIXTURE_PROCFS, procfs, symlinks=True)
    lines = [(procfs / "net/tcp").read_text().rstrip("\n")]
    states = ("01", "02", "08", "04", "0A", "06", "05", "09")
    for pid in range(1000, 1000 + owners):
        (procfs / str(pid) / "fd").mkdir(parents=True)
        (procfs / str(pid) / "comm").write_text(f"worker-{pid}\n")
        for fd in range(per_owner):
            inode, n = 900000 + pid * 100 + fd, len(lines) - 1
            lines.append(f"{n:4d}: 0100007F:{2000 + n:04X} 0200007F:1F90 {states[fd % len(states)]} 00000000:00000000 "
                         f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 20 4 30 10 -1")
            os.symlink(f"socket:[{inode}]", procfs / str(pid) / "fd" / str(fd + 3))
    (procfs / "net/tcp").write_text("\n".join(lines) + "\n")
    return procfs


def mtu_1500(ns: Netns) -> None:
    ns.run(["ip", "link", "set", "lo", "mtu", "1500"])


@contextmanager
def server(ns: Netns, log: Path, limits: dict[str, Any], *flags: str,
           procfs: Path = FIXTURE_PROCFS) -> Iterator[subprocess.Popen[bytes]]:
    """The exporter's server with ``limits`` in ``ns`` on PORT, counting a fake procfs."""
    argv = [sys.executable, "-c", SERVE, json.dumps(limits), "--source", "proc", "--path.procfs", str(procfs), *flags]
    with listening(ns, PORT, log, argv) as proc:
        yield proc


@contextmanager
def flood(ns: Netns, rate: float, target: int, request: bytes, pipelined: int) -> Iterator[dict[str, int]]:
    """The flood runs while the block does; afterwards the dict holds what it opened and lost."""
    proc = ns.popen([sys.executable, "-c", FLOOD, str(PORT), str(rate), str(target),
                     (request * pipelined).decode()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    stats: dict[str, int] = {}
    try:
        yield stats
    finally:
        proc.stdin.close()
        line = proc.stdout.readline()
        proc.wait(10)
        stats.update(json.loads(line) if line else {})


def scrapes(ns: Netns, count: int, gap: float, auth: str = "") -> list[tuple[int | str, float, str]]:
    """``count`` scrapes ``gap`` s apart, each on a new connection: [(status or error, seconds, body)]."""
    proc = ns.run([sys.executable, "-c", SCRAPE, str(PORT), str(count), str(gap), auth], timeout=count * 12 + 30)
    return [(status, seconds, body) for status, seconds, body in json.loads(proc.stdout)]
