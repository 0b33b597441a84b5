"""Config reload (SIGHUP, ``POST /-/reload``): one immutable state (exporter/pipeline/state.py), swapped whole.

A scrape in flight finishes with the state it started with; a reload builds a new
:class:`~exporter.pipeline.state.ExporterState` and rebinds one attribute.

A bad file (syntax error, unknown or duplicate key, wrong type, truncated, deleted, too big, not a
regular file...) is a ``ConfigError`` from :func:`exporter.settings.config.load_config`: the last good state
keeps serving, one line is logged, and the status says ``successful=False`` with the time of the
last success unchanged. Command-line flags keep overriding the file after every reload.
``web.listen_address`` and ``web.telemetry_path`` are bound when the server starts: a change to them
is logged and ignored until a restart (the rest of the new config applies).

The web config (``--web.config.file``) is read again on every reload too, so a rotated certificate
or a revoked user takes effect for the next connection without a restart. Both files are read and
checked before either is applied: a reload applies both or neither, and a bad web config fails the
reload exactly like a bad config (one line, ``successful=False``). Switching TLS on or off needs a
restart (scrapers' ``scheme`` must change with it), so a reload that would do it fails.

No reload can wedge the ones after it: the files are read and checked on a thread of their own,
and a reload waits for that at most ``timeout`` seconds, then fails ("did not finish within").
What can take that long is not a FIFO or a device (refused at once, exporter/settings/strict_yaml.py) but
storage that hangs (a dead NFS or FUSE mount) or a bcrypt hash of a very high cost (the dummy hash
made for unknown users costs as much). The abandoned read cannot be stopped; it is left to finish
and its result is dropped. At most MAX_STUCK_READS may hang at once; beyond, reloads fail at once
rather than adding stuck threads.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import logfmt
from .pipeline.state import ExporterState, ReloadStatus
from .settings.config import Config, ConfigError, load_config, with_overrides
from .web.config import WebConfig, WebConfigError, load_web_config

log = logging.getLogger(__name__)

#: Config fields the running HTTP server was built with: they change only with a restart.
RESTART_ONLY = ("listen_address", "telemetry_path")
#: Seconds a reload may spend reading and checking its files (module docstring).
RELOAD_TIMEOUT = 10.0
MAX_STUCK_READS = 4


class Reloader:
    """Holds the current :class:`ExporterState` (and web config) and replaces them on :meth:`reload`.

    ``flags`` are the command-line overrides (None = not given), applied on top of every reload.
    ``web_path``/``web_config``: the ``--web.config.file`` and what it held at start; after a reload
    that changed it, ``on_web_config`` (set by the caller: the server's setter) gets the new one.
    """

    def __init__(self, path: str | None, flags: Mapping[str, Any], config: Config,
                 clock: Callable[[], float] = time.time, *, web_path: str | None = None,
                 web_config: WebConfig | None = None, timeout: float = RELOAD_TIMEOUT) -> None:
        self._path, self._web_path = path, web_path
        self._flags = {k: v for k, v in flags.items() if v is not None}
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()  # one reload at a time; scrapes never take it
        self._stuck_lock = threading.Lock()
        self._stuck = 0  # reads abandoned past the timeout and still running
        self._state = ExporterState.build(config, ReloadStatus(True, clock()))
        self.web_config = web_config
        self.on_web_config: Callable[[WebConfig], None] | None = None

    @property
    def state(self) -> ExporterState:
        return self._state

    @property
    def stuck(self) -> int:
        """Reads abandoned by a reload's timeout that have not returned yet."""
        return self._stuck

    def reload(self, trigger: str = "reload") -> tuple[bool, str]:
        """Re-read the files; returns (success, one-line message), the shape ``POST /-/reload`` wants."""
        # A reload holds the lock for at most about `timeout` (its read is bounded), so this wait is too.
        if not self._lock.acquire(timeout=self._timeout + 1):
            return self._failed(trigger, ConfigError("another reload is still running; try again"))
        try:
            old = self._state
            try:
                loaded, web = self._read_bounded()
            except Exception as exc:  # Config/WebConfigError by contract; anything else is a bug: still no outage
                return self._failed(trigger, exc)
            config = self._keep_restart_only(old.config, loaded)
            status = ReloadStatus(True, self._clock())
            if config == old.config:  # keep the pipeline: its once-per-table fallback log stays quiet
                self._state = dataclasses.replace(old, reload=status)
            else:
                self._state = ExporterState.build(config, status)
            logfmt.set_level(config.log_level)
            message = (f"config reloaded from {self._path or 'built-in defaults'}: kinds {','.join(config.kinds)}, "
                       f"source {config.source}, per_process {'on' if config.per_process.enabled else 'off'}")
            if web is not None:
                self.web_config = web
                if self.on_web_config is not None:
                    self.on_web_config(web)
                message += f"; web config reloaded from {self._web_path}: {web.summary()}"
            log.info("%s (%s)", message, trigger)
            return True, message
        finally:
            self._lock.release()

    def _failed(self, trigger: str, exc: BaseException) -> tuple[bool, str]:
        old = self._state
        assert old.reload is not None
        self._state = dataclasses.replace(old, reload=ReloadStatus(False, old.reload.last_success))
        expected = isinstance(exc, (ConfigError, WebConfigError))
        message = str(exc) if expected else f"unexpected {type(exc).__name__}: {exc!r}"
        log.error("config reload (%s) failed, still serving the last good config: %s", trigger, message,
                  exc_info=not expected and log.isEnabledFor(logging.DEBUG))
        return False, message

    def _read(self) -> tuple[Config, WebConfig | None]:
        """Both files, read and checked; nothing is applied here (it may run past its timeout)."""
        config = with_overrides(load_config(self._path) if self._path else Config(), **self._flags)
        if self._web_path is None:
            return config, None
        old = self.web_config
        web = load_web_config(self._web_path, previous=old)
        if old is not None and (old.tls is None) != (web.tls is None):
            raise WebConfigError(f"{self._web_path}: tls_server_config: {'added' if web.tls else 'removed'}; "
                                 "switching TLS on or off needs a restart")
        return config, web

    def _read_bounded(self) -> tuple[Config, WebConfig | None]:
        """:meth:`_read` on a thread of its own, waited for at most ``timeout`` (module docstring)."""
        files = " and ".join(p for p in (self._path, self._web_path) if p) or "built-in defaults"
        with self._stuck_lock:
            if self._stuck >= MAX_STUCK_READS:
                raise ConfigError(f"{files}: {self._stuck} earlier reloads are still stuck reading; "
                                  "not starting another until one returns")
        box: list[tuple[Config, WebConfig | None] | BaseException] = []
        done, abandoned = threading.Event(), threading.Event()

        def run() -> None:
            try:
                box.append(self._read())
            except BaseException as exc:
                box.append(exc)
            finally:
                with self._stuck_lock:
                    done.set()
                    if abandoned.is_set():
                        self._stuck -= 1

        threading.Thread(target=run, name="reload-read", daemon=True).start()
        if not done.wait(self._timeout):
            with self._stuck_lock:
                if not done.is_set():
                    abandoned.set()
                    self._stuck += 1
                    raise ConfigError(f"{files}: reading and checking did not finish within {self._timeout:g} s "
                                      "(hung storage? a bcrypt cost too high?); gave up on it")
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    @staticmethod
    def _keep_restart_only(old: Config, new: Config) -> Config:
        for name in RESTART_ONLY:
            before, after = getattr(old, name), getattr(new, name)
            if before != after:
                log.warning("config reload: %s changed from %r to %r; that needs a restart, still using %r",
                            name, before, after, before)
        return dataclasses.replace(new, **{name: getattr(old, name) for name in RESTART_ONLY})


def reload_on_sighup(reloader: Reloader) -> threading.Thread:
    """Reload on every SIGHUP, in a thread of its own. SIGHUP must be blocked in every other thread:
    the program blocks it first thing (exporter/sighup.py), so every thread inherits that.

    Why ``sigwait`` in a dedicated thread, not a Python signal handler: a handler runs in the main
    thread between bytecodes, so it waits for the main thread to wake up (a select() without timeout
    is not interrupted when the kernel delivers the signal to another thread), and a second SIGHUP
    could re-enter a reload holding the lock. Here SIGHUP is blocked in this thread and inherited
    blocked by every thread started after it, and this thread alone takes it with ``sigwait``.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # idempotent; for callers other than main()

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
