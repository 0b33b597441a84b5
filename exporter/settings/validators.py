"""The checks every settings file shares: one-line errors naming the file, the key and the value.

The exporter's config (:mod:`.config`), its views sections (:mod:`.views`) and the web config
(exporter/web/config.py) are refused the same way, so an operator reads one form of error::

    config/bad.yml: per_process.labels[0]: got 'uid'; allowed: pid, process

``error`` picks the exception class a caller's file is refused with (ConfigError here,
WebConfigError for the web config).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .strict_yaml import MAX_SHOWN, one_line, show


class ConfigError(Exception):
    """A config that cannot be used. str() is the one line shown to the operator."""


def fail(where: str, key: str, message: str, error: type[Exception] = ConfigError) -> Exception:
    """The one-line error for ``key`` (a dotted path; "" for the whole file) of the file ``where``."""
    return error(one_line(f"{where}: {key}: {message}" if key else f"{where}: {message}"))


def key_path(prefix: str, key: Any) -> str:
    plain = isinstance(key, str) and key.isprintable() and 0 < len(key) <= MAX_SHOWN
    return f"{prefix}{key if plain else show(key)}"


def check_keys(where: str, prefix: str, data: Mapping[Any, Any], allowed: tuple[str, ...],
               error: type[Exception] = ConfigError, unsupported: tuple[str, ...] = (), why: str = "") -> None:
    """Refuse the first key not ``allowed``; one of ``unsupported`` (known elsewhere) is refused ``why``."""
    for key in data:
        if key in unsupported:
            raise fail(where, key_path(prefix, key), f"{why}; supported here: {', '.join(allowed)}", error)
        if key not in allowed:
            raise fail(where, key_path(prefix, key), f"unknown key; allowed here: {', '.join(allowed)}", error)


def want(where: str, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int in Python; a YAML `true` is never a valid integer here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise fail(where, key, f"got {show(value)} ({type(value).__name__}); want {what}")
    return value


def choice(where: str, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise fail(where, key, f"got {show(value)}; allowed: {', '.join(allowed)}")
    return str(value)
