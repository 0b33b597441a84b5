"""Work inside a named network namespace from this test process, without starting a process there.

Why a thread: ``setns(CLONE_NEWNET)`` moves only the calling thread, and every socket a thread creates
belongs to the namespace that thread is in, for its whole life, whichever thread uses it later. So
:func:`in_netns` runs a function on a fresh thread that enters ``/run/netns/NAME`` first and ends
afterwards (nothing is left in the namespace but what the function made). A child started from that
thread (``subprocess.Popen``, which forks from the calling thread) is born in the namespace too: that
is how tests/fleet_host.py puts hundreds of ``sleep`` processes into pods for the cost of a fork each,
instead of one ``ip netns exec`` each. Python 3.11 has no ``os.setns``: libc's, through ctypes.

:func:`take_fd` copies a file descriptor out of another process (``pidfd_getfd``, Linux >= 5.6, root):
tests/fleet_host.py accepts a connection on a listener a ``sleep`` process holds, so it can make
TIME_WAIT sockets on that listener's port when it needs fresh ones (they last 60 s).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
#: Syscall numbers shared by every architecture since Linux 5.1's unified table.
SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """``fn()`` run on a new thread inside the named namespace ``name``; its result or its exception."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"setns {name}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # re-raised on the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, name=f"in-{name}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def take_fd(pid: int, fd: int) -> int:
    """A copy of file descriptor ``fd`` of process ``pid`` in this process (close it when done)."""
    pidfd = _check(_libc.syscall(SYS_PIDFD_OPEN, pid, 0), f"pidfd_open {pid}")
    try:
        return _check(_libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0), f"pidfd_getfd {pid} fd {fd}")
    finally:
        os.close(pidfd)
