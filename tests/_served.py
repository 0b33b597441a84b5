"""The real exporter, started as ``python -m exporter`` inside a test namespace, and HTTP from inside it.

Why from inside: the namespace has only ``lo``, so the exporter is reachable only by a process in
it; one helper process runs all of a batch's requests and prints them as JSON, so a batch of 60
scrapes costs one interpreter start, not 60.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.netns import Netns, NetnsError

ROOT = Path(__file__).resolve().parent.parent
_REQUESTS = r"""
import json, sys, time, urllib.error, urllib.request
port, method, path, count, gap = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
out = []
for i in range(count):
    time.sleep(gap if i else 0)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out.append([r.status, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode()])
print(json.dumps(out))
"""


def http(ns: Netns, port: int, path: str = "/metrics", method: str = "GET", count: int = 1,
         gap: float = 0.0) -> list[tuple[int, str]]:
    """``count`` requests from inside ``ns``, ``gap`` seconds apart: [(status, body)]."""
    proc = ns.run([sys.executable, "-c", _REQUESTS, str(port), method, path, str(count), str(gap)], timeout=300)
    return [(status, body) for status, body in json.loads(proc.stdout)]


@contextmanager
def running_exporter(ns: Netns, port: int, log: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m exporter --web.listen-address 127.0.0.1:port *flags`` in ``ns``, stderr to ``log``."""
    argv = [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}", *flags]
    with listening(ns, port, log, argv) as proc:
        yield proc


@contextmanager
def listening(ns: Netns, port: int, log: Path, argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` run in ``ns`` (stderr to ``log``) once it listens on ``port``; terminated afterwards."""
    with open(log, "wb") as err:
        proc = ns.popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        try:
            ns.wait_listening(port, proc)
        except NetnsError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()}") from None
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
