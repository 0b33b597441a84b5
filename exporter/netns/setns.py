"""Threads that visit other network namespaces with ``setns(CLONE_NEWNET)`` and always come home.

Why threads of their own: a netlink socket belongs to the network namespace of the thread that
creates it, and ``setns`` moves only the calling thread. So a sock_diag dump of another namespace
must run on a thread that has entered it. The HTTP listener, the collect thread and every other
thread of the exporter never move: only the :class:`NetnsWorkers` threads do, and each of them
opens its home namespace (``/proc/thread-self/ns/net``) when it starts and enters it again after
every job, whatever the job did (returned, raised mid-dump). A worker that cannot prove it is home
(``setns`` back failed, or the inode of ``/proc/thread-self/ns/net`` is not its home's) stops for
good and is replaced by a new thread on the next run; a new thread starts in the namespace of the
thread that creates it, which is the collect thread, which never moves.

Python 3.11 has no ``os.setns``; libc's ``setns(2)`` is called through ctypes (pyroute2's
``netns.setns`` does the same but also creates and mounts named namespaces, which we never want).
It needs CAP_SYS_ADMIN; without it ``setns`` fails with EPERM (:class:`SetnsDenied`) and the caller
reads ``/proc/PID/net/*`` of a process in that namespace instead.

Two threads: the kernel work of a dump runs in ``recv`` without the GIL, so two threads dumping two
namespaces overlap it (the machine this was built on has two cores).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
THREAD_NS = "/proc/thread-self/ns/net"
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int


class SetnsDenied(OSError):
    """``setns`` into a namespace was refused (EPERM: no CAP_SYS_ADMIN, or a seccomp filter)."""


class NotHome(RuntimeError):
    """A worker could not return to its home namespace: it stops and is replaced."""


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` refers to; OSError on failure."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        cls = SetnsDenied if err in (errno.EPERM, errno.EACCES) else OSError
        raise cls(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def thread_netns_inode() -> int:
    """The inode of the calling thread's network namespace."""
    return os.stat(THREAD_NS).st_ino


@dataclass
class Job(Generic[T]):
    """``fn`` to run inside the namespace of open fd ``enter`` (None: stay home)."""

    enter: int | None
    fn: Callable[[], T]


class _Result(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | BaseException | None = None


class NetnsWorkers:
    """A small pool of threads running jobs inside other network namespaces (module docstring)."""

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self.home_inode = thread_netns_inode()  # the creator's namespace: workers start and end there
        self._queue: queue.SimpleQueue[tuple[Job[object], _Result[object]] | None] = queue.SimpleQueue()
        self._alive: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.replaced = 0  # workers that could not prove they were home, since start

    def run(self, jobs: Sequence[Job[T]]) -> list[T | BaseException]:
        """Run every job; return each one's result or the exception it raised, in order."""
        self._ensure_threads()
        results = [_Result[T]() for _ in jobs]
        for job, result in zip(jobs, results, strict=True):
            self._queue.put((job, result))  # type: ignore[arg-type]
        for result in results:
            while not result.done.wait(1.0):
                self._ensure_threads()  # a worker that stopped mid-run is replaced
        return [r.value for r in results]  # type: ignore[misc]

    def close(self) -> None:
        with self._lock:
            for _ in self._alive:
                self._queue.put(None)
            self._alive.clear()

    def _ensure_threads(self) -> None:
        if thread_netns_inode() != self.home_inode:  # never spawn a worker from a thread that moved
            raise NotHome("NetnsWorkers.run called from a thread outside the home namespace")
        with self._lock:
            self._alive = [t for t in self._alive if t.is_alive()]
            while len(self._alive) < self.threads:
                t = threading.Thread(target=self._loop, name="netns-reader", daemon=True)
                t.start()
                self._alive.append(t)

    def _loop(self) -> None:
        home = os.open(THREAD_NS, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.fstat(home).st_ino != self.home_inode:
                log.error("netns reader thread started outside the home namespace; not running jobs")
                return
            while (item := self._queue.get()) is not None:
                job, result = item
                try:
                    result.value = self._run_one(job, home)
                except NotHome as exc:
                    result.value = exc
                    self.replaced += 1
                    log.error("netns reader thread stops: %s", exc)
                    return  # never run another job from a foreign namespace
                except BaseException as exc:  # handed to the caller
                    result.value = exc
                finally:
                    result.done.set()
        finally:
            os.close(home)

    def _run_one(self, job: Job[object], home: int) -> object:
        if job.enter is None:
            return job.fn()
        setns(job.enter)  # raises before we moved: nothing to undo
        try:
            return job.fn()
        finally:
            self._go_home(home)

    def _go_home(self, home: int) -> None:
        try:
            setns(home)
        except OSError as exc:
            raise NotHome(f"setns back to the home namespace failed: {exc}") from exc
        if thread_netns_inode() != self.home_inode:
            raise NotHome("after setns back, the thread is not in its home namespace")
