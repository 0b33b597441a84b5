"""Config of the listeners, ports and ephemeral-port views (``listeners:``, ``ports:``, ``ephemeral:``).

Why off by default: like node_exporter's tcpstat collector, they cost work per socket (ports,
queues and addresses are decoded only when one of them is on) and add series per listening or busy
port; an upgrade should not change a running fleet's cost or series count by itself. Turning them on::

    listeners: {enabled: true, max_ports: 100}  # accept queues and drops per listening port
    ports: {enabled: true, always: [443, 5432], max_ports: 20}
    ephemeral: {enabled: true, top: 5}

Kept apart from :mod:`.config` so that file only gains three fields and one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .validators import check_keys, fail, want

VIEW_KEYS = ("listeners", "ports", "ephemeral")
MAX_ALWAYS = 100


@dataclass(frozen=True)
class ListenersConfig:
    enabled: bool = False
    max_ports: int = 100


@dataclass(frozen=True)
class PortsConfig:
    enabled: bool = False
    always: tuple[int, ...] = ()
    max_ports: int = 20


@dataclass(frozen=True)
class EphemeralConfig:
    enabled: bool = False
    top: int = 5


def _int_at_least(where: str, key: str, value: Any, low: int, high: int | None = None) -> int:
    wanted = f"an integer {low}..{high}" if high is not None else f"an integer >= {low}"
    want(where, key, value, int, wanted)
    if value < low or (high is not None and value > high):
        raise fail(where, key, f"got {value}; want {wanted}")
    return int(value)


def _enabled(where: str, key: str, section: Mapping[str, Any], default: bool) -> bool:
    return bool(want(where, f"{key}.enabled", section.get("enabled", default), bool, "true or false"))


def parse_views(where: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The three sections of the top-level mapping ``data``, as Config keyword arguments."""
    sections = {}
    for key in VIEW_KEYS:
        sections[key] = want(where, key, data.get(key, {}), dict, "a mapping")
    lst, prt, eph = sections["listeners"], sections["ports"], sections["ephemeral"]
    check_keys(where, "listeners.", lst, ("enabled", "max_ports"))
    check_keys(where, "ports.", prt, ("enabled", "always", "max_ports"))
    check_keys(where, "ephemeral.", eph, ("enabled", "top"))
    ld, pd, ed = ListenersConfig(), PortsConfig(), EphemeralConfig()
    always = want(where, "ports.always", prt.get("always", list(pd.always)), list, "a list of port numbers")
    if len(always) > MAX_ALWAYS:
        raise fail(where, "ports.always", f"{len(always)} ports; want at most {MAX_ALWAYS}")
    ports = tuple(_int_at_least(where, f"ports.always[{i}]", p, 1, 65535) for i, p in enumerate(always))
    if len(set(ports)) != len(ports):
        raise fail(where, "ports.always", f"port {next(p for p in ports if ports.count(p) > 1)} listed twice")
    return {
        "listeners": ListenersConfig(enabled=_enabled(where, "listeners", lst, ld.enabled),
                                     max_ports=_int_at_least(where, "listeners.max_ports",
                                                             lst.get("max_ports", ld.max_ports), 0, 10000)),
        "ports": PortsConfig(enabled=_enabled(where, "ports", prt, pd.enabled), always=ports,
                             max_ports=_int_at_least(where, "ports.max_ports",
                                                     prt.get("max_ports", pd.max_ports), 0, 1000)),
        "ephemeral": EphemeralConfig(enabled=_enabled(where, "ephemeral", eph, ed.enabled),
                                     top=_int_at_least(where, "ephemeral.top", eph.get("top", ed.top), 0, 100)),
    }
