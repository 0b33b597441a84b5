"""The sysctls the ephemeral view needs, as the kernel prints them (``/proc/sys/net/ipv4/``, per network namespace)::

    ip_local_port_range      "32768\\t60999"
    ip_local_reserved_ports  "8080,9000-9100" (empty when none)

Parsed here, where they are read, so that exporter/aggregate/ephemeral.py counts without I/O.
"""

from __future__ import annotations


def parse_port_range(text: str) -> tuple[int, int]:
    """``ip_local_port_range`` -> (low, high).

    >>> parse_port_range("32768\\t60999\\n")
    (32768, 60999)
    """
    parts = text.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"ip_local_port_range: want two port numbers, got {text.strip()!r}")
    low, high = int(parts[0]), int(parts[1])
    if not 0 < low <= high <= 65535:
        raise ValueError(f"ip_local_port_range: {low} {high} is not a range of ports")
    return low, high


def parse_reserved(text: str) -> set[int]:
    """``ip_local_reserved_ports`` -> the set of ports.

    >>> sorted(parse_reserved("8080,9000-9002\\n"))
    [8080, 9000, 9001, 9002]
    """
    ports: set[int] = set()
    for item in text.strip().split(","):
        if not item:
            continue
        first, _, last = item.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"ip_local_reserved_ports: bad item {item!r}")
        ports.update(range(int(first), int(last or first) + 1))
    return ports


def read_range(procfs: str) -> tuple[int, int, set[int]]:
    """(low, high, reserved) from ``{procfs}/sys/net/ipv4/``: the namespace of the reading thread."""
    base = f"{procfs}/sys/net/ipv4"
    with open(f"{base}/ip_local_port_range") as f:
        low, high = parse_port_range(f.read())
    with open(f"{base}/ip_local_reserved_ports") as f:
        return low, high, parse_reserved(f.read())
