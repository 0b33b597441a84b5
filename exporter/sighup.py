"""Hold SIGHUP from the first line of the program, so a reload signal never kills a starting exporter.

Why: SIGHUP's default action ends the process, and the exporter makes it mean "reload" only once
exporter/reload.py's thread waits for it, after the imports, the config, the web config (a bcrypt
hash at the users' cost) and the netlink setup: hundreds of milliseconds. A supervisor or a config
tool that sends SIGHUP right after writing a file and starting the exporter would kill it in that
window. So the program's entry points (``python -m exporter``: exporter/__main__.py; the
``socket-exporter`` script: exporter/cli.py ``main``) call :func:`hold_sighup` before importing
anything heavy: from then on SIGHUP is blocked and stays *pending* (several coalesce into one), and
the reload thread takes it as soon as it runs: a SIGHUP sent during the start is one reload after it.

What remains: the interpreter's own start, before any line of the program runs (about 10-20 ms),
cannot be covered from inside. A parent that ignored SIGHUP (``nohup``) leaves it ignored, and
POSIX lets an ignored signal be discarded even while blocked (Linux keeps it pending; others need
not), so the disposition is reset to the default while the signal is blocked: blocked, the default
action never runs, and ``sigwait`` gets every SIGHUP on every system.
"""

from __future__ import annotations

import contextlib
import signal


def hold_sighup() -> None:
    """Block SIGHUP in this (the main) thread and every thread started after; idempotent."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        with contextlib.suppress(ValueError):  # not the main thread, which alone may; main() runs there
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
