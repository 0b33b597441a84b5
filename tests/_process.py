"""The real exporter as a process on 127.0.0.1, with its log file and pid at hand (for SIGHUP).

tests/_http.py ``exporter_process`` yields only the port; the reload and logging tests need the
process (signals) and its log (one line per event), so this yields both. Same command line: a free
port, ``--source proc`` over the fixture /proc tree, so the host's own sockets decide nothing.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests._http import FIXTURE_PROCFS, ROOT, free_port


@dataclass
class Running:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, count: int = 1, timeout: float = 20.0) -> str:
        """Wait until ``needle`` appears ``count`` times in the log; returns the log."""
        deadline = time.monotonic() + timeout
        while (text := self.text()).count(needle) < count:
            assert self.proc.poll() is None, f"exporter exited {self.proc.returncode}:\n{text}"
            assert time.monotonic() < deadline, f"{needle!r} x{count} not in the log within {timeout} s:\n{text}"
            time.sleep(0.05)
        return text

    def sighup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)


def command(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}", "--source", "proc",
            "--path.procfs", str(FIXTURE_PROCFS), *args]


@contextlib.contextmanager
def exporter(tmp: Path, *args: str, prefix: Sequence[str] = ()) -> Iterator[Running]:
    """Start the exporter (``prefix`` goes before the interpreter: ``nohup``), wait for "serving"."""
    port, log = free_port(), tmp / f"exporter-{time.monotonic_ns()}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([*prefix, *command(port, *args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    running = Running(port, proc, log)
    try:
        running.wait_log("serving", timeout=30)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
