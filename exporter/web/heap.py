"""Give the C heap back to the kernel once a crowd of connections has gone.

Why: glibc's ``free`` keeps what it freed for the next ``malloc`` unless it lies at the very top of the
heap, so after 2,000 connections leave, their Python objects, socket structures and OpenSSL states are
free but still resident: the RSS stays at the attack's peak. Two steps give it back, once the number of
open connections has fallen by ``DROP`` since the last time and has stopped falling (so a crowd leaving
costs one pass, not one per tick):

1. ``gc.collect()``: a connection's protocol, task and transport refer to each other, so what a
   long-lived connection held is freed by the cycle collector, whose full passes are rare;
2. ``malloc_trim(0)``: every whole free page of every glibc arena goes back (``MADV_DONTNEED``).

Where the C library has no ``malloc_trim`` (musl), only the first step runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

DROP = 64  # connections closed since the last trim that make another one worth it


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is None:
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


class Trimmer:
    """``tick(open_connections)`` from the server's loop; trims after a fall of ``DROP`` or more, once it stops."""

    def __init__(self, drop: int = DROP) -> None:
        self._trim = _malloc_trim()
        self._drop, self._high, self._last = drop, 0, 0
        self.trims = 0

    def tick(self, open_connections: int) -> None:
        falling, self._last = open_connections < self._last, open_connections
        self._high = max(self._high, open_connections)
        if falling or self._high - open_connections < self._drop:
            return
        gc.collect()
        if self._trim is not None:
            self._trim()
        self.trims += 1
        self._high = open_connections
        log.debug("returned free heap to the kernel (%d connections open)", open_connections)
