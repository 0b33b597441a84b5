"""The YAML config: strict loading, validation with one-line errors, and flag overrides.

Why strict: an exporter's config is edited by hand on many hosts and reloaded while it runs. A typo'd
key that is silently ignored ("per_proces:") is a wrong dashboard for months, so unknown keys, wrong
types, duplicate keys, YAML aliases (the "billion laughs" bomb, and with them merge keys), nesting
bombs, oversized files and files cut mid-write are refused, each with one line naming the file, the
key path, the bad value and what is allowed::

    config/bad.yml: kinds[1]: unknown kind 'tcp5'; allowed: all, inet, inet4, ...

Every refusal is a :class:`ConfigError`, never another exception: a reload must be able to keep the
last good config on *any* bad file, so PyYAML's own failure modes (RecursionError on deep nesting,
ValueError on a 5000-digit int, TypeError on a list used as a key) are turned into one-line errors too.

A file truncated mid-write is detected when the cut falls inside a line: a complete config ends
with a newline, as every line of a text file does (POSIX), so one that does not is refused. A cut that
falls exactly on a line boundary leaves a shorter, valid config and cannot be told apart from one
written that way (YAML has no mandatory end marker). Write configs atomically (write a temporary
file, then rename it over the old one; Kubernetes ConfigMap volumes do this) and that case never
arises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .kinds import KINDS

DEFAULT_PORT = 9731
MAX_CONFIG_BYTES = 64 * 1024
#: Nodes deep (the top mapping is 1). The schema needs 4 (per_process -> labels -> item); PyYAML's
#: composer recurses per level, so 64 KiB of "[" would otherwise end in a RecursionError.
MAX_NESTING = 8
#: Bad values and keys are shown with repr(), cut to this many characters: one line, readable.
MAX_SHOWN = 60
SOURCES = ("auto", "netlink", "proc")
OWNER_LABELS = ("pid", "process")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A config that cannot be used. str() is the one line shown to the operator."""


@dataclass(frozen=True)
class PerProcessConfig:
    enabled: bool = True
    labels: tuple[str, ...] = ("pid", "process")
    max_owners: int = 100


@dataclass(frozen=True)
class Config:
    """The running config. Its defaults are exactly config/socket_exporter.yml (a test holds them equal),
    so the exporter started with no --config behaves as the shipped file says."""

    kinds: tuple[str, ...] = ("all",)
    source: str = "auto"
    per_process: PerProcessConfig = field(default_factory=PerProcessConfig)
    listen_address: str = f":{DEFAULT_PORT}"
    telemetry_path: str = "/metrics"
    procfs: str = "/proc"
    log_level: str = "info"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (merge keys `<<` need them, so they go too), duplicate and
    unhashable keys, nesting deeper than MAX_NESTING, and values Python cannot convert."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(None, None, "YAML aliases are not allowed", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_NESTING} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # e.g. int() refusing more than 4300 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"bad value ({str(exc)[:MAX_SHOWN]})", node.start_mark) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_show(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _show(value: Any) -> str:
    """repr() cut to MAX_SHOWN characters: a 60 KB string or a key holding a newline stays one short line."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _fail(where: str, key: str, message: str) -> ConfigError:
    return ConfigError(_one_line(f"{where}: {key}: {message}" if key else f"{where}: {message}"))


def _key_path(prefix: str, key: Any) -> str:
    plain = isinstance(key, str) and key.isprintable() and 0 < len(key) <= MAX_SHOWN
    return f"{prefix}{key if plain else _show(key)}"


def _check_keys(where: str, prefix: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise _fail(where, _key_path(prefix, key), f"unknown key; allowed here: {', '.join(allowed)}")


def _want(where: str, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int in Python; a YAML `true` is never a valid integer here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _fail(where, key, f"got {_show(value)} ({type(value).__name__}); want {what}")
    return value


def _choice(where: str, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _fail(where, key, f"got {_show(value)}; allowed: {', '.join(allowed)}")
    return str(value)


def parse_config(text: str, where: str) -> Config:
    """Validate YAML text into a Config. `where` names the file in error messages."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # _StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _fail(where, "", f"invalid YAML: {at}{problem}") from None
    except RecursionError:  # MAX_NESTING stops the composer first; this is the belt to those braces
        raise _fail(where, "", "invalid YAML: nested too deeply") from None
    if data is None:
        raise _fail(where, "", "file is empty; want a mapping with at least `kinds:`")
    _want(where, "", data, dict, "a mapping at the top level")
    _check_keys(where, "", data, ("kinds", "source", "per_process", "web", "path", "log"))
    defaults = Config()
    kinds = data.get("kinds", list(defaults.kinds))
    _want(where, "kinds", kinds, list, "a list of kinds")
    if not kinds:
        raise _fail(where, "kinds", f"empty list; want one or more of: {', '.join(KINDS)}")
    for i, kind in enumerate(kinds):
        if not isinstance(kind, str) or kind not in KINDS:  # a list item can be a list: unhashable
            raise _fail(where, f"kinds[{i}]", f"unknown kind {_show(kind)}; allowed: {', '.join(KINDS)}")
    source = _choice(where, "source", data.get("source", defaults.source), SOURCES)

    per_process = _want(where, "per_process", data.get("per_process", {}), dict, "a mapping")
    _check_keys(where, "per_process.", per_process, ("enabled", "labels", "max_owners"))
    pp = PerProcessConfig()
    enabled = _want(where, "per_process.enabled", per_process.get("enabled", pp.enabled), bool, "true or false")
    labels = _want(where, "per_process.labels", per_process.get("labels", list(pp.labels)), list,
                   "a list of pid, process")
    for i, label in enumerate(labels):
        _choice(where, f"per_process.labels[{i}]", label, OWNER_LABELS)
    if not labels or len(set(labels)) != len(labels):  # all str now: hashable
        raise _fail(where, "per_process.labels", f"got {_show(labels)}; want one or both of: pid, process")
    max_owners = _want(where, "per_process.max_owners", per_process.get("max_owners", pp.max_owners), int,
                       "an integer >= 1")
    if max_owners < 1:
        raise _fail(where, "per_process.max_owners", f"got {max_owners}; want an integer >= 1")

    web = _want(where, "web", data.get("web", {}), dict, "a mapping")
    _check_keys(where, "web.", web, ("listen_address", "telemetry_path"))
    listen = _want(where, "web.listen_address", web.get("listen_address", defaults.listen_address), str,
                   "HOST:PORT")
    parse_listen_address(listen, where, "web.listen_address")
    path = _want(where, "web.telemetry_path", web.get("telemetry_path", defaults.telemetry_path), str,
                 "a path starting with /")
    if not path.startswith("/") or path in ("/", "/-/healthy"):
        raise _fail(where, "web.telemetry_path",
                    f"got {_show(path)}; want a path starting with / (not / or /-/healthy)")

    paths = _want(where, "path", data.get("path", {}), dict, "a mapping")
    _check_keys(where, "path.", paths, ("procfs",))
    procfs = _want(where, "path.procfs", paths.get("procfs", defaults.procfs), str, "a directory path")

    log = _want(where, "log", data.get("log", {}), dict, "a mapping")
    _check_keys(where, "log.", log, ("level",))
    level = _choice(where, "log.level", log.get("level", defaults.log_level), LOG_LEVELS)
    return Config(kinds=tuple(kinds), source=source,
                  per_process=PerProcessConfig(enabled=enabled, labels=tuple(labels), max_owners=max_owners),
                  listen_address=listen, telemetry_path=path, procfs=procfs, log_level=level)


def load_config(path: str) -> Config:
    """Read and validate a config file; every failure is a one-line ConfigError naming the file."""
    where = _one_line(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: file larger than {MAX_CONFIG_BYTES} bytes; refusing to parse it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 at byte {exc.start}") from None
    if raw and not raw.endswith(b"\n"):  # see the module docstring: a cut inside a line
        line = raw.count(b"\n") + 1
        raise ConfigError(f"{where}: line {line}: file does not end with a newline; truncated mid-write? "
                          "A complete config ends with one")
    return parse_config(text, where)


def parse_listen_address(value: str, where: str = "--web.listen-address", key: str = "") -> tuple[str, int]:
    """Split HOST:PORT (``:9731``, ``127.0.0.1:9731``, ``[::1]:9731``) into host and port."""
    host, sep, port_text = value.rpartition(":")
    # isascii(): str.isdigit() is also true for "²", which int() refuses; <= 5 digits: int() refuses 5000
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not sep or not digits or not 0 <= int(port_text) <= 65535:
        raise _fail(where, key,
                    f"got {_show(value)}; want HOST:PORT such as :{DEFAULT_PORT} or 127.0.0.1:{DEFAULT_PORT}")
    return host.strip("[]"), int(port_text)


def with_overrides(config: Config, **flags: Any) -> Config:
    """Apply command-line flags (None means 'not given') on top of the file: flags win."""
    given = {k: v for k, v in flags.items() if v is not None}
    return dataclasses.replace(config, **given)
