"""A throwaway network namespace for tests: ``with Netns() as ns: ns.run(["ss", "-tan"])``.

Why a namespace: socket tables (``/proc/net/*`` and sock_diag dumps) are per network namespace, so a
fresh one holds exactly the sockets the test made, and reference counts are exact. ``ip netns exec``
runs a command in it (it also unshares a mount namespace to remount /sys, which we do not rely on);
it ``exec``s the command, so the pid of :meth:`Netns.popen` is the pid of the command itself.

Cleanup kills every process whose ``/proc/PID/ns/net`` is the namespace (``ip netns pids``), not just
the ones we started: forked children and stragglers would otherwise keep it alive after ``ip netns del``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

NAME_PREFIX = "sockexp-"


class NetnsError(RuntimeError):
    """Creating, entering or removing the namespace failed."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Netns:
    """A uniquely named namespace ``sockexp-<hex>`` with ``lo`` up; a context manager.

    ``prefix`` is the argv prefix that runs a command inside; :meth:`run` and :meth:`popen` prepend it.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or NAME_PREFIX + secrets.token_hex(4)
        self.prefix: list[str] = ["ip", "netns", "exec", self.name]
        self._procs: list[subprocess.Popen[Any]] = []
        self._created = False

    def __enter__(self) -> Netns:
        _ip("netns", "add", self.name)
        self._created = True
        try:
            # lo starts DOWN in a new namespace: without it 127.0.0.1 and ::1 are unreachable.
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace and capture text output; ``check`` raises with stderr."""
        proc = subprocess.run(
            [*self.prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False, **kw
        )
        if check and proc.returncode != 0:
            raise NetnsError(f"{self.name}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace; it is killed when the namespace closes."""
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.prefix, *argv], **kw)
        self._procs.append(proc)
        return proc

    def wait_listening(self, port: int, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
        """Wait until a TCP socket in the namespace listens on ``port``; raise if ``proc`` exits first.

        Asks ``ss`` instead of probing over HTTP: a probe connection would leave sockets (ESTABLISHED,
        then TIME_WAIT) in the namespace and change the very counts the tests compare."""
        deadline = time.monotonic() + timeout
        while not any(line.split()[3].endswith(f":{port}") for line in self.run(["ss", "-Hltn"]).stdout.splitlines()):
            if proc.poll() is not None:
                raise NetnsError(f"{self.name}: {proc.args} exited {proc.returncode} before listening on {port}")
            if time.monotonic() > deadline:
                raise NetnsError(f"{self.name}: {proc.args} did not listen on {port} within {timeout:.0f} s")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """Every process currently in the namespace (empty once it is gone)."""
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self, deadline_s: float = 10.0) -> None:
        """SIGKILL every process in the namespace until none is left (forked ones included)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        deadline = time.monotonic() + deadline_s
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise NetnsError(f"{self.name}: processes {pids} survive SIGKILL")
            time.sleep(0.02)
        for proc in self._procs:
            proc.wait(timeout=deadline_s)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()

    def close(self) -> None:
        """Kill everything inside, then delete the namespace; idempotent, always attempts the delete."""
        if not self._created:
            return
        try:
            self.kill_all()
        finally:
            _ip("netns", "del", self.name)
            self._created = False
