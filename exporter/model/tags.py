"""The tags the floors pass each other: typed, and still the exact strings Prometheus labels show.

A tag is a ``str`` (it compares, hashes, formats and encodes as its value), so a label value built
from one is byte-identical to the bare string it replaced, and a config's ``source: proc`` compares
equal to :attr:`Source.PROC`.

>>> Source.PROC == "proc", f"{Result.VANISHED}", str(Source.NETLINK), {"proc": 1}[Source.PROC]
(True, 'vanished', 'netlink', 1)
"""

from __future__ import annotations

import enum


class Tag(str, enum.Enum):
    """A str-valued enum that is its value everywhere a str is used."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str.__str__(self), spec)

    __hash__ = str.__hash__


class Source(Tag):
    """Which source served a socket table (``socket_scrape_source{source}``)."""

    NETLINK = "netlink"
    PROC = "proc"


class Result(Tag):
    """How a network namespace was read this scrape (``socket_namespaces{result}``)."""

    NETLINK = "netlink"  # setns + sock_diag
    PROC = "proc"  # /proc/PID/net of a process inside
    VANISHED = "vanished"  # gone between discovery and read: left out, not a failure
    DENIED = "denied"  # neither way allowed: fails the namespaces stage
    FAILED = "failed"  # a read error inside it: fails the namespaces stage
