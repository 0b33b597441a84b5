"""``python busy.py PROCS FDS``: PROCS processes each holding FDS open non-socket fds, until stdin EOF.

The "busy host" of the benchmark: owner lookup has to readlink every fd of every process below the
highest socket owner, and sockets are a minority of fds on a real host (files, pipes, eventfds...).
Why fork instead of PROCS interpreters: the fds are opened once and inherited, and forked children
share the parent's memory, so 500 processes cost seconds and a few hundred MB at most.
The fds are half ``/dev/null`` dups and half pipe ends, so links read ``/dev/null`` and ``pipe:[N]``.
It prints ``ready PID...`` (every busy pid) once all exist. Children die with the parent
(PR_SET_PDEATHSIG), which exits when its stdin closes.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15


def main(procs: int, fds: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, b"sockbench-busy", 0, 0, 0)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    devnull = os.open(os.devnull, os.O_RDONLY)
    held = [os.dup(devnull) for _ in range(fds // 2 - 1)]
    while len(held) < fds - 1:
        held.extend(os.pipe())
    parent, pids = os.getpid(), [os.getpid()]
    for _ in range(procs - 1):
        pid = os.fork()
        pids.append(pid)
        if pid == 0:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(0)
            os.close(0)  # do not hold the parent's stop signal open
            while True:
                signal.pause()
    sys.stdout.write(f"ready {' '.join(map(str, pids))}\n")
    sys.stdout.flush()
    sys.stdin.read()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
