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
from dataclasses import dataclass, field
from typing import Any

from ..model.kinds import KINDS
from .strict_yaml import YamlRefused, one_line, read_capped, show
from .strict_yaml import load as load_yaml
from .validators import ConfigError as ConfigError
from .validators import check_keys, choice, fail, want
from .views import VIEW_KEYS, EphemeralConfig, ListenersConfig, PortsConfig, parse_views

DEFAULT_PORT = 9731
MAX_CONFIG_BYTES = 64 * 1024
SOURCES = ("auto", "netlink", "proc")
OWNER_LABELS = ("pid", "process")
#: Prometheus' spellings; ``warning`` is accepted as an alias of ``warn`` (flag and file alike).
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_LEVEL_ALIASES = {"warning": "warn"}
#: Paths the server answers itself: a telemetry path there would hide them or be hidden.
RESERVED_PATHS = ("/", "/-/healthy", "/-/reload")
DEFAULT_COLLECTION_TIMEOUT = 60.0
NETWORK_NAMESPACES = ("own", "all")
#: The optional views, each switched by ``<name>.enabled`` and by ``--[no-]collector.<name>``.
VIEWS = ("per_process", "listeners", "ports", "ephemeral")
#: Sized in README "Series per host": a node with 110 pods, 500 processes and 50 busy ports, every
#: collector on, stays well under it. Below MIN_MAX_SERIES the families that never fold could not fit.
DEFAULT_MAX_SERIES, MIN_MAX_SERIES, MAX_MAX_SERIES = 10000, 500, 10_000_000


@dataclass(frozen=True)
class PerProcessConfig:
    enabled: bool = True
    labels: tuple[str, ...] = ("pid", "process")
    max_owners: int = 100


@dataclass(frozen=True)
class LimitsConfig:
    max_series: int = DEFAULT_MAX_SERIES  # exporter/exposition/budget.py; 0: no limit


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
    collection_timeout: float = DEFAULT_COLLECTION_TIMEOUT  # seconds; pipeline/single_flight.py
    listeners: ListenersConfig = field(default_factory=ListenersConfig)
    ports: PortsConfig = field(default_factory=PortsConfig)
    ephemeral: EphemeralConfig = field(default_factory=EphemeralConfig)
    network_namespaces: str = "own"  # all: every namespace on the host (README "Every network namespace")
    pod_logs: str = "/var/log/pods"  # <namespace>_<name>_<uid> dirs naming pods in network_namespaces: all
    limits: LimitsConfig = field(default_factory=LimitsConfig)


def parse_config(text: str, where: str) -> Config:
    """Validate YAML text into a Config. `where` names the file in error messages."""
    try:
        data = load_yaml(text)
    except YamlRefused as exc:
        raise fail(where, "", str(exc)) from None
    if data is None:
        raise fail(where, "", "file is empty; want a mapping with at least `kinds:`")
    want(where, "", data, dict, "a mapping at the top level")
    check_keys(where, "", data, ("kinds", "source", "per_process", "web", "path", "log", "collection",
                                 "network_namespaces", "limits", *VIEW_KEYS))
    defaults = Config()
    kinds = data.get("kinds", list(defaults.kinds))
    want(where, "kinds", kinds, list, "a list of kinds")
    if not kinds:
        raise fail(where, "kinds", f"empty list; want one or more of: {', '.join(KINDS)}")
    for i, kind in enumerate(kinds):
        if not isinstance(kind, str) or kind not in KINDS:  # a list item can be a list: unhashable
            raise fail(where, f"kinds[{i}]", f"unknown kind {show(kind)}; allowed: {', '.join(KINDS)}")
    source = choice(where, "source", data.get("source", defaults.source), SOURCES)
    netns = choice(where, "network_namespaces", data.get("network_namespaces", defaults.network_namespaces),
                    NETWORK_NAMESPACES)

    per_process = want(where, "per_process", data.get("per_process", {}), dict, "a mapping")
    check_keys(where, "per_process.", per_process, ("enabled", "labels", "max_owners"))
    pp = PerProcessConfig()
    enabled = want(where, "per_process.enabled", per_process.get("enabled", pp.enabled), bool, "true or false")
    labels = want(where, "per_process.labels", per_process.get("labels", list(pp.labels)), list,
                   "a list of pid, process")
    for i, label in enumerate(labels):
        choice(where, f"per_process.labels[{i}]", label, OWNER_LABELS)
    if not labels or len(set(labels)) != len(labels):  # all str now: hashable
        raise fail(where, "per_process.labels", f"got {show(labels)}; want one or both of: pid, process")
    max_owners = want(where, "per_process.max_owners", per_process.get("max_owners", pp.max_owners), int,
                       "an integer >= 1")
    if max_owners < 1:
        raise fail(where, "per_process.max_owners", f"got {max_owners}; want an integer >= 1")

    web = want(where, "web", data.get("web", {}), dict, "a mapping")
    check_keys(where, "web.", web, ("listen_address", "telemetry_path"))
    listen = want(where, "web.listen_address", web.get("listen_address", defaults.listen_address), str,
                   "HOST:PORT")
    parse_listen_address(listen, where, "web.listen_address")
    path = want(where, "web.telemetry_path", web.get("telemetry_path", defaults.telemetry_path), str,
                 "a path starting with /")
    check_telemetry_path(path, where, "web.telemetry_path")

    paths = want(where, "path", data.get("path", {}), dict, "a mapping")
    check_keys(where, "path.", paths, ("procfs", "pod_logs"))
    procfs = want(where, "path.procfs", paths.get("procfs", defaults.procfs), str, "a directory path")
    pod_logs = want(where, "path.pod_logs", paths.get("pod_logs", defaults.pod_logs), str, "a directory path")

    log = want(where, "log", data.get("log", {}), dict, "a mapping")
    check_keys(where, "log.", log, ("level",))
    level = check_log_level(log.get("level", defaults.log_level), where, "log.level")

    collection = want(where, "collection", data.get("collection", {}), dict, "a mapping")
    check_keys(where, "collection.", collection, ("timeout",))
    timeout = want(where, "collection.timeout", collection.get("timeout", defaults.collection_timeout),
                    (int, float), "a number of seconds > 0")
    if isinstance(timeout, bool) or not 0 < timeout < 86400:  # also refuses .nan and .inf
        raise fail(where, "collection.timeout", f"got {show(timeout)}; want a number of seconds > 0 and < 86400")
    limits = want(where, "limits", data.get("limits", {}), dict, "a mapping")
    check_keys(where, "limits.", limits, ("max_series",))
    max_series = check_max_series(limits.get("max_series", DEFAULT_MAX_SERIES), where, "limits.max_series")
    return Config(kinds=tuple(kinds), source=source,
                  per_process=PerProcessConfig(enabled=enabled, labels=tuple(labels), max_owners=max_owners),
                  listen_address=listen, telemetry_path=path, procfs=procfs, log_level=level,
                  collection_timeout=float(timeout), network_namespaces=netns, pod_logs=pod_logs,
                  limits=LimitsConfig(max_series=max_series),
                  **parse_views(where, data))


def check_telemetry_path(value: str, where: str = "--web.telemetry-path", key: str = "") -> str:
    """The one check for the telemetry path, from the flag (``where`` = the flag) or the file.

    A request path is matched exactly, without its query, so a value holding ``?``, ``#``, spaces
    or control characters could never be scraped; ``/``, ``/-/healthy`` and ``/-/reload`` are the
    server's own pages.
    """
    if (not value.startswith("/") or value in RESERVED_PATHS or not value.isprintable()
            or any(c in value for c in " ?#")):
        raise fail(where, key, f"got {show(value)}; want a path starting with / without spaces, ? or # "
                    f"(not {', '.join(RESERVED_PATHS)})")
    return value


def check_max_series(value: Any, where: str = "--limits.max-series", key: str = "") -> int:
    """The one check for the series budget, from the flag or the file: 0 (no limit) or a usable ceiling."""
    wanted = f"0 (no limit) or an integer {MIN_MAX_SERIES}..{MAX_MAX_SERIES}"
    want(where, key, value, int, wanted)
    if value != 0 and not MIN_MAX_SERIES <= value <= MAX_MAX_SERIES:
        raise fail(where, key, f"got {value}; want {wanted}")
    return int(value)


def check_log_level(value: Any, where: str = "--log.level", key: str = "") -> str:
    """The one check for the log level, from the flag or the file; returns Prometheus' spelling."""
    value = LOG_LEVEL_ALIASES.get(value, value) if isinstance(value, str) else value
    return choice(where, key, value, LOG_LEVELS)


def load_config(path: str) -> Config:
    """Read and validate a config file; every failure is a one-line ConfigError naming the file."""
    where = one_line(path)
    try:
        raw, text = read_capped(path, MAX_CONFIG_BYTES)
    except YamlRefused as exc:
        raise ConfigError(f"{where}: {exc}") from None
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
        raise fail(where, key,
                    f"got {show(value)}; want HOST:PORT such as :{DEFAULT_PORT} or 127.0.0.1:{DEFAULT_PORT}")
    return host.strip("[]"), int(port_text)


def with_overrides(config: Config, **flags: Any) -> Config:
    """Apply command-line flags (None means 'not given') on top of the file: flags win.

    ``views`` maps a name of VIEWS to its ``--[no-]collector.<name>`` (None: not given);
    ``max_series`` is ``--limits.max-series``.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    for name, enabled in given.pop("views", {}).items():
        if enabled is not None:
            given[name] = dataclasses.replace(getattr(config, name), enabled=enabled)
    if "max_series" in given:
        given["limits"] = LimitsConfig(max_series=given.pop("max_series"))
    return dataclasses.replace(config, **given)
