"""Log lines in logfmt, as Prometheus and its exporters write them (go-kit's ``key=value`` format).

Why logfmt: the exporter runs next to node_exporter and Prometheus, whose logs are shipped, grepped
and parsed (Loki's ``| logfmt``) the same way; one format for all of them means one parser and no
multi-line records. Every record is ONE line::

    ts=2026-11-30T16:20:40.123Z level=error logger=exporter.reload caller=reload.py:97 msg="config
    reload (SIGHUP) failed, still serving the last good config: /etc/x.yml: kinds[1]: unknown kind 'tcp5'"

(wrapped here; one line in the log).

A value is written bare when it can be (``level=info``) and quoted otherwise: when it is empty or
holds a space, ``=``, ``"`` or a character that is not printable. Inside quotes ``\\`` and ``"`` are
escaped, newlines and tabs become ``\\n`` ``\\t``, and every other unprintable character (a lone
surrogate from a file name, U+2028) ``\\uXXXX``, as go-logfmt does. So a traceback (``exc=``) or an
error naming a file with a newline in its name cannot break a line or forge another record.

Levels are Prometheus' spellings: ``debug info warn error`` (Python's CRITICAL is written ``error``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TextIO

#: Python level -> Prometheus spelling; --log.level and log.level take the values (config.py).
LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
               logging.CRITICAL: "error"}
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
          "error": logging.ERROR}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """A logfmt value: bare when that is unambiguous, else quoted and escaped.

    >>> quote("info")
    'info'
    >>> quote("")
    '""'
    >>> print(quote('has space'))
    "has space"
    >>> print(quote('a=b'))
    "a=b"
    >>> print(quote('say "hi"\\nbye'))
    "say \\"hi\\"\\nbye"
    >>> print(quote("tab\\there, \\u2028 and a lone \\udcff"))
    "tab\\there, \\u2028 and a lone \\udcff"
    """
    if value and value.isprintable() and not any(c in value for c in ' ="\\'):
        return value
    out = []
    for c in value:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) > 0xFFFF:  # as a UTF-16 surrogate pair, like JSON (and go-logfmt's decoder)
            n = ord(c) - 0x10000
            out.append(f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}")
        else:
            out.append(f"\\u{ord(c):04x}")
    return '"' + "".join(out) + '"'


def line(pairs: Iterable[tuple[str, object]]) -> str:
    """One logfmt line from key/value pairs; keys are ours (plain words), values are quoted as needed.

    >>> line([("level", "warn"), ("msg", "still serving the last good config"), ("n", 2)])
    'level=warn msg="still serving the last good config" n=2'
    """
    return " ".join(f"{key}={quote(str(value))}" for key, value in pairs)


class LogfmtFormatter(logging.Formatter):
    """``ts level logger caller msg`` and, when the record carries one, ``exc`` (the traceback).

    >>> record = logging.LogRecord("exporter.reload", logging.WARNING, "/x/reload.py", 97,
    ...                            "reload: %s", ("bad 'kinds'",), None)
    >>> record.created = 0.5
    >>> LogfmtFormatter().format(record)
    'ts=1970-01-01T00:00:00.500Z level=warn logger=exporter.reload caller=reload.py:97 msg="reload: bad \\'kinds\\'"'
    """

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
        pairs: list[tuple[str, object]] = [
            ("ts", ts), ("level", LEVEL_NAMES.get(record.levelno, record.levelname.lower())),
            ("logger", record.name), ("caller", f"{record.filename}:{record.lineno}"),
            ("msg", record.getMessage())]
        if record.exc_info:
            pairs.append(("exc", self.formatException(record.exc_info).strip()))
        if record.stack_info:
            pairs.append(("stack", record.stack_info.strip()))
        return line(pairs)


_handler_lock = threading.Lock()
_handler: logging.Handler | None = None


def setup(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record (Python warnings and uncaught exceptions too) to ``stream`` as logfmt.

    Idempotent: a second call only changes the level. Uncaught exceptions in any thread are logged
    as one ``level=error`` line with ``exc=`` instead of a raw multi-line traceback.
    """
    global _handler
    root = logging.getLogger()
    with _handler_lock:
        if _handler is None:
            _handler = logging.StreamHandler(stream or sys.stderr)
            _handler.setFormatter(LogfmtFormatter())
            root.addHandler(_handler)
            logging.captureWarnings(True)
            sys.excepthook = _log_uncaught
            threading.excepthook = lambda a: _log_uncaught(a.exc_type, a.exc_value, a.exc_traceback,
                                                           a.thread.name if a.thread else "?")
    set_level(level)


def set_level(level: str) -> None:
    """Apply a level in Prometheus' spelling (``warning`` is accepted for ``warn``)."""
    logging.getLogger().setLevel(LEVELS[level])


def _log_uncaught(et: type[BaseException], ev: BaseException | None, tb: TracebackType | None,
                  thread: str = "main") -> None:
    if issubclass(et, KeyboardInterrupt):
        return
    logging.getLogger("exporter").error("uncaught exception in thread %s", thread, exc_info=(et, ev, tb))  # type: ignore[arg-type]
