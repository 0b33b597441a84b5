"""Concurrent scrapes share one collection: single flight with a deadline, on one collect thread.

The second scraper waits for the collection in flight and gets its result; a result is never served
to a scrape that began after it finished. A collection has a deadline (``collection.timeout``): past
it, its waiters fail with :class:`CollectionTimeout` instead of holding their scrape slots.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable

from ..settings.config import DEFAULT_COLLECTION_TIMEOUT
from .collection import Collection


class CollectionTimeout(Exception):
    """A scrape gave up on a collection past its deadline; the server answers it with an error."""


class _Flight:
    def __init__(self, deadline: float) -> None:
        self.done = threading.Event()
        self.result: Collection | BaseException | None = None
        self.deadline = deadline  # time.monotonic() by which it should have finished


class _CollectThread:
    """One daemon thread running the collections of one SharedCollection, one after the other.

    Why not run a collection on the scrape thread that asked first: glibc gives each thread its own
    malloc arena and keeps what is freed there. A collection at 100k sockets allocates ~20 MB of
    short-lived columns, sets and dicts, and the HTTP server has a pool of scrape threads, so RSS
    grew by one collection's peak per pool thread that ever led one: at 10k sockets, after a burst of
    concurrent scrapes, 44 MB -> 59 MB over 300 scrapes. On one thread it stays flat (45 MB).
    (``malloc_trim`` after each collection kept it flat too, but made the next one page-fault its
    memory back in: 16 -> 29 ms per collection.) The thread ends with its SharedCollection.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="collect", daemon=True).start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()
            del job  # hold no reference to the SharedCollection between jobs: it can be collected

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)


class SharedCollection:
    """Single-flight with a deadline: concurrent ``get()`` calls share the collection in flight.

    Each flight carries its own result, so a waiter can never pick up a later flight's result.

    The deadline (``deadline`` seconds from a flight's start, ``collection.timeout``): a waiter gives
    up when the flight it joined is not done by then and raises :class:`CollectionTimeout`, so a
    collection that hangs (a read of /proc stuck on a hung mount, a netlink socket that never
    answers) holds each scrape's thread for at most the deadline, not for ever: without it the
    sixteen scrape slots fill with waiters and the exporter answers nothing but 503s, reload
    included, until a restart. Every give-up is counted (``timeouts``, exported as
    ``socket_exporter_collection_timeouts_total``).

    Why a flight past its deadline is not replaced by a new one: the new one would have to run on
    another thread (this one's thread is the stuck one, and one collect thread is the design, see
    _CollectThread), a ``Pipeline`` keeps state (owner cache, fallback log) that is not made for two
    collections at once, and what stopped the first (the same mount, the same process, the same
    kernel) would most likely stop the second: a persistent hang would add one stuck thread per
    scrape. So while the flight is past its deadline, ``get()`` fails *at once*, holding no slot,
    visibly (the scrape fails, ``up`` goes to 0); when the stuck collection returns, the next scrape
    starts a fresh one. A reload that changes the config gets a new state with its own
    SharedCollection and thread, which is also the way out of a collection stuck for good.
    """

    _counter_lock = threading.Lock()
    #: Scrapes failed by a deadline, process-wide (across reloads: each state has its own instance).
    timeouts = 0

    def __init__(self, collect: Callable[[], Collection], deadline: float = DEFAULT_COLLECTION_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._collect = collect
        self._deadline = deadline
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: _Flight | None = None
        self._thread: _CollectThread | None = None

    def get(self) -> Collection:
        """The collection in flight, or a new one, run on this object's collect thread (_CollectThread).

        Raises CollectionTimeout past the deadline (class docstring)."""
        with self._lock:
            flight, now = self._inflight, self._clock()
            if flight is not None and now >= flight.deadline:
                overdue = now - flight.deadline + self._deadline
                self._count()
                raise CollectionTimeout(f"the collection in flight has run {overdue:.0f} s, past its "
                                        f"{self._deadline:g} s deadline; failing scrapes at once until it returns")
            if flight is None:
                flight = self._inflight = _Flight(now + self._deadline)
                if self._thread is None:
                    self._thread = _CollectThread()
                    weakref.finalize(self, self._thread.stop)
                self._thread.submit(lambda: self._run(flight))
        if not flight.done.wait(max(0.0, flight.deadline - self._clock())):
            self._count()
            raise CollectionTimeout(f"the collection did not finish within its {self._deadline:g} s deadline")
        result = flight.result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        return result

    @classmethod
    def _count(cls) -> None:
        with cls._counter_lock:
            cls.timeouts += 1

    def _run(self, flight: _Flight) -> None:
        try:
            flight.result = self._collect()
        except BaseException as exc:  # handed to every waiter, which re-raises it
            flight.result = exc
        finally:
            with self._lock:
                self._inflight = None
            flight.done.set()
