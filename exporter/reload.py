"""Config reload (SIGHUP, ``POST /-/reload``): one immutable state, swapped whole.

Why one object: a scrape reads the config (which kinds, which owner labels), runs a collection and
reports the reload status. If those came from separate, separately updated attributes, a scrape
running across a reload could report kinds from one config with owner labels from the other. So
everything a scrape needs is one frozen :class:`ExporterState` (config + its ``collection.Pipeline`` +
its ``SharedCollection`` + the reload status); the registry's collector takes ONE reference to it at
the start of ``collect()``, and a reload builds a new state and rebinds one attribute (atomic in
CPython). A scrape in flight finishes with the state it started with; each state has its own
single-flight ``SharedCollection``, so a scrape can never join a collection run for another config.

A bad file (syntax error, unknown or duplicate key, wrong type, truncated, deleted, too big...) is a
``ConfigError`` from :func:`exporter.config.load_config`: the last good state keeps serving, one line
is logged, and the status says ``successful=False`` with the time of the last success unchanged.
Command-line flags keep overriding the file after every reload. ``web.listen_address`` and
``web.telemetry_path`` are bound when the server starts: a change to them is logged and ignored
until a restart (the rest of the new config applies).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .collection import Collection, Pipeline, SharedCollection
from .config import Config, ConfigError, load_config, with_overrides

log = logging.getLogger(__name__)

#: Config fields the running HTTP server was built with: they change only with a restart.
RESTART_ONLY = ("listen_address", "telemetry_path")


@dataclass(frozen=True)
class ReloadStatus:
    successful: bool
    last_success: float  # unix time of the last successful (re)load


@dataclass(frozen=True)
class ExporterState:
    """Everything one scrape uses. ``reload`` is None when nothing can reload (``--once``)."""

    config: Config
    pipeline: Pipeline
    shared: SharedCollection
    reload: ReloadStatus | None = None

    @classmethod
    def build(cls, config: Config, reload: ReloadStatus | None = None) -> ExporterState:
        pipeline = Pipeline(config)
        return cls(config, pipeline, SharedCollection(pipeline.collect), reload)

    def collect(self) -> Collection:
        """This state's collection: runs one, or joins the one in flight for this same state."""
        return self.shared.get()


class Reloader:
    """Holds the current :class:`ExporterState` and replaces it on :meth:`reload`.

    ``flags`` are the command-line overrides (None = not given), applied on top of every reload.
    """

    def __init__(self, path: str | None, flags: Mapping[str, Any], config: Config,
                 clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._flags = {k: v for k, v in flags.items() if v is not None}
        self._clock = clock
        self._lock = threading.Lock()  # one reload at a time; scrapes never take it
        self._state = ExporterState.build(config, ReloadStatus(True, clock()))

    @property
    def state(self) -> ExporterState:
        return self._state

    def reload(self, trigger: str = "reload") -> tuple[bool, str]:
        """Re-read the file; returns (success, one-line message), the shape ``POST /-/reload`` wants."""
        with self._lock:
            old = self._state
            try:
                loaded = load_config(self._path) if self._path else Config()
            except Exception as exc:  # ConfigError by contract; anything else is a bug, and still no outage
                assert old.reload is not None
                self._state = dataclasses.replace(old, reload=ReloadStatus(False, old.reload.last_success))
                message = str(exc) if isinstance(exc, ConfigError) else f"unexpected {type(exc).__name__}: {exc!r}"
                log.error("config reload (%s) failed, still serving the last good config: %s", trigger, message,
                          exc_info=not isinstance(exc, ConfigError) and log.isEnabledFor(logging.DEBUG))
                return False, message
            config = self._keep_restart_only(old.config, with_overrides(loaded, **self._flags))
            status = ReloadStatus(True, self._clock())
            if config == old.config:  # keep the pipeline: its once-per-table fallback log stays quiet
                self._state = dataclasses.replace(old, reload=status)
            else:
                self._state = ExporterState.build(config, status)
            logging.getLogger().setLevel(config.log_level.upper())
            message = (f"config reloaded from {self._path or 'built-in defaults'}: kinds {','.join(config.kinds)}, "
                       f"source {config.source}, per_process {'on' if config.per_process.enabled else 'off'}")
            log.info("%s (%s)", message, trigger)
            return True, message

    @staticmethod
    def _keep_restart_only(old: Config, new: Config) -> Config:
        for name in RESTART_ONLY:
            before, after = getattr(old, name), getattr(new, name)
            if before != after:
                log.warning("config reload: %s changed from %r to %r; that needs a restart, still using %r",
                            name, before, after, before)
        return dataclasses.replace(new, **{name: getattr(old, name) for name in RESTART_ONLY})


def reload_on_sighup(reloader: Reloader) -> threading.Thread:
    """Reload on every SIGHUP, in a thread of its own. Call it before any other thread is started.

    Why ``sigwait`` in a dedicated thread, not a Python signal handler: a handler runs in the main
    thread between bytecodes, so it waits for the main thread to wake up (a select() without timeout
    is not interrupted when the kernel delivers the signal to another thread), and a second SIGHUP
    could re-enter a reload holding the lock. Here SIGHUP is blocked in this thread and inherited
    blocked by every thread started after it, and this thread alone takes it with ``sigwait``.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})

    def serve() -> None:
        while True:
            signal.sigwait({signal.SIGHUP})
            try:
                reloader.reload("SIGHUP")
            except Exception:  # reload() catches config errors; never let a bug end SIGHUP handling
                log.exception("config reload (SIGHUP) crashed; still serving the last good config")

    thread = threading.Thread(target=serve, name="sighup-reload", daemon=True)
    thread.start()
    return thread
